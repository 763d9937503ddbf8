"""``hdp status``: the latest DAG runs and their figures, for operators.

Answers "what failed last night, in which task, on which holder's data, and how many rows
were quarantined" without the Airflow UI: ``hdp status --since 24h --failed``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import click

from pipelines.monitoring import store

_SPAN = re.compile(r"^(\d+)([mhd])$")


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``30m``, ``24h``, ``7d`` (ago) or an ISO date/time (UTC if no offset)."""
    now = now or datetime.now(UTC)
    m = _SPAN.match(text.strip())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        return now - timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[unit]: n})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: use e.g. 30m, 24h, 7d or an ISO date like 2026-11-21") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}".replace(",", " ")


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _ts(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def render_runs(runs: list[store.DagRunSummary], quarantine: dict[tuple[str, str], list]) -> str:
    """Human-readable report (pure, for tests)."""
    if not runs:
        return "No DAG runs recorded yet (run metrics are written by the DAGs' task callbacks).\n"
    out: list[str] = []
    for run in runs:
        out.append(f"{run.dag_id}  {run.run_id}")
        out.append(
            f"  state {run.state.upper()}  started {_ts(run.started_at)} UTC  duration {_dur(run.duration_s)}"
            f"  quarantined {_n(run.rows_quarantined)}  checks failed {_n(run.checks_failed)}"
        )
        header = (
            "task",
            "holder",
            "source",
            "state",
            "try",
            "rows in",
            "rows out",
            "quarant.",
            "checks",
            "duration",
            "error",
        )
        rows = [header]
        for t in run.tasks:
            task = t.task_id if t.map_index < 0 else f"{t.task_id}[{t.map_index}]"
            rows.append(
                (
                    task,
                    t.holder or "-",
                    t.source or "-",
                    t.state,
                    str(t.try_number),
                    _n(t.rows_in),
                    _n(t.rows_out),
                    _n(t.rows_quarantined),
                    _n(t.checks_failed),
                    _dur(t.duration_s),
                    t.error_type or "",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for r in rows:
            out.append("    " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip())
        reasons = quarantine.get((run.dag_id, run.run_id)) or []
        if reasons:
            out.append("  quarantined by reason:")
            for task_id, holder, reason, n in reasons:
                out.append(f"    {task_id}  {holder or '-'}  {reason}  {_n(n)}")
        out.append("")
    return "\n".join(out) + "\n"


def runs_as_json(runs: list[store.DagRunSummary], quarantine: dict[tuple[str, str], list]) -> str:
    def task(t: store.TaskRun) -> dict:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in t.__dict__.items()}

    return json.dumps(
        [
            {
                "dag_id": r.dag_id,
                "run_id": r.run_id,
                "state": r.state,
                "started_at": r.started_at.isoformat(),
                "ended_at": r.ended_at.isoformat() if r.ended_at else None,
                "duration_s": r.duration_s,
                "rows_quarantined": r.rows_quarantined,
                "checks_failed": r.checks_failed,
                "failed_tasks": [t.task_id for t in r.failed_tasks],
                "quarantined_by_reason": [
                    {"task_id": q[0], "holder": q[1], "reason_code": q[2], "rows": q[3]}
                    for q in quarantine.get((r.dag_id, r.run_id), [])
                ],
                "tasks": [task(t) for t in r.tasks],
            }
            for r in runs
        ],
        indent=2,
    )


@click.command()
@click.option("--limit", "-n", default=10, show_default=True, help="How many DAG runs to show, newest first.")
@click.option("--dag", "dag_id", default=None, help="Only this DAG (e.g. ingest__ndr).")
@click.option("--since", default=None, help="Only runs started since: 30m, 24h, 7d or an ISO date.")
@click.option("--failed", "failed_only", is_flag=True, help="Only runs with a failed task.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(limit: int, dag_id: str | None, since: str | None, failed_only: bool, as_json: bool) -> None:
    """Latest pipeline runs: state, failed tasks, holder, rows in/out/quarantined, checks, durations."""
    runs = store.latest_runs(
        limit=limit, dag_id=dag_id, since=parse_since(since) if since else None, failed_only=failed_only
    )
    quarantine = {(r.dag_id, r.run_id): store.quarantine_by_reason(r.dag_id, r.run_id) for r in runs}
    click.echo(runs_as_json(runs, quarantine) if as_json else render_runs(runs, quarantine), nl=False)
