"""Benchmark: pseudonymisation of a 10,000,000-row table with 1,000,000 distinct persons.

End to end through the real stage, ``pipelines.pseudonymise.pseudonymise_holder``: read the
raw zone, validate identifiers, pseudonymise, generalise, quarantine, write ``person_link``
and the research database. The stage runs in a child process so its peak memory (max RSS,
including any children) is measured alone. The baseline, in the same run, is the naive
approach: a Python loop calling ``hmac.new(key, value, sha256).hexdigest()`` once per row
(hashing only: no validation, no write).

    python bench/bench_pseudonymise.py [--rows N] [--persons N] [--runs N]

Last line: ``BENCH pseudonymise rows_per_s=... peak_mib=... ratio=...`` (medians over runs).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHILD = r"""
import json, resource, sys, time
from hdp.settings import get_settings
from pipelines.pseudonymise import pseudonymise_holder
t0 = time.perf_counter()
result = pseudonymise_holder("ndr", settings=get_settings())
elapsed = time.perf_counter() - t0
peak_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"elapsed": elapsed, "peak_kib": peak_kib, "rows_out": result.rows_out,
                  "quarantined": result.quarantined, "persons": result.persons}))
"""


def make_identifiers(persons: int, seed: int) -> np.ndarray:
    """``persons`` distinct 12-digit identifiers (valid Luhn), about 2% samordningsnummer."""
    rng = np.random.default_rng(seed)
    # distinct (birth day, serial) pairs: spread birth dates over 1920..2019
    days = rng.integers(0, 36500, size=persons * 2)
    serial = rng.integers(0, 1000, size=persons * 2)
    keys = np.unique(days * 1000 + serial)[:persons]
    rng.shuffle(keys)
    days, serial = keys // 1000, keys % 1000
    dates = np.datetime64("1920-01-01") + days.astype("timedelta64[D]")
    y = dates.astype("datetime64[Y]").astype(int) + 1970
    m = dates.astype("datetime64[M]").astype(int) % 12 + 1
    d = (dates - dates.astype("datetime64[M]")).astype(int) + 1
    d = np.where(rng.random(persons) < 0.02, d + 60, d)
    nine = np.stack([(y // 10) % 10, y % 10, m // 10, m % 10, d // 10, d % 10,
                     serial // 100, (serial // 10) % 10, serial % 10], axis=1)
    dbl = nine[:, 0::2] * 2
    dbl = np.where(dbl > 9, dbl - 9, dbl)
    check = (10 - (dbl.sum(axis=1) + nine[:, 1::2].sum(axis=1)) % 10) % 10
    return np.array([f"{a:04d}{b:02d}{c:02d}{s:03d}{k}" for a, b, c, s, k in zip(y, m, d, serial, check, strict=True)])


def build_raw(home: Path, rows: int, persons: int, seed: int = 20260101) -> None:
    import duckdb
    import pyarrow as pa

    ids = make_identifiers(persons, seed)
    raw = home / "restricted" / "ndr"
    (raw / "landing").mkdir(parents=True)
    (raw / "landing" / "delivery.json").write_text(json.dumps({"holder": "ndr", "extract_date": "2026-01-15",
                                                               "files": []}))
    con = duckdb.connect(str(raw / "raw.duckdb"))
    con.register("persons", pa.table({"pid": pa.array(np.arange(persons)), "v": pa.array(ids)}))
    # Deliveries mix forms: ~80% 12 digits, 10% with '-', 10% 10-digit with '-' (only for persons
    # well under 100, so the century is unambiguous); 0.1% carry a wrong check digit.
    con.execute("""
        CREATE TEMP TABLE p AS SELECT pid, CASE
            WHEN hash(pid, 9) % 1000 = 0 THEN left(v, 11) || CAST((CAST(right(v, 1) AS INTEGER) + 1) % 10 AS VARCHAR)
            WHEN hash(pid, 9) % 10 = 1 THEN left(v, 8) || '-' || right(v, 4)
            WHEN hash(pid, 9) % 10 = 2 AND CAST(left(v, 4) AS INTEGER) >= 1930 THEN substr(v, 3, 6) || '-' || right(v, 4)
            ELSE v END AS personnummer
        FROM persons""")
    con.execute(f"""
        CREATE TABLE register_visit AS
        SELECT p.personnummer, 'Förnamn' AS first_name, 'Efternamn' AS family_name,
               lpad(CAST(10000 + (hash(i, 1) % 89000) AS VARCHAR), 5, '0') AS postal_code,
               DATE '2015-01-01' + CAST(hash(i, 2) % 3650 AS INTEGER) AS visit_date,
               CASE WHEN i % 10 = 0 THEN 'typ1' ELSE 'typ2' END AS diabetes_type,
               round(30 + (hash(i, 3) % 700) / 10.0, 1) AS hba1c_mmol_mol,
               round(18 + (hash(i, 4) % 250) / 10.0, 1) AS bmi,
               CAST(100 + hash(i, 5) % 80 AS INTEGER) AS systolic_bp,
               CAST(60 + hash(i, 6) % 40 AS INTEGER) AS diastolic_bp,
               CASE hash(i, 7) % 4 WHEN 0 THEN 'aldrig' WHEN 1 THEN 'tidigare' WHEN 2 THEN 'daglig' ELSE 'ibland' END
                   AS smoking,
               'tabletter' AS treatment,
               'register/ndr_visits.csv' AS _source_file, i + 2 AS _line_no
        FROM range({rows}) t(i) JOIN p ON p.pid = i % {persons}
    """)
    con.close()


def naive_baseline(home: Path, key: bytes) -> tuple[float, int]:
    """Seconds for ``hmac.new(...).hexdigest()`` per row over every identifier of the table."""
    import duckdb

    con = duckdb.connect(str(home / "restricted" / "ndr" / "raw.duckdb"), read_only=True)
    values = [v.encode() for (v,) in con.execute("SELECT personnummer FROM register_visit").fetchall()]
    con.close()
    t0 = time.perf_counter()
    out = [hmac.new(key, v, hashlib.sha256).hexdigest() for v in values]
    elapsed = time.perf_counter() - t0
    return elapsed, len(out)


def one_run(rows: int, persons: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="hdp-bench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        t0 = time.perf_counter()
        build_raw(home, rows, persons)
        print(f"  input built: {rows:,} rows, {persons:,} persons ({time.perf_counter() - t0:.1f} s, not timed)",
              flush=True)
        kek = secrets.token_bytes(32)
        env = {**os.environ, "HDP_HOME": str(home), "HDP_KEK": base64.b64encode(kek).decode(),
               "HDP_KEK_DIR": str(Path(tmp) / "kekdir"), "PYTHONPATH": str(REPO)}
        env.pop("HDP_KEK_FILE", None)
        proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit("pseudonymisation run failed")
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  stage: {child['elapsed']:.2f} s, peak {child['peak_kib'] / 1024:.0f} MiB, "
              f"{child['rows_out']:,} rows out, {child['quarantined']:,} quarantined, {child['persons']:,} persons",
              flush=True)
        naive_s, n = naive_baseline(home, secrets.token_bytes(32))
        print(f"  naive hmac loop: {naive_s:.2f} s for {n:,} rows ({n / naive_s / 1e6:.2f} M rows/s)", flush=True)
    return {"rows_per_s": rows / child["elapsed"], "peak_mib": child["peak_kib"] / 1024,
            "ratio": naive_s / child["elapsed"], "stage_s": child["elapsed"], "naive_s": naive_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--persons", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args(argv)
    results = []
    for i in range(args.runs):
        print(f"run {i + 1}/{args.runs}", flush=True)
        results.append(one_run(args.rows, args.persons))
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print(f"median over {args.runs} run(s): stage {med['stage_s']:.2f} s, naive {med['naive_s']:.2f} s, "
          f"{os.cpu_count()} cores")
    print(f"BENCH pseudonymise rows_per_s={med['rows_per_s']:.0f} peak_mib={med['peak_mib']:.0f} "
          f"ratio={med['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
