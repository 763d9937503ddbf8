"""Benchmark: pseudonymisation of a 10,000,000-row table with 1,000,000 distinct persons (issue 3).

End to end through the real stage, ``pipelines.pseudonymise.pseudonymise_holder``: read the
raw zone, validate identifiers, pseudonymise, generalise, keep rows the raw quality gate
quarantined out, quarantine invalid identifiers, write ``person_link`` and the research
database (``research/ndr.duckdb``, table ``register_visit``, checkpointed to disk).

Baseline, measured in the same run: the naive approach, a Python loop calling
``hmac.new(key, value, sha256).hexdigest()`` once per row (hashing only: no validation, no
write; the values are read and UTF-8 encoded before the clock starts).

Input (built once per invocation, not timed; each run starts from a fresh copy):

* ``--shape register`` (default): the NDR register extract as delivered
  (``schemas/sources/register.json``): identifier, two names, postal code, visit date and 7
  clinical values, plus ``_source_file``/``_line_no``: 14 raw columns, 13 research columns.
  This is the honest "end to end": the stage writes every column, the baseline writes none.
* ``--shape narrow``: identifier, visit date, HbA1c and the position columns only (the research
  table still has its 13 columns; undelivered ones are NULL). Closer to what the baseline does.

Both shapes: identifiers in mixed forms (about 80 % 12 digits, 10 % ``YYYYMMDD-NNNC``, 10 %
``YYMMDD-NNNC``), 2 % samordningsnummer, 0.1 % of persons with a wrong check digit (their rows
are quarantined), and 0.05 % of rows carrying a quarantine record of the raw quality gate
(stage ``quality``), so the stage's anti-join against the gate's records is part of the cost.
Rows are interleaved by person (row *i* belongs to person *i* mod persons), the worst case for
compression of ``person_id``.

Also measured, as context: the *floor*, a plain copy of the same rows' non-identifying columns
into a new DuckDB file (no validation, no pseudonym). It bounds the ratio any design that
writes the research table with DuckDB can reach. It is a generous floor: its 11 columns hold
no person column at all, while the research table's ``person_id`` is 64 hex characters per
row (10 M rows: 640 MB of the 789 MB research file; the floor's file is 129 MB).

Runs alternate (stage first in odd runs, baseline first in even runs); both run in child
processes, the stage's peak memory is its child's max RSS. Figures are medians over runs;
the load average (``os.getloadavg()``) is printed with every measurement, as the machine is
shared. CPU seconds (user + system, all threads) are printed too: on a loaded machine they
are a steadier comparison than wall time.

    python bench/bench_pseudonymise.py [--rows N] [--persons N] [--runs N] [--shape register|narrow]

Last line: ``BENCH pseudonymise rows_per_s=... peak_mib=... ratio=... floor_ratio=...`` (medians;
ratio = naive wall time / stage wall time; floor_ratio = stage wall time / floor wall time, the
stage's cost over a plain copy of the same rows; issue 15's goal is at most 1.5).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STAGE_CHILD = r"""
import json, resource, sys, time
from hdp.settings import get_settings
from pipelines.pseudonymise import pseudonymise_holder
def children_cpu():  # the research file is written by a child process (pipelines/clean_writer.py)
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime
t0, c0, k0 = time.perf_counter(), time.process_time(), children_cpu()
result = pseudonymise_holder("ndr", settings=get_settings())
elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0 + children_cpu() - k0
peak_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"elapsed": elapsed, "cpu": cpu, "peak_kib": peak_kib, "rows_out": result.rows_out,
                  "quarantined": result.quarantined, "persons": result.persons,
                  "excluded": sum(result.excluded_by_quality.values())}))
"""

NAIVE_CHILD = r"""
import hashlib, hmac, json, secrets, sys, time
import duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
values = [v.encode() for (v,) in con.execute("SELECT personnummer FROM register_visit").fetchall()]
con.close()
key = secrets.token_bytes(32)
t0, c0 = time.perf_counter(), time.process_time()
out = [hmac.new(key, v, hashlib.sha256).hexdigest() for v in values]
elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"elapsed": elapsed, "cpu": cpu, "rows": len(out)}))
"""


#: The start and end the two copy children share: argv[1] is the raw zone's file, argv[2] a fresh
#: directory the child works in; the clock starts after the non-identifying columns are listed and
#: counts the CPU of the child's own children (the clean writer) too.
_COPY_START = r"""
import json, resource, sys, time
from pathlib import Path
import duckdb
def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime
raw, work = sys.argv[1], Path(sys.argv[2])
con = duckdb.connect(raw, read_only=True)
cols = [r[0] for r in con.execute("DESCRIBE register_visit").fetchall()
        if r[0] not in ("personnummer", "first_name", "family_name")]
