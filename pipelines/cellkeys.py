"""Per-release perturbation keys for the aggregate tier's cell-key method (``privacy.cellkey``).

When a release is built, every row of every release table gets a random **record key** and
every person a random **person key** (each one byte, 0..255), plus a dense **person number**
the access layer groups by (an integer is several times cheaper to group by than a 64-char
pseudonym). They are fixed for the life of the release, so the same contributors always get
the same noise, and they are kept in the restricted zone beside the consent link: a
researcher who knew the keys could subtract the noise.

Layout of ``cell_keys.duckdb``::

    person_key(person_id VARCHAR, person_no INTEGER, person_key UTINYINT)
    record_key__<table>(row_no BIGINT, record_key UTINYINT)   -- row_no = rowid in release.duckdb

Keys come from ``os.urandom`` (the operating system's CSPRNG), so nobody can predict them from
the release, the build time or a seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

CELL_KEYS = "cell_keys.duckdb"


def _random_bytes(n: int) -> pa.Array:
    return pa.array(np.frombuffer(os.urandom(n), dtype=np.uint8) if n else np.zeros(0, np.uint8))


def write_cell_keys(release_db: Path, destination: Path) -> dict[str, int]:
    """Write fresh keys for every table of ``release_db`` into the new file ``destination``.

    Returns rows keyed per table (and ``persons``). The release file is only read.
    """
    if destination.exists():
        destination.unlink()
    con = duckdb.connect(str(destination))
    try:
        con.execute(f"ATTACH '{_escape(release_db)}' AS rel (READ_ONLY)")
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = 'rel' ORDER BY table_name"
            ).fetchall()
        ]
        with_persons = [
            t
            for t in tables
            if con.execute(
                "SELECT count(*) FROM duckdb_columns() WHERE database_name = 'rel' AND table_name = ? "
                "AND column_name = 'person_id'",
                [t],
            ).fetchall()[0][0]
        ]
        counts: dict[str, int] = {}
        persons = (
            " UNION ".join(
                f'SELECT CAST(person_id AS VARCHAR) AS person_id FROM rel."{t}"' for t in with_persons
            )
            or "SELECT NULL::VARCHAR AS person_id WHERE false"
        )
        con.execute(
            f"CREATE TEMP TABLE p AS SELECT DISTINCT person_id FROM ({persons}) WHERE person_id IS NOT NULL "
            "ORDER BY person_id"
        )
        n_persons = con.execute("SELECT count(*) FROM p").fetchall()[0][0]
        keys = pa.table({"k": _random_bytes(n_persons)})
        con.register("pk", keys)
        con.execute(
            "CREATE TABLE person_key AS SELECT p.person_id, (row_number() OVER ())::INTEGER AS person_no, "
            "pk.k::UTINYINT AS person_key FROM p POSITIONAL JOIN pk"
        )
        con.unregister("pk")
        counts["persons"] = int(n_persons)
        for table in tables:
            n = con.execute(f'SELECT count(*) FROM rel."{table}"').fetchall()[0][0]
            keys = pa.table({"k": _random_bytes(n)})
            con.register("rk", keys)
            con.execute(
                f'CREATE TABLE "record_key__{table}" AS SELECT t.rowid AS row_no, rk.k::UTINYINT AS record_key '
                f'FROM (SELECT rowid FROM rel."{table}" ORDER BY rowid) t POSITIONAL JOIN rk'
            )
            con.unregister("rk")
            counts[table] = int(n)
        con.execute("DETACH rel")
    finally:
        con.close()
    return counts


def _escape(path: Path) -> str:
    return str(path).replace("'", "''")
