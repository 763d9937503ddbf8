"""Airflow task callbacks that record run metrics and raise alerts.

Set in the DAGs' ``default_args`` (``dags/hdp_pipeline.py``), so every task of every DAG
is covered without touching the task code:

* ``on_execute_callback``  → the task's row says ``running`` (a killed worker leaves it so
  until the retry replaces it, which is itself a signal)
* ``on_success_callback``  → the task's returned counts dict (its XCom) becomes its figures
* ``on_retry_callback``    → ``up_for_retry`` with the exception class
* ``on_failure_callback``  → ``failed`` with the exception class, then an alert

Callbacks get Airflow's context dict; this module reads it by attribute names only and
never imports Airflow (docs/ARCHITECTURE.md). Airflow logs and swallows exceptions raised
by callbacks; we catch the store's own errors first so the alert still goes out when the
metrics database is down.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from pipelines.monitoring import alerts, store
from pipelines.monitoring.figures import TaskFigures, figures_from_counts, identity_from_context

log = logging.getLogger(__name__)


def _ti(context: Mapping[str, Any]) -> Any:
    return context.get("ti") or context.get("task_instance")


def _when(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None


def _returned_counts(context: Mapping[str, Any]) -> object:
    """The task's own return value (its ``return_value`` XCom), or None if unavailable."""
    ti = _ti(context)
    pull = getattr(ti, "xcom_pull", None)
    if pull is None:
        return None
    kwargs: dict[str, Any] = {"task_ids": ti.task_id}
    if getattr(ti, "map_index", -1) is not None and ti.map_index >= 0:
        kwargs["map_indexes"] = ti.map_index
    return pull(**kwargs)


def _exception_figures(exc: object) -> TaskFigures:
    """Counts an exception chose to carry: ``counts``/``summary()`` on it or on its ``result``
    (``pipelines.quality.results.QualityGateFailed`` carries the gate result)."""
    for owner, attr in ((exc, "counts"), (exc, "summary"), (getattr(exc, "result", None), "summary")):
        value = getattr(owner, attr, None)
        if callable(value):
            try:
                value = value()
            except TypeError:
                continue
        if isinstance(value, Mapping):
            return figures_from_counts(value)
    return TaskFigures()


def _error_type(exc: object) -> str | None:
    if exc is None:
        return None
    if isinstance(exc, BaseException):
        return type(exc).__name__
    # Callbacks run by the DAG processor (e.g. after a worker died) may pass a string reason.
    return "TaskInstanceHeartbeatTimeout" if "heartbeat" in str(exc).lower() else "ExternalFailure"


def on_execute(context: Mapping[str, Any]) -> None:
    ident = identity_from_context(context)
    try:
        store.record_start(ident, started_at=_when(getattr(_ti(context), "start_date", None)))
    except SQLAlchemyError:
        log.exception("run metrics: could not record the start of %s", ident.task_id)


def on_success(context: Mapping[str, Any]) -> None:
    ident = identity_from_context(context)
    ti = _ti(context)
    figures = figures_from_counts(_returned_counts(context))
    try:
        store.record(
            ident,
            state=store.SUCCESS,
            figures=figures,
            started_at=_when(getattr(ti, "start_date", None)),
            ended_at=_when(getattr(ti, "end_date", None)) or datetime.now(UTC),
        )
    except SQLAlchemyError:
        log.exception("run metrics: could not record %s", ident.task_id)


def _record_failure(context: Mapping[str, Any], state: str) -> tuple[Any, TaskFigures, str | None]:
    ident = identity_from_context(context)
    ti = _ti(context)
    exc = context.get("exception")
    figures = _exception_figures(exc)
    error_type = _error_type(exc)
    try:
        store.record(
            ident,
            state=state,
            figures=figures,
            error_type=error_type,
            started_at=_when(getattr(ti, "start_date", None)),
            ended_at=_when(getattr(ti, "end_date", None)) or datetime.now(UTC),
        )
    except SQLAlchemyError:
        log.exception("run metrics: could not record the failure of %s", ident.task_id)
    return ident, figures, error_type


def on_retry(context: Mapping[str, Any]) -> None:
    _record_failure(context, store.UP_FOR_RETRY)


def on_failure(context: Mapping[str, Any]) -> None:
    ident, figures, error_type = _record_failure(context, store.FAILED)
    alerts.send_alert(alerts.build_alert(ident, error_type=error_type, figures=figures))


#: Ready to splat into a DAG's ``default_args``.
CALLBACKS = {
    "on_execute_callback": on_execute,
    "on_success_callback": on_success,
    "on_retry_callback": on_retry,
    "on_failure_callback": on_failure,
}
