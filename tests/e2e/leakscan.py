"""Scan a data home for direct identifiers outside ``restricted/``.

Structured files (DuckDB, Parquet, SQLite) are scanned cell by cell, every column cast to
text; every other file is scanned as bytes. A hit is reported by path and table/column only.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import duckdb

DUCKDB_MAGIC = b"DUCK"


def identifier_forms(normalised12: str) -> set[str]:
    """The forms a 12-digit personnummer can be written in."""
    d = normalised12
    return {d, f"{d[:8]}-{d[8:]}", d[2:], f"{d[2:8]}-{d[8:]}", f"{d[2:8]}+{d[8:]}"}


def _cells_duckdb(path: Path) -> Iterable[tuple[str, str]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        for schema, table in con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = current_database()"
        ).fetchall():
            cols = [r[0] for r in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE schema_name=? AND table_name=? "
                "AND database_name = current_database()", [schema, table]).fetchall()]
            for col in cols:
                for (value,) in con.execute(f'SELECT DISTINCT CAST("{col}" AS VARCHAR) FROM "{schema}"."{table}"').fetchall():
                    if value is not None:
                        yield f"{table}.{col}", value
    finally:
        con.close()


def _cells_parquet(path: Path) -> Iterable[tuple[str, str]]:
    con = duckdb.connect()
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()]
    for col in cols:
        for (value,) in con.execute(f"SELECT DISTINCT CAST(\"{col}\" AS VARCHAR) FROM read_parquet('{path}')").fetchall():
            if value is not None:
                yield col, value


def _cells_sqlite(path: Path) -> Iterable[tuple[str, str]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
            cur = con.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in cur.description]
            for row in cur:
                for name, value in zip(names, row, strict=True):
                    if value is not None:
                        yield f"{table}.{name}", str(value)
    finally:
        con.close()


#: Candidate tokens: any identifier-shaped digit run, and every pair of capitalised words (a
#: name). Extracting candidates and looking them up in a set keeps the scan linear in the data,
#: where a regex alternation of thousands of needles would backtrack at every position.
ID_TOKEN = re.compile(r"(?<![0-9A-Za-z])(?:\d{6}|\d{8})[-+]?\d{4}(?![0-9A-Za-z])")
NAME_PAIR = re.compile(r"(?=\b([A-ZÅÄÖÉÜ][\w'-]+ [A-ZÅÄÖÉÜ][\w'-]+))")


def _hits(text: str, needles: set[str]) -> bool:
    if text in needles:
        return True
    return any(m.group(0) in needles for m in ID_TOKEN.finditer(text)) or any(
        m.group(1) in needles for m in NAME_PAIR.finditer(text))


def find_leaks(home: Path, needles: set[str]) -> list[str]:
    """Paths (and columns) outside restricted/ where any needle (identifier form or full name) occurs."""
    restricted = home / "restricted"
    hits: list[str] = []
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        if restricted in path.parents or path.suffix in (".lock", ".wal"):
            continue
        head = path.read_bytes()[:16]
        if path.suffix == ".duckdb" or DUCKDB_MAGIC in head[8:12]:
            cells = _cells_duckdb(path)
        elif path.suffix == ".parquet":
            cells = _cells_parquet(path)
        elif head.startswith(b"SQLite format 3"):
            cells = _cells_sqlite(path)
        else:
            if _hits(path.read_bytes().decode("utf-8", errors="replace"), needles):
                hits.append(f"{path.relative_to(home)} (bytes)")
            continue
        for where, value in cells:
            if _hits(value, needles):
                hits.append(f"{path.relative_to(home)}:{where}")
                break
    return hits
