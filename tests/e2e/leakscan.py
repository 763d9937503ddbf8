"""Scan a data home for direct identifiers outside ``restricted/``.

Two scans, both over every file outside ``restricted/`` (lock files, WAL and temp files too):

* **cells**: structured files (DuckDB, Parquet, SQLite) cell by cell, every column cast to text,
  which also finds values stored compressed;
* **bytes**: the raw bytes of every file, which finds what no query sees: a value in a block
  DuckDB wrote from uninitialised memory, in a freed page, in a page header, in a log.

A hit is reported by path and table/column (cells) or path and byte offset (bytes), never
with the value. Needles are given as strings: every written form of each identifier
(:func:`identifier_forms`), full names, street addresses.
"""

from __future__ import annotations

import csv
import gzip
import json
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
            cols = [
                r[0]
                for r in con.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE schema_name=? AND table_name=? "
                    "AND database_name = current_database()",
                    [schema, table],
                ).fetchall()
            ]
            for col in cols:
                for (value,) in con.execute(
                    f'SELECT DISTINCT CAST("{col}" AS VARCHAR) FROM "{schema}"."{table}"'
                ).fetchall():
                    if value is not None:
                        yield f"{table}.{col}", value
    finally:
        con.close()


def _cells_parquet(path: Path) -> Iterable[tuple[str, str]]:
    con = duckdb.connect()
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()]
    for col in cols:
        for (value,) in con.execute(
            f"SELECT DISTINCT CAST(\"{col}\" AS VARCHAR) FROM read_parquet('{path}')"
        ).fetchall():
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
        m.group(1) in needles for m in NAME_PAIR.finditer(text)
    )


# -- bytes -------------------------------------------------------------------------------

#: Digit runs long enough to hold an identifier, with or without its separator. In raw bytes an
#: identifier may sit right against other digits (a neighbouring value in a freed buffer), so
#: every 10- and 12-digit window of a run is a candidate, not only whole tokens.
_DIGITS = re.compile(rb"[0-9]{10,}")
_SEPARATED = re.compile(rb"([0-9]{6,})([-+])([0-9]{4,})")
#: Words (letters, then letters, digits, hyphens, apostrophes) and what follows them: a name is
#: two or three words, a street address a word and a house number. In decoded text.
_WORD = re.compile(r"[^\W\d_][\w'-]*")
_JSON_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def _digit_candidates(data: bytes) -> Iterable[tuple[int, bytes]]:
    for m in _DIGITS.finditer(data):
        run, start = m.group(0), m.start()
        for width in (10, 12):
            for i in range(len(run) - width + 1):
                yield start + i, run[i : i + width]
    for m in _SEPARATED.finditer(data):
        left, sep, right = m.group(1), m.group(2), m.group(3)[:4]
        for width in (6, 8):
            if len(left) >= width:
                yield m.start(3) - 1 - width, left[-width:] + sep + right


def _text_candidates(text: str) -> Iterable[tuple[int, str]]:
    words = list(_WORD.finditer(text))
    for i, w in enumerate(words):
        end = w.end()
        # street address: "Kungsgatan 88", "Kungsgatan 88B"
        m = re.match(r" (\d+[A-Za-z]?)\b", text[end : end + 8])
        if m:
            yield w.start(), w.group(0) + m.group(0)
        # names: two or three consecutive words separated by single spaces
        run = [w]
        for nxt in words[i + 1 : i + 3]:
            if text[run[-1].end() : nxt.start()] != " ":
                break
            run.append(nxt)
            yield w.start(), text[w.start() : nxt.end()]


def byte_hits(data: bytes, needles: set[str]) -> list[int]:
    """Offsets in ``data`` where a needle occurs, in the encodings a file may use for it:
    UTF-8, Latin-1/cp1252 (a delivery's legacy encoding), JSON ``\\uXXXX`` escapes."""
    digit_needles = {n.encode() for n in needles if n.isascii() and n[:1].isdigit()}
    text_needles = {n for n in needles if not n[:1].isdigit()}
    offsets = [off for off, cand in _digit_candidates(data) if cand in digit_needles]
    if text_needles:
        for encoding in ("utf-8", "latin-1"):
            text = data.decode(encoding, errors="replace")
            variants = [text]
            if "\\u" in text:
                variants.append(_JSON_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text))
            for variant in variants:
                offsets += [off for off, cand in _text_candidates(variant) if cand in text_needles]
    return sorted(set(offsets))


