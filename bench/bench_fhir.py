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

fhir4ds (PyPI ``fhir4ds==0.5.1``, "SQL on FHIR v2 on DuckDB"), side by side unless ``--no-fhir4ds``
or ``BENCH_FHIR4DS=0``: the same NDJSON files and the same ViewDefinitions (``schemas/views/``),
run by ``bench/fhir4ds_child.py`` in a virtual environment of its own (fhir4ds pulls pandas and
psycopg2, which stay out of the project's), created on first use in
``$HDP_BENCH_CACHE/fhir4ds-venv`` (default ``~/.cache/hdp-bench/``) with the project's DuckDB
version pinned, so both sides run the same engine. fhir4ds does not validate: it is a comparison of
loading and flattening only. Timed in the child from before ``import fhir4ds`` to the end of the
last view; peak memory is the child's max RSS. A probe on a sample of ``BENCH_FHIR_SAMPLE``
resources first: when the whole data set would take longer than ``BENCH_FHIR4DS_MAX_S`` (default
600 s), fhir4ds runs on a larger sample (the first resources of each type, same mix) and the rate is
extrapolated, as for the baseline. Each view's rows are compared with ours (counts and column names
only). When fhir4ds cannot be installed or run, one line says so and the benchmark carries on.

Environment: ``BENCH_FHIR_RESOURCES`` (default 1,000,000), ``BENCH_FHIR_RUNS`` (default 3),
``BENCH_FHIR_SAMPLE`` (baseline sample size, default 5,000: the baseline runs at a few hundred resources/s).

Last line: ``BENCH fhir resources_per_s=... peak_mib=... ratio=... fhir4ds_resources_per_s=...``
(``na`` when fhir4ds was not timed).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import fhir4ds_child  # noqa: E402  (stdlib only at import: helpers shared with the child)

N = int(os.environ.get("BENCH_FHIR_RESOURCES", "1000000"))
RUNS = int(os.environ.get("BENCH_FHIR_RUNS", "3"))
SAMPLE = int(os.environ.get("BENCH_FHIR_SAMPLE", "5000"))
HOME = Path(os.environ.get("BENCH_FHIR_DIR", "/tmp/hdp_bench_fhir"))
HOLDER = "region_uppsala"
FHIR4DS = "fhir4ds==0.5.1"
FHIR4DS_MAX_S = float(os.environ.get("BENCH_FHIR4DS_MAX_S", "600"))
CACHE = Path(os.environ.get("HDP_BENCH_CACHE") or Path.home() / ".cache" / "hdp-bench")

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
    between the processes sharing them), sampled every 2 s only: the kernel walks every page of a
    process to compute it (~30 ms of CPU per sample at 2 GiB), so sampling it every 0.1 s took ~30 %
    of one of the two cores away from the ingest being timed. Memory plateaus within seconds, so a
    2 s sample still sees the peak; ``peak`` (cheap to read) stays the figure the goal is about.
    """

    #: Samples (of 50 ms) between two PSS readings.
    PSS_EVERY = 40

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
                if tick % self.PSS_EVERY == 0:
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
    """Child process: one ingest; prints its result (counts only) as JSON.

    The project's modules are imported in the functions that use them, not at the top: the child's
    imports are part of what is timed, and the parent's memory counts in the peak (see PeakRss).
    """
    from hdp.settings import get_settings
    from pipelines.fhir.ingest import ingest_fhir

    get_settings.cache_clear()
    result = ingest_fhir(HOLDER)
    print(json.dumps(result.__dict__))


def run_ours() -> tuple[float, int, int, float, dict]:
    with PeakRss() as mem:
        before = os.times()
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, __file__, "--one-run"], check=True, capture_output=True, text=True
        )
        dt = time.perf_counter() - t
        after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return dt, mem.peak, mem.peak_pss, cpu, json.loads(out.stdout.strip().splitlines()[-1])


def mix_limits(counts: dict[str, int], size: int) -> dict[str, int]:
    """Lines to take from each type's file for a sample of about ``size`` with the data set's mix."""
    total = sum(counts.values())
    return {rt: min(n, max(1, round(size * n / total))) for rt, n in sorted(counts.items())}


def sample_lines(landing: Path, counts: dict[str, int]) -> list[bytes]:
    """A sample with the same mix of types as the full data set."""
    lines: list[bytes] = []
    for rt, k in mix_limits(counts, SAMPLE).items():
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
    models: dict[str, Any] = {}
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


class Fhir4dsUnavailable(Exception):
    """fhir4ds could not be installed or run: the benchmark reports it and goes on."""


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "no output")[:160]


def _step(cmd: list[str], what: str, timeout: float) -> None:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Fhir4dsUnavailable(f"{what} failed: {fhir4ds_child.short_error(e)}") from e
    if p.returncode != 0:
        raise Fhir4dsUnavailable(f"{what} failed (exit {p.returncode}): {_last_line(p.stderr or p.stdout)}")


def fhir4ds_python() -> Path:
    """The fhir4ds venv's interpreter, creating the venv on first use (same DuckDB as ours)."""
    import duckdb

    venv = CACHE / "fhir4ds-venv"
    py = venv / "bin" / "python"
    pins = [FHIR4DS, f"duckdb=={duckdb.__version__}"]
    marker = venv / ("installed-" + "-".join(p.replace("==", "-") for p in pins))
    if marker.exists() and py.exists():
        return py
    if venv.exists():
        shutil.rmtree(venv)  # left over from an interrupted or failed install
    CACHE.mkdir(parents=True, exist_ok=True)
    base = shutil.which("python3.11") or sys.executable
    print(f"fhir4ds: creating {venv} ({' '.join(pins)})", flush=True)
    _step([base, "-m", "venv", str(venv)], "python3.11 -m venv", 300)
    _step(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--retries",
            "1",
            "--timeout",
            "60",
            *pins,
        ],
        f"pip install {' '.join(pins)}",
        1800,
    )
    marker.write_text(" ".join(pins) + "\n")
    return py


