"""FHIR benchmark: NDJSON -> validated, flattened DuckDB tables, against the naive baseline.

Data: ``synthetic_data.fhir.iter_fhir_resources`` (the project's generator), written as Bulk
Data NDJSON (one file per type) into a scratch ``$HDP_HOME`` (kept between runs in
``$BENCH_FHIR_DIR``, default /tmp/hdp_bench_fhir, so the data is generated only once).

Ours: ``pipelines.fhir.ingest.ingest_fhir`` (every resource validated: msgspec fast path, the
reference validator for what it cannot decide; every view run, as compiled DuckDB SQL;
terminology and link flags). Each run is a fresh Python process, timed from its start (imports,
model building and worker start-up included), with the peak memory of the whole process tree
(sampled RSS of the process plus its workers) and the CPU time it used (load-independent).

Baseline, measured in the same run on a sample and extrapolated per resource: for each
line, ``fhir.resources.R4B.<Type>.model_validate_json`` then the same ViewDefinitions, then
the flattened rows inserted into DuckDB (``executemany``), in one process.

Environment: ``BENCH_FHIR_RESOURCES`` (default 1,000,000), ``BENCH_FHIR_RUNS`` (default 3),
``BENCH_FHIR_SAMPLE`` (baseline sample size, default 5,000: the baseline runs at a few hundred resources/s).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

N = int(os.environ.get("BENCH_FHIR_RESOURCES", "1000000"))
RUNS = int(os.environ.get("BENCH_FHIR_RUNS", "3"))
SAMPLE = int(os.environ.get("BENCH_FHIR_SAMPLE", "5000"))
HOME = Path(os.environ.get("BENCH_FHIR_DIR", "/tmp/hdp_bench_fhir"))
HOLDER = "region_uppsala"

os.environ["HDP_HOME"] = str(HOME)


def generate(landing: Path) -> dict[str, int]:
    marker = landing / f".complete-{N}"
    if marker.exists():
        return json.loads(marker.read_text())
    from synthetic_data.fhir import iter_fhir_resources

    landing.mkdir(parents=True, exist_ok=True)
    for p in landing.glob("*.ndjson"):
        p.unlink()
    files: dict[str, object] = {}
    counts: dict[str, int] = {}
    n = 0
    persons = max(100, N // 20)
    while n < N:
        for r in iter_fhir_resources(seed=7 + n, persons=persons, region=HOLDER):
            rt = r["resourceType"]
            if n and rt == "Patient" and n >= N:
                break
            if rt not in files:
                files[rt] = open(landing / f"{rt}.ndjson", "w", encoding="utf-8")  # noqa: SIM115
            # Patients of a later batch would repeat ids only across seeds: ids include the seed.
            files[rt].write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")  # type: ignore[attr-defined]
            counts[rt] = counts.get(rt, 0) + 1
            n += 1
            if n >= N and rt != "Patient":
                break
        else:
            continue
        break
    for f in files.values():
        f.close()  # type: ignore[attr-defined]
    marker.write_text(json.dumps(counts))
    return counts


class PeakRss:
    """Peak memory of this process plus its children, sampled every 50 ms.

    ``peak``: sum of RSS (an upper bound: pages the forked workers share with their parent are
    counted once per process). ``peak_pss``: sum of proportional set sizes (shared pages split
    between the processes sharing them), sampled every 0.1 s because it is costlier to read.
    """

    def __init__(self) -> None:
        self.peak = 0
        self.peak_pss = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        tick = 0
        while not self._stop.is_set():
            try:
                procs = [me, *me.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
                if tick % 2 == 0:
                    self.peak_pss = max(self.peak_pss, sum(p.memory_full_info().pss for p in procs))
            except psutil.Error:
                pass  # a worker exited between listing and reading: take the next sample
            tick += 1
            self._stop.wait(0.05)

    def __enter__(self) -> PeakRss:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def one_run() -> None:
    """Child process: one ingest; prints its result (counts only) as JSON."""
    from hdp.settings import get_settings
    from pipelines.fhir.ingest import ingest_fhir

    get_settings.cache_clear()
    result = ingest_fhir(HOLDER)
    print(json.dumps(result.__dict__))


def run_ours() -> tuple[float, int, int, float, dict]:
    import subprocess

    with PeakRss() as mem:
        before = os.times()
        t = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--one-run"], check=True, capture_output=True, text=True)
        dt = time.perf_counter() - t
        after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return dt, mem.peak, mem.peak_pss, cpu, json.loads(out.stdout.strip().splitlines()[-1])


def sample_lines(landing: Path, counts: dict[str, int]) -> list[bytes]:
    """A sample with the same mix of types as the full data set."""
    total = sum(counts.values())
    lines: list[bytes] = []
    for rt, n in sorted(counts.items()):
        k = max(1, round(SAMPLE * n / total))
        with open(landing / f"{rt}.ndjson", "rb") as f:
            for i, line in enumerate(f):
                if i >= k:
                    break
                lines.append(line)
    return lines


def run_baseline(lines: list[bytes]) -> float:
    """resources/s of: R4B model_validate_json per resource, the same views, executemany insert."""
    import duckdb
    from fhir.resources.R4B import get_fhir_model_class

    from pipelines.fhir.ingest import VIEWS_DIR
    from pipelines.fhir.viewdef import load_views

    views = load_views(VIEWS_DIR)
    by_type: dict[str, list] = {}
    for v in views.values():
        by_type.setdefault(v.resource, []).append(v)
    con = duckdb.connect()
    for name, v in views.items():
        con.execute(f'CREATE TABLE "{name}" ({", ".join(f"{c.name} VARCHAR" for c in v.columns)})')
    con.execute("CREATE TABLE fhir_resource (resource_type VARCHAR, id VARCHAR, resource JSON)")
    models = {}
    t = time.perf_counter()
    rows: dict[str, list] = {n: [] for n in views}
    res_rows = []
    for line in lines:
        obj = json.loads(line)
        rt = obj["resourceType"]
        model = models.get(rt) or models.setdefault(rt, get_fhir_model_class(rt))
        model.model_validate_json(line)
        res_rows.append((rt, obj["id"], line.decode()))
        for v in by_type.get(rt, ()):
            rows[v.name].extend(tuple(None if x is None else str(x) for x in r) for r in v.rows(obj))
    con.executemany("INSERT INTO fhir_resource VALUES (?, ?, ?)", res_rows)
    for name, rs in rows.items():
        if rs:
            con.executemany(f'INSERT INTO "{name}" VALUES ({", ".join("?" * len(rs[0]))})', rs)
    dt = time.perf_counter() - t
    con.close()
    return len(lines) / dt


def main() -> int:
    from hdp.settings import get_settings

    get_settings.cache_clear()
    landing = get_settings().landing_dir(HOLDER) / "fhir"
    t = time.perf_counter()
    counts = generate(landing)
    total = sum(counts.values())
    print(f"data: {total:,} resources {counts} in {landing} (prepared in {time.perf_counter() - t:.1f} s)")
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")

    ours = []
    peaks = []
    cpus = []
    for i in range(RUNS):
        load = os.getloadavg()[0]
        dt, peak, pss, cpu, result = run_ours()
        ours.append(total / dt)
        peaks.append(peak)
        cpus.append(cpu)
        valid = sum(result["resources_valid"].values())
        print(f"ours run {i + 1}: {dt:.2f} s, {total / dt:,.0f} resources/s, peak {peak / 2**20:,.0f} MiB "
              f"(RSS sum; PSS {pss / 2**20:,.0f} MiB), "
              f"cpu {cpu:.1f} s ({total / cpu:,.0f} resources per CPU-second), valid {valid:,}, "
              f"quarantined {sum(result['quarantined'].values())}, rows {sum(result['rows'].values()):,}, "
              f"load average {load:.1f}", flush=True)
    lines = sample_lines(landing, counts)
    base = [run_baseline(lines) for _ in range(RUNS)]
    for i, b in enumerate(base):
        print(f"baseline run {i + 1}: {b:,.0f} resources/s on a sample of {len(lines):,} "
              f"(extrapolates to {total / b:,.0f} s for {total:,})")
    ours_m = statistics.median(ours)
    base_m = statistics.median(base)
    peak_m = statistics.median(peaks) / 2**20
    print(f"median: ours {ours_m:,.0f} resources/s, baseline {base_m:,.0f} resources/s (sample, extrapolated), "
          f"peak {peak_m:,.0f} MiB, ours {total / statistics.median(cpus):,.0f} resources per CPU-second; "
          f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"BENCH fhir resources_per_s={ours_m:.0f} peak_mib={peak_m:.0f} ratio={ours_m / base_m:.2f}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--one-run"]:
        one_run()
        sys.exit(0)
    sys.exit(main())
