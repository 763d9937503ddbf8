"""Governance test fixtures: the same tests run against SQLite and Postgres.

Postgres: one fresh schema per test session in database ``test`` on 127.0.0.1:5432 (dropped at the
end); tables are truncated between tests. Without a reachable server the Postgres variants are
skipped, unless CI is set: then they fail.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# The helpers module sits beside this file; make it importable under any --import-mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from govtest_helpers import PG_BASE, fresh_store, seed_users  # noqa: E402


def _pg_reachable() -> str | None:
    import psycopg

    try:
        with psycopg.connect(PG_BASE.replace("postgresql+psycopg", "postgresql"), connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"{type(exc).__name__}"


@pytest.fixture(scope="session")
def pg_schema_url() -> Iterator[str]:
    """A migrated, throw-away Postgres schema for this test session."""
    reason = _pg_reachable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"Postgres on 127.0.0.1:5432 is required in CI but not reachable ({reason})")
        pytest.skip(f"no Postgres server reachable on 127.0.0.1:5432 ({reason}); set CI=1 to make this fail")
    import psycopg

    from governance.store import dispose_all, upgrade

    schema = f"gov_test_{uuid.uuid4().hex[:10]}"
    plain = PG_BASE.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{PG_BASE}?options=-csearch_path%3D{schema}"
    try:
        upgrade(url)
        yield url
    finally:
        dispose_all()
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> str:
    """A migrated SQLite file that each test copies (migrating once is faster)."""
    from governance.store import engine_for, upgrade

    path = tmp_path_factory.mktemp("gov") / "template.sqlite"
    upgrade(f"sqlite:///{path}")
    # WAL mode: closing the last connection checkpoints the log into the file we copy.
    engine_for(f"sqlite:///{path}").dispose()
    assert not path.with_name(path.name + "-wal").exists()
    return str(path)


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def url(backend, request, tmp_path, hdp_home) -> str:
    return fresh_store(backend, request, tmp_path)


@pytest.fixture
def seeded(url) -> str:
    seed_users(url)
    return url
