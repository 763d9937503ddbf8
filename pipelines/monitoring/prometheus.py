"""Run metrics in the Prometheus text exposition format (version 0.0.4).

Three layers, so each can be tested and reused on its own:

* :func:`render_exposition` — pure: metric families → text. Implements the format's
  escaping rules (label values: ``\\``, ``"``, newline; HELP: ``\\``, newline) and value
  spelling (``NaN``, ``+Inf``, ``-Inf``), sorted so the output is deterministic.
* :func:`families_from_runs` — pure: the store's latest runs → metric families.
* :func:`metrics_payload` — I/O: read the store, return ``(body, content_type)``. The access
  layer mounts it at ``/metrics`` (it is framework-free); :func:`wsgi_app` serves it alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pipelines.monitoring import store
from pipelines.monitoring.store import FAILED, DagRunSummary

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
TYPES = ("counter", "gauge", "untyped")


class MetricFormatError(ValueError):
    """A metric or label name that the exposition format cannot carry."""


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class MetricFamily:
    name: str
    help: str
    type: str = "gauge"
    samples: Sequence[Sample] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise MetricFormatError(f"invalid metric name {self.name!r}")
        if self.type not in TYPES:
            raise MetricFormatError(f"metric {self.name}: type must be one of {TYPES}, not {self.type!r}")
        for s in self.samples:
            for label in s.labels:
                if not _LABEL.match(label) or label.startswith("__"):
                    raise MetricFormatError(f"metric {self.name}: invalid label name {label!r}")


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """Spell a sample value the way Prometheus parses it.

    >>> format_value(3), format_value(0.5), format_value(float("inf")), format_value(float("nan"))
    ('3', '0.5', '+Inf', 'NaN')
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def render_exposition(families: Iterable[MetricFamily]) -> str:
    """Families → exposition text (ends with a newline; empty input gives an empty string)."""
    lines: list[str] = []
    for fam in sorted(families, key=lambda f: f.name):
        lines.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.type}")
        rendered = []
        for s in fam.samples:
            labels = ",".join(f'{k}="{_escape_label_value(str(v))}"' for k, v in sorted(s.labels.items()))
            rendered.append(
                f"{fam.name}{{{labels}}} {format_value(s.value)}"
                if labels
                else f"{fam.name} {format_value(s.value)}"
            )
        lines.extend(sorted(rendered))
    return "\n".join(lines) + "\n" if lines else ""


# -- the platform's metrics ----------------------------------------------------------------


def _task_labels(run: DagRunSummary, t) -> dict[str, str]:
    labels = {"dag_id": run.dag_id, "task_id": t.task_id, "holder": t.holder or "", "source": t.source or ""}
    if t.map_index >= 0:
        labels["map_index"] = str(t.map_index)
    return labels


def families_from_runs(
    latest: Sequence[DagRunSummary],
    quarantine: Mapping[tuple[str, str], Sequence[tuple[str, str | None, str, int]]] | None = None,
    task_counts: Mapping[tuple[str, str], int] | None = None,
) -> list[MetricFamily]:
    """The latest run of each DAG → gauges; ``quarantine`` maps (dag_id, run_id) to the
    store's per-reason rows, ``task_counts`` (dag_id, state) to recorded task runs."""
    rows_in, rows_out, rows_q, checks, duration, failed = [], [], [], [], [], []
    run_info, run_duration, run_start, run_failed = [], [], [], []
    for run in latest:
        run_info.append(Sample({"dag_id": run.dag_id, "run_id": run.run_id, "state": run.state}, 1))
        run_start.append(Sample({"dag_id": run.dag_id}, run.started_at.timestamp()))
        run_failed.append(Sample({"dag_id": run.dag_id}, 1 if run.state == FAILED else 0))
        if run.duration_s is not None:
            run_duration.append(Sample({"dag_id": run.dag_id}, run.duration_s))
        for t in run.tasks:
            labels = _task_labels(run, t)
            failed.append(Sample(labels, 1 if t.state == FAILED else 0))
            if t.rows_in is not None:
                rows_in.append(Sample(labels, t.rows_in))
            if t.rows_out is not None:
                rows_out.append(Sample(labels, t.rows_out))
            if t.checks_failed is not None:
                checks.append(Sample(labels, t.checks_failed))
            if t.duration_s is not None:
                duration.append(Sample(labels, t.duration_s))
        for task_id, holder, reason, n in (quarantine or {}).get((run.dag_id, run.run_id), ()):
            rows_q.append(
                Sample(
                    {"dag_id": run.dag_id, "task_id": task_id, "holder": holder or "", "reason_code": reason},
                    n,
                )
            )
    per_state = [Sample({"dag_id": d, "state": s}, n) for (d, s), n in sorted((task_counts or {}).items())]
    return [
        MetricFamily(
            "hdp_dag_run_info",
            "Latest recorded run of each DAG (value 1; state and run_id as labels).",
            samples=run_info,
        ),
        MetricFamily(
            "hdp_dag_run_start_timestamp_seconds",
            "Start of the latest run of each DAG, Unix time.",
            samples=run_start,
        ),
        MetricFamily(
            "hdp_dag_run_duration_seconds",
            "Duration of the latest finished run of each DAG.",
            samples=run_duration,
        ),
        MetricFamily(
            "hdp_dag_run_failed", "1 if a task of the latest run of the DAG failed.", samples=run_failed
        ),
        MetricFamily(
            "hdp_task_rows_in", "Rows (lines, resources) read by the task in the latest run.", samples=rows_in
        ),
        MetricFamily("hdp_task_rows_out", "Rows written by the task in the latest run.", samples=rows_out),
        MetricFamily(
            "hdp_task_rows_quarantined",
            "Rows quarantined in the latest run, per reason code.",
            samples=rows_q,
        ),
        MetricFamily(
            "hdp_task_checks_failed", "Quality checks failed by the task in the latest run.", samples=checks
        ),
        MetricFamily(
            "hdp_task_duration_seconds", "Duration of the task in the latest run.", samples=duration
        ),
        MetricFamily("hdp_task_failed", "1 if the task failed in the latest run of its DAG.", samples=failed),
        MetricFamily(
            "hdp_task_runs",
            "Task runs recorded per DAG and final state (a retry replaces its row).",
            samples=per_state,
        ),
    ]


def collect(url: str | None = None) -> list[MetricFamily]:
    """Read the store and build the families (I/O)."""
    latest = store.latest_per_dag(url=url)
    quarantine = {
        (r.dag_id, r.run_id): store.quarantine_by_reason(r.dag_id, r.run_id, url=url) for r in latest
    }
    return families_from_runs(latest, quarantine, store.task_counts_by_state(url=url))


def metrics_payload(url: str | None = None) -> tuple[bytes, str]:
    """``(body, content_type)`` for a ``GET /metrics``: mount this in any web framework.

    FastAPI: ``body, ctype = metrics_payload(); return Response(body, media_type=ctype)``.
    """
    return render_exposition(collect(url)).encode("utf-8"), CONTENT_TYPE


def wsgi_app(environ: Mapping[str, object], start_response: Callable[..., object]) -> list[bytes]:
    """A minimal WSGI app serving :func:`metrics_payload` (for a standalone exporter)."""
    if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
        start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
        return [b""]
    body, ctype = metrics_payload()
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]
