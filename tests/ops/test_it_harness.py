"""The integration harness itself: skip-or-fail on missing services, and process cleanup that
reaches task processes in process groups of their own (as Airflow's task supervisor makes them)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from . import procs, services
from .airflow_stack import free_port

# A parent that forks a child into a process group of its own (Airflow's supervisor does
# ``setpgid(0, 0)`` for every task process), prints the child's pid, and sleeps.
SUPERVISOR_LIKE = """
import os, sys, time
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    time.sleep(120)
    os._exit(0)
os.setpgid(pid, pid)  # from both sides, as Airflow does: the group exists before we report it
print(pid, flush=True)
if sys.argv[1] == "exit":
    os._exit(0)  # the child is orphaned, re-parented to init (or a subreaper)
time.sleep(120)
"""


@pytest.fixture
def closed_port(monkeypatch):
    port = free_port()  # bound and released: nothing listens there
    monkeypatch.setattr(services, "PG_PORT", port)
    monkeypatch.setattr(services, "REDIS_PORT", port)
    return port


@pytest.mark.parametrize("probe", [services.postgres_reachable, services.redis_reachable])
def test_unreachable_service_skips_with_its_reason_without_ci(probe, closed_port, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    reason = probe()
    assert reason is not None and f"127.0.0.1:{closed_port}" in reason and "unreachable" in reason


@pytest.mark.parametrize("probe", [services.postgres_reachable, services.redis_reachable])
def test_unreachable_service_fails_under_ci(probe, closed_port, monkeypatch):
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        probe()


def _spawn(mode: str, token: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR_LIKE, mode],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, procs.MARK: token},
    )
    child = int(proc.stdout.readline())
    return proc, child


def test_kill_tree_reaches_a_child_in_its_own_process_group():
    token = os.urandom(6).hex()
    parent, child = _spawn("stay", token)
    assert os.getpgid(child) != os.getpgid(parent.pid)  # what plain killpg would miss
    killed = procs.kill_tree(parent.pid)
    parent.wait(timeout=10)
    assert {parent.pid, child} <= set(killed)
    assert procs.alive([child]) == []
    assert procs.marked(token) == []


def test_sweep_kills_orphans_that_carry_the_stack_token():
    token = os.urandom(6).hex()
    parent, child = _spawn("exit", token)
    parent.wait(timeout=10)
    time.sleep(0.1)
    assert procs.alive([child]) == [child]  # orphaned, still running
    assert child in procs.sweep(token)
    assert procs.alive([child]) == []
    assert procs.sweep(os.urandom(6).hex()) == []  # an unknown token touches nothing


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_reap_orphaned_stacks_kills_only_stacks_whose_test_process_is_gone():
    mine, theirs = os.urandom(6).hex(), os.urandom(6).hex()
    owned = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        start_new_session=True,
        env={**os.environ, procs.MARK: mine, procs.OWNER: str(os.getpid())},
    )
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        start_new_session=True,
        env={**os.environ, procs.MARK: theirs, procs.OWNER: str(_dead_pid())},
    )
    try:
        time.sleep(0.2)  # environ is readable once the interpreter has started
        assert orphan.pid in procs.reap_orphaned_stacks()
        assert procs.alive([orphan.pid]) == []
        assert procs.alive([owned.pid]) == [owned.pid]
    finally:
        procs.kill_tree(owned.pid)
        procs.kill_tree(orphan.pid)


@pytest.mark.postgres
def test_reap_stale_databases_drops_only_databases_of_dead_test_runs():
    import psycopg
    from psycopg import sql

    reason = services.postgres_reachable()
    if reason:
        pytest.skip(reason)
    stale = f"hdp_it_{_dead_pid()}_{os.urandom(4).hex()}"
    with psycopg.connect(
        host=services.PG_HOST,
        port=services.PG_PORT,
        user=services.PG_USER,
        dbname=services.PG_ADMIN_DB,
        autocommit=True,
    ) as con:
        con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(stale)))
        with services.temporary_postgres_database() as live_url:
            live = live_url.rsplit("/", 1)[1]
            assert stale in services.reap_stale_databases()
            exists = {
                r[0]
                for r in con.execute(
                    "SELECT datname FROM pg_database WHERE datname IN (%s, %s)", [stale, live]
                )
            }
            assert exists == {live}
