"""The production shape, natively: Airflow 3 with Postgres metadata, the CeleryExecutor on
Redis, the api-server, scheduler, dag-processor, triggerer and a Celery worker as separate
processes. One stack serves the module:

1. the whole pipeline runs once through the real scheduler (fixture ``pipeline``: each ingest
   DAG's scheduled run on unpausing, pseudonymise and release triggered by assets) and the
   release is checked;
2. a second request's release is triggered, every Celery worker is SIGKILLed (with its task
   processes) while ``build_release`` is writing, a new worker is started, and the retried
   task publishes a release whose Parquet files are byte-identical to an uninterrupted build
   of the same request.

Needs Postgres on 127.0.0.1:5432 (trust auth) and Redis on 127.0.0.1:6379: skipped with the
reason when they are unreachable, failed instead when CI is set.

Every wait draws on one budget (``HDP_IT_BUDGET_S``, default 1200 s) so a slow machine fails
with a message naming what was still pending, and the logs. ``pytest -s`` prints a timeline.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .services import postgres_reachable, redis_reachable

pytestmark = [pytest.mark.slow, pytest.mark.celery, pytest.mark.postgres, pytest.mark.timeout(1800)]

HOLDERS = ("ndr", "region_uppsala", "region_orebro", "region_skane")
INGEST = [f"ingest__{h}" for h in HOLDERS]
PSEUDONYMISE = [f"pseudonymise__{h}" for h in HOLDERS]
ALL_DAGS = [*INGEST, *PSEUDONYMISE, "release"]
RESEARCHER = "it.researcher"
#: Small but not degenerate: every region's Patient file must stay large enough that the
#: generator's minimum of one bad identifier per defect class (two classes) stays below the
#: raw gate's 5 % systemic threshold (150 persons give 2/33 = 6 % in Örebro and block).
PERSONS, SEED = 300, 11
BUDGET_S = float(os.environ.get("HDP_IT_BUDGET_S", "1200"))


def _prepare(stack, mp) -> None:
    """Runs in this process while ``airflow db migrate`` runs: settings, data, governance."""
    from edge.demo import STEWARDS
    from governance import service
    from governance import store as gov_store
    from hdp.settings import get_settings
    from pipelines.monitoring import store
    from privacy import audit_key
    from synthetic_data.generate import generate

    # This process (governance set-up, checks) sees the same settings as the workers.
    for key in ("HDP_HOME", "HDP_ENV", "HDP_GOVERNANCE_URL", "HDP_METRICS_URL", "HDP_KEK"):
        mp.setenv(key, stack.env[key])
    get_settings.cache_clear()
    store.dispose_all()
    # Keyed audit entries from this process too, as from every deployed process (the workers
    # key the governance log; an unkeyed entry after theirs is refused). Importing edge.cli
    # used to do this by accident when another test ran first.
    audit_key.configure()
    generate(persons=PERSONS, seed=SEED)
    url = get_settings().governance_url
    gov_store.upgrade(url)  # what the compose file's airflow-init does
    store.ensure_schema(store.metrics_url())
    with gov_store.session_scope(url) as session:
        service.create_user(session, name=RESEARCHER, roles=["researcher"], actor="it")
        for holder, names in STEWARDS.items():
            for name in names:
                service.create_user(session, name=name, roles=["steward"], holder_ids=[holder], actor="it")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    for reason in (postgres_reachable(), redis_reachable()):
        if reason:
            pytest.skip(reason)
    from hdp.settings import get_settings
    from pipelines.monitoring import store

    from . import procs
    from .airflow_stack import Budget, airflow_stack
    from .services import reap_stale_databases

    # Leftovers of a run that was killed before it could clean up (never a live run's).
    procs.reap_orphaned_stacks()
    reap_stale_databases()
    budget = Budget(BUDGET_S)
    root = tmp_path_factory.mktemp("celery_stack")
    home = root / "hdp_home"
    home.mkdir()
    with (
        pytest.MonkeyPatch.context() as mp,
        airflow_stack(root, home, budget, during_migration=lambda s: _prepare(s, mp)) as s,
    ):
        s.wait_dags(ALL_DAGS)
        print(f"\nstack up and DAGs parsed after {budget.elapsed():.0f} s")
        yield s
        print(f"\nmodule done after {budget.elapsed():.0f} s; load average {os.getloadavg()}")
        get_settings.cache_clear()
        store.dispose_all()


def approve_request() -> int:
    """A researcher's request over three holders, approved by every steward in scope."""
    from edge.demo import DEMO_REQUEST, STEWARDS
    from governance import service, store
    from hdp.settings import get_settings

    url = get_settings().governance_url
    with store.session_scope(url) as session:
        request_id = service.file_request(session, applicant=RESEARCHER, **DEMO_REQUEST)
        service.submit_request(session, request_id=request_id, actor=RESEARCHER)
    for holder in DEMO_REQUEST["holders"]:
        for name in STEWARDS[holder]:
            with store.session_scope(url) as session:
                service.decide(
                    session,
                    request_id=request_id,
                    holder_id=holder,
                    reviewer=name,
                    decision="approve",
                    justification="Integration test: scope matches the purpose.",
                )
    return request_id


