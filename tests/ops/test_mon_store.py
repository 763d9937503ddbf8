from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hdp.settings import SettingsError, get_settings
from pipelines.monitoring import store
from pipelines.monitoring.figures import TaskIdentity, figures_from_counts

T0 = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
INGEST = {
    "holder": "ndr",
    "source": "register",
    "files": 1,
    "lines_read": 100,
    "rows_loaded": 90,
    "quarantined": {"csv.bad_date": 4, "csv.duplicate": 6},
}


def _ident(task="ingest_register", run="scheduled__1", dag="ingest__ndr", try_number=1, map_index=-1):
    return TaskIdentity(dag, run, task, map_index, try_number)


def test_default_url_is_sqlite_under_hdp_home(metrics_sqlite, hdp_home):
    assert metrics_sqlite == f"sqlite:///{hdp_home.home / 'monitoring' / 'metrics.sqlite'}"


def test_production_refuses_sqlite(hdp_home, monkeypatch):
    monkeypatch.setenv("HDP_ENV", "production")
    monkeypatch.setenv("HDP_GOVERNANCE_URL", "postgresql://x/y")
    monkeypatch.delenv("HDP_METRICS_URL", raising=False)
    get_settings.cache_clear()
    with pytest.raises(SettingsError, match="HDP_METRICS_URL"):
        store.metrics_url()
    monkeypatch.setenv("HDP_METRICS_URL", "postgresql+psycopg://m@db/metrics")
    assert store.metrics_url().startswith("postgresql")


def test_start_then_success_records_figures_and_duration(metrics_url):
    ident = _ident()
    store.record_start(ident, started_at=T0)
    (run,) = store.latest_runs()
    assert run.state == "running" and run.ended_at is None
    store.record(
        ident, state="success", figures=figures_from_counts(INGEST), ended_at=T0 + timedelta(seconds=42)
    )
    (run,) = store.latest_runs()
    (t,) = run.tasks
    assert (t.holder, t.source, t.state, t.rows_in, t.rows_out, t.rows_quarantined) == (
        "ndr",
        "register",
        "success",
        100,
        90,
        10,
    )
    assert t.started_at == T0 and t.duration_s == pytest.approx(42)
    assert run.state == "success" and run.rows_quarantined == 10
    assert store.quarantine_by_reason("ingest__ndr", "scheduled__1") == [
        ("ingest_register", "ndr", "csv.bad_date", 4),
        ("ingest_register", "ndr", "csv.duplicate", 6),
    ]
    assert store.task_details(ident)[("files", "")] == 1.0


def test_retry_replaces_the_row_instead_of_double_counting(metrics_url):
    store.record(
        _ident(try_number=1),
        state="up_for_retry",
        error_type="OperationalError",
        started_at=T0,
        ended_at=T0 + timedelta(seconds=1),
    )
    store.record(
        _ident(try_number=2),
        state="success",
        figures=figures_from_counts(INGEST),
        started_at=T0 + timedelta(seconds=30),
        ended_at=T0 + timedelta(seconds=40),
    )
    (run,) = store.latest_runs()
    (t,) = run.tasks
    assert (t.try_number, t.state, t.error_type, t.rows_quarantined) == (2, "success", None, 10)
    assert len(store.quarantine_by_reason("ingest__ndr", "scheduled__1")) == 2
    assert store.task_counts_by_state() == {("ingest__ndr", "success"): 1}


def test_latest_runs_filters_and_orders(metrics_url):
    store.record(
        _ident(run="old"),
        state="success",
        started_at=T0 - timedelta(days=2),
        ended_at=T0 - timedelta(days=2) + timedelta(seconds=5),
    )
    store.record(
        _ident(run="night", task="ingest_prom"),
        state="failed",
        error_type="QualityGateFailed",
        started_at=T0,
        ended_at=T0 + timedelta(seconds=5),
    )
    store.record(
        _ident(run="night"),
        state="success",
        figures=figures_from_counts(INGEST),
        started_at=T0,
        ended_at=T0 + timedelta(seconds=9),
    )
    store.record(
        _ident(dag="release", task="build_release", run="r1", map_index=0),
        state="success",
        started_at=T0 + timedelta(hours=1),
        ended_at=T0 + timedelta(hours=1, seconds=3),
    )
    assert [r.run_id for r in store.latest_runs()] == ["r1", "night", "old"]
    assert [r.run_id for r in store.latest_runs(limit=1)] == ["r1"]
    assert [r.run_id for r in store.latest_runs(failed_only=True)] == ["night"]
    assert [r.run_id for r in store.latest_runs(since=T0 - timedelta(hours=1))] == ["r1", "night"]
    assert [r.run_id for r in store.latest_runs(dag_id="ingest__ndr")] == ["night", "old"]
    night = store.latest_runs(failed_only=True)[0]
    assert night.state == "failed" and [t.task_id for t in night.failed_tasks] == ["ingest_prom"]
    assert night.failed_tasks[0].holder == "ndr" and night.failed_tasks[0].source == "prom"
    assert night.duration_s == pytest.approx(9)
    assert [(r.dag_id, r.run_id) for r in store.latest_per_dag()] == [
        ("ingest__ndr", "night"),
        ("release", "r1"),
    ]
