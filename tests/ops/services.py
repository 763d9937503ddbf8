"""The local services the integration tests use: Postgres (trust auth) and Redis.

``postgres_reachable()`` / ``redis_reachable()`` return None when the service answers, else a
reason. Without ``CI`` the tests skip with that reason; with ``CI`` set they fail, because CI
(.ci/run) starts both services and a skip there would hide a broken setup.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_HOST, PG_PORT, PG_USER, PG_ADMIN_DB = "127.0.0.1", 5432, "postgres", "test"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def _pg_url(db: str, driver: str = "psycopg") -> str:
    return f"postgresql+{driver}://{PG_USER}@{PG_HOST}:{PG_PORT}/{db}"


def _unreachable(reason: str) -> str | None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    return reason


def postgres_reachable() -> str | None:
    import psycopg

    try:
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=PG_ADMIN_DB, connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        return _unreachable(f"Postgres at {PG_HOST}:{PG_PORT} unreachable ({type(exc).__name__})")


def redis_reachable() -> str | None:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=3) as sock:
            sock.sendall(b"PING\r\n")
            if sock.recv(16).startswith(b"+PONG"):
                return None
            return _unreachable(f"Redis at {REDIS_HOST}:{REDIS_PORT} did not answer PING")
    except OSError as exc:
        return _unreachable(f"Redis at {REDIS_HOST}:{REDIS_PORT} unreachable ({type(exc).__name__})")


@contextmanager
def temporary_postgres_database(prefix: str = "hdp_it") -> Iterator[str]:
    """Create ``<prefix>_<pid>_<random>`` on the local server; drop it (and its sessions)
    afterwards. The pid lets ``reap_stale_databases`` find databases of killed test runs."""
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=PG_ADMIN_DB, autocommit=True
    ) as con:
        con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _pg_url(name)
    finally:
        from pipelines.monitoring import store

        store.dispose_all()
        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=PG_ADMIN_DB, autocommit=True
        ) as con:
            con.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def reap_stale_databases(prefix: str = "hdp_it") -> list[str]:
    """Drop ``<prefix>_<pid>_*`` databases left by test runs that were killed before their
    clean-up: the owning pid is gone and nobody is connected (a live run always is)."""
    import psutil
    import psycopg
    from psycopg import sql

    dropped = []
    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=PG_ADMIN_DB, autocommit=True
    ) as con:
        names = [
            r[0]
            for r in con.execute(
                "SELECT d.datname FROM pg_database d WHERE d.datname LIKE %s AND NOT EXISTS "
                "(SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
                [prefix.replace("_", r"\_") + r"\_%"],
            )
        ]
        for name in names:
            match = re.fullmatch(rf"{re.escape(prefix)}_(\d+)_[0-9a-f]{{8}}", name)
            if match and not psutil.pid_exists(int(match[1])):
                with contextlib.suppress(psycopg.Error):  # another run reaping the same one
                    con.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
                    dropped.append(name)
    return dropped
