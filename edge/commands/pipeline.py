"""``hdp run`` and ``hdp demo``: the pipeline from the command line.

Both drive the DAGs through :mod:`edge.orchestrate`, which imports Airflow only when it runs them.
"""

from __future__ import annotations

import json
import logging

import click

from edge import orchestrate
from edge.demo import run_demo
from hdp.settings import get_settings


@click.command()
@click.option(
    "--stage",
    type=click.Choice(["all", "ingest", "pseudonymise", "release"]),
    default="all",
    show_default=True,
    help="Which DAGs to run.",
)
def run(stage: str) -> None:
    """Run the DAGs through Airflow (dag.test) on the embedded defaults."""
    logging.basicConfig(level=logging.INFO)
    orchestrate.migrate_metadata_db()
    outcomes = orchestrate.run_dags(orchestrate.pipeline_dag_ids(stage))
    for o in outcomes:
        click.echo(f"{o.dag_id:28s} {o.state}")


@click.command()
@click.option("--persons", default=2000, show_default=True, help="Size of the synthetic population.")
@click.option("--seed", default=42, show_default=True)
@click.option("--defect-rate", default=0.01, show_default=True)
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the summary to this file (for scripts and tests).",
)
def demo(persons: int, seed: int, defect_rate: float, summary_json: str | None) -> None:
    """Generate data, run every DAG, file and approve a record-level and an aggregate-only request, release and query both."""
    summary = run_demo(persons=persons, seed=seed, defect_rate=defect_rate)
    text = json.dumps(summary, indent=2, ensure_ascii=False, default=str)
    if summary_json:
        with open(summary_json, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    click.echo(text)
    click.echo(f"\nData home: {get_settings().home}")


@click.command("federation-demo")
@click.option("--persons", default=1000, show_default=True, help="Size of the synthetic population.")
@click.option("--seed", default=42, show_default=True)
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the summary to this file (for scripts and tests).",
)
def federation_demo(persons: int, seed: int, summary_json: str | None) -> None:
    """The hub and a node per data holder as separate processes, each with its own data home under
    $HDP_HOME (hub/, nodes/<holder>/) and its own key-encryption key (~/.config/hdp/federation/):
    deliveries, each node's DAGs, applications, each node's stewards, project keys, parts, the
    secure environment's release, a federated aggregate query; all stopped at the end."""
    from edge.federation_demo import run_federated_demo

    settings = get_settings()
    # It prints its own story, tables and next steps; tokens go to an owner-only file, never here.
    summary = run_federated_demo(
        settings.home, kek_root=settings.kek_dir / "federation", persons=persons, seed=seed
    )
    if summary_json:
        with open(summary_json, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n")