def release_dir(request_id: int) -> Path:
    from hdp.settings import get_settings
    from pipelines.release import release_id_for

    return get_settings().releases_dir / release_id_for(request_id)


def check_release(path: Path) -> dict:
    """A complete, self-consistent release; returns its manifest."""
    from pipelines.release import sha256_file

    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["files"], "release has no data files"
    for name, meta in manifest["files"].items():
        assert sha256_file(path / name) == meta["sha256"], f"{name} differs from its manifest checksum"
    for table, rows in manifest["rows"].items():
        assert pq.read_metadata(path / f"{table}.parquet").num_rows == rows
    assert sum(manifest["rows"].values()) > 0
    assert not list(path.parent.glob(".staging-*")), "an interrupted attempt left its staging directory"
    return manifest


def _failures(stack, runs: dict[str, dict]) -> dict:
    return {
        d: [(t["task_id"], t["state"]) for t in stack.task_instances(d, r["dag_run_id"])]
        for d, r in runs.items()
        if r["state"] != "success"
    }


@pytest.fixture(scope="module")
def pipeline(stack) -> dict:
    """The whole pipeline, once per module: a request approved, every DAG unpaused, every run
    finished. Both tests use it (the kill test needs its research zones)."""
    started = time.monotonic()
    request_id = approve_request()
    for dag_id in [*PSEUDONYMISE, "release", *INGEST]:  # downstream first: no asset event is missed
        stack.set_paused(dag_id, False)
    # Unpausing an @daily DAG (catchup off) makes the scheduler create its latest scheduled run
    # at once, so nothing is triggered by hand (that would double-run ingest); assets do the rest.
    runs = stack.wait_runs(ALL_DAGS)
    print(f"\npipeline: {time.monotonic() - started:.0f} s from unpausing to the release\n{stack.timeline()}")
    return {"request_id": request_id, "runs": runs}


def test_full_pipeline_through_scheduler_and_celery(stack, pipeline):
    from click.testing import CliRunner

    from edge.commands.status import status
    from pipelines.monitoring import prometheus, store

    request_id, runs = pipeline["request_id"], pipeline["runs"]
    states = {d: r["state"] for d, r in runs.items()}
    assert states == dict.fromkeys(ALL_DAGS, "success"), _failures(stack, runs)
    assert {runs[d]["run_type"] for d in INGEST} == {"scheduled"}
    assert {runs[d]["run_type"] for d in [*PSEUDONYMISE, "release"]} == {"asset_triggered"}
    assert all(len([r for r in stack.all_runs() if r["dag_id"] == d]) == 1 for d in ALL_DAGS), (
        "a DAG ran twice"
    )

    manifest = check_release(release_dir(request_id))
    assert set(manifest["request"]["holders"]) == {"ndr", "region_uppsala", "region_orebro"}

    # Run metrics recorded by the task callbacks inside the Celery workers, in Postgres.
    recorded = {r.dag_id: r for r in store.latest_per_dag()}
    assert set(recorded) == set(ALL_DAGS)
    for dag_id in ALL_DAGS:
        assert recorded[dag_id].run_id == runs[dag_id]["dag_run_id"]
        assert recorded[dag_id].state == "success"
    ingest_ndr = {t.task_id: t for t in recorded["ingest__ndr"].tasks}
    # The injected defects were quarantined inside the worker, and counted.
    assert ingest_ndr["ingest_register"].rows_in > ingest_ndr["ingest_register"].rows_out > 0
    assert ingest_ndr["ingest_register"].holder == "ndr" and ingest_ndr["ingest_register"].duration_s > 0
    out = CliRunner().invoke(status, ["--limit", "20"]).output
    assert all(d in out for d in ALL_DAGS) and "FAILED" not in out
    body, _ = prometheus.metrics_payload()
    assert b'hdp_dag_run_failed{dag_id="release"} 0.0' in body


