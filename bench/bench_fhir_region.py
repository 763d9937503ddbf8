"""Region-scale FHIR delivery: P patients (~50 resources each) stream through ingestion in bounded memory.

Data: a Bulk Data delivery (one NDJSON file per resource type) of ``P`` patients, written to disk
as it is generated, never held in memory. The project's generator (``synthetic_data.fhir``) keeps
its whole population in memory, so it only provides templates: the journals of 64 of its patients
with about 50 resources each (Patient, Encounter, Observation, Condition, MedicationRequest,
Procedure, QuestionnaireResponse). Patient ``k`` is template ``k % 64`` with every resource id
(a uuid) given a new last group, the patient number ``k``: ids stay unique and references
consistent, and each resource costs one ``str.join``. Kept in ``$BENCH_FHIR_REGION_DIR`` (default
/tmp/hdp_bench_fhir_region) per size, so a size is generated once.

Measured: ``pipelines.fhir.ingest.ingest_fhir`` on it, in a fresh process (imports and worker
start-up included), with the peak memory of that process tree (RSS summed over the process and its
workers every 0.1 s, an upper bound: pages the forked workers share with their parent count once per
process; the PSS sum, which splits shared pages, is printed too). Its progress lines (the task log)
are passed through.

Usage: ``python bench/bench_fhir_region.py [PATIENTS]`` or ``make bench NAME=fhir_region`` with
``BENCH_FHIR_REGION_PATIENTS`` (default 10,000: ~0.5 M resources, under a minute, so that it can run
with the other benchmarks; the issue's region is 300,000 patients, ~15 M resources, ~9 GB of NDJSON
and about twice that in the raw zone). ``--keep-db`` leaves the raw zone for inspection.

Measured (2 cores shared with other work, load average 2-3): 300,000 patients, 16.1 M resources,
8.8 GiB of NDJSON, in 420 s (38,000 resources/s), raw zone 13.0 GiB, peak 2.5 GiB RSS for the
process tree (2.4 GiB the main process): ratio 0.63.

Last line: ``BENCH fhir_region resources=<n> resources_per_s=<v> peak_rss_mib=<v> ratio=<peak/4096>``
(the goal is a ratio below 1: under 4 GiB).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

HOLDER = "region_uppsala"
TEMPLATES = 64
RESOURCES_PER_PATIENT = 50
LIMIT_MIB = 4096
HOME = Path(os.environ.get("BENCH_FHIR_REGION_DIR", "/tmp/hdp_bench_fhir_region"))
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _template_journals() -> list[list[tuple[str, list[str]]]]:
    """Journals of TEMPLATES patients of about RESOURCES_PER_PATIENT resources each, every resource
    as its type and the pieces of its JSON text around the last group of each uuid in it."""
    from synthetic_data.fhir import iter_fhir_resources

    journals: list[list[dict]] = []
    for r in iter_fhir_resources(seed=23, persons=1200, region=HOLDER):
        if r["resourceType"] == "Patient":
            journals.append([])
        journals[-1].append(r)
    journals.sort(key=lambda j: (abs(len(j) - RESOURCES_PER_PATIENT), j[0]["id"]))
    chosen = journals[:TEMPLATES]
    prefixes: set[str] = set()
    out = []
    for journal in chosen:
        pieces = []
        for r in journal:
            text = json.dumps(r, ensure_ascii=False, separators=(",", ":"))
            cuts, start = [], 0
            for m in _UUID.finditer(text):
                prefixes.add(m.group()[:24])
                cuts.append(text[start : m.end() - 12])
                start = m.end()
            cuts.append(text[start:] + "\n")
            pieces.append((r["resourceType"], cuts))
        out.append(pieces)
    ids = {r["id"] for j in chosen for r in j}
    assert len({i[:24] for i in ids}) == len(ids), "template ids must differ before their last group"
    return out


def generate(landing: Path, patients: int) -> dict[str, int]:
    """Write the delivery of ``patients`` patients, streaming (a marker file records a complete one)."""
    marker = landing / f".complete-{patients}"
    if marker.exists():
        return json.loads(marker.read_text())
    if landing.exists():
        shutil.rmtree(landing)
    landing.mkdir(parents=True)
    journals = _template_journals()
    files: dict[str, object] = {}
    counts: dict[str, int] = {}
    for k in range(patients):
        suffix = f"{k:012x}"
        for rtype, cuts in journals[k % len(journals)]:
            f = files.get(rtype)
            if f is None:
                f = files[rtype] = open(landing / f"{rtype}.ndjson", "w", encoding="utf-8", buffering=1 << 20)  # noqa: SIM115
            f.write(suffix.join(cuts))  # type: ignore[attr-defined]
            counts[rtype] = counts.get(rtype, 0) + 1
    for f in files.values():
        f.close()  # type: ignore[attr-defined]
    marker.write_text(json.dumps(counts))
    return counts


class PeakMemory:
    """Peak RSS and PSS summed over a process and its children, sampled every 0.1 s."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_main = 0  # the ingesting process alone
        self.peak_workers = 0  # its worker processes together
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            try:
                workers = self.proc.children(recursive=True)
                main = self.proc.memory_info().rss
                rest = sum(p.memory_info().rss for p in workers)
                self.peak_main = max(self.peak_main, main)
                self.peak_workers = max(self.peak_workers, rest)
                self.peak_rss = max(self.peak_rss, main + rest)
                procs = [self.proc, *workers]
                if tick % 5 == 0:  # PSS is costlier to read
                    self.peak_pss = max(self.peak_pss, sum(p.memory_full_info().pss for p in procs))
            except psutil.Error:
                pass  # a process exited between listing and reading: take the next sample
            tick += 1
            self._stop.wait(0.1)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def one_run(keep_db: bool) -> None:
    """Child process: one ingest with progress lines on stderr; prints its result (counts) as JSON."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    from hdp.settings import get_settings
    from pipelines.fhir.ingest import ingest_fhir

    get_settings.cache_clear()
    t = time.perf_counter()
    result = ingest_fhir(HOLDER)
    raw_db = get_settings().raw_db(HOLDER)
    out = dict(result.__dict__, ingest_s=time.perf_counter() - t, raw_db_bytes=raw_db.stat().st_size)
    if not keep_db:
        raw_db.unlink(missing_ok=True)
    print(json.dumps(out))


def main(patients: int, keep_db: bool) -> int:
    os.environ["HDP_HOME"] = str(HOME / str(patients))
    from hdp.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    landing = settings.landing_dir(HOLDER) / "fhir"
    t = time.perf_counter()
    counts = generate(landing, patients)
    total = sum(counts.values())
    size = sum(p.stat().st_size for p in landing.glob("*.ndjson"))
    print(
        f"data: {patients:,} patients, {total:,} resources ({total / patients:.1f} per patient) {counts}, "
        f"{size / 2**30:.2f} GiB of NDJSON in {landing} (ready in {time.perf_counter() - t:.0f} s)",
        flush=True,
    )
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)
    settings.raw_db(HOLDER).unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--one-run", *(["--keep-db"] if keep_db else [])]
    t = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    with PeakMemory(child.pid) as mem:
        out, _ = child.communicate()
    wall = time.perf_counter() - t
    if child.returncode != 0:
        print(f"ingest failed (exit {child.returncode})", file=sys.stderr)
        return 1
    result = json.loads(out.strip().splitlines()[-1])
    read = sum(result["resources_read"].values())
    valid = sum(result["resources_valid"].values())
    rate = read / wall
    peak = mem.peak_rss / 2**20
    print(
        f"ingest: {read:,} resources read, {valid:,} valid, {sum(result['quarantined'].values()):,} quarantined, "
        f"{sum(result['rows'].values()):,} flattened rows; {wall:.0f} s in all ({result['ingest_s']:.0f} s in "
        f"ingest_fhir), {rate:,.0f} resources/s; raw zone {result['raw_db_bytes'] / 2**30:.1f} GiB; peak {peak:,.0f} MiB (RSS sum over the process tree; "
        f"PSS sum {mem.peak_pss / 2**20:,.0f} MiB; the main process alone {mem.peak_main / 2**20:,.0f} MiB, "
        f"its workers {mem.peak_workers / 2**20:,.0f} MiB); load average now {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    print(
        f"BENCH fhir_region resources={read} resources_per_s={rate:.0f} peak_rss_mib={peak:.0f} "
        f"ratio={peak / LIMIT_MIB:.2f}"
    )
    return 0 if read == total else 1


if __name__ == "__main__":
    args = sys.argv[1:]
    keep = "--keep-db" in args
    args = [a for a in args if a != "--keep-db"]
    if args == ["--one-run"]:
        one_run(keep)
        sys.exit(0)
    if len(args) > 1 or (args and not args[0].replace("_", "").isdigit()):
        print(f"usage: {sys.argv[0]} [PATIENTS] [--keep-db]", file=sys.stderr)
        sys.exit(2)
    n = int(args[0].replace("_", "")) if args else int(os.environ.get("BENCH_FHIR_REGION_PATIENTS", "10000"))
    sys.exit(main(n, keep))
