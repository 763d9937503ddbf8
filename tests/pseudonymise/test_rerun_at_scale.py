"""Re-running on identical input gives the identical research zone at a size where DuckDB works in
parallel (several row groups, both threads): same rows, same values; row order is not promised."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from pipelines.pseudonymise import pseudonymise_holder
from pseudonymise.raw_fixtures import build_ndr, pnr

ROWS, PERSONS = 200_000, 20_000


def _fingerprint(path) -> tuple:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return tuple(
            con.execute(
                f"SELECT count(*), md5(string_agg(s, '|' ORDER BY s)) "
                f"FROM (SELECT CAST(t AS VARCHAR) AS s FROM {t} t)"
            ).fetchall()[0]
            for t in ("register_visit", "prom_response")
        )
    finally:
        con.close()


def test_rerun_on_a_large_table_is_identical(hdp_home, kek_env):
    build_ndr(hdp_home)
    ids = [
        pnr(f"19{40 + i % 60:02d}{1 + i % 12:02d}{1 + i % 28:02d}", f"{1 + i % 999:03d}")
        for i in range(PERSONS)
    ]  # serial 000 is never issued
    con = duckdb.connect(str(hdp_home.raw_db("ndr")))
    con.register("ids", pa.table({"k": pa.array(range(PERSONS)), "v": pa.array(ids)}))
    con.execute(f"""INSERT INTO register_visit SELECT v, 'A', 'B', lpad(CAST(10000 + i % 89000 AS VARCHAR), 5, '0'),
        DATE '2020-01-01' + CAST(i % 1000 AS INTEGER), 'typ2', 40 + i % 30, 25.0, 120, 80, 'aldrig', 'kost',
        'register/big.csv', i + 2 FROM range({ROWS}) r(i) JOIN ids ON ids.k = i % {PERSONS}""")
    con.close()
    first = pseudonymise_holder("ndr", settings=hdp_home)
    fp1 = _fingerprint(hdp_home.research_db("ndr"))
    second = pseudonymise_holder("ndr", settings=hdp_home)
    assert first == second
    assert _fingerprint(hdp_home.research_db("ndr")) == fp1
    assert first.tables["register_visit"] == ROWS + 4
