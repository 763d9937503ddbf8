"""The Airflow callbacks, driven with Airflow-shaped context objects (the real DAG run is
covered by test_mon_dag_run.py and the Celery integration test)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from pipelines.monitoring import callbacks, store

from .webhook import webhook_server

T0 = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
COUNTS = {
    "holder": "ndr",
    "source": "prom",
    "files": 1,
    "lines_read": 20,
    "rows_loaded": 18,
    "quarantined": {"csv.bad_number": 2},
}


class FakeTI(SimpleNamespace):
    def xcom_pull(self, task_ids=None, map_indexes=None):
        assert task_ids == self.task_id
        return self.xcoms.get((task_ids, map_indexes))


def _context(task_id="ingest_prom", try_number=1, map_index=-1, xcoms=None, exception=None):
    ti = FakeTI(
        dag_id="ingest__ndr",
        run_id="scheduled__n1",
        task_id=task_id,
        map_index=map_index,
        try_number=try_number,
        start_date=T0,
        end_date=T0 + timedelta(seconds=7),
        xcoms=xcoms or {},
    )
    return {"ti": ti, "exception": exception}


def test_execute_then_success_records_the_returned_counts(metrics_sqlite):
    ctx = _context(xcoms={("ingest_prom", None): COUNTS})
    callbacks.on_execute(ctx)
    assert store.latest_runs()[0].tasks[0].state == "running"
    callbacks.on_success(ctx)
    (t,) = store.latest_runs()[0].tasks
    assert (t.state, t.holder, t.source, t.rows_in, t.rows_out, t.rows_quarantined, t.duration_s) == (
        "success",
        "ndr",
        "prom",
        20,
        18,
        2,
        7.0,
    )


def test_mapped_task_pulls_its_own_index(metrics_sqlite):
    ctx = _context(task_id="build_release", map_index=1, xcoms={("build_release", 1): {"rows_out": 5}})
    callbacks.on_success(ctx)
    assert store.latest_runs()[0].tasks[0].rows_out == 5


class GateFailed(RuntimeError):
    def __init__(self):
        super().__init__("check plausibility.hba1c failed: value 900 for 191212121212")  # a leaky message
        self.counts = {"checks_failed": ["plausibility.hba1c"], "rows_checked": 100}


def test_failure_records_alerts_and_never_forwards_the_message(metrics_sqlite, monkeypatch):
    with webhook_server() as (url, received):
        monkeypatch.setenv("HDP_ALERT_WEBHOOK", url)
        callbacks.on_retry(_context(task_id="validate_raw", exception=OSError("disk")))
        assert store.latest_runs()[0].tasks[0].state == "up_for_retry"
        assert received == []  # retries are not alerts
        callbacks.on_failure(_context(task_id="validate_raw", try_number=3, exception=GateFailed()))
    (t,) = store.latest_runs()[0].tasks
    assert (t.state, t.try_number, t.error_type, t.checks_failed, t.rows_in) == (
        "failed",
        3,
        "GateFailed",
        1,
        100,
    )
    (payload,) = received
    assert payload["task_id"] == "validate_raw" and payload["holder"] == "ndr"
    assert payload["counts"]["checks_failed"] == 1
    assert "191212121212" not in str(payload) and "900" not in str(payload)


def test_alert_still_sent_when_the_metrics_store_is_down(hdp_home, monkeypatch):
    monkeypatch.setenv("HDP_METRICS_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    with webhook_server() as (url, received):
        monkeypatch.setenv("HDP_ALERT_WEBHOOK", url)
        callbacks.on_failure(_context(exception=ValueError("x")))
    assert received[0]["error_type"] == "ValueError"
    store.dispose_all()


def test_heartbeat_timeout_reason_from_the_dag_processor(metrics_sqlite):
    callbacks.on_failure(_context(exception="Task Instance Heartbeat Timeout ..."))
    assert store.latest_runs()[0].tasks[0].error_type == "TaskInstanceHeartbeatTimeout"


class _Result:
    def summary(self):
        return {"failed": ["plausibility.hba1c", "unit.hba1c"], "quarantined_rows": 4, "scope": "ndr"}


class QualityGateLike(RuntimeError):
    def __init__(self):
        super().__init__("gate")
        self.result = _Result()


def test_quality_gate_exception_result_summary_is_used(metrics_sqlite):
    callbacks.on_failure(_context(task_id="validate_raw", exception=QualityGateLike()))
    (t,) = store.latest_runs()[0].tasks
    assert (t.checks_failed, t.rows_quarantined, t.error_type) == (2, 4, "QualityGateLike")
