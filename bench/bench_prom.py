"""PROM scoring benchmark: EQ-5D-5L profile, level sum, EQ VAS and one index over 10,000,000 responses.

Input, generated once per invocation (not timed): the five EQ-5D-5L dimensions and EQ VAS of
``prom_response`` (INTEGER columns, as the research zone holds them), written once to a Parquet
file. Levels are skewed towards 1-2 as in a population; 2 % of responses have one dimension
out of range (0, 6 or 9), 1 % one dimension NULL; EQ VAS is NULL in 1 % and out of range in
0.5 %.

Measured side by side in the same run, same file, each in its own child process (so peak
memory is that side's own), alternating which goes first, ``--runs`` times; medians reported:

* ``ours``     - read the six columns from the Parquet file and score them with
  ``pipelines.outcomes.scoring.score_eq5d(table, ["se_5l_tto_2020"])``: profile (dictionary
  encoded string), level sum, EQ VAS checked, the Swedish 5L TTO index, reason counts.
* ``baseline`` - the plain read of the same six columns from the same file
  (``pyarrow.parquet.read_table``): what any use of these columns costs before computing
  anything.

The scoring alone (ours minus read) and the ratio of CPU seconds (user + system, all threads;
steadier than wall time when the machine is shared) are printed as context; the load average
is printed with every run.

    python bench/bench_prom.py [--rows N] [--runs N]

Last line: ``BENCH prom responses_per_s=... baseline_per_s=... ratio=... peak_rss_mib=...`` with
ratio = median time ours / median time baseline (goal <= 1.5) and the peak RSS of the ``ours``
child.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLUMNS = [
    "eq5d_mobility",
    "eq5d_self_care",
    "eq5d_usual_activities",
    "eq5d_pain_discomfort",
    "eq5d_anxiety_depression",
    "eq_vas",
]
VALUE_SET = "se_5l_tto_2020"


def build_input(path: Path, rows: int, seed: int = 20261204) -> None:
    rng = np.random.default_rng(seed)
    p = np.array([0.45, 0.28, 0.15, 0.08, 0.04])
    dims = [rng.choice(np.arange(1, 6, dtype=np.int32), size=rows, p=p) for _ in range(5)]
    masks = [np.zeros(rows, dtype=bool) for _ in range(5)]
    u = rng.random(rows)
    which = rng.integers(0, 5, size=rows)
    bad_value = rng.choice(np.array([0, 6, 9], dtype=np.int32), size=rows)
    for d in range(5):
        out_of_range = (u < 0.02) & (which == d)
        dims[d][out_of_range] = bad_value[out_of_range]
        masks[d] = (u >= 0.02) & (u < 0.03) & (which == d)
    vas = np.clip(rng.normal(75, 15, size=rows), 0, 100).astype(np.int32)
    v = rng.random(rows)
    vas[v < 0.005] = 101
    vas_null = (v >= 0.005) & (v < 0.015)
    arrays = [pa.array(d, mask=m) for d, m in zip(dims, masks, strict=True)]
    arrays.append(pa.array(vas, mask=vas_null))
    pq.write_table(pa.table(arrays, names=COLUMNS), path)


CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
import pyarrow.parquet as pq
from pipelines.outcomes.scoring import score_eq5d
from pipelines.outcomes.valuesets import load_value_set
vs = load_value_set({value_set!r}); vs.state_values()   # load once, before the clock
side, path = sys.argv[1], sys.argv[2]
usage0 = resource.getrusage(resource.RUSAGE_SELF)
cpu0 = usage0.ru_utime + usage0.ru_stime
t0 = time.perf_counter()
table = pq.read_table(path, columns={columns!r})
t_read = time.perf_counter() - t0
result = None
if side == "ours":
    result = score_eq5d(table, [vs])
seconds = time.perf_counter() - t0
usage = resource.getrusage(resource.RUSAGE_SELF)
out = {{"seconds": seconds, "read_seconds": t_read, "cpu_seconds": usage.ru_utime + usage.ru_stime - cpu0,
       "peak_rss_mib": usage.ru_maxrss / 1024}}
if result is not None:
    out.update(scored=result.scored, counts=result.counts)
print(json.dumps(out))
"""


def run_child(side: str, path: Path) -> dict:
    code = CHILD.format(root=str(ROOT), value_set=VALUE_SET, columns=COLUMNS)
    proc = subprocess.run(
        [sys.executable, "-c", code, side, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=int(os.environ.get("BENCH_PROM_ROWS", "10000000")))
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_PROM_RUNS", "3")))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_prom_") as tmp:
        path = Path(tmp) / "prom_response.parquet"
        build_input(path, args.rows)
        print(
            f"input: {args.rows:,} responses, {path.stat().st_size / 2**20:.0f} MiB Parquet, cpus={os.cpu_count()}"
        )
        ours: list[dict] = []
        base: list[dict] = []
        for run in range(args.runs):
            order = ("ours", "baseline") if run % 2 == 0 else ("baseline", "ours")
            for side in order:
                m = run_child(side, path)
                (ours if side == "ours" else base).append(m)
                print(
                    f"run {run + 1} {side:8s} {m['seconds']:.3f} s (read {m['read_seconds']:.3f} s) "
                    f"cpu {m['cpu_seconds']:.3f} s "
                    f"peak {m['peak_rss_mib']:.0f} MiB load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
        ours_s = statistics.median(m["seconds"] for m in ours)
        base_s = statistics.median(m["seconds"] for m in base)
        scoring_s = statistics.median(m["seconds"] - m["read_seconds"] for m in ours)
        peak = statistics.median(m["peak_rss_mib"] for m in ours)
        cpu_ratio = statistics.median(m["cpu_seconds"] for m in ours) / statistics.median(
            m["cpu_seconds"] for m in base
        )
        print(f"scored {ours[-1]['scored']:,} of {args.rows:,}; counts {ours[-1]['counts']}")
        print(
            f"median: ours {ours_s:.3f} s, baseline {base_s:.3f} s, scoring alone {scoring_s:.3f} s "
            f"({args.rows / scoring_s:,.0f} responses/s); CPU seconds ratio {cpu_ratio:.2f} "
            f"(user+system, all threads: steadier than wall time on a shared machine)"
        )
        print(
            f"BENCH prom responses_per_s={args.rows / ours_s:.0f} baseline_per_s={args.rows / base_s:.0f} "
            f"ratio={ours_s / base_s:.2f} peak_rss_mib={peak:.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
