"""``hdp fhir``: conformance suite, ingestion of a holder, validation of a file.

Outputs are counts, paths and element paths only, never a value from a resource.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import click

from hdp.settings import holder as get_holder
from pipelines.fhir.conformance import report, run_suite, summary
from pipelines.fhir.ingest import (
    FileProblem,
    bundle_entries,
    classify,
    classify_line,
    ingest_fhir,
    ndjson_chunks,
    split_lines,
)


@click.group()
def fhir() -> None:
    """FHIR R4: SQL on FHIR v2 conformance, ingestion, validation."""


@fhir.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--report",
    "report_file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the test report (the suite's test-report JSON format).",
)
def conformance(directory: Path, report_file: Path) -> None:
    """Run every SQL on FHIR v2 test file (tests/*.json) in DIRECTORY and write a report."""
    outcomes = run_suite(directory)
    if not outcomes:
        raise click.ClickException(f"no test files (*.json) found in {directory}")
    report_file.parent.mkdir(parents=True, exist_ok=True)
    report_file.write_text(
        json.dumps(report(outcomes), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    s = summary(outcomes)
    click.echo(
        f"{s['passed']}/{s['tests']} tests passed ({s['shareable_passed']}/{s['shareable']} shareable); "
        f"report: {report_file}"
    )
    for o in outcomes:
        if not o.passed:
            click.echo(f"FAILED {o.file}: {o.name}: {o.error}")
    if s["passed"] != s["tests"]:
        raise SystemExit(1)


@fhir.command()
@click.argument("holder")
@click.option("--workers", type=int, default=None, help="Worker processes (default: one per core; 0 = none).")
def ingest(holder: str, workers: int | None) -> None:
    """Ingest HOLDER's landing/fhir/ into its raw zone (prints counts as JSON)."""
    try:
        get_holder(holder)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from None
    result = ingest_fhir(holder, workers=workers)
    click.echo(json.dumps(asdict(result), indent=2))


@fhir.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate(file: Path) -> None:
    """Validate an NDJSON file (.ndjson / .ndjson.gz) or a Bundle / resource JSON file.

    Prints one line per invalid resource (line or entry, reason code, element path and reason)
    and a summary; exits 1 if anything is invalid.
    """
    counts: Counter[str] = Counter()
    bad = 0
    if file.name.endswith(".ndjson") or file.name.endswith(".ndjson.gz"):
        problems: list[FileProblem] = []
        for chunk in ndjson_chunks(file, file.name, 2000, problems):
            lines = split_lines(chunk.blob)
            for i, line in enumerate(lines):
                out = classify_line(line, chunk.expected, chunk.last_unterminated and i == len(lines) - 1)
                if out is None:
                    continue
                counts[out.reason or "valid"] += 1
                if not out.valid:
                    bad += 1
                    click.echo(f"line {chunk.first_line_no + i}: {out.reason}: {out.detail}")
        for problem in problems:
            # a conversion notice (UTF-16 read as UTF-8) is reported but rejects nothing
            bad += 0 if problem.is_notice else 1
            counts[problem.reason] += 1
            at = "file" if problem.line_no is None else f"line {problem.line_no}"
            click.echo(f"{at}: {problem.reason}: {problem.detail}")
    else:
        data = file.read_bytes()
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            doc = None
        if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
            entries, bundle_problems = bundle_entries(data)
            for bp in bundle_problems:
                bad += 1
                counts[bp.reason] += 1
                where = bp.entry_index if bp.entry_index is not None else "-"
                click.echo(f"entry {where}: {bp.reason}: {bp.detail}")
            for entry in entries:
                out = classify(entry.resource, entry.raw, None)
                counts[out.reason or "valid"] += 1
                if not out.valid:
                    bad += 1
                    click.echo(f"entry {entry.entry_index}: {out.reason}: {out.detail}")
        else:
            out = classify_line(data, None, False)
            if out is not None:
                counts[out.reason or "valid"] += 1
                if not out.valid:
                    bad += 1
                    click.echo(f"resource: {out.reason}: {out.detail}")
    click.echo("summary: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    if bad:
        raise SystemExit(1)
