"""The pipeline's run figures as prometheus_client families: latest run per DAG, no run id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipelines.monitoring import prometheus, store
from pipelines.monitoring.figures import TaskIdentity, figures_from_counts


def _parse(text: str) -> dict[str, list]:
    return {
        f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)
    }


T0 = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)


def _ingest(
    run_id: str, start: datetime, *, rows: int, quarantined: int, checks_state: str = "failed"
) -> None:
    store.record(
        TaskIdentity("ingest__ndr", run_id, "ingest_register"),
        state="success",
        started_at=start,
        ended_at=start + timedelta(seconds=12),
        figures=figures_from_counts(
            {
                "holder": "ndr",
                "source": "register",
                "lines_read": rows,
                "rows_loaded": rows - quarantined,
                "quarantined": {"csv.bad_date": quarantined},
            }
        ),
    )
    store.record(
        TaskIdentity("ingest__ndr", run_id, "validate_raw"),
        state=checks_state,
        error_type="QualityGateFailed" if checks_state == "failed" else None,
        started_at=start,
        ended_at=start + timedelta(seconds=14),
        figures=figures_from_counts({"checks_failed": 2 if checks_state == "failed" else 0}),
    )


def test_metrics_payload_exposes_the_latest_run_of_the_store(metrics_url):
    _ingest("scheduled__1", T0, rows=100, quarantined=10)
    body, ctype = prometheus.metrics_payload()
    assert ctype.startswith("text/plain; version=")
    m = _parse(body.decode())
    task = {"dag_id": "ingest__ndr", "task_id": "ingest_register", "holder": "ndr", "source": "register"}
    task = {**task, "map_index": ""}
    assert ("hdp_task_rows_in", task, 100.0) in m["hdp_task_rows_in"]
    assert ("hdp_task_rows_out", task, 90.0) in m["hdp_task_rows_out"]
    assert ("hdp_task_duration_seconds", task, 12.0) in m["hdp_task_duration_seconds"]
    assert m["hdp_task_rows_quarantined"] == [
        (
            "hdp_task_rows_quarantined",
            {
                "dag_id": "ingest__ndr",
                "task_id": "ingest_register",
                "holder": "ndr",
                "reason_code": "csv.bad_date",
            },
            10.0,
        )
    ]
    assert [v for _, labels, v in m["hdp_task_checks_failed"] if labels["task_id"] == "validate_raw"] == [2.0]
    assert m["hdp_dag_run_failed"] == [("hdp_dag_run_failed", {"dag_id": "ingest__ndr"}, 1.0)]
    assert m["hdp_dag_run_info"] == [("hdp_dag_run_info", {"dag_id": "ingest__ndr", "state": "failed"}, 1.0)]
    assert m["hdp_dag_run_duration_seconds"][0][2] == 14.0
    assert m["hdp_dag_run_start_timestamp_seconds"][0][2] == T0.timestamp()


def test_a_new_run_replaces_the_series_instead_of_adding_one(metrics_sqlite):
    """The run id is in no label: after the next run the same series carry its figures."""
    _ingest("scheduled__1", T0, rows=100, quarantined=10)
    first = _parse(prometheus.metrics_payload()[0].decode())
    _ingest("scheduled__2", T0 + timedelta(days=1), rows=300, quarantined=3, checks_state="success")
    body = prometheus.metrics_payload()[0].decode()
    second = _parse(body)
    assert "scheduled__" not in body
    for name in ("hdp_task_rows_in", "hdp_task_rows_out", "hdp_task_duration_seconds", "hdp_dag_run_failed"):
        assert sorted(str(s[1]) for s in first[name]) == sorted(str(s[1]) for s in second[name]), name
    assert [v for *_, v in second["hdp_task_rows_quarantined"]] == [3.0]
    assert second["hdp_dag_run_failed"][0][2] == 0.0
    assert second["hdp_dag_run_info"][0][1]["state"] == "success"
    # All task runs ever recorded are counted per state (bounded by DAGs x states).
    runs = {s[1]["state"]: s[2] for s in second["hdp_task_runs"]}
    assert runs == {"success": 3.0, "failed": 1.0}


def test_the_collector_registers_without_reading_the_store(hdp_home, monkeypatch):
    """describe() names the families only, so registering never touches an unreachable store."""
    monkeypatch.setenv("HDP_METRICS_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    collector = prometheus.PipelineCollector()
    CollectorRegistry(auto_describe=True).register(collector)  # calls describe(): no store read
    assert "hdp_task_rows_in" in {m.name for m in collector.describe()}


def test_empty_store_gives_valid_exposition(metrics_sqlite):
    body, _ = prometheus.metrics_payload()
    families = _parse(body.decode())
    assert families["hdp_task_rows_in"] == []
    registry = CollectorRegistry()
    registry.register(prometheus.PipelineCollector())
    assert generate_latest(registry) == body
