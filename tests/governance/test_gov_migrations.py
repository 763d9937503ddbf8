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