def _outside_restricted(home: Path) -> list[Path]:
    restricted = home / "restricted"
    return sorted(p for p in home.rglob("*") if p.is_file() and restricted not in p.parents)


def find_byte_leaks(home: Path, needles: set[str]) -> list[str]:
    """Files outside restricted/ whose raw bytes hold a needle (see :func:`byte_hits`): one
    line per file, with the number of hits and the first offset."""
    leaks = []
    for path in _outside_restricted(home):
        data = path.read_bytes()
        if path.suffix == ".gz":
            try:
                data += gzip.decompress(data)
            except (OSError, EOFError):
                pass
        offsets = byte_hits(data, needles)
        if offsets:
            leaks.append(
                f"{path.relative_to(home)}: {len(offsets)} hit(s) in the bytes, first at offset {offsets[0]}"
            )
    return leaks


def find_cell_leaks(home: Path, needles: set[str]) -> list[str]:
    """Paths (and columns) outside restricted/ where a needle is a cell value or in one."""
    hits: list[str] = []
    for path in _outside_restricted(home):
        head = path.read_bytes()[:16]
        if path.suffix == ".duckdb" or DUCKDB_MAGIC in head[8:12]:
            cells = _cells_duckdb(path)
        elif path.suffix == ".parquet":
            cells = _cells_parquet(path)
        elif head.startswith(b"SQLite format 3"):
            cells = _cells_sqlite(path)
        else:
            continue  # text: the byte scan covers it
        for where, value in cells:
            if _hits(value, needles):
                hits.append(f"{path.relative_to(home)}:{where}")
                break
    return hits


def find_leaks(home: Path, needles: set[str]) -> list[str]:
    """Every leak outside restricted/: in cells of structured files and in the bytes of every file."""
    return find_cell_leaks(home, needles) + find_byte_leaks(home, needles)


def _patients(restricted: Path):
    """Every Patient resource delivered, in NDJSON (plain or gzipped; ``Patient.ndjson`` or a Bulk Data
    export's numbered ``Patient.000.ndjson``) or in a Bundle."""
    for path in restricted.glob("*/landing/fhir/Patient*.ndjson*"):
        text = (gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()).decode(
            "utf-8"
        )
        for line in text.splitlines():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
    for path in restricted.glob("*/landing/fhir/bundles/*.json"):
        try:
            bundle = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        for entry in bundle.get("entry", []):
            if (entry.get("resource") or {}).get("resourceType") == "Patient":
                yield entry["resource"]


def landing_identifiers_and_names(home: Path) -> tuple[set[str], set[str]]:
    """Every identifier form, full name and street address the holders delivered (read inside
    the restricted zone). Names and addresses are returned together."""
    from privacy.personnummer import InvalidIdentifier, parse

    ids: set[str] = set()
    names: set[str] = set()
    restricted = home / "restricted"  # a single data home, or a node's
    for path in restricted.glob("*/landing/register/*.csv"):
        try:
            rows = list(csv.DictReader(path.open(encoding="utf-8"), delimiter=";"))
        except UnicodeDecodeError:
            rows = list(csv.DictReader(path.open(encoding="cp1252"), delimiter=";"))
        for row in rows:
            if row.get("personnummer"):
                ids.add(row["personnummer"])
                try:
                    ids |= identifier_forms(parse(row["personnummer"]).normalised)
                except InvalidIdentifier:
                    pass
            if row.get("fornamn") and row.get("efternamn"):
                names.add(f"{row['fornamn']} {row['efternamn']}")
    for patient in _patients(restricted):
        for ident in patient.get("identifier", []):
            if ident.get("value"):
                ids |= identifier_forms(ident["value"]) if len(ident["value"]) == 12 else {ident["value"]}
        for name in patient.get("name", []):
            if name.get("given") and name.get("family"):
                names.add(f"{name['given'][0]} {name['family']}")
                names.add(f"{' '.join(name['given'])} {name['family']}")
        for address in patient.get("address", []):
            names |= {line for line in address.get("line", []) if line}
    return ids, names
