"""Federation benchmark: a hub and four nodes as separate processes on this machine.

Two figures, both through the real parties (``edge.federation_local.LocalFederation``: ``hdp-hub
serve``, one ``hdp-node run`` per holder, each with its own data home and key-encryption key, every
step through the party's own commands, as its operator would):

* **Landing to a queryable release**, for a large and a small population (default 1,000,000 and
  100,000 persons; ``--persons``/``HDP_BENCH_FED_PERSONS`` and ``--small``). The synthetic
  generator writes one population and hands each holder its own delivery (register and PROM at
  NDR, FHIR at the three regions): that is ``deliver``, the stand-in for the holders' extracts,
  reported but not part of the landing-to-release time. From landing: each node's Airflow runs
  its ingest and pseudonymisation DAGs (``pipelines``, two nodes at a time on two cores); a
  researcher files an aggregate-tier request at the hub naming all four holders and each node's
  stewards approve it at their own node (``approval``, until the hub holds the permit); each node
  builds its part (``parts``, until the hub reports every part delivered); the first federated
  query answers (``first_query``). ``e2e`` is the sum of those four. Each party's peak memory is
  sampled (RSS of its process tree, every 0.25 s) while it runs: the hub, each node's agent, each
  node's pipeline runs, the generator. ``linearity`` = e2e(large) / e2e(small).
* **Federated aggregate query latency** against the same query on one combined table, side by
  side in one run with 10 concurrent researchers (think time, mean 1 s): the hub (one uvicorn
  worker) fanning the query out to the nodes and merging their cells under disclosure control,
  against a single-home installation of the same population (``hdp run``, the same request
  approved there, ``hdp serve --workers 1``), whose one release holds every holder's rows in one
  table per table name. Both over HTTP, in alternating blocks (fed, single, single, fed, ...), so
  a load spike hits both sides. Measured on the large population.

No table is held by all four holders (the register tables are NDR's, the FHIR tables the
regions'), so the mix has queries over ``patient`` (three regional nodes answer; the hub names
NDR as holding no such table) and over ``register_visit`` (NDR answers).

Last line: ``BENCH federation p50_ratio=... e2e_1m_s=... e2e_100k_s=... linearity=...`` (the e2e
keys are named after the populations actually run).

    python bench/run.py federation                 # the issue's pair: 1,000,000 and 100,000
    HDP_BENCH_FED_PERSONS=2000 python bench/bench_federation.py --small 200 --duration 20
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import psutil  # noqa: E402

from edge.federation_local import BIN, LocalFederation  # noqa: E402
from hdp.settings import ensure_private_dir  # noqa: E402

SEED = 42
RESEARCHERS = 10
SCOPE = ("ndr", "region_uppsala", "region_orebro", "region_skane")
#: Stewards per holder; Örebro requires two reviewers (schemas/holders.json).
STEWARDS = {holder: 2 if holder == "region_orebro" else 1 for holder in SCOPE}
VARIABLES = (
    "register_visit.sex",
    "register_visit.birth_year",
    "register_visit.diabetes_type",
    "register_visit.hba1c_mmol_mol",
    "register_visit.bmi",
    "patient.sex",
    "patient.birth_year",
    "patient.county",
)
#: (label, SQL) in the aggregate grammar; the label says which nodes hold the table.
QUERIES = (
    (
        "patient_by_sex[3 regions]",
        "SELECT sex, count(*) AS n, avg(birth_year) AS mean_birth_year FROM patient GROUP BY sex",
    ),
    ("patient_by_county[3 regions]", "SELECT county, count(*) AS n FROM patient GROUP BY county"),
    (
        "visits_by_sex[ndr]",
        "SELECT sex, count(*) AS visits, avg(hba1c_mmol_mol) AS mean_hba1c FROM register_visit GROUP BY sex",
    ),
    (
        "visits_by_type[ndr]",
        "SELECT diabetes_type, count(*) AS visits, avg(bmi) AS mean_bmi FROM register_visit "
        "GROUP BY diabetes_type",
    ),
)
FIRST_QUERY = QUERIES[0][1]
MIB = 1024 * 1024
#: The synthetic generator builds the whole population in memory before it writes (measured on
#: 2026-12-04: 331 MiB for 2,000 persons, 2,718 MiB for 20,000): a population that cannot fit is
#: refused up front instead of being killed after an hour.
GENERATOR_BYTES_PER_PERSON = 140_000


# -- memory ------------------------------------------------------------------------------------


class MemorySampler:
    """Peak RSS of each party's processes, sampled over this process's descendants.

    A process belongs to the party whose data home its ``HDP_HOME`` names (hub, a node, the
    generator, the single home) and to a component named by its command (server, agent,
    pipeline, generator, cli). The peak of a (party, component) is the largest sum of RSS of its
    processes at one sample (shared pages are counted in each process)."""

    def __init__(self, every_s: float = 0.25) -> None:
        self.every_s = every_s
        self.peaks: dict[tuple[str, str], int] = defaultdict(int)
        self._roots: list[tuple[Path, str]] = []
        self._keys: dict[int, tuple[str, str] | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def add_root(self, root: Path, prefix: str = "") -> None:
        self._roots.append((root.resolve(), prefix))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.ident is None:  # never started
            return
        self._stop.set()
        self._thread.join(timeout=10)

    def _party(self, home: str) -> str | None:
        path = Path(home).resolve()
        for root, prefix in self._roots:
            if path == root / "hub":
                return prefix + "hub"
            if path.parent == root / "nodes":
                return prefix + path.name
            if path == root / "generator":
                return prefix + "generator"
            if path == root / "single":
                return prefix + "single_home"
        return None

    @staticmethod
    def _component(argv: list[str]) -> str:
        for i, arg in enumerate(argv):
            program = os.path.basename(arg)
            if program in ("hdp", "hdp-hub", "hdp-node"):
                verb = argv[i + 1] if i + 1 < len(argv) else ""
                if program == "hdp-node" and verb == "run":
                    return "agent"
                if verb == "serve":
                    return "server"
                if program == "hdp" and verb == "run":
                    return "pipeline"
                if program == "hdp" and verb == "generate":
                    return "generator"
                return "cli"
        return "other"

    def _key(self, process: psutil.Process) -> tuple[str, str] | None:
        if process.pid not in self._keys:
            try:
                home = process.environ().get("HDP_HOME")
                argv = process.cmdline()
            except (psutil.Error, OSError):
                return None
            party = self._party(home) if home else None
            self._keys[process.pid] = (party, self._component(argv)) if party else None
        return self._keys[process.pid]

    def sample(self) -> None:
        sums: dict[tuple[str, str], int] = defaultdict(int)
        for process in psutil.Process().children(recursive=True):
            key = self._key(process)
            if key is None:
                continue
            try:
                sums[key] += process.memory_info().rss
            except psutil.Error:
                continue
        for key, rss in sums.items():
            self.peaks[key] = max(self.peaks[key], rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # a process ended mid-walk: the next sample sees the rest
                pass
            self._stop.wait(self.every_s)

    def table(self) -> list[str]:
        return [
            f"    {party:<16} {component:<10} {rss / MIB:8.0f} MiB"
            for (party, component), rss in sorted(self.peaks.items())
        ]


# -- one federation, landing to queryable --------------------------------------------------------


@dataclass
class Stages:
    persons: int
    setup_s: float = 0.0
    deliver_s: float = 0.0
    pipelines_s: float = 0.0
    pipelines_by_node: dict[str, float] = field(default_factory=dict)
    approval_s: float = 0.0
    parts_s: float = 0.0
    first_query_s: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def e2e_s(self) -> float:
        """Landing to the first answered federated query."""
        return self.pipelines_s + self.approval_s + self.parts_s + self.first_query_s

    def lines(self) -> list[str]:
        per_node = ", ".join(f"{h} {s:.1f}" for h, s in self.pipelines_by_node.items())
        return [
            f"  deliver (generate + hand over, not in e2e) {self.deliver_s:8.1f} s",
            f"  node pipelines (ingest + pseudonymise)     {self.pipelines_s:8.1f} s  ({per_node})",
            f"  approval (file at hub .. permit at hub)    {self.approval_s:8.1f} s",
            f"  parts (permit .. every part delivered)     {self.parts_s:8.1f} s",
            f"  first federated query                      {self.first_query_s:8.1f} s",
            f"  e2e landing -> queryable                   {self.e2e_s:8.1f} s"
            f"  (with deliver {self.e2e_s + self.deliver_s:.1f} s; setup of hub and nodes {self.setup_s:.1f} s)",
        ]


@dataclass
class Federation:
    """A started LocalFederation with its researchers' tokens and the approved permit."""

    lab: LocalFederation
    researchers: dict[str, str]
    stewards: dict[str, list[str]]
    permit_id: int = 0


