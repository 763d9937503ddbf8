"""Run metrics for Prometheus, through prometheus_client (the exposition format is its job).

Two layers, so each can be tested and reused on its own:

* :func:`families_from_runs` — pure: the store's latest runs → metric families.
* :class:`PipelineCollector` — I/O: a prometheus_client ``Collector`` that reads the store at
  every scrape and yields those families. Register it in any ``CollectorRegistry``; the access
  layer does so for its ``/metrics`` (``access.metrics``), :func:`metrics_payload` alone.

Every figure is of the *latest* run of each DAG (a DAG is per holder: ``ingest__<holder>``,
``pseudonymise__<holder>``), so the series are bounded by DAGs x tasks x reason codes. No run
id is a label: a new run would start a new series each time (unbounded over the TSDB's life);
``hdp status`` names runs. ``state`` is a label of ``hdp_dag_run_info`` only (three values).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipelines.monitoring import store
from pipelines.monitoring.store import FAILED, DagRunSummary, TaskRun

TASK_LABELS = ("dag_id", "task_id", "holder", "source", "map_index")


def _task_labels(run: DagRunSummary, t: TaskRun) -> list[str]:
    # map_index "" for an unmapped task (-1 in the store): one label set for every task family.
    return [
        run.dag_id,
        t.task_id,
        t.holder or "",
        t.source or "",
        str(t.map_index) if t.map_index >= 0 else "",
    ]


def families_from_runs(
    latest: Sequence[DagRunSummary],
    quarantine: Mapping[tuple[str, str], Sequence[tuple[str, str | None, str, int]]] | None = None,
    task_counts: Mapping[tuple[str, str], int] | None = None,
) -> list[Metric]:
    """The latest run of each DAG → gauges; ``quarantine`` maps (dag_id, run_id) to the
    store's per-reason rows, ``task_counts`` (dag_id, state) to recorded task runs."""

    def gauge(name: str, documentation: str, labels: Sequence[str]) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, documentation, labels=list(labels))

    run_info = gauge(
        "hdp_dag_run_info",
        "Latest recorded run of each DAG (value 1; its state as a label).",
        ("dag_id", "state"),
    )
    run_start = gauge(
        "hdp_dag_run_start_timestamp_seconds", "Start of the latest run of each DAG, Unix time.", ("dag_id",)
    )
    run_duration = gauge(
        "hdp_dag_run_duration_seconds", "Duration of the latest finished run of each DAG.", ("dag_id",)
    )
    run_failed = gauge("hdp_dag_run_failed", "1 if a task of the latest run of the DAG failed.", ("dag_id",))
    rows_in = gauge(
        "hdp_task_rows_in", "Rows (lines, resources) read by the task in the latest run.", TASK_LABELS
    )
    rows_out = gauge("hdp_task_rows_out", "Rows written by the task in the latest run.", TASK_LABELS)
    rows_q = gauge(
        "hdp_task_rows_quarantined",
        "Rows quarantined in the latest run, per reason code.",
        ("dag_id", "task_id", "holder", "reason_code"),
    )
    checks = gauge(
        "hdp_task_checks_failed", "Quality checks failed by the task in the latest run.", TASK_LABELS
    )
    duration = gauge("hdp_task_duration_seconds", "Duration of the task in the latest run.", TASK_LABELS)
    failed = gauge("hdp_task_failed", "1 if the task failed in the latest run of its DAG.", TASK_LABELS)
    per_state = gauge(
        "hdp_task_runs",
        "Task runs recorded per DAG and final state (a retry replaces its row).",
        ("dag_id", "state"),
    )
    for run in latest:
        run_info.add_metric([run.dag_id, run.state], 1)
        run_start.add_metric([run.dag_id], run.started_at.timestamp())
        run_failed.add_metric([run.dag_id], 1 if run.state == FAILED else 0)
        if run.duration_s is not None:
            run_duration.add_metric([run.dag_id], run.duration_s)
        for t in run.tasks:
            labels = _task_labels(run, t)
            failed.add_metric(labels, 1 if t.state == FAILED else 0)
            for family, value in ((rows_in, t.rows_in), (rows_out, t.rows_out), (checks, t.checks_failed)):
                if value is not None:
                    family.add_metric(labels, value)
            if t.duration_s is not None:
                duration.add_metric(labels, t.duration_s)
        for task_id, holder, reason, n in (quarantine or {}).get((run.dag_id, run.run_id), ()):
            rows_q.add_metric([run.dag_id, task_id, holder or "", reason], n)
    for (dag_id, state), n in sorted((task_counts or {}).items()):
        per_state.add_metric([dag_id, state], n)
    return [
        run_info,
        run_start,
        run_duration,
        run_failed,
        rows_in,
        rows_out,
        rows_q,
        checks,
        duration,
        failed,
        per_state,
    ]


class PipelineCollector(Collector):
    """Reads the run-metrics store at every scrape (``url``: ``HDP_METRICS_URL`` by default)."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url

    def collect(self) -> Iterator[Metric]:
        latest = store.latest_per_dag(url=self.url)
        quarantine = {
            (r.dag_id, r.run_id): store.quarantine_by_reason(r.dag_id, r.run_id, url=self.url) for r in latest
        }
        yield from families_from_runs(latest, quarantine, store.task_counts_by_state(url=self.url))

    def describe(self) -> list[Metric]:
        # Registering must not read the store: the families' names, without samples.
        return families_from_runs(())


def metrics_payload(url: str | None = None) -> tuple[bytes, str]:
    """``(body, content_type)`` of the pipeline's figures alone (for a standalone exporter)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(PipelineCollector(url))
    return generate_latest(registry), CONTENT_TYPE_LATEST
