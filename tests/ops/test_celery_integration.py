"""The production shape, natively: Airflow 3 with Postgres metadata, the CeleryExecutor on
Redis, the api-server, scheduler, dag-processor, triggerer and a Celery worker as separate
processes. The whole pipeline runs through the real scheduler (ingest on its schedule,
pseudonymise and release triggered by assets); then a worker is killed in the middle of a
release and a new one finishes it with the same release content.

Needs Postgres on 127.0.0.1:5432 (trust auth) and Redis on 127.0.0.1:6379: skipped with the
reason when they are unreachable, failed instead when CI is set.
"""

from __future__ import annotations

import json
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
#: request ids of the releases built so far (the kill test compares against the first)
RELEASED: list[int] = []


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    for reason in (postgres_reachable(), redis_reachable()):
        if reason:
            pytest.skip(reason)
    from hdp.settings import get_settings
    from pipelines.monitoring import store

    from .airflow_stack import airflow_stack

    root = tmp_path_factory.mktemp("celery_stack")
    home = root / "hdp_home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp, airflow_stack(root, home) as s:
        # This process (governance set-up, checks) sees the same settings as the workers.
        for key in ("HDP_HOME", "HDP_ENV", "HDP_GOVERNANCE_URL", "HDP_METRICS_URL", "HDP_KEK"):
            mp.setenv(key, s.env[key])
        get_settings.cache_clear()
        store.dispose_all()
        from synthetic_data.generate import generate

        generate(persons=120, seed=11)
        s.wait_dags(ALL_DAGS)
        yield s
        get_settings.cache_clear()
        store.dispose_all()


def approve_request() -> int:
    """A researcher's request over three holders, approved by every steward in scope."""
    from governance import service, store
    from hdp.settings import get_settings
    from pipelines.demo import DEMO_REQUEST, STEWARDS

    url = get_settings().governance_url
    store.upgrade(url)
    with store.session_scope(url) as session:
        existing = {u.name for u in service.list_users(session)}
        wanted = [(RESEARCHER, ["researcher"], [])]
        wanted += [(n, ["steward"], [h]) for h, names in STEWARDS.items() for n in names]
        for name, roles, holder_ids in wanted:
            if name not in existing:
                service.create_user(session, name=name, roles=roles, holder_ids=holder_ids, actor="it")
        request_id = service.file_request(session, applicant=RESEARCHER, **DEMO_REQUEST)
        service.submit_request(session, request_id=request_id, actor=RESEARCHER)
    for holder in DEMO_REQUEST["holders"]:
        for name in STEWARDS[holder]:
            with store.session_scope(url) as session:
                service.decide(session, request_id=request_id, holder_id=holder, reviewer=name,
                               decision="approve", justification="Integration test: scope matches the purpose.")
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


def release_content(path: Path) -> dict[str, list]:
    """Release tables without the release-domain pseudonym (each release has its own key, so
    person_id differs by design); sorted rows plus the number of distinct persons."""
    out = {}
    for parquet in sorted(path.glob("*.parquet")):
        if parquet.name == "consent_link.parquet":
            continue
        table = pq.read_table(parquet)
        persons = len(set(table.column("person_id").to_pylist())) if "person_id" in table.column_names else None
        rest = table.drop_columns([c for c in table.column_names if c == "person_id"])
        rows = sorted(tuple(r.values()) for r in rest.to_pylist())
        out[parquet.stem] = [persons, rows]
    return out