def _started(root: Path) -> Federation:
    lab = LocalFederation(root, holder_ids=SCOPE)
    lab.start_hub()
    lab.enrol_nodes()
    lab.start_nodes()
    researchers = {
        f"researcher{i:02d}": lab.add_user("hub", f"researcher{i:02d}", "researcher")
        for i in range(RESEARCHERS)
    }
    stewards = {
        h: [lab.add_user(h, f"steward{k}.{h}", "steward", [h]) for k in range(STEWARDS[h])] for h in SCOPE
    }
    return Federation(lab, researchers, stewards)


def _request_args(project: str) -> list[str]:
    args = [
        "request",
        "file",
        "--project",
        project,
        "--purpose",
        "scientific_research",
        "--legal-basis",
        "gdpr_6_1_e__9_2_j",
        "--ethics-ref",
        "2024-01234-01",
        "--output-tier",
        "aggregate",
        "--data-form",
        "anonymised",
        "--submit",
    ]
    for variable in VARIABLES:
        args += ["--variable", variable]
    for holder in SCOPE:
        args += ["--holder", holder]
    for member in [f"researcher{i:02d}" for i in range(1, RESEARCHERS)]:
        args += ["--member", member]
    return args


def _request_id(stdout: str) -> int:
    found = re.search(r"request (\d+)", stdout)
    if found is None:
        raise RuntimeError("hdp request file printed no request id")
    return int(found.group(1))


