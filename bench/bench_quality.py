"""Quality-gate benchmark: the full raw-zone check library over a 10,000,000-row register table.

Measured side by side in the same run, each in its own child process (so peak memory is that
side's own), alternating, ``REPEATS`` times; medians are reported:

* ``gate``   - ``pipelines.quality.gate.run_gate("raw", holder_id="ndr", ...)``: every raw check of the
  register and PROM sources (compiled from schemas/checks, one scan per table plus set-level
  queries), copying failing rows to the quarantine, writing the results history and rendering
  GX Data Docs. Great Expectations is imported before the clock starts (a one-time cost per
  worker process, printed separately as ``gx_import_s``).
* ``direct`` - the same register checks hand-written as DuckDB SQL (one count_if scan, the
  uniqueness query, the quarantine counts): what an engineer would write without the library.
  Same DuckDB memory limit and threads.

The last line: ``BENCH quality rows_per_s=... peak_mib=... ratio=...`` with ratio = gate / direct.
Environment: BENCH_QUALITY_ROWS (default 10,000,000), BENCH_QUALITY_REPEATS (default 3).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ROWS = int(os.environ.get("BENCH_QUALITY_ROWS", "10000000"))
REPEATS = int(os.environ.get("BENCH_QUALITY_REPEATS", "3"))
POOL = 200_000  # distinct persons; each has ROWS / POOL visits on distinct days
MEMORY_LIMIT = "2GB"

# The same register checks, hand-written: the identifier is normalised once per row to a 12-digit number
# (n), whose Luhn digit and calendar date are checked in integer arithmetic.
DIRECT_SQL = r"""
SELECT count(*),
  count_if(personnummer IS NULL),
  count_if(personnummer IS NOT NULL AND NOT coalesce(n IS NOT NULL
      AND (  n % 10 + (2 * (n // 10 % 10) - 9 * (n // 10 % 10 // 5)) + n // 100 % 10
           + (2 * (n // 1000 % 10) - 9 * (n // 1000 % 10 // 5)) + n // 10000 % 10
           + (2 * (n // 100000 % 10) - 9 * (n // 100000 % 10 // 5)) + n // 1000000 % 10
           + (2 * (n // 10000000 % 10) - 9 * (n // 10000000 % 10 // 5)) + n // 100000000 % 10
           + (2 * (n // 1000000000 % 10) - 9 * (n // 1000000000 % 10 // 5))) % 10 = 0
      AND date_ok AND y <= {ref_year} AND n // 10 % 1000 <> 0, FALSE)),
  count_if(visit_date IS NULL),
  count_if(visit_date > DATE '{extract}'),
  count_if(visit_date < DATE '1996-01-01'),
  count_if(visit_date < CASE WHEN date_ok THEN make_date(CAST(y AS INTEGER), CAST(m AS INTEGER), CAST(d AS INTEGER)) END),
  count_if(diabetes_type IS NULL OR trim(diabetes_type) = ''),
  count_if(diabetes_type NOT IN ('typ1', 'typ2', 'lada', 'mody', 'sekundar', 'annan')),
  count_if(hba1c_mmol_mol < 20 OR hba1c_mmol_mol > 200),
  count_if(hba1c_mmol_mol >= 2 AND hba1c_mmol_mol < 20),
  count_if(hba1c_mmol_mol IS NULL),
  count_if(bmi < 12 OR bmi > 80), count_if(bmi IS NULL),
  count_if(systolic_bp < 60 OR systolic_bp > 260), count_if(diastolic_bp < 30 OR diastolic_bp > 160),
  count_if(diastolic_bp >= systolic_bp), count_if(systolic_bp IS NULL),
  count_if(smoking NOT IN ('aldrig', 'tidigare', 'daglig', 'ibland')),
  count_if(treatment NOT IN ('kost', 'tabletter', 'insulin', 'insulin_tabletter', 'glp1', 'pump')),
  count_if(NOT regexp_full_match(postal_code, '[1-9][0-9]{2} ?[0-9]{2}'))
FROM (
  SELECT *, n // 100000000 AS y, n // 1000000 % 100 AS m, n // 10000 % 100 % 60 AS d,
    n // 1000000 % 100 BETWEEN 1 AND 12 AND n // 10000 % 100 % 60 BETWEEN 1 AND CASE
      WHEN n // 1000000 % 100 IN (4, 6, 9, 11) THEN 30
      WHEN n // 1000000 % 100 = 2 THEN CASE WHEN (n // 100000000 % 4 = 0 AND n // 100000000 % 100 <> 0)
                                           OR n // 100000000 % 400 = 0 THEN 29 ELSE 28 END
      ELSE 31 END AS date_ok
  FROM (
    SELECT *, CASE
      WHEN NOT regexp_full_match(personnummer, '([0-9]{6}|[0-9]{8})[-+]?[0-9]{4}') THEN NULL
      WHEN length(replace(replace(personnummer, '-', ''), '+', '')) = 12
        THEN TRY_CAST(replace(replace(personnummer, '-', ''), '+', '') AS BIGINT)
      ELSE ({ref_year} - (({ref_year} - CAST(left(personnummer, 2) AS BIGINT)) % 100)
            - CASE WHEN contains(personnummer, '+') THEN 100 ELSE 0 END) * 100000000
           + CAST(right(replace(replace(personnummer, '-', ''), '+', ''), 8) AS BIGINT) END AS n
    FROM register_visit))
"""
DIRECT_SET_SQL = (
    "SELECT (SELECT count(*) FROM register_visit) - (SELECT count(*) FROM (SELECT DISTINCT personnummer, visit_date "
    "FROM register_visit))",
    "SELECT reason_code, count(*) FROM quarantine WHERE source = 'register' AND stage <> 'quality' GROUP BY ALL",
)


def _luhn_digit(stem: str) -> str:
    total = 0
    for i, ch in enumerate(stem):
        x = int(ch) * (2 if i % 2 == 0 else 1)
        total += x // 10 + x % 10
    return str((10 - total % 10) % 10)


def build(home: Path) -> None:
    """restricted/ndr/raw.duckdb with ROWS register visits (~0.35% defective) and a small PROM table."""
    from datetime import date, timedelta

    import duckdb
    import pyarrow as pa

    from pipelines import quarantine

    pnrs = []
    day = date(1930, 1, 1)
    for i in range(POOL):
        d = day + timedelta(days=i % 24000)
        stem = d.strftime("%y%m%d") + f"{((i // 24000) * 37 + 1) % 1000:03d}"  # never serial 000
        pnrs.append(d.strftime("%Y") + stem[2:] + _luhn_digit(stem))
    db = home / "restricted" / "ndr" / "raw.duckdb"
    db.parent.mkdir(parents=True, exist_ok=True)
    landing = home / "restricted" / "ndr" / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    (landing / "delivery.json").write_text(
        json.dumps({"holder": "ndr", "extract_date": "2024-06-30", "files": []})
    )
    con = duckdb.connect(str(db))
    con.register("pool_arrow", pa.table({"idx": list(range(POOL)), "pnr": pnrs}))
    con.execute("CREATE TABLE pool AS SELECT * FROM pool_arrow")
    con.execute(f"""
        CREATE TABLE register_visit AS
        SELECT CASE WHEN i % 5000 = 4 THEN left(p.pnr, 11) || CAST((CAST(right(p.pnr, 1) AS INTEGER) + 1) % 10 AS VARCHAR)
                    ELSE p.pnr END AS personnummer,
               'Anna' AS first_name, 'Svensson' AS family_name, '752 37' AS postal_code,
               DATE '1997-01-01' + CAST(i // {POOL} AS INTEGER) * 7 AS visit_date,
               ['typ1', 'typ2', 'lada', 'mody', 'sekundar', 'annan'][1 + i % 6] AS diabetes_type,
               CASE WHEN i % 1000 = 1 THEN 900.0 WHEN i % 1000 = 2 THEN 6.8
                    ELSE 30 + (i * 7919 % 900) / 10.0 END AS hba1c_mmol_mol,
               CASE WHEN i % 2000 = 3 THEN 3.0 ELSE 18 + (i % 200) / 10.0 END AS bmi,
               CAST(110 + i % 50 AS INTEGER) AS systolic_bp, CAST(60 + i % 30 AS INTEGER) AS diastolic_bp,
               ['aldrig', 'tidigare', 'daglig', 'ibland'][1 + i % 4] AS smoking,
               ['kost', 'tabletter', 'insulin', 'insulin_tabletter', 'glp1', 'pump'][1 + i % 6] AS treatment,
               'register/ndr_visits.csv' AS _source_file, CAST(i + 2 AS BIGINT) AS _line_no
        FROM range({ROWS}) r(i) JOIN pool p ON p.idx = i % {POOL}""")
    con.execute("""CREATE TABLE prom_response AS SELECT personnummer, visit_date, 1 AS eq5d_mobility,
        2 AS eq5d_self_care, 1 AS eq5d_usual_activities, 2 AS eq5d_pain_discomfort, 1 AS eq5d_anxiety_depression,
        80 AS eq_vas, '5' AS prem_respect, '4' AS prem_involvement, '3' AS prem_information,
        'ej aktuellt' AS prem_accessibility, '5' AS prem_overall, 'prom/prom_visits.csv' AS _source_file,
        _line_no FROM register_visit WHERE _line_no < 20002""")
    con.execute("DROP TABLE pool")
    quarantine.ensure_table(con)
    quarantine.add(
        con,
        [
            quarantine.QuarantineRecord(
                stage="ingest",
                holder="ndr",
                source="register",
                reason_code="csv.duplicate",
                source_file="register/x.csv",
                line_no=n,
            )
            for n in range(2, 52)
        ],
    )
    con.close()


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(side: str, home: str, run: str) -> None:
    os.environ["HDP_HOME"] = home
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    out: dict = {"side": side}
    if side == "gate":
        t = time.perf_counter()
        import great_expectations  # noqa: F401  (one-time per worker; reported, not timed)

        out["gx_import_s"] = time.perf_counter() - t
        from pipelines.quality.gate import run_gate

        t = time.perf_counter()
        result = run_gate("raw", holder_id="ndr", run_id=run)
        out["seconds"] = time.perf_counter() - t
        out["checks"] = len(result.checks)
        out["quarantined"] = result.quarantined_rows
        out["passed"] = result.passed
        out["failed_rows_hba1c"] = next(
            c.failed_rows for c in result.checks if c.id == "register.hba1c_mmol_mol.range"
        )
        out["failed_rows_pnr"] = next(
            c.failed_rows for c in result.checks if c.id == "register.personnummer.valid"
        )
    else:
        import duckdb

        t = time.perf_counter()
        con = duckdb.connect(str(Path(home) / "restricted" / "ndr" / "raw.duckdb"), read_only=True)
        con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        row = con.execute(
            DIRECT_SQL.replace("{ref_year}", "2024").replace("{extract}", "2024-06-30")
        ).fetchone()
        for q in DIRECT_SET_SQL:
            con.execute(q).fetchall()
        con.close()
        out["seconds"] = time.perf_counter() - t
        out["failed_rows_hba1c"] = row[9]
        out["failed_rows_pnr"] = row[2]
    out["peak_mib"] = _peak_mib()
    print(json.dumps(out), flush=True)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_quality_") as tmp:
        home = Path(tmp)
        t = time.perf_counter()
        build(home)
        print(f"built {ROWS:,} register rows in {time.perf_counter() - t:.1f} s", flush=True)
        runs: dict[str, list[dict]] = {"direct": [], "gate": []}
        for rep in range(REPEATS):
            for side in ("direct", "gate"):
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", side, str(home), f"bench-{rep}"],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                runs[side].append(res)
                print(
                    f"rep {rep} {side:6s} {res['seconds']:7.2f} s  peak {res['peak_mib']:7.0f} MiB"
                    + (
                        f"  ({res['checks']} checks, {res['quarantined']} rows quarantined, "
                        f"GX import {res['gx_import_s']:.1f} s)"
                        if side == "gate"
                        else ""
                    ),
                    flush=True,
                )
        for key in ("failed_rows_hba1c", "failed_rows_pnr"):  # both sides computed the same thing
            assert runs["gate"][0][key] == runs["direct"][0][key], f"sides disagree on {key}"
        gate_s = statistics.median(r["seconds"] for r in runs["gate"])
        direct_s = statistics.median(r["seconds"] for r in runs["direct"])
        peak = max(r["peak_mib"] for r in runs["gate"])
        gx_import = statistics.median(r["gx_import_s"] for r in runs["gate"])
        print(
            f"gate median {gate_s:.2f} s ({ROWS / gate_s:,.0f} rows/s), direct SQL median {direct_s:.2f} s "
            f"({ROWS / direct_s:,.0f} rows/s), gate peak {peak:.0f} MiB, direct peak "
            f"{max(r['peak_mib'] for r in runs['direct']):.0f} MiB; GX import {gx_import:.1f} s per process "
            f"(ratio with it: {(gate_s + gx_import) / direct_s:.2f})"
        )
        print(
            f"BENCH quality rows_per_s={ROWS / gate_s:.0f} wall_s={gate_s:.2f} direct_s={direct_s:.2f} "
            f"peak_mib={peak:.0f} ratio={gate_s / direct_s:.2f}"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
