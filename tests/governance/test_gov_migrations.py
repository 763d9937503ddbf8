"""Alembic migrations: idempotent, and they build exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from governance.models import Base
from governance.store import current_revision, engine_for, upgrade


def test_upgrade_is_idempotent_and_matches_models(url):
    upgrade(url)
    upgrade(url)
    assert current_revision(url) == "0001"
    with engine_for(url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    # Models and migrations must not drift apart (a new column needs a new migration).
    assert diff == []


def test_fresh_sqlite_file_is_created(tmp_path):
    url = f"sqlite:///{tmp_path / 'sub' / 'gov.sqlite'}"
    upgrade(url)
    assert current_revision(url) == "0001"


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
