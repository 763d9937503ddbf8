"""``hdp generate``: write synthetic deliveries for every data holder (counts only are printed)."""

from __future__ import annotations

from datetime import datetime

import click

from synthetic_data.fhir import DEFAULT_EXTRACT_DATE
from synthetic_data.generate import GenerationError
from synthetic_data.generate import generate as generate_deliveries


@click.command("generate")
@click.option(
    "--persons",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="Number of synthetic persons (with diabetes).",
)
@click.option(
    "--seed", type=int, default=42, show_default=True, help="Seed; same seed gives identical files."
)
@click.option(
    "--defect-rate",
    type=click.FloatRange(0.0, 0.2),
    default=0.01,
    show_default=True,
    help="Share of delivered lines that carry an injected defect (0 = clean delivery).",
)
@click.option(
    "--extract-date",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=DEFAULT_EXTRACT_DATE.isoformat(),
    show_default=True,
    help="Extract date (YYYY-MM-DD).",
)
def generate(persons: int, seed: int, defect_rate: float, extract_date: datetime) -> None:
    """Generate seeded synthetic NDR, PROM and FHIR deliveries and the defect manifest.

    Replaces every holder's landing area under $HDP_HOME/restricted/ and writes
    restricted/synthetic/defects.jsonl.
    """
    try:
        summary = generate_deliveries(
            seed=seed, persons=persons, defect_rate=defect_rate, extract_date=extract_date.date()
        )
    except GenerationError as exc:
        raise click.ClickException(str(exc)) from exc
    for line in summary.lines():
        click.echo(line)
