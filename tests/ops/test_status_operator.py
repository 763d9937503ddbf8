"""``hdp status`` as an operator reads it: real quarantine reason codes, files converted, and an
honest answer when nothing failed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner

from edge.commands.status import status
from pipelines.monitoring import store
from pipelines.monitoring.figures import TaskIdentity, figures_from_counts

NOW = datetime.now(UTC)


def _record(dag_id: str, task_id: str, counts: dict, *, state: str = "success", hours_ago: float = 2) -> None:
    t0 = NOW - timedelta(hours=hours_ago)
    store.record(
        TaskIdentity(dag_id, f"manual__{dag_id}", task_id),
        state=state,
        started_at=t0,
        ended_at=t0 + timedelta(seconds=5),
        figures=figures_from_counts(counts),
    )


def _pipeline_of_one_holder() -> None:
    # What the stages return (edge.stages): ingest by reason; pseudonymise a total plus its breakdown;
    # the research gate by check id.
    _record(
        "ingest__ndr",
        "ingest_register",
        {
            "holder": "ndr",
            "source": "register",
            "lines_read": 1000,
            "rows_loaded": 990,
            "quarantined": {"csv.bad_date": 6, "csv.duplicate_key": 4},
            "files_converted": {"encoding.converted_from_cp1252": 1},
        },
        hours_ago=3,
    )
    _record(
        "pseudonymise__ndr",
        "pseudonymise",
        {
            "holder": "ndr",
            "rows_in": 990,
            "rows_out": 983,
            "quarantined": 7,
            "quarantined_by_reason": {"person.invalid_personnummer": 5, "person.unresolved": 2},
        },
    )
    _record(
        "pseudonymise__ndr",
        "validate_research",
        {"holder": "ndr", "failed": [], "quarantined_rows": 3, "quarantined": {"register.bmi.range": 3}},
    )


def test_status_shows_reason_codes_not_unspecified_and_files_converted(metrics_sqlite):
    _pipeline_of_one_holder()
    out = CliRunner().invoke(status, []).output
    assert "unspecified" not in out
    assert "pseudonymise  ndr  person.invalid_personnummer  5" in out
    assert "pseudonymise  ndr  person.unresolved  2" in out
    assert "validate_research  ndr  register.bmi.range  3" in out
    assert "ingest_register  ndr  csv.bad_date  6" in out
    assert "files converted:" in out and "ingest_register  ndr  encoding.converted_from_cp1252  1" in out

    runs = {r["dag_id"]: r for r in json.loads(CliRunner().invoke(status, ["--json"]).output)}
    assert {r["reason_code"] for r in runs["pseudonymise__ndr"]["quarantined_by_reason"]} == {
        "person.invalid_personnummer",
        "person.unresolved",
        "register.bmi.range",
    }
    assert runs["ingest__ndr"]["files_converted"] == [
        {
            "task_id": "ingest_register",
            "holder": "ndr",
            "notice_code": "encoding.converted_from_cp1252",
            "files": 1,
        }
    ]


def test_failed_with_only_successful_runs_says_so_and_counts_them(metrics_sqlite):
    assert "No DAG runs recorded yet" in CliRunner().invoke(status, ["--failed"]).output
    _pipeline_of_one_holder()
    out = CliRunner().invoke(status, ["--failed"]).output
    first = (NOW - timedelta(hours=3)).strftime("%Y-%m-%d %H:%M")
    assert out.startswith(f"No failed runs since {first}") and "2 runs recorded" in out
    assert "recorded yet" not in out
    out = CliRunner().invoke(status, ["--failed", "--since", "150m"]).output
    assert "No failed runs since" in out and "1 run recorded" in out
    assert store.run_count() == 2 and store.run_count(dag_id="ingest__ndr") == 1


def test_on_a_terminal_the_runs_are_rich_tables(metrics_sqlite, monkeypatch):
    import io

    from rich.console import Console

    from edge.commands import status as status_cmd

    _pipeline_of_one_holder()
    out = io.StringIO()
    monkeypatch.setattr("rich.console.Console", lambda **k: Console(file=out, width=160, no_color=True))
    runs = store.latest_runs()
    quarantine = {(r.dag_id, r.run_id): store.quarantine_by_reason(r.dag_id, r.run_id) for r in runs}
    converted = {(r.dag_id, r.run_id): store.files_converted(r.dag_id, r.run_id) for r in runs}
    status_cmd.print_rich(runs, quarantine, converted)
    text = out.getvalue()
    assert "pseudonymise__ndr  manual__pseudonymise__ndr" in text and "─" in text
    assert "person.invalid_personnummer" in text and "encoding.converted_from_cp1252" in text