def test_full_pipeline_through_scheduler_and_celery(stack):
    from click.testing import CliRunner

    from pipelines.monitoring import prometheus, store
    from pipelines.monitoring.cli import status

    request_id = approve_request()
    for dag_id in [*PSEUDONYMISE, "release", *INGEST]:  # downstream first: no asset event is missed
        stack.set_paused(dag_id, False)
    # Unpausing lets the scheduler create each ingest DAG's scheduled run; assets do the rest.
    runs = stack.wait_runs(ALL_DAGS, timeout_s=720)  # ~21 tasks; minutes on a loaded 2-core machine
    states = {d: r["state"] for d, r in runs.items()}
    failed = {d: [(t["task_id"], t["state"]) for t in stack.task_instances(d, r["dag_run_id"])]
              for d, r in runs.items() if r["state"] != "success"}
    assert states == dict.fromkeys(ALL_DAGS, "success"), failed
    assert {runs[d]["run_type"] for d in PSEUDONYMISE} | {runs["release"]["run_type"]} == {"asset_triggered"}

    manifest = check_release(release_dir(request_id))
    RELEASED.append(request_id)
    assert set(manifest["request"]["holders"]) == {"ndr", "region_uppsala", "region_orebro"}

    # Run metrics recorded by the task callbacks inside the Celery workers, in Postgres.
    recorded = {r.dag_id: r for r in store.latest_per_dag()}
    assert set(recorded) == set(ALL_DAGS)
    for dag_id in ALL_DAGS:
        assert recorded[dag_id].run_id == runs[dag_id]["dag_run_id"]
        assert recorded[dag_id].state == "success"
    ingest_ndr = {t.task_id: t for t in recorded["ingest__ndr"].tasks}
    assert ingest_ndr["ingest_register"].rows_in > ingest_ndr["ingest_register"].rows_out > 0
    assert ingest_ndr["ingest_register"].holder == "ndr" and ingest_ndr["ingest_register"].duration_s > 0
    out = CliRunner().invoke(status, ["--limit", "20"]).output
    assert all(d in out for d in ALL_DAGS) and "FAILED" not in out
    body, _ = prometheus.metrics_payload()
    assert b'hdp_dag_run_failed{dag_id="release"} 0' in body


def _first_running(stack, dag_id: str, run_id: str, task_prefix: str) -> dict | None:
    for ti in stack.task_instances(dag_id, run_id):
        if ti["task_id"].startswith(task_prefix) and ti["state"] == "running":
            return ti
    return None


def test_killed_worker_mid_release_is_replaced_and_the_release_is_the_same(stack):
    from pipelines.monitoring import store

    if not RELEASED:
        pytest.skip("needs the release of test_full_pipeline_through_scheduler_and_celery to compare with")
    first = release_dir(RELEASED[0])
    request_id = approve_request()
    staging = release_dir(request_id).with_name(f".staging-{release_dir(request_id).name}")
    run_id = stack.trigger("release")

    # Kill the workers while one builds the release (all their processes, no warning).
    deadline = time.monotonic() + 240
    while _first_running(stack, "release", run_id, "build_release") is None:
        stack.check_alive()
        assert time.monotonic() < deadline, "build_release never started"
        time.sleep(0.5)
    # Kill once the task has started writing (its staging directory exists), or after 8 s.
    started = time.monotonic()
    while not staging.exists() and time.monotonic() - started < 8:
        time.sleep(0.1)
    partial = staging.exists()
    for worker in stack.workers():
        stack.kill(worker)
    stack.start_worker()

    run = stack.wait_runs(["release"], after=1, timeout_s=300)["release"]
    assert run["dag_run_id"] == run_id and run["state"] == "success", stack.task_instances("release", run_id)
    builds = [t for t in stack.task_instances("release", run_id) if t["task_id"] == "build_release"]
    assert builds and all(t["state"] == "success" for t in builds)
    assert max(t["try_number"] for t in builds) >= 2, "the kill did not interrupt the task"
    print(f"worker killed {'after' if partial else 'before'} the release build began writing")

    second = release_dir(request_id)
    check_release(second)
    assert release_content(second) == release_content(first)
    # The retry replaced its metrics row: one row, the successful try.
    (recorded,) = store.latest_runs(dag_id="release", limit=1)
    assert recorded.run_id == run_id and recorded.state == "success"
    assert [t.try_number >= 2 for t in recorded.tasks if t.task_id == "build_release"] == [True]
