from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import click
import pytest
from click.testing import CliRunner

from edge.commands.status import parse_since, status
from pipelines.monitoring import store
from pipelines.monitoring.figures import TaskIdentity, figures_from_counts

NOW = datetime.now(UTC)


def _night(run="scheduled__night"):
    t0 = NOW - timedelta(hours=8)
    store.record(
        TaskIdentity("ingest__ndr", run, "ingest_register"),
        state="success",
        started_at=t0,
        ended_at=t0 + timedelta(seconds=30),
        figures=figures_from_counts(
            {
                "holder": "ndr",
                "source": "register",
                "lines_read": 10001,
                "rows_loaded": 9950,
                "quarantined": {"csv.bad_date": 20, "csv.duplicate": 31},
            }
        ),
    )
    store.record(
        TaskIdentity("ingest__ndr", run, "validate_raw", -1, 3),
        state="failed",
        error_type="QualityGateFailed",
        started_at=t0 + timedelta(seconds=31),
        ended_at=t0 + timedelta(seconds=40),
        figures=figures_from_counts({"checks_failed": 2}),
    )


def test_status_answers_what_failed_where_on_whose_data_and_how_much_was_quarantined(metrics_sqlite):
    store.record(
        TaskIdentity("ingest__region_skane", "old", "ingest_fhir"),
        state="success",
        started_at=NOW - timedelta(days=3),
        ended_at=NOW - timedelta(days=3, seconds=-5),
    )
    _night()
    result = CliRunner().invoke(status, ["--since", "24h", "--failed"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "ingest__ndr  scheduled__night" in out and "state FAILED" in out and "region_skane" not in out
    line = next(x for x in out.splitlines() if x.strip().startswith("validate_raw"))
    assert "failed" in line and "ndr" in line and "QualityGateFailed" in line and line.split()[4] == "3"
    assert "quarantined 51" in out and "checks failed 2" in out
    assert "ingest_register  ndr  csv.duplicate  31" in out


def test_status_json_and_empty(metrics_sqlite):
    assert "No DAG runs recorded" in CliRunner().invoke(status, []).output
    _night()
    (run,) = json.loads(CliRunner().invoke(status, ["--json"]).output)
    assert run["failed_tasks"] == ["validate_raw"] and run["rows_quarantined"] == 51
    assert {"task_id": "ingest_register", "holder": "ndr", "reason_code": "csv.bad_date", "rows": 20} in run[
        "quarantined_by_reason"
    ]


def test_parse_since():
    now = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    assert parse_since("24h", now=now) == datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
    assert parse_since("30m", now=now) == datetime(2026, 11, 22, 7, 30, tzinfo=UTC)
    assert parse_since("2026-11-21") == datetime(2026, 11, 21, tzinfo=UTC)
    with pytest.raises(click.BadParameter):
        parse_since("yesterday")