con.close()
t0, c0, k0 = time.perf_counter(), time.process_time(), children_cpu()
"""
_COPY_END = r"""
elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0 + children_cpu() - k0
print(json.dumps({"elapsed": elapsed, "cpu": cpu}))
"""

#: The floor: copying the raw table's non-identifying columns into a new DuckDB file, as the
#: stage's final write does, with no validation and no pseudonym at all. No design that writes
#: the research table with DuckDB can be faster, so ``naive / floor`` bounds the ratio.
FLOOR_CHILD = (
    _COPY_START
    + r"""
con = duckdb.connect(str(work / "floor.duckdb"))
con.execute("SET preserve_insertion_order = false")
con.execute("SET enable_progress_bar = false")  # as in the stage's processes
con.execute(f"ATTACH '{raw}' AS raw (READ_ONLY)")
con.execute(f"CREATE TABLE copy AS SELECT {', '.join(cols)} FROM raw.register_visit")
con.execute("CHECKPOINT")
con.close()
"""
    + _COPY_END
)

#: The barrier floor: the same copy as the floor, but through the hand-over the privacy rule
#: imposes on any design (pipelines/clean_writer.py): the rows go to Parquet in the restricted
#: zone, and a fresh process that never held an identifier writes the DuckDB file from it. Still
#: no validation, no pseudonym. ``barrier / floor`` is what the hand-over alone costs, the part
#: of ``floor_ratio`` no change to pseudonymisation itself can remove.
BARRIER_CHILD = (
    # imported before the clock starts, as the floor's duckdb is
    "from pipelines.clean_writer import TableSource, write_duckdb\n"
    "from pipelines.pseudonymise import _STAGING_PARQUET\n"
    + _COPY_START
    + r"""
con = duckdb.connect()
con.execute("SET preserve_insertion_order = false")
con.execute("SET enable_progress_bar = false")
con.execute(f"ATTACH '{raw}' AS raw (READ_ONLY)")
parquet = work / "copy.parquet"
con.execute(f"COPY (SELECT {', '.join(cols)} FROM raw.register_visit) TO '{parquet}' ({_STAGING_PARQUET})")
con.close()
write_duckdb(work / "barrier.duckdb", [TableSource("copy", parquet)], temp_directory=work,
             preserve_insertion_order=False)
