"""The platform's DAGs: wiring only. The work lives in ``edge.stages``.

Per data holder (each a separate data controller, so each could run as its own node):
  ingest__<holder>       landing files → raw zone, then the raw quality gate
  pseudonymise__<holder> raw zone → research zone, then the research quality gate
and one ``release`` DAG that builds, gates and publishes the releases of approved requests.
Assets chain them: a holder's fresh raw zone triggers its pseudonymisation; fresh research
zones trigger the release DAG.

Each task imports ``edge.stages`` when it runs, not when the file is parsed: the scheduler parses
this file often, and the stages bring DuckDB, pyarrow and SQLAlchemy work with them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, dag, get_current_context, task

from hdp.settings import Holder, local_holders
from pipelines.monitoring.callbacks import CALLBACKS
from privacy.audit_key import configure as configure_audit_key

# This process's edge: audit logs under $HDP_HOME/audit are keyed with the key store's audit key.
configure_audit_key()

# Every task touches files or databases: retry transient failures, never hang forever.
# The callbacks record each task's run metrics (its returned counts) and alert on failure.
DEFAULT_ARGS = {
    "retries": 2,
    "retry_delay": timedelta(seconds=20),
    "execution_timeout": timedelta(minutes=30),
    **CALLBACKS,
}
START = datetime(2026, 1, 1)


def raw_asset(holder_id: str) -> Asset:
    return Asset(name=f"raw__{holder_id}", uri=f"hdp://raw/{holder_id}")


def research_asset(holder_id: str) -> Asset:
    return Asset(name=f"research__{holder_id}", uri=f"hdp://research/{holder_id}")


RELEASE_ASSET = Asset(name="releases", uri="hdp://releases")


def _run_id() -> str:
    return str(get_current_context()["run_id"])


@task
def ingest(holder_id: str, source: str) -> dict:
    from edge import stages

    return stages.ingest_source(holder_id, source)


# A quality verdict is a function of the data: retrying it cannot change it, only delay the alert.
@task(retries=0)
def validate(zone: str, holder_id: str | None = None) -> dict:
    from edge import stages

    return stages.validate(zone, holder_id=holder_id, run_id=_run_id())


@task
def pseudonymise(holder_id: str) -> dict:
    from edge import stages

    return stages.pseudonymise(holder_id)


@task
def ready_requests() -> list[int]:
    from edge import stages

    return stages.requests_ready_for_release()


@task
def delete_ended_releases() -> dict:
    from edge import stages

    return stages.delete_ended_releases()


@task(outlets=[RELEASE_ASSET])
def build_release(request_id: int) -> dict:
    from edge import stages

    return stages.build_release(request_id, run_id=_run_id())


def ingest_dag(holder: Holder):
    @dag(
        dag_id=f"ingest__{holder.id}",
        schedule="@daily",
        start_date=START,
        catchup=False,
        default_args=DEFAULT_ARGS,
        tags=["ingest", holder.id],
        doc_md=f"Ingest {holder.name}'s deliveries.",
    )
    def _dag():
        loaded = [ingest.override(task_id=f"ingest_{source}")(holder.id, source) for source in holder.sources]
        loaded >> validate.override(task_id="validate_raw", outlets=[raw_asset(holder.id)])("raw", holder.id)

    return _dag()


def pseudonymise_dag(holder: Holder):
    @dag(
        dag_id=f"pseudonymise__{holder.id}",
        schedule=[raw_asset(holder.id)],
        start_date=START,
        catchup=False,
        default_args=DEFAULT_ARGS,
        tags=["pseudonymise", holder.id],
        doc_md=f"Pseudonymise {holder.name}'s raw zone into the research zone.",
    )
    def _dag():
        pseudonymise(holder.id) >> validate.override(
            task_id="validate_research", outlets=[research_asset(holder.id)]
        )("research", holder.id)

    return _dag()


@dag(
    dag_id="release",
    schedule=[research_asset(h.id) for h in local_holders()],
    start_date=START,
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=["release"],
    doc_md="Delete releases whose permit ended; build, gate and publish the release of every request "
    "approved by all its holders.",
)
def release_dag():
    delete_ended_releases() >> build_release.expand(request_id=ready_requests())


for _holder in local_holders():
    globals()[f"ingest__{_holder.id}"] = ingest_dag(_holder)
    globals()[f"pseudonymise__{_holder.id}"] = pseudonymise_dag(_holder)
release = release_dag()
