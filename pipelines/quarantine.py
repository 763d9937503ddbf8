"""Quarantine: rejected records and files, kept for the operator with a reason code.

The quarantine lives in the holder's restricted zone (``raw.duckdb`` table ``quarantine``
plus copies of whole rejected files under ``restricted/<holder>/quarantine/``), because a
rejected record may carry identifiers. Reason codes and details never contain a value
from the record: ``detail`` names columns, paths and line numbers only.

One kind of record is a notice rather than a rejection: a file that ingestion read only through
a conversion to UTF-8 (``encoding.converted_from_*``, see :mod:`pipelines.encoding`) gets one
file-level record with its original kept here, so the operator sees it; its rows were loaded.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb

TABLE_DDL = """
CREATE TABLE IF NOT EXISTS quarantine (
    stage        VARCHAR NOT NULL,   -- 'ingest', 'pseudonymise', 'quality', ...
    holder       VARCHAR NOT NULL,
    source       VARCHAR NOT NULL,   -- 'register', 'prom', 'fhir', ...
    source_file  VARCHAR,            -- path relative to the holder's landing dir
    line_no      BIGINT,             -- 1-based line in source_file, when known
    record_key   VARCHAR,            -- e.g. FHIR resource type/id, when known
    reason_code  VARCHAR NOT NULL,   -- stable code, e.g. 'encoding.not_utf8'
    detail       VARCHAR,            -- human-readable, never a value from the record
    check_id     VARCHAR,            -- quality check id when a check quarantined it
    original     BLOB,               -- the rejected line/resource exactly as delivered
    original_path VARCHAR            -- copy of a whole rejected file, when file-level
)
"""


@dataclass(frozen=True)
class QuarantineRecord:
    stage: str
    holder: str
    source: str
    reason_code: str
    detail: str = ""
    source_file: str | None = None
    line_no: int | None = None
    record_key: str | None = None
    check_id: str | None = None
    original: bytes | None = None
    original_path: str | None = None


def ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(TABLE_DDL)


def reset(con: duckdb.DuckDBPyConnection, *, stage: str, source: str) -> None:
    """Forget earlier quarantine records of one stage and source, so a re-run replaces them."""
    ensure_table(con)
    con.execute("DELETE FROM quarantine WHERE stage = ? AND source = ?", [stage, source])


def add(con: duckdb.DuckDBPyConnection, records: list[QuarantineRecord]) -> int:
    """Append records; returns how many were added."""
    if not records:
        return 0
    ensure_table(con)
    con.executemany(
        "INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                r.stage,
                r.holder,
                r.source,
                r.source_file,
                r.line_no,
                r.record_key,
                r.reason_code,
                r.detail,
                r.check_id,
                r.original,
                r.original_path,
            )
            for r in records
        ],
    )
    return len(records)


def keep_original_file(src: Path, quarantine_dir: Path, relative_name: str) -> Path:
    """Copy a whole rejected file into the quarantine area, byte for byte."""
    dest = quarantine_dir / "files" / relative_name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest
