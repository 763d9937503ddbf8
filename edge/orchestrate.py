"""Drive the DAGs through Airflow from the command line (``hdp run``, ``hdp demo``, e2e tests).

This is the one place outside ``dags/`` that imports Airflow: it prepares the metadata
database and runs DAGs with ``dag.test()``, which executes every task through Airflow's own
task runner in this process, in dependency order. The scheduler path (assets triggering the
next DAG, Celery workers) is exercised by the production-shape integration test.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

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


def pipeline_dag_ids(stage: str = "all") -> list[str]:
    ids = {
        "ingest": [f"ingest__{h.id}" for h in local_holders()],
        "pseudonymise": [f"pseudonymise__{h.id}" for h in local_holders()],
        "release": ["release"],
    }
    if stage == "all":
        return ids["ingest"] + ids["pseudonymise"] + ids["release"]
    return ids[stage]


def run_dags(dag_ids: Iterable[str], *, raise_on_failure: bool = True) -> list[DagRunOutcome]:
    """Run each DAG once, in the order given (the order the assets would trigger them)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    if bag.import_errors:
        raise DagRunFailed(f"DAG files failed to import: {sorted(bag.import_errors)}")
    outcomes = []
    for dag_id in dag_ids:
        dag = bag.get_dag(dag_id)
        if dag is None:
            raise DagRunFailed(f"no DAG named {dag_id!r}")
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
