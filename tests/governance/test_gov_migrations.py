"""Alembic migrations: idempotent, and they build exactly the schema the models describe."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from governance.models import Base
from governance.store import alembic_config, current_revision, engine_for, upgrade

#: The newest migration (whoever adds the next one need not edit these tests).
HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def test_upgrade_is_idempotent_and_matches_models(url):
    upgrade(url)
    upgrade(url)
    assert current_revision(url) == HEAD
    with engine_for(url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    # Models and migrations must not drift apart (a new column needs a new migration).
    assert diff == []


def test_fresh_sqlite_file_is_created(tmp_path):
    url = f"sqlite:///{tmp_path / 'sub' / 'gov.sqlite'}"
    upgrade(url)
    assert current_revision(url) == HEAD


def test_readonly_session_reads_while_a_writer_holds_the_lock(url):
    """A read-only session is not blocked by an open write transaction, and writes in it are discarded."""
    import threading

    from governance import service
    from governance.store import session_scope

    with session_scope(url) as s:
        service.create_user(s, name="reader", roles=["researcher"])
    started, release = threading.Event(), threading.Event()

    def writer():
        with session_scope(url) as s:
            service.create_user(s, name="writer", roles=["researcher"])
            started.set()
            release.wait(10)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert started.wait(10)
        with session_scope(url, readonly=True) as s:
            assert service.has_role(s, "reader", "researcher")
            assert not service.has_role(s, "writer", "researcher")  # uncommitted: invisible
    finally:
        release.set()
        t.join()
    with session_scope(url, readonly=True) as s:
        service.create_user(s, name="ghost", roles=["researcher"])
    with session_scope(url) as s:
        assert service.has_role(s, "writer", "researcher") and not service.has_role(s, "ghost", "researcher")


@pytest.mark.slow
def test_concurrent_upgrades_of_a_fresh_store(backend, request, tmp_path):
    """API and scheduler starting together both call upgrade(): one migrates, the others wait.

    Separate processes, as in production (threads of one process are serialised by a lock too).
    """
    import subprocess
    import sys
    import threading
    import time
    import uuid

    from govtest_helpers import PG_BASE

    cleanup = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'race.sqlite'}"
    else:
        import psycopg

        request.getfixturevalue("pg_schema_url")  # skips/fails cleanly when no server
        schema = f"gov_race_{uuid.uuid4().hex[:8]}"
        plain = PG_BASE.replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        url = f"{PG_BASE}?options=-csearch_path%3D{schema}"

        def cleanup():
            engine_for(url).dispose()
            with psycopg.connect(plain, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')

    # A file barrier: every process imports first, then all start migrating at the same moment.
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    parties = 4
    code = (
        "import sys, time, pathlib, os, alembic.command, alembic.config, alembic.runtime.migration;"
        "from governance.store import upgrade, engine_for; engine_for(sys.argv[1]);"
        "b = pathlib.Path(sys.argv[2]); (b / str(os.getpid())).touch();"
        "deadline = time.time() + 60\n"
        "while len(list(b.iterdir())) < int(sys.argv[3]) and time.time() < deadline: time.sleep(0.005)\n"
        "upgrade(sys.argv[1])"
    )
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, url, str(barrier), str(parties)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(parties - 1)
        ]

        def in_process() -> None:
            (barrier / "main").touch()
            deadline = time.time() + 60
            while len(list(barrier.iterdir())) < parties and time.time() < deadline:
                time.sleep(0.005)
            upgrade(url)

        threads = [threading.Thread(target=in_process)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        outcomes = [(p.wait(120), p.stderr.read()) for p in procs]
        assert all(rc == 0 for rc, _ in outcomes), outcomes
        assert current_revision(url) == HEAD
    finally:
        if cleanup:
            cleanup()
