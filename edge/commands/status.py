"""``hdp status``: the latest DAG runs and their figures, for operators.

Answers "what failed last night, in which task, on which holder's data, and how many rows
were quarantined" without the Airflow UI: ``hdp status --since 24h --failed``.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import click

from hdp import periods
from pipelines.monitoring import store


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``30m``, ``24h``, ``7d`` (ago) or an ISO date/time (UTC if no offset): :func:`hdp.periods.parse_since`."""
    try:
        return periods.parse_since(text, now=now)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


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


TASK_HEADER = (
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

Labelled = dict[tuple[str, str], list[tuple[str, str | None, str, int]]]


def _task_cells(t: store.TaskRun) -> tuple[str, ...]:
    task = t.task_id if t.map_index < 0 else f"{t.task_id}[{t.map_index}]"
    return (
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


def _run_line(run: store.DagRunSummary) -> str:
    return (
        f"state {run.state.upper()}  started {_ts(run.started_at)} UTC  duration {_dur(run.duration_s)}"
        f"  quarantined {_n(run.rows_quarantined)}  checks failed {_n(run.checks_failed)}"
    )


def nothing_to_show(failed_only: bool, recorded: int, first: datetime | None, since: datetime | None) -> str:
    """What to say when no run matches: an empty store is not the same as no failures."""
    if not recorded:
        return "No DAG runs recorded yet (run metrics are written by the DAGs' task callbacks).\n"
    when = _ts(since or first)
    runs = f"{recorded} run{'s' if recorded != 1 else ''} recorded"
    if failed_only:
        return f"No failed runs since {when} UTC; {runs}.\n"
    return f"No runs match; {runs} since {when} UTC.\n"


def render_runs(
    runs: list[store.DagRunSummary], quarantine: Labelled, converted: Labelled | None = None
) -> str:
    """Human-readable report (pure, for tests and for output that is not a terminal)."""
    if not runs:
        return "No DAG runs recorded yet (run metrics are written by the DAGs' task callbacks).\n"
    converted = converted or {}
    out: list[str] = []
    for run in runs:
        out.append(f"{run.dag_id}  {run.run_id}")
        out.append(f"  {_run_line(run)}")
        rows = [TASK_HEADER, *(_task_cells(t) for t in run.tasks)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(TASK_HEADER))]
        for r in rows:
            out.append("    " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip())
        for title, labelled in (("quarantined by reason", quarantine), ("files converted", converted)):
            entries = labelled.get((run.dag_id, run.run_id)) or []
            if entries:
                out.append(f"  {title}:")
                for task_id, holder, code, n in entries:
                    out.append(f"    {task_id}  {holder or '-'}  {code}  {_n(n)}")
        out.append("")
    return "\n".join(out) + "\n"


def print_rich(runs: list[store.DagRunSummary], quarantine: Labelled, converted: Labelled) -> None:
    """The same report as rich tables, for a terminal."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for run in runs:
        colour = {"failed": "red", "running": "yellow"}.get(run.state, "green")
        table = Table(
            title=f"{run.dag_id}  {run.run_id}",
            caption=_run_line(run),
            title_justify="left",
            caption_justify="left",
            title_style=f"bold {colour}",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        cells = [_task_cells(t) for t in run.tasks]
        # A terminal is narrow: leave out the columns no task of this run fills.
        shown = [
            i
            for i in range(len(TASK_HEADER))
            if i in (0, 3) or any(c[i] not in ("-", "", "1") for c in cells)
        ]
        for i in shown:
            numeric = 4 <= i <= 9
            table.add_column(
                TASK_HEADER[i], justify="right" if numeric else "left", no_wrap=numeric or i == 0
            )
        for t, c in zip(run.tasks, cells, strict=True):
            table.add_row(*(c[i] for i in shown), style="red" if t.state == store.FAILED else None)
        console.print(table)
        for title, labelled in (("quarantined by reason", quarantine), ("files converted", converted)):
            entries = labelled.get((run.dag_id, run.run_id)) or []
            if entries:
                detail = Table(title=title, title_justify="left", box=None, padding=(0, 2))
                for name in ("task", "holder", "code", "count"):
                    detail.add_column(name, justify="right" if name == "count" else "left")
                for task_id, holder, code, n in entries:
                    detail.add_row(task_id, holder or "-", code, _n(n))
                console.print(detail)
        console.print()


def runs_as_json(
    runs: list[store.DagRunSummary], quarantine: Labelled, converted: Labelled | None = None
) -> str:
    # the gate's verdict counts per task (pass, warn, fail, ...), from the detailed figures
    checks: dict[tuple[str, int], dict[str, int]] = {}
    for r in runs:
        for row in store.all_details(r.dag_id, r.run_id):
            if row.name == "checks":
                checks.setdefault((row.task_id, row.map_index), {})[row.label] = int(row.value)

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
                "files_converted": [
                    {"task_id": c[0], "holder": c[1], "notice_code": c[2], "files": c[3]}
                    for c in (converted or {}).get((r.dag_id, r.run_id), [])
                ],
                "tasks": [task(t) | {"checks": checks.get((t.task_id, t.map_index), {})} for t in r.tasks],
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
    """Latest pipeline runs: state, failed tasks, holder, rows in/out/quarantined (by reason), checks,
    files converted to UTF-8, durations."""
    since_at = parse_since(since) if since else None
    runs = store.latest_runs(limit=limit, dag_id=dag_id, since=since_at, failed_only=failed_only)
    quarantine = {(r.dag_id, r.run_id): store.quarantine_by_reason(r.dag_id, r.run_id) for r in runs}
    converted = {(r.dag_id, r.run_id): store.files_converted(r.dag_id, r.run_id) for r in runs}
    if as_json:
        click.echo(runs_as_json(runs, quarantine, converted), nl=False)
    elif not runs:
        recorded = store.run_count(dag_id=dag_id, since=since_at)
        click.echo(nothing_to_show(failed_only, recorded, store.first_run_started(), since_at), nl=False)
    elif sys.stdout.isatty():
        print_rich(runs, quarantine, converted)
    else:
        click.echo(render_runs(runs, quarantine, converted), nl=False)