"""
    + _COPY_END
)


def make_identifiers(persons: int, seed: int) -> np.ndarray:
    """``persons`` distinct 12-digit identifiers (valid Luhn), about 2% samordningsnummer."""
    rng = np.random.default_rng(seed)
    # distinct (birth day, serial) pairs: spread birth dates over 1920..2019
    days = rng.integers(0, 36500, size=persons * 2)
    serial = rng.integers(1, 1000, size=persons * 2)  # serial 000 is never issued
    keys = np.unique(days * 1000 + serial)[:persons]
    rng.shuffle(keys)
    days, serial = keys // 1000, keys % 1000
    dates = np.datetime64("1920-01-01") + days.astype("timedelta64[D]")
    y = dates.astype("datetime64[Y]").astype(int) + 1970
    m = dates.astype("datetime64[M]").astype(int) % 12 + 1
    d = (dates - dates.astype("datetime64[M]")).astype(int) + 1
    d = np.where(rng.random(persons) < 0.02, d + 60, d)
    nine = np.stack(
        [
            (y // 10) % 10,
            y % 10,
            m // 10,
            m % 10,
            d // 10,
            d % 10,
            serial // 100,
            (serial // 10) % 10,
            serial % 10,
        ],
        axis=1,
    )
    dbl = nine[:, 0::2] * 2
    dbl = np.where(dbl > 9, dbl - 9, dbl)
    check = (10 - (dbl.sum(axis=1) + nine[:, 1::2].sum(axis=1)) % 10) % 10
    return np.array(
        [f"{a:04d}{b:02d}{c:02d}{s:03d}{k}" for a, b, c, s, k in zip(y, m, d, serial, check, strict=True)]
    )


#: raw columns per shape (after personnummer); the register shape is the delivered NDR layout
_REGISTER_COLUMNS = """
    'Förnamn' AS first_name, 'Efternamn' AS family_name,
    lpad(CAST(10000 + (hash(i, 1) % 89000) AS VARCHAR), 5, '0') AS postal_code,
    DATE '2015-01-01' + CAST(hash(i, 2) % 3650 AS INTEGER) AS visit_date,
    CASE WHEN i % 10 = 0 THEN 'typ1' ELSE 'typ2' END AS diabetes_type,
    CASE WHEN hash(i, 8) % 2000 = 0 THEN 900.0 ELSE round(30 + (hash(i, 3) % 700) / 10.0, 1) END AS hba1c_mmol_mol,
    round(18 + (hash(i, 4) % 250) / 10.0, 1) AS bmi,
    CAST(100 + hash(i, 5) % 80 AS INTEGER) AS systolic_bp,
    CAST(60 + hash(i, 6) % 40 AS INTEGER) AS diastolic_bp,
    CASE hash(i, 7) % 4 WHEN 0 THEN 'aldrig' WHEN 1 THEN 'tidigare' WHEN 2 THEN 'daglig' ELSE 'ibland' END AS smoking,
    'tabletter' AS treatment,"""
_NARROW_COLUMNS = """
    DATE '2015-01-01' + CAST(hash(i, 2) % 3650 AS INTEGER) AS visit_date,
    CASE WHEN hash(i, 8) % 2000 = 0 THEN 900.0 ELSE round(30 + (hash(i, 3) % 700) / 10.0, 1) END AS hba1c_mmol_mol,"""


def build_raw(home: Path, rows: int, persons: int, shape: str, seed: int = 20260101) -> None:
    import duckdb
    import pyarrow as pa

    from pipelines import quarantine

    ids = make_identifiers(persons, seed)
    raw = home / "restricted" / "ndr"
    (raw / "landing").mkdir(parents=True)
    (raw / "landing" / "delivery.json").write_text(
        json.dumps({"holder": "ndr", "extract_date": "2026-01-15", "files": []})
    )
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
    columns = _REGISTER_COLUMNS if shape == "register" else _NARROW_COLUMNS
    con.execute(f"""
        CREATE TABLE register_visit AS
        SELECT p.personnummer, {columns}
               'register/ndr_visits.csv' AS _source_file, i + 2 AS _line_no
        FROM range({rows}) t(i) JOIN p ON p.pid = i % {persons}
    """)
    # what the raw quality gate records for the implausible HbA1c values (stage 'quality')
    quarantine.ensure_table(con)
    con.execute("""INSERT INTO quarantine SELECT 'quality', 'ndr', 'register', _source_file, _line_no, NULL,
        'check.register.hba1c_mmol_mol.range', 'failed quality check register.hba1c_mmol_mol.range',
        'register.hba1c_mmol_mol.range', encode(CAST(to_json(r) AS VARCHAR)), NULL
        FROM register_visit r WHERE hba1c_mmol_mol = 900.0""")
    con.execute("CHECKPOINT")
    con.close()


def _child(code: str, args: list[str], env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit("benchmark child failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def run_stage(pristine: Path, tmp: Path) -> dict:
    home = tmp / "home"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(pristine, home)
    env = {
        **os.environ,
        "HDP_HOME": str(home),
        "HDP_KEK": base64.b64encode(secrets.token_bytes(32)).decode(),
        "HDP_KEK_DIR": str(tmp / "kekdir"),
        "PYTHONPATH": str(REPO),
    }
    env.pop("HDP_KEK_FILE", None)
    load = _load()
    child = _child(STAGE_CHILD, [], env)
    print(
        f"  stage: {child['elapsed']:.2f} s (cpu {child['cpu']:.2f} s), peak {child['peak_kib'] / 1024:.0f} MiB, "
        f"{child['rows_out']:,} rows out, {child['quarantined']:,} quarantined, {child['excluded']:,} excluded "
        f"by the quality gate, {child['persons']:,} persons; load {load}",
        flush=True,
    )
    shutil.rmtree(home, ignore_errors=True)
    return child


def run_naive(pristine: Path) -> dict:
    load = _load()
    child = _child(
        NAIVE_CHILD,
        [str(pristine / "restricted" / "ndr" / "raw.duckdb")],
        {**os.environ, "PYTHONPATH": str(REPO)},
    )
    print(
        f"  naive hmac loop: {child['elapsed']:.2f} s (cpu {child['cpu']:.2f} s) for {child['rows']:,} rows "
        f"({child['rows'] / child['elapsed'] / 1e6:.2f} M rows/s); load {load}",
        flush=True,
    )
    return child


def run_copy(child_code: str, label: str, pristine: Path, tmp: Path) -> dict:
    """One copy child (:data:`FLOOR_CHILD` or :data:`BARRIER_CHILD`) in a fresh work directory."""
    work = tmp / "copy"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    load = _load()
    child = _child(
        child_code,
        [str(pristine / "restricted" / "ndr" / "raw.duckdb"), str(work)],
        {**os.environ, "PYTHONPATH": str(REPO)},
    )
    shutil.rmtree(work, ignore_errors=True)
    print(f"  {label}: {child['elapsed']:.2f} s (cpu {child['cpu']:.2f} s); load {load}", flush=True)
    return child


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--persons", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--shape", choices=("register", "narrow"), default="register")
    args = ap.parse_args(argv)
    stages, naives, floors, barriers = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="hdp-bench-") as tmp_name:
        tmp = Path(tmp_name)
        pristine = tmp / "pristine"
        pristine.mkdir()
        t0 = time.perf_counter()
        build_raw(pristine, args.rows, args.persons, args.shape)
        print(
            f"input built: {args.rows:,} rows, {args.persons:,} persons, shape {args.shape} "
            f"({time.perf_counter() - t0:.1f} s, not timed)",
            flush=True,
        )
        for i in range(args.runs):
            print(f"run {i + 1}/{args.runs}", flush=True)
            if i % 2 == 0:
                stages.append(run_stage(pristine, tmp))
                naives.append(run_naive(pristine))
            else:
                naives.append(run_naive(pristine))
                stages.append(run_stage(pristine, tmp))
            floors.append(run_copy(FLOOR_CHILD, "floor (copy without pseudonyms)", pristine, tmp))
            barriers.append(
                run_copy(
                    BARRIER_CHILD,
                    "barrier floor (the same copy through the clean writer's hand-over)",
                    pristine,
                    tmp,
                )
            )
    stage_s = statistics.median(s["elapsed"] for s in stages)
    naive_s = statistics.median(n["elapsed"] for n in naives)
    stage_cpu = statistics.median(s["cpu"] for s in stages)
    naive_cpu = statistics.median(n["cpu"] for n in naives)
    peak = statistics.median(s["peak_kib"] for s in stages) / 1024
    ratios = [n["elapsed"] / s["elapsed"] for s, n in zip(stages, naives, strict=True)]
    print(
        f"median over {args.runs} run(s), shape {args.shape}: stage {stage_s:.2f} s (cpu {stage_cpu:.2f} s), "
        f"naive {naive_s:.2f} s (cpu {naive_cpu:.2f} s); per-run ratios {', '.join(f'{r:.2f}' for r in ratios)}; "
        f"cpu ratio {naive_cpu / stage_cpu:.2f}; {os.cpu_count()} cores; load {_load()}"
    )
    floor_s = statistics.median(f["elapsed"] for f in floors)
    print(
        f"floor: copying the table without any pseudonym takes {floor_s:.2f} s, so no DuckDB-written "
        f"research table can beat ratio {naive_s / floor_s:.2f}; the stage costs {stage_s / floor_s:.2f}x the copy"
    )
    barrier_s = statistics.median(b["elapsed"] for b in barriers)
    floor_cpu = statistics.median(f["cpu"] for f in floors)
    barrier_cpu = statistics.median(b["cpu"] for b in barriers)
    print(
        f"barrier floor: the same copy through the privacy hand-over takes {barrier_s:.2f} s "
        f"(cpu {barrier_cpu:.2f} s), {barrier_s / floor_s:.2f}x the copy (cpu {barrier_cpu / floor_cpu:.2f}x) "
        f"before any pseudonymisation; the stage costs {stage_s / barrier_s:.2f}x the barrier floor "
        f"(cpu {stage_cpu / barrier_cpu:.2f}x); stage cpu over copy cpu {stage_cpu / floor_cpu:.2f}"
    )
    print(
        f"BENCH pseudonymise rows_per_s={args.rows / stage_s:.0f} peak_mib={peak:.0f} "
        f"ratio={naive_s / stage_s:.2f} floor_ratio={stage_s / floor_s:.2f} "
        f"barrier_floor_ratio={barrier_s / floor_s:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
