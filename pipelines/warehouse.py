"""DuckDB connections for the zones.

DuckDB lets only one process open a database file for writing. Airflow may run two
tasks of the same holder at once (and a Celery worker may be killed mid-write), so every
writer takes an exclusive advisory lock on ``<db>.lock`` first and waits for it instead
of failing with DuckDB's "could not set lock" error.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

#: How long a writer waits for another writer of the same file before giving up.
LOCK_TIMEOUT_S = 600.0


class WarehouseLockTimeout(RuntimeError):
    """Another process held the database for longer than LOCK_TIMEOUT_S."""


@contextmanager
def _writer_lock(path: Path, timeout_s: float) -> Iterator[None]:
    """Hold the exclusive advisory lock ``<db>.lock`` of the DuckDB file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a+") as lock_file:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WarehouseLockTimeout(f"{path.name} stayed locked for {timeout_s:.0f} s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _quiet(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """No progress bar: a long statement would draw it into the task log (Airflow captures stdout)."""
    con.execute("SET enable_progress_bar = false")
    return con


@contextmanager
def write_connection(path: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[duckdb.DuckDBPyConnection]:
    """An exclusive read-write connection to the DuckDB file at ``path``."""
    with _writer_lock(path, timeout_s):
        con = _quiet(duckdb.connect(str(path)))
        try:
            yield con
        finally:
            con.close()


@contextmanager
def read_connection(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection; waits for a writer of the same file to finish.

    The file is never opened for writing: a reader (the research zone's quality gate, in the
    process that just pseudonymised) may hold identifiers, and a read-write open may write
    (replay a WAL, checkpoint) from that process's memory (see pipelines/clean_writer.py).
    """
    with _writer_lock(path, LOCK_TIMEOUT_S):
        pass  # wait until no writer holds the file, then open read-only
    con = _quiet(duckdb.connect(str(path), read_only=True))
    try:
        yield con
    finally:
        con.close()


def single_row(
    con: duckdb.DuckDBPyConnection, query: str, parameters: Sequence[object] | None = None
) -> tuple[Any, ...]:
    """The one row of a query that always returns exactly one (an aggregate without GROUP BY)."""
    row = con.execute(query, parameters).fetchone()
    if row is None:  # cannot happen for an aggregate; the message names no value
        raise RuntimeError("an aggregate query returned no row")
    return row
