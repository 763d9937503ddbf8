"""FHIR benchmark on real shapes: a real-shaped bulk export validated and flattened by ingestion.

Data: ``synthetic_data.fhir_real.iter_real_resources`` (Synthea-style shapes: 21 resource types,
US Core profiles, Patient narratives, conditional and logical references, extensions of many
value types, base64 clinical notes, a contained Medication; see that module), streamed as Bulk
Data NDJSON (one file per type) into a scratch ``$HDP_HOME`` (kept between runs in
``$BENCH_FHIR_REAL_DIR``, default /tmp/hdp_bench_fhir_real, so the data is generated only once).

Ours: ``pipelines.fhir.ingest.ingest_fhir``, as in ``bench_fhir.py``: every resource validated
(msgspec fast path, the reference validator for what it declines), every view run, terminology
and link flags. Each run is a fresh Python process, timed from its start; peak memory is the
sampled RSS of the whole process tree (the ingesting process and its worker processes).

Reference, measured in the same run on a sample with the data's mix of types and extrapolated per
resource (``bench_fhir.run_baseline``): per line ``fhir.resources.R4B.<Type>.model_validate_json``,
the same ViewDefinitions evaluated in Python, the rows inserted into DuckDB, in one process.
``ratio`` = ours / reference (resources per second).

Also reported: the share of a sample the fast path accepts (the rest fall back to the reference).

Environment (or ``--resources N``): ``BENCH_FHIR_REAL_RESOURCES`` (default 1,000,000),
``BENCH_FHIR_REAL_RUNS`` (default 3), ``BENCH_FHIR_REAL_SAMPLE`` (reference sample, default 5,000).

Last line: ``BENCH fhir_real resources_per_s=... ref_resources_per_s=... peak_rss_mib=... ratio=...``
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# (bench_fhir sets $HDP_HOME to its own directory when imported: this benchmark sets its own below.)
from bench.bench_fhir import PeakRss, mix_limits, run_baseline  # noqa: E402

N = int(os.environ.get("BENCH_FHIR_REAL_RESOURCES", "1000000"))
RUNS = int(os.environ.get("BENCH_FHIR_REAL_RUNS", "3"))
SAMPLE = int(os.environ.get("BENCH_FHIR_REAL_SAMPLE", "5000"))
HOME = Path(os.environ.get("BENCH_FHIR_REAL_DIR", "/tmp/hdp_bench_fhir_real"))
HOLDER = "region_uppsala"
SEED = 15
#: About 9.5 resources per encounter, 20 encounters per patient.
RESOURCES_PER_PATIENT = 190

os.environ["HDP_HOME"] = str(HOME)


def real_resources(n: int) -> Iterator[tuple[str, bytes]]:
    """The first ``n`` resources of the export, each as (type, NDJSON line)."""
    import msgspec

    from synthetic_data.fhir_real import iter_real_resources

    encode = msgspec.json.Encoder().encode
    patients = n // RESOURCES_PER_PATIENT + 2
    for i, r in enumerate(iter_real_resources(SEED, patients, providers=max(20, patients // 100))):
        if i >= n:
            return
        yield r["resourceType"], encode(r)


def generate(landing: Path, n: int) -> dict[str, int]:
    """Write the export into ``landing`` (once: a marker names the size it holds)."""
    marker = landing / f".complete-{n}"
    if marker.exists():
        return json.loads(marker.read_text())
    landing.mkdir(parents=True, exist_ok=True)
    for p in landing.glob("*"):
        p.unlink()
    files: dict[str, BinaryIO] = {}
    counts: dict[str, int] = {}
    try:
        for rtype, line in real_resources(n):
            f = files.get(rtype)
            if f is None:
                f = files[rtype] = open(landing / f"{rtype}.000.ndjson", "wb", buffering=1 << 20)  # noqa: SIM115
            f.write(line + b"\n")
            counts[rtype] = counts.get(rtype, 0) + 1
    finally:
        for f in files.values():
            f.close()
    marker.write_text(json.dumps(counts))
    return counts


def one_run() -> None:
    """Child process: one ingest; prints its result (counts only) as JSON."""
    from hdp.settings import get_settings
    from pipelines.fhir.ingest import ingest_fhir

    get_settings.cache_clear()
    print(json.dumps(ingest_fhir(HOLDER).__dict__))


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


def sample_lines(landing: Path, counts: dict[str, int]) -> list[tuple[str, bytes]]:
    """About SAMPLE lines with the data's mix of types (the first lines of each file)."""
    out: list[tuple[str, bytes]] = []
    for rtype, k in mix_limits(counts, SAMPLE).items():
        with open(landing / f"{rtype}.000.ndjson", "rb") as f:
            out.extend((rtype, f.readline().rstrip(b"\n")) for _ in range(k))
    return out


