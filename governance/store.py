"""Engine, sessions and migrations of the governance store.

SQLite (default, ``$HDP_HOME/governance.sqlite``) and Postgres (production) behave the same for
the service layer:

* Postgres: the service takes ``SELECT ... FOR UPDATE`` row locks on the request it changes, so two
  stewards deciding at once are serialised; the ``version`` column catches any writer that slipped
  past the lock.
* SQLite has no row locks: every read-write transaction starts with ``BEGIN IMMEDIATE`` (one
  writer at a time, others wait up to the busy timeout), which gives the same serialisation. The
  database runs in WAL mode, so ``session_scope(url, readonly=True)`` sessions (plain deferred
  ``BEGIN``; what the access layer needs per query) read a consistent snapshot without waiting for
  writers and without blocking them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from hdp.settings import make_private_file

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: How long SQLite waits for another writer before failing (seconds).
SQLITE_BUSY_TIMEOUT_S = 30

READONLY_OPTION = "hdp_readonly"

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _normalise(url: str) -> str:
    # Plain "postgresql://" would pick psycopg2, which is not installed; psycopg 3 is.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the driver, issue BEGIN, so that we can make it IMMEDIATE.
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        if engine.url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode = WAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        readonly = conn.get_execution_options().get(READONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def _private_sqlite_file(url: str) -> None:
    """Users, tokens, permits and consent: a SQLite store's file is created 0600 whatever the
    umask, before SQLite opens it (its journal, WAL and shared-memory files take its mode)."""
    database = make_url(url).database
    if url.startswith("sqlite") and database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database)
        path.parent.mkdir(parents=True, exist_ok=True)
        make_private_file(path)


def engine_for(url: str) -> Engine:
    """One engine per URL per process (engines own connection pools; reuse them)."""
    url = _normalise(url)
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                _private_sqlite_file(url)
                engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
                _configure_sqlite(engine)
            else:
                engine = create_engine(url, pool_pre_ping=True)
            _engines[url] = engine
        return engine


def dispose_all() -> None:
    """Close every pooled connection (tests; before forking)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _factories.clear()


@dataclass(frozen=True)
class _Bound:
    engine: Engine  # the pooled engine it was built on (rebuilt after dispose_all)
    bind: Engine  # the engine, or its read-only option view
    factory: sessionmaker[Session]


_factories: dict[tuple[str, bool], _Bound] = {}


def _bound(url: str, readonly: bool) -> _Bound:
    """One session factory per (URL, read-only) per engine. Building one per session made
    SQLAlchemy set up a new Session subclass (and a new option engine) every time: about a
    third of each governance lookup the access layer makes per query."""
    engine = engine_for(url)
    key = (_normalise(url), readonly)
    with _engines_lock:
        built = _factories.get(key)
        if built is None or built.engine is not engine:
            bind = engine.execution_options(**{READONLY_OPTION: True}) if readonly else engine
            built = _factories[key] = _Bound(engine, bind, sessionmaker(bind=bind, expire_on_commit=False))
        return built


@contextmanager
def session_scope(url: str, *, readonly: bool = False) -> Iterator[Session]:
    """A session that commits on success and rolls back on any exception (nothing partial stored).

    ``readonly=True``: for lookups only (token, permit, exclusion set); it never waits for a
    writer on SQLite, and it always ends with a rollback, so an accidental write is discarded.
    """
    if readonly:
        with _idle_readonly_session(url) as session:
            yield session
        return
    session = _bound(url, readonly).factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def readonly_connection(url: str) -> Iterator[Connection]:
    """A read-only Core connection, for single-row reads on a hot path (the access layer's
    change-counter check at every lookup): 0.06 ms against 0.25 ms through an ORM session."""
    with _bound(url, True).bind.connect() as conn:
        try:
            yield conn
        finally:
            conn.rollback()


_idle = threading.local()


@contextmanager
def _idle_readonly_session(url: str) -> Iterator[Session]:
    """A read-only session reused by this thread (taken while in use, so a nested scope gets
    its own). A new ``Session`` sets up its event dispatch on first use, which costs as much
    as the indexed lookup itself; the access layer makes three lookups per query. ``close``
    after each use returns the connection to the pool and empties the identity map, so no
    state survives from one use to the next."""
    key = _normalise(url)
    idle: dict[str, Session] = _idle.__dict__.setdefault("sessions", {})
    session = idle.pop(key, None)
    bound = _bound(url, True)
    if session is None or session.get_bind() is not bound.bind:  # engine rebuilt meanwhile
        session = bound.factory()
    try:
        yield session
    finally:
        try:
            session.rollback()  # an accidental write is discarded
        finally:
            session.close()
            idle[key] = session


def alembic_config(url: str):  # type: ignore[no-untyped-def]
    """Programmatic Alembic config (governance/alembic.ini is the same for the alembic CLI)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a literal % in a URL (encoded option) must be doubled.
    cfg.set_main_option("sqlalchemy.url", _normalise(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Run the migrations up to ``revision``; a no-op when already there (safe to call at start)."""
    from alembic import command

    # Alembic keeps its migration context in module globals: one upgrade per process at a time.
    # Across processes, BEGIN IMMEDIATE (SQLite) or an advisory lock (Postgres, env.py) serialises.
    with _upgrade_lock:
        _upgrade(command, url, revision)


_upgrade_lock = threading.Lock()


def _upgrade(command, url: str, revision: str) -> None:  # type: ignore[no-untyped-def]
    if url.startswith("sqlite:///"):
        _private_sqlite_file(url)
    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine_for(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
