"""The run-metrics store: one row per task run plus its detailed figures.

SQLAlchemy Core over SQLite (development, default ``$HDP_HOME/monitoring/metrics.sqlite``)
or Postgres (production: ``HDP_METRICS_URL``; every Celery worker writes to it, so it cannot
be a local file). Two tables:

``task_run``     one row per (dag_id, run_id, task_id, map_index): state, holder, source,
                 duration, rows in/out/quarantined, checks failed, error type. A retry of
                 the same task replaces its row, so re-running a task never double-counts.
``task_metric``  the detail behind it: quarantined rows per reason code and every other
                 numeric figure the task returned, keyed the same way plus (name, label).

Only counts, ids and exception *class names* are stored: never a message, never a value.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from hdp.settings import SettingsError, get_settings
from pipelines.monitoring.figures import TaskFigures, TaskIdentity

METRICS_URL_ENV = "HDP_METRICS_URL"

#: Task states we record (Airflow's names).
RUNNING, SUCCESS, FAILED, UP_FOR_RETRY = "running", "success", "failed", "up_for_retry"

metadata = sa.MetaData()


def _key_columns() -> tuple[sa.Column, ...]:
    """Airflow's identity of a task run (a column object belongs to one table: fresh each time)."""
    return (
        sa.Column("dag_id", sa.String(250), primary_key=True),
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("task_id", sa.String(250), primary_key=True),
        sa.Column("map_index", sa.Integer, primary_key=True),
    )