def _wait_for(path: Path, stack, cap_s: float) -> None:
    """Until ``path`` exists (polled fast: the kill must land while the task is writing)."""
    deadline = stack.budget.deadline(cap_s)
    last_check = 0.0
    while not path.exists():
        now = time.monotonic()
        if now - last_check > 2:
            stack.check_alive()
            last_check = now
        assert now < deadline, f"build_release never began writing {path.name}\n{stack.timeline()}"
        time.sleep(0.02)


def test_killed_worker_mid_release_is_replaced_and_the_release_is_the_same(stack, pipeline):
    """The issue's "same release files": a release's person_id is a keyed pseudonym of its own
    domain (``release:<release_id>``), so two requests' releases differ by design. What a killed
    worker must not change is the release of the *same* request: the Parquet files that the
    retried task published must be byte-identical to an uninterrupted build of that request
    (``edge.releases.rebuild_for_comparison``, the same builder, keys and research zones)."""
    from edge.releases import rebuild_for_comparison
    from pipelines.monitoring import store

    from . import procs

    failed = {d: r["state"] for d, r in pipeline["runs"].items() if r["state"] != "success"}
    assert not failed, (
        f"needs the research zones of a successful pipeline run; these DAG runs failed: {failed}"
    )
    started = time.monotonic()
    # Nothing but this release may run meanwhile (an @daily ingest crossing midnight would).
    for dag_id in [*INGEST, *PSEUDONYMISE]:
        stack.set_paused(dag_id, True)
    request_id = approve_request()
    final = release_dir(request_id)
    staging = final.with_name(f".staging-{final.name}")
    run_id = stack.trigger("release")

    # Kill every worker, with all its processes and no warning, while the task is writing the
    # release: from the moment its staging directory exists until the atomic rename it writes
    # the tables, runs the release gate and writes the manifest.
    _wait_for(staging, stack, cap_s=300)
    killed = [pid for worker in stack.workers() for pid in stack.kill(worker)]
    assert not final.exists(), "the release was published before the kill: nothing was interrupted"
    assert procs.alive(killed) == [], "a task process outlived its killed worker"
    stack.start_worker()

    run = stack.wait_runs(["release"], after={"release": 1})["release"]
    print(
        f"\nkill test: {time.monotonic() - started:.0f} s from trigger to the retried release\n"
        f"{stack.timeline()}"
    )
    assert run["dag_run_id"] == run_id and run["state"] == "success", stack.task_instances("release", run_id)
    builds = [t for t in stack.task_instances("release", run_id) if t["task_id"] == "build_release"]
    assert builds and all(t["state"] == "success" for t in builds)
    assert max(t["try_number"] for t in builds) >= 2, "the kill did not interrupt the task"

    manifest = check_release(final)
    rebuilt = stack.root / "rebuilt"
    rebuild_for_comparison(request_id, rebuilt)
    published = sorted(p.name for p in final.glob("*.parquet"))
    assert published == sorted(p.name for p in rebuilt.glob("*.parquet"))
    assert set(manifest["files"]) == set(published)
    for name in published:
        assert (final / name).read_bytes() == (rebuilt / name).read_bytes(), f"{name} differs after the retry"

    # The retry replaced its metrics row: one row, the successful try.
    (recorded,) = store.latest_runs(dag_id="release", limit=1)
    assert recorded.run_id == run_id and recorded.state == "success"
    assert [t.try_number >= 2 for t in recorded.tasks if t.task_id == "build_release"] == [True]
