"""A synthetic release in the contract layout, for tests, the benchmark and local trials.

It writes exactly what the release builder writes (docs/ARCHITECTURE.md, "Releases"):
``release.duckdb`` with research tables carrying ``person_id`` (release pseudonym) and
``holder`` and ``manifest.json``; in the restricted zone, ``consent_link.parquet`` (person_id ->
consent key) and ``cell_keys.duckdb`` (perturbation keys).
Values are random and carry no meaning; pseudonyms are random hex, not derived from anyone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb

from pipelines.cellkeys import CELL_KEYS, write_cell_keys

HOLDERS = ("ndr", "region_uppsala", "region_orebro", "region_skane")


def default_private_dir(directory: Path) -> Path:
    """The release's restricted files, by the data home's layout: ``<home>/releases/<id>`` has
    its consent link and perturbation keys in ``<home>/restricted/releases/<id>``."""
    return directory.parent.parent / "restricted" / "releases" / directory.name


def person_id(i: int, seed: int = 0) -> str:
    return hashlib.sha256(f"release-person-{seed}-{i}".encode()).hexdigest()


def consent_key(i: int, seed: int = 0) -> str:
    return hashlib.sha256(f"consent-{seed}-{i}".encode()).hexdigest()


def _row_count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def write_release(
    directory: Path,
    *,
    persons: int = 1_000,
    visits: int = 5_000,
    seed: int = 0,
    unlinked: int = 0,
    private_dir: Path | None = None,
) -> dict:
    """Write a synthetic release under ``directory``; returns the manifest.

    ``unlinked`` persons (the last ones) get no consent link, to exercise fail-closed handling.
    The consent link and the perturbation keys go to ``private_dir`` (by default where the data
    home keeps them, see ``default_private_dir``), never beside the release.
    """
    directory.mkdir(parents=True, exist_ok=True)
    private = private_dir or default_private_dir(directory)
    private.mkdir(parents=True, exist_ok=True, mode=0o700)
    db_path = directory / "release.duckdb"
    if db_path.exists():
        db_path.unlink()
    con = duckdb.connect(str(db_path))
    try:
        con.execute(f"SELECT setseed({(seed % 1000) / 1000.0})")
        # One row of attributes per person; both tables take them from here, so a visit
        # always agrees with its patient row.
        con.execute(
            f"""
            CREATE TEMP TABLE person AS
            SELECT i, sha256('release-person-{seed}-' || i) AS person_id,
                   ['ndr','region_uppsala','region_orebro','region_skane'][1 + (i % 4)] AS holder,
                   1930 + (hash(i * 7 + {seed}) % 75)::INTEGER AS birth_year,
                   CASE WHEN hash(i + {seed}) % 2 = 0 THEN 'F' ELSE 'M' END AS sex,
                   lpad(((hash(i * 3 + {seed}) % 21) + 1)::VARCHAR, 2, '0') AS county
            FROM range({persons}) r(i)
            """
        )
        con.execute(
            "CREATE TABLE patient AS SELECT person_id, holder, birth_year, sex, county, "
            "NULL::INTEGER AS deceased_year FROM person ORDER BY i"
        )
        con.execute(
            f"""
            CREATE TABLE register_visit AS
            SELECT a.person_id, a.holder, a.birth_year, a.sex, a.county,
                   DATE '2015-01-01' + (hash(j + {seed}) % 3650)::INTEGER AS visit_date,
                   CASE WHEN hash(p * 11) % 10 = 0 THEN 1 ELSE 2 END AS diabetes_type,
                   round(35 + (hash(j * 13 + {seed}) % 600) / 10.0, 1)::DOUBLE AS hba1c_mmol_mol,
                   round(18 + (hash(j * 17 + {seed}) % 250) / 10.0, 1)::DOUBLE AS bmi,
                   (100 + hash(j * 19) % 80)::INTEGER AS systolic_bp,
                   (60 + hash(j * 23) % 40)::INTEGER AS diastolic_bp,
                   ['never','former','current'][(1 + hash(p * 29) % 3)::BIGINT] AS smoking,
                   ['diet','tablets','insulin'][(1 + hash(p * 31) % 3)::BIGINT] AS treatment
            FROM (SELECT j, j % {persons} AS p FROM range({visits}) r(j)) v
            JOIN person a ON a.i = v.p
            ORDER BY j
            """
        )
        counts = {t: _row_count(con, t) for t in ("patient", "register_visit")}
        linked = max(persons - unlinked, 0)
        con.execute(
            f"""
            COPY (SELECT person_id, sha256('consent-{seed}-' || i) AS consent_key
                  FROM person WHERE i < {linked} ORDER BY i)
            TO '{private / "consent_link.parquet"}' (FORMAT parquet)
            """
        )
    finally:
        con.close()
    write_cell_keys(db_path, private / CELL_KEYS)
    manifest = {
        "release_id": directory.name,
        "tables": counts,
        "holders": list(HOLDERS),
        "synthetic": True,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest
