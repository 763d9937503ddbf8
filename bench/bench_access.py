"""Access-layer load benchmark: 20 concurrent researchers against a 1,000,000-row release.

What runs (all in one run, same machine, same moment):

* a real uvicorn server (subprocess) built by ``access.app.create_app()`` exactly as in
  production: the governance store is a real Alembic-migrated SQLite file (users, hashed
  tokens, a request approved by its holder, the release bound to the permit, 1 % of the
  persons opted out), audit appends are fsync'ed, settings come from ``HDP_ACCESS_*``;
* a release in the contract layout: ``register_visit`` with ``--rows`` rows (default
  1,000,000) and ``patient`` with one row per person (``--rows``/10);
* the baseline: the same queries run directly in DuckDB on the release file, with the same
  number of concurrent researchers and the same DuckDB threads per query.

The "typical query" mix (each researcher cycles through it from its own starting point):
counts and grouped aggregates over coded columns, a time-filtered aggregate, one person's
visit history (a point filter), a filtered record fetch with LIMIT, and a join of the two
release tables.

Two load shapes, each measured for both the layer and the direct baseline:

* ``think``: researchers think between queries, exponential think time with mean
  ``--think-mean`` seconds (default 1 s; people read a result before asking the next
  question). This is the headline: it is what "20 concurrent researchers" means.
* ``saturated``: closed loop, no think time: 20 requests always in flight. This is a stress
  figure; queueing dominates its latencies on a 2-core machine for both sides.

The layer and the baseline run in alternating blocks (direct, HTTP, HTTP, direct, ...), so a
load spike from other work on a shared machine hits both sides rather than one.

Printed: throughput, p50, p99, p99 of the queries whose serial direct time is under 50 ms,
and the ratio of the layer's p50 to the direct p50 under the same load.

The aggregate tier is measured too, in think mode, on a second release of the same data under
an aggregate-only permit: the mix's aggregate queries (``AGGREGATE_LABELS``) through the closed
grammar, the statistics query, cell-key perturbation and the query ledger (a real SQLite
governance store), against the same SQL run directly on that release file (``agg_ratio``);
``perturb_ms`` is the median per query of the aggregate tier's latency minus the record-level
latency of the same SQL on the same data: what disclosure control costs. The last line is
``BENCH access qps=... p50_ms=... p99_ms=... p99_fast_ms=... ... ratio=...`` (think mode;
``sat_*`` are the saturated figures).

    python bench/run.py access       # or: python bench/bench_access.py [--rows N] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RESEARCHERS = 20
RELEASE = "bench_release"
AGG_RELEASE = "bench_release_agg"  # the same data under an aggregate-only permit
SEED = 7
PURPOSE = "scientific_research"
VARIABLES = sorted(
    [
        f"register_visit.{c}"
        for c in (
            "person_id",
            "sex",
            "birth_year",
            "county",
            "visit_date",
            "diabetes_type",
            "hba1c_mmol_mol",
            "bmi",
            "systolic_bp",
            "smoking",
            "treatment",
        )
    ]
    + [f"patient.{c}" for c in ("person_id", "birth_year", "sex", "county")]
)


def typical_queries(sample_person: str) -> list[tuple[str, str]]:
    """(label, SQL) of the mix; labels name the shape, for the per-query table."""
    return [
        ("count", "SELECT count(*) AS n FROM register_visit WHERE diabetes_type = 1"),
        (
            "group_sex",
            "SELECT sex, avg(hba1c_mmol_mol) AS mean_hba1c, count(*) AS n FROM register_visit "
            "GROUP BY sex ORDER BY sex",
        ),
        (
            "group_county_period",
            "SELECT county, count(*) AS n, avg(bmi) AS mean_bmi FROM register_visit "
            "WHERE visit_date >= DATE '2020-01-01' GROUP BY county ORDER BY county",
        ),
        (
            "person_history",
            f"SELECT visit_date, hba1c_mmol_mol, bmi FROM register_visit "
            f"WHERE person_id = '{sample_person}' ORDER BY visit_date",
        ),
        (
            "group_year",
            "SELECT year(visit_date) AS y, count(*) AS visits FROM register_visit GROUP BY y ORDER BY y",
        ),
        (
            "group_2d_filtered",
            "SELECT smoking, treatment, count(*) AS n FROM register_visit "
            "WHERE hba1c_mmol_mol > 70 GROUP BY smoking, treatment ORDER BY smoking, treatment",
        ),
        (
            "records_limit",
            "SELECT person_id, visit_date, hba1c_mmol_mol FROM register_visit "
            "WHERE bmi > 40 AND county = '03' LIMIT 100",
        ),  # the airlock: 100 rows to look at
        (
            "join",
            "SELECT p.county, count(DISTINCT r.person_id) AS persons, avg(r.hba1c_mmol_mol) AS mean_hba1c "
            "FROM register_visit r JOIN patient p ON p.person_id = r.person_id "
            "WHERE p.birth_year < 1960 AND r.visit_date >= DATE '2022-01-01' GROUP BY p.county ORDER BY p.county",
        ),
    ]


#: The mix's queries an aggregate-only permit accepts (the point lookup and the record fetch
#: are record-level by nature).
AGGREGATE_LABELS = ("count", "group_sex", "group_county_period", "group_year", "group_2d_filtered", "join")


# -- setup ---------------------------------------------------------------------------------


def build_world(work: Path, rows: int) -> dict[str, str]:
    """Release files plus a governance store with researchers, an approved request, the
    release bound to its permit and 1 % opted out. Returns researcher -> token."""
    os.environ["HDP_HOME"] = str(work)
    from hdp.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    from sqlalchemy import insert

    from access.demo_release import consent_key, write_release
    from governance import service
    from governance.models import ConsentRow
    from governance.store import dispose_all, session_scope, upgrade

    persons = max(rows // 10, 10)
    write_release(settings.releases_dir / RELEASE, persons=persons, visits=rows, seed=SEED)
    write_release(settings.releases_dir / AGG_RELEASE, persons=persons, visits=rows, seed=SEED)
    url = settings.governance_url
    upgrade(url)
    now = datetime.now(UTC)
    names = [f"researcher{i:02d}" for i in range(RESEARCHERS)]
    with session_scope(url) as s:
        for n in names:
            service.create_user(s, name=n, roles=["researcher"])
        service.create_user(s, name="steward-ndr", roles=["steward"], holder_ids=["ndr"])
        tokens = {n: service.issue_token(s, user_name=n) for n in names}
    with session_scope(url) as s:
        rid = service.file_request(
            s,
            applicant=names[0],
            now=now,
            project="Benchmark: HbA1c by county and age",
            purpose=PURPOSE,
            legal_basis="gdpr_6_1_e__9_2_j",
            ethics_ref="2024-01234-01",
            variables=VARIABLES,
            holders=["ndr", "region_uppsala"],
            members=names[1:],
            cohort_criteria={},
            period=(None, None),
            data_form="pseudonymised",
            pseudonymisation_justification="Repeated visits of one person must be linked over time.",
            output_tier="record",
            access_days=30,
        )
        service.submit_request(s, request_id=rid, actor=names[0], now=now)
    with session_scope(url) as s:
        service.create_user(s, name="steward-upp", roles=["steward"], holder_ids=["region_uppsala"])
    for holder, steward in (("ndr", "steward-ndr"), ("region_uppsala", "steward-upp")):
        with session_scope(url) as s:
            service.decide(
                s,
                request_id=rid,
                holder_id=holder,
                reviewer=steward,
                decision="approve",
                justification="Proportionate; ethics approval on file.",
                now=now,
            )
    with session_scope(url) as s:
        agg = service.file_request(
            s,
            applicant=names[0],
            now=now,
            project="Benchmark: HbA1c by county and age, tables only",
            purpose=PURPOSE,
            legal_basis="gdpr_6_1_e__9_2_j",
            ethics_ref="2024-01234-01",
            variables=[v for v in VARIABLES if not v.endswith(".person_id")],
            holders=["ndr", "region_uppsala"],
            members=names[1:],
            cohort_criteria={},
            period=(None, None),
            output_tier="aggregate",
            access_days=30,
        )
        service.submit_request(s, request_id=agg, actor=names[0], now=now)
    for holder, steward in (("ndr", "steward-ndr"), ("region_uppsala", "steward-upp")):
        with session_scope(url) as s:
            service.decide(
                s,
                request_id=agg,
                holder_id=holder,
                reviewer=steward,
                decision="approve",
                justification="Proportionate; ethics approval on file.",
                now=now,
            )
    with session_scope(url) as s:
        service.record_release(s, request_id=rid, release_id=RELEASE, manifest_sha256="b" * 64)
        service.record_release(s, request_id=agg, release_id=AGG_RELEASE, manifest_sha256="c" * 64)
    # 1 % of the persons opted out. Inserted in bulk: the benchmark measures queries, not
    # 10,000 individually audited consent registrations.
    with session_scope(url) as s:
        s.execute(
            insert(ConsentRow),
            [
                {
                    "consent_key": consent_key(i, SEED),
                    "scope": "secondary_use",
                    "choice": "opt_out",
                    "valid_from": now - timedelta(days=1),
                    "valid_to": None,
                    "source_ref": "bench",
                    "recorded_at": now - timedelta(days=1),
                    "recorded_by": "steward-ndr",
                }
                for i in range(0, persons, 100)
            ],
        )
    dispose_all()
    return tokens


def app_factory():  # type: ignore[no-untyped-def]
    """The production app, for uvicorn (``--factory``); configured by the environment."""
    from access.app import create_app

    return create_app()


def serve(port: int, workers: int) -> None:
    import uvicorn

    uvicorn.run(
        "bench_access:app_factory",
        factory=True,
        host="127.0.0.1",
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        app_dir=str(Path(__file__).resolve().parent),
    )


# -- load ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


Sample = tuple[str, float]  # (query label, latency ms)


def closed_loop(
    fn: Callable[[int, str], None], queries: list[tuple[str, str]], rounds: int
) -> tuple[list[Sample], float]:
    """Saturated: every researcher runs the whole mix ``rounds`` times back to back."""
    out: list[Sample] = []
    lock = threading.Lock()

    def researcher(i: int) -> None:
        mine = []
        for k in range(len(queries) * rounds):
            label, sql = queries[(i + k) % len(queries)]
            t0 = time.perf_counter()
            fn(i, sql)
            mine.append((label, (time.perf_counter() - t0) * 1000))
        with lock:
            out.extend(mine)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(RESEARCHERS) as pool:
        list(pool.map(researcher, range(RESEARCHERS)))
    return out, time.perf_counter() - t0


def thinking(
    fn: Callable[[int, str], None],
    queries: list[tuple[str, str]],
    duration_s: float,
    think_mean_s: float,
    seed: int,
) -> tuple[list[Sample], float]:
    """Researchers with exponential think time (mean ``think_mean_s``) between queries, for
    ``duration_s`` seconds. Each researcher has its own seeded RNG, so the layer and the
    baseline see the same sequence of pauses and queries."""
    out: list[Sample] = []
    lock = threading.Lock()
    t_start = time.perf_counter()

    def researcher(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        mine = []
        k = i
        time.sleep(rng.uniform(0, think_mean_s))  # do not all start in the same millisecond
        while time.perf_counter() - t_start < duration_s:
            label, sql = queries[k % len(queries)]
            k += 1
            t0 = time.perf_counter()
            fn(i, sql)
            mine.append((label, (time.perf_counter() - t0) * 1000))
            pause = rng.expovariate(1 / think_mean_s)
            time.sleep(max(0.0, min(pause, duration_s - (time.perf_counter() - t_start))))
        with lock:
            out.extend(mine)

    with ThreadPoolExecutor(RESEARCHERS) as pool:
        list(pool.map(researcher, range(RESEARCHERS)))
    return out, time.perf_counter() - t_start


def summarise(samples: list[Sample], wall: float, fast: set[str]) -> dict[str, float]:
    all_ms = [ms for _, ms in samples]
    fast_ms = [ms for label, ms in samples if label in fast] or all_ms
    return {
        "n": len(all_ms),
        "qps": len(all_ms) / wall,
        "p50": statistics.median(all_ms),
        "p99": _pct(all_ms, 99),
        "p99_fast": _pct(fast_ms, 99),
        "p50_fast": statistics.median(fast_ms),
    }


def per_label(samples: list[Sample]) -> dict[str, float]:
    by: dict[str, list[float]] = {}
    for label, ms in samples:
        by.setdefault(label, []).append(ms)
    return {k: statistics.median(v) for k, v in by.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument(
        "--rounds", type=int, default=3, help="saturated mode: passes over the mix per researcher"
    )
    ap.add_argument("--think-mean", type=float, default=1.0, help="mean think time between queries (s)")
    ap.add_argument("--think-duration", type=float, default=48.0, help="think mode: seconds per side")
    ap.add_argument("--blocks", type=int, default=4, help="think mode: alternating blocks per side")
    ap.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("HDP_ACCESS_WORKERS", "2")),
        help="uvicorn workers (default 2, as `hdp serve`)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("HDP_ACCESS_THREADS", "1")),
        help="DuckDB threads per query, for the layer and the baseline alike",
    )
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.port, args.workers)
        return 0

    import duckdb
    import httpx

    from access.demo_release import person_id

    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="hdp_bench_access_") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        tokens = build_world(work, args.rows)
        print(
            f"release: {args.rows} register_visit rows, {max(args.rows // 10, 10)} persons, 1 % opted out; "
            f"governance store (SQLite) and release built in {time.perf_counter() - t0:.1f} s"
        )
        port = _free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "HDP_HOME": str(work),
            "HDP_ACCESS_TIMEOUT_S": "60",
            "HDP_ACCESS_THREADS": str(args.threads),
        }
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--port", str(port), "--workers", str(args.workers)],
            env=env,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.time() + 90
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
            clients = [
                httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tokens[n]}"}, timeout=120)
                for n in names
            ]
            queries = typical_queries(person_id(123, seed=SEED))

            agg_queries = [(label, sql) for label, sql in queries if label in AGGREGATE_LABELS]

            def via_http_to(release: str) -> Callable[[int, str], None]:
                def ask(i: int, sql: str) -> None:
                    r = clients[i].post(f"/releases/{release}/query", json={"sql": sql, "format": "json"})
                    if r.status_code != 200:
                        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")

                return ask

            via_http, via_http_agg = via_http_to(RELEASE), via_http_to(AGG_RELEASE)

            # Warm-up: every worker builds its release engine once (a cold start is not measured).
            t0 = time.perf_counter()
            with ThreadPoolExecutor(RESEARCHERS) as pool:
                list(pool.map(lambda i: [via_http(i, sql) for _, sql in queries], range(RESEARCHERS)))
                list(pool.map(lambda i: [via_http_agg(i, sql) for _, sql in agg_queries], range(RESEARCHERS)))
            print(f"warm-up (engine builds + one pass per researcher): {time.perf_counter() - t0:.1f} s")

            direct_con = duckdb.connect(str(work / "releases" / RELEASE / "release.duckdb"), read_only=True)
            direct_con.execute(f"SET threads = {args.threads}")
            cursors = [direct_con.cursor() for _ in range(RESEARCHERS)]

            def direct(i: int, sql: str) -> None:
                cursors[i].sql(sql).fetchall()

            # The baseline of the aggregate tier: the researcher's SQL straight on its release file.
            agg_con = duckdb.connect(str(work / "releases" / AGG_RELEASE / "release.duckdb"), read_only=True)
            agg_con.execute(f"SET threads = {args.threads}")
            agg_cursors = [agg_con.cursor() for _ in range(RESEARCHERS)]

            def direct_agg(i: int, sql: str) -> None:
                agg_cursors[i].sql(sql).fetchall()

            for _, sql in queries:
                direct(0, sql)
            serial: dict[str, float] = {}
            for label, sql in queries:
                xs = []
                for _ in range(5):
                    t = time.perf_counter()
                    direct(0, sql)
                    xs.append((time.perf_counter() - t) * 1000)
                serial[label] = statistics.median(xs)
            fast = {label for label, ms in serial.items() if ms < 50}

            # The two sides run in alternating blocks (ABBA...), not one after the other: on a
            # shared, noisy machine a load spike then hits both sides instead of one.
            results: dict[str, tuple[list[Sample], float]] = {
                k: ([], 0.0)
                for k in (
                    "direct_sat",
                    "http_sat",
                    "direct_think",
                    "http_think",
                    "direct_agg_think",
                    "http_agg_think",
                )
            }

            def add(key: str, got: tuple[list[Sample], float]) -> None:
                results[key] = (results[key][0] + got[0], results[key][1] + got[1])

            sides = {"direct": direct, "http": via_http, "direct_agg": direct_agg, "http_agg": via_http_agg}
            for b in range(args.rounds):
                for side in ("direct", "http") if b % 2 == 0 else ("http", "direct"):
                    add(f"{side}_sat", closed_loop(sides[side], queries, 1))
            block = args.think_duration / args.blocks
            for b in range(args.blocks):
                for side in ("direct", "http") if b % 2 == 0 else ("http", "direct"):
                    add(f"{side}_think", thinking(sides[side], queries, block, args.think_mean, seed=b))
                for side in ("direct_agg", "http_agg") if b % 2 == 0 else ("http_agg", "direct_agg"):
                    add(f"{side}_think", thinking(sides[side], agg_queries, block, args.think_mean, seed=b))
            for c in clients:
                c.close()
            direct_con.close()
            agg_con.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    load_end = os.getloadavg()

    print(
        f"machine: {os.cpu_count()} cores, load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end; "
        f"server: {args.workers} uvicorn worker(s), DuckDB threads per query: {args.threads}"
    )
    print(
        f"mix: {len(queries)} queries, {len(fast)} under 50 ms direct (serial medians: "
        + ", ".join(f"{k} {v:.1f}" for k, v in serial.items())
        + " ms)"
    )
    s = {k: summarise(*v, fast) for k, v in results.items()}
    for key, what in (
        ("direct_sat", "direct DuckDB, saturated"),
        ("http_sat", "HTTP layer,   saturated"),
        ("direct_think", f"direct DuckDB, think {args.think_mean:g} s"),
        ("http_think", f"HTTP layer,   think {args.think_mean:g} s"),
    ):
        r = s[key]
        print(
            f"{what:32s} n={r['n']:5d} {r['qps']:6.1f} q/s  p50 {r['p50']:7.1f} ms  p99 {r['p99']:7.1f} ms  "
            f"fast: p50 {r['p50_fast']:6.1f} p99 {r['p99_fast']:7.1f} ms"
        )
    ht, dt = per_label(results["http_think"][0]), per_label(results["direct_think"][0])
    print(
        "think mode, median per query (http / direct ms): "
        + ", ".join(f"{k} {ht[k]:.1f}/{dt[k]:.1f}" for k in ht)
    )
    ha, da = per_label(results["http_agg_think"][0]), per_label(results["direct_agg_think"][0])
    print(
        "aggregate tier, think mode, median per query (http aggregate / http record-level / direct ms): "
        + ", ".join(f"{k} {ha[k]:.1f}/{ht[k]:.1f}/{da[k]:.1f}" for k in ha)
    )
    # What the closed grammar, the statistics query, perturbation and the ledger cost per query:
    # the same SQL on the same data through an aggregate-only and a record-level permit.
    perturb_ms = statistics.median(ha[k] - ht[k] for k in ha)
    a, ad = s["http_agg_think"], s["direct_agg_think"]
    print(
        f"aggregate tier: p50 {a['p50']:.1f} ms (direct {ad['p50']:.1f} ms), p99 {a['p99']:.1f} ms; "
        f"perturbation cost per query (median over the mix, aggregate - record-level): {perturb_ms:.1f} ms"
    )
    t, d, st, sd = s["http_think"], s["direct_think"], s["http_sat"], s["direct_sat"]
    print(
        f"BENCH access qps={t['qps']:.1f} p50_ms={t['p50']:.1f} p99_ms={t['p99']:.1f} "
        f"p99_fast_ms={t['p99_fast']:.1f} direct_p50_ms={d['p50']:.1f} "
        f"sat_qps={st['qps']:.1f} sat_p50_ms={st['p50']:.1f} sat_p99_ms={st['p99']:.1f} "
        f"sat_p99_fast_ms={st['p99_fast']:.1f} sat_ratio={st['p50'] / sd['p50']:.2f} "
        f"agg_p50_ms={a['p50']:.1f} agg_p99_ms={a['p99']:.1f} agg_direct_p50_ms={ad['p50']:.1f} "
        f"agg_ratio={a['p50'] / ad['p50']:.2f} perturb_ms={perturb_ms:.1f} "
        f"ratio={t['p50'] / d['p50']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
