"""Drive the DAGs through Airflow from the command line (``hdp run``, ``hdp demo``, e2e tests).

This is the one place outside ``dags/`` that imports Airflow: it prepares the metadata
database and runs DAGs with ``dag.test()``, which executes every task through Airflow's own
task runner in this process, in dependency order. The scheduler path (assets triggering the
next DAG, Celery workers) is exercised by the production-shape integration test.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pluggy

from hdp.settings import REPO_ROOT, local_holders

log = logging.getLogger(__name__)


class DagRunFailed(RuntimeError):
    """A DAG run ended in a state other than success."""


@dataclass(frozen=True)
class DagRunOutcome:
    dag_id: str
    run_id: str
    state: str
    failed_tasks: tuple[str, ...]


def migrate_metadata_db() -> None:
    """Create or upgrade Airflow's metadata database (idempotent, ~6 s on SQLite)."""
    from airflow.utils.db import upgradedb

    upgradedb()


#: marks Airflow listener hooks (Airflow's task SDK listener manager is the pluggy project "airflow")
hook = pluggy.HookimplMarker("airflow")


class TaskLogFiles(logging.Handler):
    """The task log files the Airflow UI reads, for tasks that ``dag.test()`` runs in this process.

    A worker's task supervisor writes each try's log to ``base_log_folder`` under the path
    ``log_filename_template`` renders; ``dag.test()`` runs the task in this process and only
    prints to the console, so the UI showed empty logs. Registered as an Airflow listener for the
    length of :func:`run_dags`: from a task's start to its end, every record of this process (the
    stages' and Great Expectations' standard logging, and Airflow's own structlog events, which
    include the traceback of a failure) is also written to that file, as the JSON lines the UI
    parses. Only what the console shows is written: counts, ids and exception text, as before.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self._file: IO[str] | None = None
        self._empty = True
        self._lock_file = threading.Lock()
        self.paths: list[str] = []

    # -- Airflow listener hooks (task SDK's on_task_instance_*) ---------------------------
    @hook
    def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
        from airflow.sdk.log import init_log_file
        from airflow.utils.helpers import log_filename_template_renderer

        relative = log_filename_template_renderer()(ti=task_instance, try_number=task_instance.try_number)
        path = init_log_file(relative)
        with self._lock_file:
            if self._file is not None:
                self._file.close()
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed when the task ends
            self._empty = True
        self.paths.append(str(path))

    @hook
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        self._close()

    @hook
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        self._close()

    @hook
    def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
        self._close()

    def _close(self) -> None:
        with self._lock_file:
            if self._file is not None:
                self._file.close()
                self._file = None

    # -- writing ------------------------------------------------------------------------
    def _write(self, level: str, logger: str, event: str, error: str | None) -> None:
        line = {
            "timestamp": datetime.now(UTC).isoformat(),
            "level": level.lower(),
            "logger": logger,
            "event": event if error is None else f"{event}\n{error}",
        }
        with self._lock_file:
            if self._file is not None and not (self._empty and event == "::endgroup::"):
                # (the task starts listening inside Airflow's pre-execute group: skip its end marker)
                self._empty = False
                self._file.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
                self._file.flush()

    def emit(self, record: logging.LogRecord) -> None:  # standard logging
        try:
            error = "".join(traceback.format_exception(*record.exc_info)) if record.exc_info else None
            self._write(record.levelname, record.name, record.getMessage(), error)
        except Exception:  # a log line must never fail the task
            self.handleError(record)

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        """A structlog processor: copies the event, passes it on unchanged."""
        if self._file is not None:
            exc = event_dict.get("exc_info")
            error = None
            if isinstance(exc, BaseException):
                error = "".join(traceback.format_exception(exc))
            elif exc:
                error = traceback.format_exc()
            name = event_dict.get("logger") or event_dict.get("logger_name") or getattr(logger, "name", "")
            self._write(method_name, str(name), str(event_dict.get("event", "")), error)
        return event_dict

    @contextmanager
    def installed(self) -> Iterator[TaskLogFiles]:
        """Listen to this process's task runs, then stop listening."""
        import structlog
        from airflow.sdk.listener import get_listener_manager

        manager = get_listener_manager()
        manager.add_listener(self)
        # In place: loggers already bound hold this very list.
        processors = structlog.get_config()["processors"]
        processors.insert(0, self)
        root = logging.getLogger()
        root.addHandler(self)
        # Great Expectations logs hundreds of lines about its own API docs at import, at INFO.
        logging.getLogger("great_expectations._docs_decorators").setLevel(logging.WARNING)
        try:
            yield self
        finally:
            root.removeHandler(self)
            if self in processors:
                processors.remove(self)
            manager.pm.unregister(self)
            self._close()


def pipeline_dag_ids(stage: str = "all") -> list[str]:
    ids = {
        "ingest": [f"ingest__{h.id}" for h in local_holders()],
        "pseudonymise": [f"pseudonymise__{h.id}" for h in local_holders()],
        "release": ["release"],
    }
    if stage == "all":
        return ids["ingest"] + ids["pseudonymise"] + ids["release"]
    return ids[stage]


def run_dags(
    dag_ids: Iterable[str], *, raise_on_failure: bool = True, dag_folder: Path | None = None
) -> list[DagRunOutcome]:
    """Run each DAG once, in the order given (the order the assets would trigger them); each task's
    log goes to the file the Airflow UI shows for it (see :class:`TaskLogFiles`)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dag_folder or REPO_ROOT / "dags"))
    if bag.import_errors:
        raise DagRunFailed(f"DAG files failed to import: {sorted(bag.import_errors)}")
    outcomes = []
    for dag_id in dag_ids:
        dag = bag.get_dag(dag_id)
        if dag is None:
            raise DagRunFailed(f"no DAG named {dag_id!r}")
        with TaskLogFiles().installed():
            run = dag.test()
        failed = tuple(sorted(ti.task_id for ti in run.get_task_instances() if ti.state == "failed"))
        outcome = DagRunOutcome(dag_id, run.run_id, str(run.state), failed)
        log.info("DAG %s run %s: %s", dag_id, run.run_id, outcome.state)
        outcomes.append(outcome)
        if raise_on_failure and outcome.state != "success":
            raise DagRunFailed(
                f"DAG {dag_id} ended {outcome.state}; failed tasks: {', '.join(failed) or 'none'}"
            )
    return outcomes