def fast_share(lines: list[tuple[str, bytes]]) -> float:
    from pipelines.fhir.fastvalid import fast_decode

    return sum(fast_decode(line, rtype) is not None for rtype, line in lines) / len(lines)


def main(n: int) -> int:
    from hdp.settings import get_settings

    get_settings.cache_clear()
    landing = get_settings().landing_dir(HOLDER) / "fhir"
    t = time.perf_counter()
    counts = generate(landing, n)
    total = sum(counts.values())
    size = sum(p.stat().st_size for p in landing.glob("*.ndjson"))
    print(
        f"data: {total:,} resources of {len(counts)} types, {size / 2**20:,.0f} MiB ({size / total:,.0f} B a line) "
        f"in {landing} (prepared in {time.perf_counter() - t:.1f} s): {counts}",
        flush=True,
    )
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    lines = sample_lines(landing, counts)
    share = fast_share(lines)
    print(
        f"fast path: accepts {share:.2%} of a sample of {len(lines):,} (the rest fall back to the reference)"
    )

    ours, peaks, cpus = [], [], []
    for i in range(RUNS):
        load = os.getloadavg()[0]
        dt, peak, pss, cpu, result = run_ours()
        ours.append(total / dt)
        peaks.append(peak)
        cpus.append(cpu)
        print(
            f"ours run {i + 1}: {dt:.2f} s, {total / dt:,.0f} resources/s, peak {peak / 2**20:,.0f} MiB "
            f"(RSS of the process and its workers; PSS {pss / 2**20:,.0f} MiB), cpu {cpu:.1f} s, "
            f"valid {sum(result['resources_valid'].values()):,}, quarantined {result['quarantined']}, "
            f"rows {sum(result['rows'].values()):,}, load average {load:.1f}",
            flush=True,
        )
    refs = [run_baseline([line for _, line in lines]) for _ in range(RUNS)]
    for i, r in enumerate(refs):
        print(
            f"reference run {i + 1}: {r:,.0f} resources/s on a sample of {len(lines):,} with the same mix "
            f"(model_validate_json + the same views in Python + insert; extrapolates to {total / r:,.0f} s "
            f"for {total:,})"
        )
    ours_m, ref_m, peak_m = statistics.median(ours), statistics.median(refs), statistics.median(peaks) / 2**20
    print(
        f"median: ours {ours_m:,.0f} resources/s, reference {ref_m:,.0f} resources/s (sample, extrapolated), "
        f"peak {peak_m:,.0f} MiB, ours {total / statistics.median(cpus):,.0f} resources per CPU-second; "
        f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"BENCH fhir_real resources_per_s={ours_m:.0f} ref_resources_per_s={ref_m:.0f} "
        f"peak_rss_mib={peak_m:.0f} ratio={ours_m / ref_m:.2f}"
    )
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if args == ["--one-run"]:
        one_run()
        sys.exit(0)
    if args[:1] == ["--resources"] and len(args) == 2 and args[1].isdigit():
        sys.exit(main(int(args[1])))
    if args:
        print(f"usage: {sys.argv[0]} [--resources N]", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(N))