task_run = sa.Table(
    "hdp_task_run",
    metadata,
    *_key_columns(),
    sa.Column("stage", sa.String(64), nullable=False),
    sa.Column("holder", sa.String(80)),
    sa.Column("source", sa.String(80)),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("try_number", sa.Integer, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    sa.Column("duration_s", sa.Float),
    sa.Column("rows_in", sa.BigInteger),
    sa.Column("rows_out", sa.BigInteger),
    sa.Column("rows_quarantined", sa.BigInteger),
    sa.Column("checks_failed", sa.Integer),
    sa.Column("error_type", sa.String(120)),
    sa.Index("ix_hdp_task_run_started", "started_at"),
)

task_metric = sa.Table(
    "hdp_task_metric",
    metadata,
    *_key_columns(),
    sa.Column("name", sa.String(120), primary_key=True),
    sa.Column("label", sa.String(120), primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
)

#: name used in task_metric for the per-reason quarantine breakdown
QUARANTINED = "quarantined"


def metrics_url() -> str:
    """``HDP_METRICS_URL``, else SQLite under ``$HDP_HOME/monitoring/``; production refuses SQLite."""
    settings = get_settings()
    url = settings.metrics_url or f"sqlite:///{settings.home / 'monitoring' / 'metrics.sqlite'}"
    if settings.is_production and url.startswith("sqlite"):
        raise SettingsError(
            f"production needs {METRICS_URL_ENV} pointing at Postgres: every worker records run metrics"
        )
    return url


_engines: dict[str, Engine] = {}
_ready: set[str] = set()
_lock = threading.Lock()


def _engine(url: str) -> Engine:
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
                # Several task processes write at once: wait for the file lock, don't fail.
                engine = sa.create_engine(url, connect_args={"timeout": 60})
            else:
                engine = sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2)
            _engines[url] = engine
        return engine


def ensure_schema(url: str) -> Engine:
    """Create the tables if missing (idempotent, safe when workers race to do it)."""
    engine = _engine(url)
    if url in _ready:
        return engine
    for attempt in range(3):
        try:
            metadata.create_all(engine, checkfirst=True)
            break
        except (IntegrityError, ProgrammingError, OperationalError):
            # Two workers creating the same table at once on Postgres: the loser sees a
            # duplicate-type error; the table exists now, so check again.
            if attempt == 2:
                raise
    _ready.add(url)
    return engine


def dispose_all() -> None:
    """Close pooled connections (tests dropping databases; forked workers)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _ready.clear()


@contextmanager
def _begin(url: str | None) -> Iterator[Connection]:
    engine = ensure_schema(url or metrics_url())
    with engine.begin() as con:
        yield con


def _key(ident: TaskIdentity) -> dict[str, object]:
    return {
        "dag_id": ident.dag_id,
        "run_id": ident.run_id,
        "task_id": ident.task_id,
        "map_index": ident.map_index,
    }


def _where(table: sa.Table, ident: TaskIdentity) -> sa.ColumnElement[bool]:
    return sa.and_(*(table.c[k] == v for k, v in _key(ident).items()))


def _now() -> datetime:
    return datetime.now(UTC)


def record_start(ident: TaskIdentity, *, started_at: datetime | None = None, url: str | None = None) -> None:
    """A task began (or began again): its row says ``running`` with no figures yet."""
    record(ident, state=RUNNING, started_at=started_at or _now(), url=url)


def record(
    ident: TaskIdentity,
    *,
    state: str,
    figures: TaskFigures | None = None,
    started_at: datetime | None = None,
    ended_at: datetime | None = None,
    error_type: str | None = None,
    url: str | None = None,
) -> None:
    """Write (replace) the row of one task run and its detailed figures, in one transaction."""
    figures = figures or TaskFigures()
    row = {
        **_key(ident),
        "stage": ident.stage,
        "holder": figures.holder or ident.dag_holder,
        "source": figures.source or ident.task_source,
        "state": state,
        "try_number": ident.try_number,
        "ended_at": ended_at,
        "rows_in": figures.rows_in,
        "rows_out": figures.rows_out,
        "rows_quarantined": figures.rows_quarantined,
        "checks_failed": figures.checks_failed,
        "error_type": error_type[:120] if error_type else None,
    }
    details = [
        {**_key(ident), "name": QUARANTINED, "label": reason, "value": float(n)}
        for reason, n in figures.quarantined.items()
    ]
    details += [
        {**_key(ident), "name": name[:120], "label": label[:120], "value": value}
        for (name, label), value in figures.extra.items()
    ]
    with _begin(url) as con:
        if started_at is None:
            # Keep the start time the start record saw when the caller does not know it.
            previous = con.execute(sa.select(task_run.c.started_at).where(_where(task_run, ident))).first()
            recorded = _aware(previous.started_at) if previous is not None else None
            started_at = recorded or ended_at or _now()
        row["started_at"] = _utc(started_at)
        ended_at = _utc(ended_at) if ended_at else None
        row["ended_at"] = ended_at
        row["duration_s"] = (ended_at - started_at).total_seconds() if ended_at else None
        con.execute(sa.delete(task_run).where(_where(task_run, ident)))
        con.execute(sa.delete(task_metric).where(_where(task_metric, ident)))
        con.execute(sa.insert(task_run), [row])
        if details:
            con.execute(sa.insert(task_metric), details)


def _utc(value: datetime) -> datetime:
    # SQLite keeps no offset: store every time as UTC so comparisons and ordering hold.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands datetimes back naive; everything we store is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


# -- reading -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRun:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    stage: str
    holder: str | None
    source: str | None
    state: str
    try_number: int
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    rows_in: int | None
    rows_out: int | None
    rows_quarantined: int | None
    checks_failed: int | None
    error_type: str | None


@dataclass(frozen=True)
class DagRunSummary:
    dag_id: str
    run_id: str
    state: str  # failed if any task failed, running if any still runs or waits to retry, else success
    started_at: datetime
    ended_at: datetime | None
    tasks: tuple[TaskRun, ...]

    @property
    def duration_s(self) -> float | None:
        return (self.ended_at - self.started_at).total_seconds() if self.ended_at else None

    @property
    def failed_tasks(self) -> tuple[TaskRun, ...]:
        return tuple(t for t in self.tasks if t.state == FAILED)

    @property
    def rows_quarantined(self) -> int:
        return sum(t.rows_quarantined or 0 for t in self.tasks)

    @property
    def checks_failed(self) -> int:
        return sum(t.checks_failed or 0 for t in self.tasks)


def _task_run(row: sa.Row) -> TaskRun:
    values = dict(row._mapping)
    values["started_at"] = _aware(values["started_at"])
    values["ended_at"] = _aware(values["ended_at"])
    return TaskRun(**values)


def dag_run_state(tasks: Sequence[TaskRun]) -> str:
    states = {t.state for t in tasks}
    if FAILED in states:
        return FAILED
    if states & {RUNNING, UP_FOR_RETRY}:
        return RUNNING
    return SUCCESS


def latest_runs(
    *,
    limit: int = 10,
    dag_id: str | None = None,
    since: datetime | None = None,
    failed_only: bool = False,
    url: str | None = None,
) -> list[DagRunSummary]:
    """The most recent DAG runs (newest first) with their task rows."""
    with _begin(url) as con:
        starts = sa.select(
            task_run.c.dag_id, task_run.c.run_id, sa.func.min(task_run.c.started_at).label("first_start")
        )
        if dag_id:
            starts = starts.where(task_run.c.dag_id == dag_id)
        starts = starts.group_by(task_run.c.dag_id, task_run.c.run_id)
        if since is not None:
            starts = starts.having(sa.func.min(task_run.c.started_at) >= since)
        if failed_only:
            starts = starts.having(sa.func.sum(sa.case((task_run.c.state == FAILED, 1), else_=0)) > 0)
        # Newest first; the run-limit applies before the task rows are fetched.
        picked = con.execute(starts.order_by(sa.desc("first_start")).limit(limit)).all()
        runs: list[DagRunSummary] = []
        for dag, run, _first_start in picked:
            rows = con.execute(
                sa.select(task_run)
                .where(task_run.c.dag_id == dag, task_run.c.run_id == run)
                .order_by(task_run.c.started_at, task_run.c.task_id, task_run.c.map_index)
            ).all()
            tasks = tuple(_task_run(r) for r in rows)
            ends = [t.ended_at for t in tasks]
            state = dag_run_state(tasks)
            runs.append(
                DagRunSummary(
                    dag_id=dag,
                    run_id=run,
                    state=state,
                    started_at=min(t.started_at for t in tasks),
                    ended_at=None if state == RUNNING or None in ends else max(e for e in ends if e),
                    tasks=tasks,
                )
            )
    return runs


def task_details(ident: TaskIdentity, *, url: str | None = None) -> dict[tuple[str, str], float]:
    """(name, label) → value for one task run (quarantine reasons under ``quarantined``)."""
    with _begin(url) as con:
        rows = con.execute(
            sa.select(task_metric.c.name, task_metric.c.label, task_metric.c.value).where(
                _where(task_metric, ident)
            )
        ).all()
    return {(r.name, r.label): r.value for r in rows}


#: where a stage that reports its quarantine as a plain total keeps the breakdown by reason
#: (the pseudonymisation stage: ``quarantined`` is a total, ``quarantined_by_reason`` the codes)
QUARANTINED_BY_REASON = "quarantined_by_reason"
#: files read through a conversion to UTF-8, by notice code (the ingest stages' ``files_converted``)
FILES_CONVERTED = "files_converted"


def _labelled_details(
    con: Connection, dag_id: str, run_id: str, names: Sequence[str]
) -> list[tuple[str, int, str | None, str, str, int]]:
    """(task_id, map_index, holder, name, label, value) of the given figure names in one DAG run."""
    rows = con.execute(
        sa.select(
            task_metric.c.task_id,
            task_metric.c.map_index,
            task_run.c.holder,
            task_metric.c.name,
            task_metric.c.label,
            task_metric.c.value,
        )
        .join(
            task_run,
            sa.and_(
                *(task_run.c[k] == task_metric.c[k] for k in ("dag_id", "run_id", "task_id", "map_index"))
            ),
        )
        .where(task_metric.c.dag_id == dag_id, task_metric.c.run_id == run_id, task_metric.c.name.in_(names))
        .order_by(task_metric.c.task_id, task_metric.c.map_index, task_metric.c.label)
    ).all()
    return [(r[0], int(r[1]), r[2], r[3], r[4], int(r[5])) for r in rows]


def quarantine_by_reason(
    dag_id: str, run_id: str, *, url: str | None = None
) -> list[tuple[str, str | None, str, int]]:
    """(task_id, holder, reason_code, rows) for one DAG run.

    A task that reported only a total (kept under ``unspecified``) but also its breakdown under
    ``quarantined_by_reason`` is shown by that breakdown, so operators see the real reason codes.
    """
    with _begin(url) as con:
        details = _labelled_details(con, dag_id, run_id, (QUARANTINED, QUARANTINED_BY_REASON))
    by_task: dict[tuple[str, int], dict[str, list[tuple[str | None, str, int]]]] = {}
    for task_id, map_index, holder, name, label, value in details:
        by_task.setdefault((task_id, map_index), {}).setdefault(name, []).append((holder, label, value))
    out: list[tuple[str, str | None, str, int]] = []
    for (task_id, _map_index), named in by_task.items():
        rows = named.get(QUARANTINED, [])
        if QUARANTINED_BY_REASON in named and all(label == "unspecified" for _, label, _ in rows):
            rows = named[QUARANTINED_BY_REASON]
        out.extend((task_id, holder, label, value) for holder, label, value in rows if value)
    return out


def files_converted(
    dag_id: str, run_id: str, *, url: str | None = None
) -> list[tuple[str, str | None, str, int]]:
    """(task_id, holder, notice_code, files) for one DAG run: files read through a conversion to UTF-8."""
    with _begin(url) as con:
        details = _labelled_details(con, dag_id, run_id, (FILES_CONVERTED,))
    return [(task_id, holder, label, value) for task_id, _, holder, _, label, value in details if value]


def run_count(*, dag_id: str | None = None, since: datetime | None = None, url: str | None = None) -> int:
    """How many DAG runs are recorded (optionally of one DAG, started since a time)."""
    with _begin(url) as con:
        starts = sa.select(task_run.c.dag_id, task_run.c.run_id).group_by(
            task_run.c.dag_id, task_run.c.run_id
        )
        if dag_id:
            starts = starts.where(task_run.c.dag_id == dag_id)
        if since is not None:
            starts = starts.having(sa.func.min(task_run.c.started_at) >= since)
        return int(con.execute(sa.select(sa.func.count()).select_from(starts.subquery())).scalar_one())


def first_run_started(*, url: str | None = None) -> datetime | None:
    """When the earliest recorded task run started (None when nothing is recorded)."""
    with _begin(url) as con:
        return _aware(con.execute(sa.select(sa.func.min(task_run.c.started_at))).scalar_one())


def latest_per_dag(*, url: str | None = None) -> list[DagRunSummary]:
    """The newest run of every DAG that has recorded anything (for the metrics endpoint)."""
    with _begin(url) as con:
        dag_ids = [r[0] for r in con.execute(sa.select(task_run.c.dag_id).distinct()).all()]
    out: list[DagRunSummary] = []
    for dag in sorted(dag_ids):
        out.extend(latest_runs(limit=1, dag_id=dag, url=url))
    return out


def task_counts_by_state(*, url: str | None = None) -> dict[tuple[str, str], int]:
    """(dag_id, state) → number of task runs recorded in that state (a retry replaces its row)."""
    with _begin(url) as con:
        rows = con.execute(
            sa.select(task_run.c.dag_id, task_run.c.state, sa.func.count()).group_by(
                task_run.c.dag_id, task_run.c.state
            )
        ).all()
    return {(r[0], r[1]): int(r[2]) for r in rows}


def all_details(dag_id: str, run_id: str, *, url: str | None = None) -> list[sa.Row]:
    with _begin(url) as con:
        return list(
            con.execute(
                sa.select(task_metric).where(task_metric.c.dag_id == dag_id, task_metric.c.run_id == run_id)
            ).all()
        )