def run_fhir4ds(
    py: Path, landing: Path, counts: dict[str, int], limits: dict[str, int] | None, loader: str, ours_db: Path
) -> dict[str, Any]:
    """One child run; its JSON result. ``limits``: lines per type (a sample), None for everything."""
    from pipelines.fhir.ingest import VIEWS_DIR

    with tempfile.TemporaryDirectory(prefix="fhir4ds-", dir=HOME) as tmp:
        spec = {
            "db": str(Path(tmp) / "fhir4ds.duckdb"),
            "scratch": str(Path(tmp) / "sample"),
            "loader": loader,
            "files": [
                [str(landing / f"{rt}.ndjson"), None if limits is None else limits[rt]]
                for rt in sorted(counts)
            ],
            "views": [str(p) for p in sorted(VIEWS_DIR.glob("*.json"))],
            "ours_db": str(ours_db) if ours_db.exists() else None,
        }
        (Path(tmp) / "spec.json").write_text(json.dumps(spec))
        try:
            p = subprocess.run(
                [str(py), str(Path(__file__).with_name("fhir4ds_child.py")), str(Path(tmp) / "spec.json")],
                capture_output=True,
                text=True,
                timeout=max(1800.0, 3 * FHIR4DS_MAX_S),
            )
        except subprocess.TimeoutExpired as e:
            raise Fhir4dsUnavailable(f"the fhir4ds run took too long ({fhir4ds_child.short_error(e)})") from e
    if p.returncode != 0:
        raise Fhir4dsUnavailable(f"the fhir4ds run failed (exit {p.returncode}): {_last_line(p.stderr)}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def bench_fhir4ds(landing: Path, counts: dict[str, int], ours_db: Path) -> float | None:
    """Time fhir4ds on the same data and views; prints its lines, returns resources/s (None: not timed)."""
    total = sum(counts.values())
    try:
        py = fhir4ds_python()
        probe = run_fhir4ds(py, landing, counts, mix_limits(counts, SAMPLE), "dicts", ours_db)
        work = probe["load_s"] + sum(v["seconds"] for v in probe["views"].values())
        projected = probe["import_s"] + total * work / probe["loaded"]
        print(
            f"fhir4ds probe: {probe['loaded']:,} resources in {probe['job_s']:.1f} s, "
            f"projects {projected:,.0f} s for {total:,}",
            flush=True,
        )
        limits = None
        if projected > FHIR4DS_MAX_S:
            limits = mix_limits(counts, max(SAMPLE, int(probe["loaded"] / work * FHIR4DS_MAX_S / 2)))
        res = run_fhir4ds(py, landing, counts, limits, "dicts", ours_db)
    except Exception as e:  # never let fhir4ds fail the benchmark
        reason = str(e) if isinstance(e, Fhir4dsUnavailable) else fhir4ds_child.short_error(e)
        print(f"fhir4ds: not timed ({reason})", flush=True)
        return None
    rate = res["loaded"] / res["job_s"]
    views_s = sum(v["seconds"] for v in res["views"].values())
    scope = (
        f"all {res['loaded']:,} resources"
        if limits is None
        else f"a sample of {res['loaded']:,} (the first resources of each type, same mix; extrapolates to "
        f"{total / rate:,.0f} s for {total:,})"
    )
    print(
        f"fhir4ds {res['fhir4ds']} (DuckDB {res['duckdb']}, own venv; flattening only, fhir4ds does not "
        f"validate resources): {rate:,.0f} resources/s on {scope}: import {res['import_s']:.1f} s + "
        f"load {res['load_s']:.1f} s (json.loads + load_resources) + views {views_s:.1f} s = "
        f"{res['job_s']:.1f} s; peak {res['peak_mib']:,.0f} MiB (max RSS); "
        f"{fhir4ds_child.summary(res['views'])}; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    for name, v in res["views"].items():
        print(fhir4ds_child.view_line(name, v))
    try:
        alt = run_fhir4ds(py, landing, counts, limits, "file", ours_db)
        print(
            f"fhir4ds with its read_json file loader instead (it rewrites each resource through an inferred "
            f"struct: dateTimes in UTC, integers as decimals): {alt['loaded'] / alt['job_s']:,.0f} resources/s "
            f"(load {alt['load_s']:.1f} s); {fhir4ds_child.summary(alt['views'])}",
            flush=True,
        )
        for name, v in alt["views"].items():
            if not v.get("error"):
                print(fhir4ds_child.view_line(name, v))
    except Exception as e:
        reason = str(e) if isinstance(e, Fhir4dsUnavailable) else fhir4ds_child.short_error(e)
        print(f"fhir4ds with its file loader: not timed ({reason})", flush=True)
    return rate


def main(argv: list[str]) -> int:
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
    result: dict = {}
    for i in range(RUNS):
        load = os.getloadavg()[0]
        dt, peak, pss, cpu, result = run_ours()
        ours.append(total / dt)
        peaks.append(peak)
        cpus.append(cpu)
        valid = sum(result["resources_valid"].values())
        print(
            f"ours run {i + 1}: {dt:.2f} s, {total / dt:,.0f} resources/s, peak {peak / 2**20:,.0f} MiB "
            f"(RSS sum; PSS {pss / 2**20:,.0f} MiB), "
            f"cpu {cpu:.1f} s ({total / cpu:,.0f} resources per CPU-second), valid {valid:,}, "
            f"quarantined {sum(result['quarantined'].values())}, rows {sum(result['rows'].values()):,}, "
            f"load average {load:.1f}",
            flush=True,
        )
    lines = sample_lines(landing, counts)
    base = [run_baseline(lines) for _ in range(RUNS)]
    for i, b in enumerate(base):
        print(
            f"baseline run {i + 1}: {b:,.0f} resources/s on a sample of {len(lines):,} "
            f"(extrapolates to {total / b:,.0f} s for {total:,})"
        )
    ours_m = statistics.median(ours)
    base_m = statistics.median(base)
    peak_m = statistics.median(peaks) / 2**20
    print(f"ours per view (last run): {', '.join(f'{k} {n:,}' for k, n in sorted(result['rows'].items()))}")
    f4 = None
    if "--no-fhir4ds" in argv or os.environ.get("BENCH_FHIR4DS", "1") == "0":
        print("fhir4ds: not timed (--no-fhir4ds)")
    else:
        f4 = bench_fhir4ds(landing, counts, get_settings().raw_db(HOLDER))
    print(
        f"median: ours {ours_m:,.0f} resources/s, baseline {base_m:,.0f} resources/s (sample, extrapolated), "
        f"peak {peak_m:,.0f} MiB, ours {total / statistics.median(cpus):,.0f} resources per CPU-second"
        + ("" if f4 is None else f", fhir4ds {f4:,.0f} resources/s (ours / fhir4ds {ours_m / f4:.2f})")
        + f"; load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"BENCH fhir resources_per_s={ours_m:.0f} peak_mib={peak_m:.0f} ratio={ours_m / base_m:.2f}"
        + fhir4ds_child.bench_suffix(f4)
    )
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--one-run"]:
        one_run()
        sys.exit(0)
    unknown = [a for a in sys.argv[1:] if a != "--no-fhir4ds"]
    if unknown:
        print(f"usage: {sys.argv[0]} [--no-fhir4ds]  (unknown: {' '.join(unknown)})", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))