JUSTIFICATION = "Aggregate-only output of anonymised data; ethics approval and variables match the purpose."


def _approve_at_node(fed: Federation, holder: str, request_id: int, timeout: float) -> None:
    """The holder's stewards decide at their own node once the application has reached it."""
    for token in fed.stewards[holder]:
        deadline = time.monotonic() + timeout
        while True:
            out = fed.lab.command(
                holder,
                "hdp",
                "request",
                "decide",
                str(request_id),
                "--holder",
                holder,
                "--decision",
                "approve",
                "--justification",
                JUSTIFICATION,
                token=token,
                check=False,
            )
            if "recorded" in out:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the application did not reach {holder} within {timeout:.0f} s")
            time.sleep(0.3)


def _hub_permit(fed: Federation, request_id: int) -> bool:
    token = fed.researchers["researcher00"]
    with fed.lab.hub_api(token) as api:
        answer = api.get(f"/governance/requests/{request_id}")
    return answer.status_code == 200 and bool(answer.json().get("permit"))


def _parts_delivered(fed: Federation, request_id: int) -> bool:
    nodes = fed.lab.status(request_id)["nodes"]
    failed = {p: v["reason"] for p, v in nodes.items() if v["part"] == "failed"}
    if failed:
        raise RuntimeError(f"a node's part failed: {failed}")
    return bool(nodes) and all(v["part"] == "delivered" for v in nodes.values())


