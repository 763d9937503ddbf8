"""Access-layer load benchmark.

20 concurrent researchers send typical queries over real HTTP to a real uvicorn server
(a subprocess) serving a 1,000,000-row release; the same queries run directly in DuckDB on
the release file, with the same concurrency, in the same run. Prints throughput, p50 and p99
through HTTP, and the ratio of the HTTP p50 to the direct p50.

    python bench/run.py access          # or: python bench/bench_access.py [--rows N]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RESEARCHERS = 20
RELEASE = "bench_release"
PURPOSE = "bench-purpose"
VARIABLES = sorted(
    f"register_visit.{c}"
    for c in ("sex", "birth_year", "county", "visit_date", "diabetes_type", "hba1c_mmol_mol", "bmi",
              "systolic_bp", "smoking", "treatment")
)


def typical_queries(sample_person: str) -> list[str]:
    return [
        "SELECT count(*) AS n FROM register_visit WHERE diabetes_type = 1",
        "SELECT sex, avg(hba1c_mmol_mol) AS mean_hba1c, count(*) AS n FROM register_visit GROUP BY sex ORDER BY sex",
        "SELECT county, count(*) AS n, avg(bmi) AS mean_bmi FROM register_visit "
        "WHERE visit_date >= DATE '2020-01-01' GROUP BY county ORDER BY county",
        f"SELECT visit_date, hba1c_mmol_mol, bmi FROM register_visit WHERE person_id = '{sample_person}' "
        "ORDER BY visit_date",
        "SELECT year(visit_date) AS y, count(*) AS visits FROM register_visit GROUP BY y ORDER BY y",
        "SELECT smoking, treatment, count(*) AS n FROM register_visit WHERE hba1c_mmol_mol > 70 "
        "GROUP BY smoking, treatment ORDER BY smoking, treatment",
        "SELECT person_id, visit_date, hba1c_mmol_mol FROM register_visit WHERE bmi > 40 AND county = '03' LIMIT 500",
    ]


# -- server side (runs in the subprocess) -------------------------------------------------


def serve(workdir: Path, port: int) -> None:
    import uvicorn

    from access.app import create_app
    from access.engine import Limits
    from access.ports import InMemoryGovernance, Permit
    from access.service import AccessSettings

    cfg = json.loads((workdir / "server.json").read_text())
    gov = InMemoryGovernance()
    for name, token in cfg["tokens"].items():
        gov.add_user(name, {"researcher"})
        gov._tokens[__import__("hashlib").sha256(token.encode()).hexdigest()] = name
    gov.add_permit(Permit(1, 1, RELEASE, frozenset(cfg["tokens"]), frozenset(VARIABLES),
                          frozenset({"ndr"}), PURPOSE, "record", datetime.now(UTC) + timedelta(days=1)))
    for key in cfg["opted_out"]:
        gov.opt_out(key, datetime.now(UTC) - timedelta(days=1))
    settings = AccessSettings(
        releases_dir=workdir / "releases", audit_path=workdir / "audit" / "access.jsonl",
        limits=Limits(timeout_s=30, max_rows=1_000_000, memory_limit="1GB", threads=2),
    )
    app = create_app(settings, gov)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- client side ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def run_load(fn, queries: list[str], rounds: int) -> tuple[list[tuple[str, float]], float]:
    """Each of RESEARCHERS threads runs every query ``rounds`` times, back to back (no think
    time: a closed-loop stress test), each thread starting at a different query."""
    latencies: list[tuple[str, float]] = []
    lock = threading.Lock()

    def researcher(i: int) -> None:
        order = [queries[(i + k) % len(queries)] for k in range(len(queries) * rounds)]
        mine = []
        for sql in order:
            t0 = time.perf_counter()
            fn(i, sql)
            mine.append((sql, (time.perf_counter() - t0) * 1000))
        with lock:
            latencies.extend(mine)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(RESEARCHERS) as pool:
        list(pool.map(researcher, range(RESEARCHERS)))
    return latencies, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(Path(args.serve), args.port)
        return 0

    import duckdb
    import httpx

    from access.demo_release import consent_key, person_id, write_release

    with tempfile.TemporaryDirectory(prefix="hdp_bench_access_") as tmp:
        work = Path(tmp)
        persons = max(args.rows // 10, 10)
        t0 = time.perf_counter()
        write_release(work / "releases" / RELEASE, persons=persons, visits=args.rows, seed=7)
        print(f"release: {args.rows} rows, {persons} persons, built in {time.perf_counter() - t0:.1f} s")
        import secrets

        tokens = {f"researcher{i:02d}": "hdp_" + secrets.token_urlsafe(24) for i in range(RESEARCHERS)}
        opted_out = [consent_key(i, seed=7) for i in range(0, persons, 100)]  # 1 % withdrew
        (work / "server.json").write_text(json.dumps({"tokens": tokens, "opted_out": opted_out}))
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(work), "--port", str(port)], env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.time() + 60
            while True:
                try:
                    if httpx.get(base + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.time() > deadline or proc.poll() is not None:
                    print("server did not start", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            names = list(tokens)
            clients = [httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tokens[n]}"}, timeout=60)
                       for n in names]
            queries = typical_queries(person_id(123, seed=7))

            def via_http(i: int, sql: str) -> None:
                r = clients[i].post(f"/releases/{RELEASE}/query", json={"sql": sql, "format": "json"})
                if r.status_code != 200:
                    raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")

            # warm-up: builds the release engine once (a cold start is not what we measure)
            t0 = time.perf_counter()
            for sql in queries:
                via_http(0, sql)
            print(f"first requests (engine build + warm-up): {time.perf_counter() - t0:.2f} s")

            direct_con = duckdb.connect(str(work / "releases" / RELEASE / "release.duckdb"), read_only=True)
            direct_con.execute("SET threads = 2")
            cursors = [direct_con.cursor() for _ in range(RESEARCHERS)]

            def direct(i: int, sql: str) -> None:
                cursors[i].sql(sql).fetchall()

            for sql in queries:
                direct(0, sql)
            # Serial direct timings, per query: which queries are "under 50 ms direct".
            serial = {sql: statistics.median(
                [(lambda t: (direct(0, sql), (time.perf_counter() - t) * 1000)[1])(time.perf_counter())
                 for _ in range(5)]) for sql in queries}
            d_lat, d_wall = run_load(direct, queries, args.rounds)
            h_lat, h_wall = run_load(via_http, queries, args.rounds)
            for c in clients:
                c.close()
            direct_con.close()
        finally:
            proc.terminate()
            proc.wait(timeout=20)

    fast = {sql for sql, ms in serial.items() if ms < 50}
    print(f"queries: {len(queries)} typical, {len(fast)} of them under 50 ms direct "
          f"(serial medians ms: {', '.join(f'{v:.1f}' for v in serial.values())})")

    def stats(lat: list[tuple[str, float]], wall: float) -> tuple[float, float, float, float]:
        all_ms = [ms for _, ms in lat]
        fast_ms = [ms for sql, ms in lat if sql in fast] or all_ms
        return len(all_ms) / wall, statistics.median(all_ms), _pct(all_ms, 99), _pct(fast_ms, 99)

    d_qps, d_p50, d_p99, d_p99f = stats(d_lat, d_wall)
    h_qps, h_p50, h_p99, h_p99f = stats(h_lat, h_wall)
    print(f"direct DuckDB, {RESEARCHERS} concurrent: {d_qps:.1f} q/s, p50 {d_p50:.1f} ms, "
          f"p99 {d_p99:.1f} ms (fast queries {d_p99f:.1f} ms)")
    print(f"HTTP access layer, {RESEARCHERS} concurrent: {h_qps:.1f} q/s, p50 {h_p50:.1f} ms, "
          f"p99 {h_p99:.1f} ms (fast queries {h_p99f:.1f} ms)")
    print(f"BENCH access qps={h_qps:.1f} p50_ms={h_p50:.1f} p99_ms={h_p99:.1f} p99_fast_ms={h_p99f:.1f} "
          f"direct_p50_ms={d_p50:.1f} ratio={h_p50 / d_p50:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