def federated_query(fed: Federation, token: str, sql: str) -> dict[str, Any]:
    with fed.lab.hub_api(token) as api:
        answer = api.post(f"/federation/v1/permits/{fed.permit_id}/query", json={"sql": sql})
    if answer.status_code != 200:
        raise RuntimeError(f"federated query: HTTP {answer.status_code}: {answer.text[:300]}")
    return dict(answer.json())


def landing_to_queryable(root: Path, persons: int, *, timeout_s: float) -> tuple[Federation, Stages]:
    """Start the federation, deliver, run the nodes' pipelines, approve, build parts, query once.
    Returns the running federation (the caller stops it)."""
    stages = Stages(persons)
    t0 = time.perf_counter()
    fed = _started(root)
    stages.setup_s = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        fed.lab.deliver(persons=persons, seed=SEED)
        stages.deliver_s = time.perf_counter() - t0
        print(f"  delivered {persons:,} persons in {stages.deliver_s:.1f} s", flush=True)

        t0 = time.perf_counter()
        stages.pipelines_by_node = fed.lab.run_pipelines(SCOPE, parallel=2)
        stages.pipelines_s = time.perf_counter() - t0
        print(f"  node pipelines done in {stages.pipelines_s:.1f} s", flush=True)

        t0 = time.perf_counter()
        out = fed.lab.command(
            "hub", "hdp", *_request_args("Federation benchmark"), token=fed.researchers["researcher00"]
        )
        fed.permit_id = _request_id(out)
        with ThreadPoolExecutor(len(SCOPE)) as pool:
            list(pool.map(lambda h: _approve_at_node(fed, h, fed.permit_id, 120), SCOPE))
        fed.lab.wait_for("the permit at the hub", lambda: _hub_permit(fed, fed.permit_id), timeout=120)
        stages.approval_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        fed.lab.wait_for(
            "every node's part", lambda: _parts_delivered(fed, fed.permit_id), timeout=timeout_s, every=0.5
        )
        stages.parts_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        first = federated_query(fed, fed.researchers["researcher00"], FIRST_QUERY)
        stages.first_query_s = time.perf_counter() - t0
        print(
            f"  first query answered by {first['nodes_answered']} "
            f"({first['disclosure']['published']} of {first['disclosure']['cells']} cells published)",
            flush=True,
        )
    except BaseException:
        fed.lab.stop()
        raise
    return fed, stages


# -- the single home: one release holding every holder's rows -------------------------------------


@dataclass
class SingleHome:
    root: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    release_id: str = ""

    @property
    def home(self) -> Path:
        return self.root / "single"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, token: str | None = None) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("HDP_", "AIRFLOW_"))}
        env = base | {
            "HDP_HOME": str(self.home),
            "HDP_KEK_DIR": str(self.root / "keks" / "single"),
            "AIRFLOW_HOME": str(self.home / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "GX_ANALYTICS_ENABLED": "false",
        }
        return env | ({"HDP_TOKEN": token} if token else {})

    def command(self, *args: str, token: str | None = None) -> str:
        done = subprocess.run(
            [str(BIN / "hdp"), *args], env=self.env(token), capture_output=True, text=True, timeout=7200
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
            raise RuntimeError(f"single home: hdp {args[0]} failed ({done.returncode}): {last}")
        return done.stdout

    def user(self, name: str, role: str, holder: str | None = None) -> str:
        self.command("user", "add", name, "--role", role, *(["--holder", holder] if holder else []))
        out = self.command("user", "token", name)
        return next(w for w in out.split() if w.startswith("hdp_"))

    def build(self, landing_from: LocalFederation) -> dict[str, float]:
        """Land the very same delivery files, run the pipelines, approve the same request,
        build the release; returns stage seconds."""
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        for holder in SCOPE:
            target = ensure_private_dir(self.home / "restricted" / holder) / "landing"
            shutil.copytree(landing_from.node_home(holder) / "restricted" / holder / "landing", target)
        times["copy_landing"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.command("run", "--stage", "ingest")
        self.command("run", "--stage", "pseudonymise")
        times["pipelines"] = time.perf_counter() - t0
        self.tokens = {
            f"researcher{i:02d}": self.user(f"researcher{i:02d}", "researcher") for i in range(RESEARCHERS)
        }
        stewards = {
            h: [self.user(f"steward{k}.{h}", "steward", h) for k in range(STEWARDS[h])] for h in SCOPE
        }
        t0 = time.perf_counter()
        request_id = _request_id(
            self.command(*_request_args("Single-home benchmark"), token=self.tokens["researcher00"])
        )
        for holder in SCOPE:
            for token in stewards[holder]:
                self.command(
                    "request",
                    "decide",
                    str(request_id),
                    "--holder",
                    holder,
                    "--decision",
                    "approve",
                    "--justification",
                    JUSTIFICATION,
                    token=token,
                )
        times["approval"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.command("run", "--stage", "release")
        times["release"] = time.perf_counter() - t0
        self.serve()
        with self.client(self.tokens["researcher00"]) as api:
            permit = api.get(f"/governance/requests/{request_id}").json().get("permit") or {}
        self.release_id = str(permit.get("release_id") or "")
        if not self.release_id:
            raise RuntimeError("the single home published no release for the approved request")
        return times

    def serve(self) -> None:
        log = open(self.root / "single.log", "ab")  # noqa: SIM115 - the process owns it
        self.process = subprocess.Popen(
            [str(BIN / "hdp"), "serve", "--port", str(self.port), "--workers", "1"],
            env=self.env(),
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError("single home: hdp serve exited (see single.log)")
            time.sleep(0.2)
        raise RuntimeError("single home: hdp serve did not start within 90 s")

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=120)

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=30)
            self.process = None


# -- load ------------------------------------------------------------------------------------------

Sample = tuple[str, float]  # (query label, latency ms)


def thinking(
    ask: Callable[[int, str], None], duration_s: float, think_mean_s: float, seed: int
) -> list[Sample]:
    """Researchers with exponential think time between queries for ``duration_s``; each has its
    own seeded RNG, so both sides see the same pauses and the same queries."""
    out: list[Sample] = []
    lock = threading.Lock()
    start = time.perf_counter()

    def researcher(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        mine: list[Sample] = []
        k = i
        time.sleep(rng.uniform(0, think_mean_s))
        while time.perf_counter() - start < duration_s:
            label, sql = QUERIES[k % len(QUERIES)]
            k += 1
            t0 = time.perf_counter()
            ask(i, sql)
            mine.append((label, (time.perf_counter() - t0) * 1000))
            pause = rng.expovariate(1 / think_mean_s)
            time.sleep(max(0.0, min(pause, duration_s - (time.perf_counter() - start))))
        with lock:
            out.extend(mine)

    with ThreadPoolExecutor(RESEARCHERS) as pool:
        list(pool.map(researcher, range(RESEARCHERS)))
    return out


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def _by_label(samples: list[Sample]) -> dict[str, float]:
    by: dict[str, list[float]] = defaultdict(list)
    for label, ms in samples:
        by[label].append(ms)
    return {k: statistics.median(v) for k, v in by.items()}


@dataclass(frozen=True)
class Latency:
    fed_p50: float
    fed_p99: float
    single_p50: float
    single_p99: float
    fed_n: int
    single_n: int
    fed_over_1s: int
    single_over_1s: int
    fed_by_query: Mapping[str, float]
    single_by_query: Mapping[str, float]

    @property
    def ratio(self) -> float:
        return self.fed_p50 / self.single_p50


def _groups(rows: list[list[Any]]) -> set[Any]:
    return {row[0] for row in rows}


def latency_side_by_side(
    fed: Federation, single: SingleHome, *, duration_s: float, blocks: int, think_mean_s: float
) -> Latency:
    fed_clients = [fed.lab.hub_api(fed.researchers[f"researcher{i:02d}"]) for i in range(RESEARCHERS)]
    single_clients = [single.client(single.tokens[f"researcher{i:02d}"]) for i in range(RESEARCHERS)]
    fed_path = f"/federation/v1/permits/{fed.permit_id}/query"
    single_path = f"/releases/{single.release_id}/query"

    def via_hub(i: int, sql: str) -> None:
        answer = fed_clients[i].post(fed_path, json={"sql": sql})
        if answer.status_code != 200:
            raise RuntimeError(f"federated query: HTTP {answer.status_code}: {answer.text[:300]}")

    def via_single(i: int, sql: str) -> None:
        answer = single_clients[i].post(single_path, json={"sql": sql, "format": "json"})
        if answer.status_code != 200:
            raise RuntimeError(f"single-home query: HTTP {answer.status_code}: {answer.text[:300]}")

    try:
        # Warm-up (engines opened, ledgers seeded), and the same groups on both sides.
        for label, sql in QUERIES:
            merged = fed_clients[0].post(fed_path, json={"sql": sql}).json()
            combined = single_clients[0].post(single_path, json={"sql": sql, "format": "json"}).json()
            same = _groups(merged["rows"]) == _groups(combined.get("rows", []))
            print(
                f"  {label}: nodes answered {merged['nodes_answered']}, "
                f"{len(merged['rows'])} groups federated, {len(combined.get('rows', []))} single-home"
                f"{'' if same else ' (group keys differ)'}",
                flush=True,
            )
        sides = {"fed": via_hub, "single": via_single}
        samples: dict[str, list[Sample]] = {"fed": [], "single": []}
        for b in range(blocks):
            for side in ("fed", "single") if b % 2 == 0 else ("single", "fed"):
                samples[side] += thinking(sides[side], duration_s / blocks, think_mean_s, seed=b)
    finally:
        for c in fed_clients + single_clients:
            c.close()
    f_ms, s_ms = [ms for _, ms in samples["fed"]], [ms for _, ms in samples["single"]]
    return Latency(
        fed_p50=statistics.median(f_ms),
        fed_p99=_pct(f_ms, 99),
        single_p50=statistics.median(s_ms),
        single_p99=_pct(s_ms, 99),
        fed_n=len(f_ms),
        single_n=len(s_ms),
        fed_over_1s=sum(ms > 1000 for ms in f_ms),
        single_over_1s=sum(ms > 1000 for ms in s_ms),
        fed_by_query=_by_label(samples["fed"]),
        single_by_query=_by_label(samples["single"]),
    )


# -- main ------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _short(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


@contextmanager
def _scratch(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hdp_bench_federation_"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--persons",
        type=int,
        default=int(os.environ.get("HDP_BENCH_FED_PERSONS", "1000000")),
        help="the large population (default 1,000,000, or $HDP_BENCH_FED_PERSONS)",
    )
    ap.add_argument(
        "--small",
        type=int,
        default=int(os.environ.get("HDP_BENCH_FED_SMALL", "0")) or None,
        help="the small population (default a tenth of --persons, or $HDP_BENCH_FED_SMALL)",
    )
    ap.add_argument("--duration", type=float, default=48.0, help="seconds of load per side")
    ap.add_argument("--blocks", type=int, default=4, help="alternating blocks per side")
    ap.add_argument("--think-mean", type=float, default=1.0, help="mean think time between queries (s)")
    ap.add_argument("--parts-timeout", type=float, default=7200.0, help="seconds to wait for the parts")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (debugging)")
    args = ap.parse_args()
    large, small = args.persons, args.small or max(args.persons // 10, 1)
    started_at = datetime.now(UTC)
    load_start = os.getloadavg()
    print(
        f"federation benchmark: hub + {len(SCOPE)} nodes ({', '.join(SCOPE)}), "
        f"populations {large:,} and {small:,}; {started_at:%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 1024**3:.0f} GiB, "
        f"load {load_start[0]:.1f}",
        flush=True,
    )
    needed = large * GENERATOR_BYTES_PER_PERSON
    if needed > psutil.virtual_memory().available:
        print(
            f"not run: the synthetic generator holds the whole population in memory, about "
            f"{needed / 1024**3:.0f} GiB for {large:,} persons, and this machine has "
            f"{psutil.virtual_memory().available / 1024**3:.0f} GiB available; set "
            f"HDP_BENCH_FED_PERSONS (or --persons) to a population that fits",
            file=sys.stderr,
        )
        return 2
    results: dict[int, Stages] = {}
    memory: dict[int, MemorySampler] = {}
    load_memory = MemorySampler()
    latency: Latency | None = None
    single_times: dict[str, float] = {}
    with _scratch(args.keep) as scratch:
        for persons in (small, large):
            root = scratch / f"fed_{persons}"
            sampler = MemorySampler()
            sampler.add_root(root)
            memory[persons] = sampler
            print(f"== landing to queryable, {persons:,} persons", flush=True)
            sampler.start()
            fed: Federation | None = None
            single: SingleHome | None = None
            try:
                fed, results[persons] = landing_to_queryable(root, persons, timeout_s=args.parts_timeout)
                for line in results[persons].lines():
                    print(line, flush=True)
                sampler.stop()
                if persons == large:
                    print(
                        "== single home with the same delivery, for the combined-table baseline", flush=True
                    )
                    load_memory.add_root(root, prefix="")
                    load_memory.start()
                    single = SingleHome(root, _free_port())
                    single_times = single.build(fed.lab)
                    print("  " + ", ".join(f"{k} {v:.1f} s" for k, v in single_times.items()), flush=True)
                    print(
                        f"== {RESEARCHERS} researchers, think time mean {args.think_mean:g} s, "
                        f"{args.duration:g} s per side in {args.blocks} alternating blocks",
                        flush=True,
                    )
                    latency = latency_side_by_side(
                        fed,
                        single,
                        duration_s=args.duration,
                        blocks=args.blocks,
                        think_mean_s=args.think_mean,
                    )
            finally:
                sampler.stop()
                load_memory.stop()
                if single is not None:
                    single.stop()
                if fed is not None:
                    fed.lab.stop()
            shutil.rmtree(root, ignore_errors=True)

    assert latency is not None
    load_end = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} cores, load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end"
    )
    for persons in (small, large):
        print(f"landing to queryable, {persons:,} persons: e2e {results[persons].e2e_s:.1f} s")
        for line in results[persons].lines():
            print(line)
        print("  peak memory (RSS of each party's processes):")
        for line in memory[persons].table():
            print(line)
    print(f"single home, {large:,} persons: " + ", ".join(f"{k} {v:.1f} s" for k, v in single_times.items()))
    print("  peak memory while the single home was built and both sides were queried:")
    for line in load_memory.table():
        print(line)
    print(
        f"aggregate queries, {RESEARCHERS} researchers: federated p50 {latency.fed_p50:.1f} ms, "
        f"p99 {latency.fed_p99:.1f} ms (n={latency.fed_n}); one combined table p50 {latency.single_p50:.1f} ms, "
        f"p99 {latency.single_p99:.1f} ms (n={latency.single_n}); ratio {latency.ratio:.2f}; "
        f"over 1 s: federated {latency.fed_over_1s}, single-home {latency.single_over_1s}"
    )
    print(
        "  median per query (federated / single-home ms): "
        + ", ".join(
            f"{k} {latency.fed_by_query[k]:.1f}/{latency.single_by_query.get(k, float('nan')):.1f}"
            for k in latency.fed_by_query
        )
    )
    e2e_large, e2e_small = results[large].e2e_s, results[small].e2e_s
    print(
        f"BENCH federation p50_ratio={latency.ratio:.2f} e2e_{_short(large)}_s={e2e_large:.1f} "
        f"e2e_{_short(small)}_s={e2e_small:.1f} linearity={e2e_large / e2e_small:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
