"""Start the production shape natively: Airflow 3 with the Postgres metadata database and the
CeleryExecutor on this machine's Postgres and Redis, as subprocesses of the test.

Isolation: a fresh ``AIRFLOW_HOME`` and ``$HDP_HOME`` under the test's tmp dir, fresh Postgres
databases (``hdp_it_<random>`` for Airflow, another for governance + run metrics, dropped
afterwards), a Redis database and a Celery queue of its own, free TCP ports.

Cleanup: every process the stack starts carries ``procs.MARK=<token>`` in its environment.
``stop()`` signals each component's whole process tree and then sweeps every process still
carrying the token, so task processes (which Airflow puts into process groups of their own)
never outlive the test, whether it passed, failed or was interrupted.

Latency: the settings below only shorten polling and detection intervals of the scheduler,
dag-processor and workers; the pipeline's own code, retries and DAG wiring are what
production runs (dags/hdp_pipeline.py).
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from hdp.settings import REPO_ROOT

from . import procs
from .services import REDIS_HOST, REDIS_PORT, temporary_postgres_database

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
WORKER_CONCURRENCY = 2
FINISHED = ("success", "failed")


class StackError(RuntimeError):
    """The stack did not come up or a run did not finish in time; the message names the logs."""


class BudgetExceeded(StackError):
    """The module's combined wait budget is spent."""


@dataclass
class Budget:
    """One wall-clock budget shared by every wait of a test module (start-up, runs, the kill
    test), so a slow machine fails with a clear message instead of stacking many timeouts."""

    total_s: float
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.total_s - self.elapsed()

    def deadline(self, cap_s: float | None = None) -> float:
        """A monotonic deadline: ``cap_s`` from now, but never beyond the budget."""
        left = self.remaining() if cap_s is None else min(cap_s, self.remaining())
        return time.monotonic() + max(0.0, left)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AirflowStack:
    root: Path
    airflow_db: str
    hdp_db: str
    hdp_home: Path
    budget: Budget
    api_port: int = field(default_factory=free_port)
    queue: str = field(default_factory=lambda: f"hdp_it_{secrets.token_hex(3)}")
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    worker_count: int = 0

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def env(self) -> dict[str, str]:
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "CI")
        # Every component must share these two secrets: the scheduler signs the tasks' tokens
        # and the api-server checks them.
        return {
            **{k: v for k, v in os.environ.items() if k in keep},
            procs.MARK: self.token,
            procs.OWNER: str(os.getpid()),
            "AIRFLOW_HOME": str(self.root / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api}/execution/",
            "AIRFLOW__CORE__FERNET_KEY": self._fernet,
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": self.api,
            "AIRFLOW__API__SECRET_KEY": self._api_secret,
            "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.airflow_db,
            # Airflow derives postgresql+asyncpg (not installed) unless told: psycopg 3 does async too.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": self.airflow_db.replace(
                "+psycopg:", "+psycopg_async:"
            ),
            "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{self._redis_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.airflow_db,
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
            # A worker reserves no more than it runs: a killed worker takes no queued task with it.
            "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
            "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
            # prefork (Celery's default, as in production) unless a diagnosis asks otherwise
            **(
                {"AIRFLOW__CELERY__POOL": os.environ["HDP_IT_CELERY_POOL"]}
                if os.environ.get("HDP_IT_CELERY_POOL")
                else {}
            ),
            # Notice a dead worker quickly (default 300 s) so the kill test stays short; 25 s
            # stays well above the supervisor's 5 s heartbeat on a loaded 2-core machine.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "25",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            # The DAG file does not change during the test: parse it at start, then rarely
            # (each parse is a process and ~1 s of CPU on a 2-core machine).
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "600",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "600",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self._worker_log_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self._trigger_log_port),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "HDP_ENV": "production",
            "HDP_HOME": str(self.hdp_home),
            "HDP_GOVERNANCE_URL": self.hdp_db,
            "HDP_METRICS_URL": self.hdp_db,
            "HDP_KEK": self._kek,
            "GX_ANALYTICS_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
            # As docker-compose.yml: Airflow's Celery defaults plus the workers' library preload.
            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "hdp_celery_config.CELERY_CONFIG",
            "PYTHONPATH": str(REPO_ROOT / "deploy" / "celery"),
        }

    def __post_init__(self) -> None:
        self._fernet = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        self._api_secret = secrets.token_urlsafe(32)
        self._jwt_secret = secrets.token_urlsafe(32)
        self._kek = base64.b64encode(secrets.token_bytes(32)).decode()
        self._redis_db = 8 + secrets.randbelow(8)
        self._worker_log_port = free_port()
        self._trigger_log_port = free_port()
        (self.root / "logs").mkdir(parents=True, exist_ok=True)

    # -- processes -------------------------------------------------------------------------
    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.root / "logs" / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            [AIRFLOW, *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.root,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def start(self, during_migration: Callable[[], None] | None = None) -> None:
        """Migrate the metadata DB (running ``during_migration`` in this process meanwhile),
        then start every component and one worker per ``HDP_IT_WORKERS`` (default 1)."""
        migrate = self._start("migrate", ["db", "migrate"])
        if during_migration is not None:
            during_migration()
        try:
            code = migrate.wait(timeout=max(1.0, self.budget.remaining()))
        except subprocess.TimeoutExpired as exc:
            raise BudgetExceeded(
                "airflow db migrate did not finish within the budget\n" + self.tail_logs()
            ) from exc
        del self.procs["migrate"]
        if code != 0:
            raise StackError(f"airflow db migrate failed (exit {code})\n" + self.tail_logs())
        for component in COMPONENTS:
            self._start(component, [component])
        for _ in range(int(os.environ.get("HDP_IT_WORKERS", "1"))):
            self.start_worker()
        self.wait_healthy()

    def start_worker(self) -> str:
        self.worker_count += 1
        name = f"worker{self.worker_count}"
        self._start(
            name,
            [
                "celery",
                "worker",
                "--queues",
                self.queue,
                "--concurrency",
                str(WORKER_CONCURRENCY),
                "--celery-hostname",
                f"{name}_{self.queue}@%h",
            ],
        )
        return name

    def workers(self) -> list[str]:
        return [n for n in self.procs if n.startswith("worker")]

    def kill(self, name: str) -> list[int]:
        """SIGKILL a component and every process below it, including the task processes that
        Airflow moved to process groups of their own (a lost host, an OOM kill). Returns the
        pids killed."""
        proc = self.procs.pop(name)
        pids = procs.kill_tree(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        return pids

    def stop(self, grace_s: float = 4) -> list[int]:
        """Stop everything: SIGTERM to each component's tree, SIGKILL after ``grace_s``, then
        sweep whatever still carries the stack's token. Returns the pids the sweep had to kill."""
        trees = [p for proc in self.procs.values() for p in procs.tree(proc.pid)]
        procs.signal_all(trees, signal.SIGTERM)
        _, left = psutil.wait_procs(trees, timeout=grace_s)
        procs.signal_all(left, signal.SIGKILL)
        psutil.wait_procs(left, timeout=10)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.procs.clear()
        return procs.sweep(self.token)

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        if dead:
            raise StackError(f"components exited: {dead}; logs in {self.root / 'logs'}\n" + self.tail_logs())

    def tail_logs(self, chars: int = 2500) -> str:
        out = []
        for log in sorted((self.root / "logs").glob("*.log")):
            out.append(f"--- {log.name} ---\n{log.read_text(errors='replace')[-chars:]}")
        return "\n".join(out)

    # -- REST API ----------------------------------------------------------------------------
    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api + "/api/v2", timeout=30)

    def _until(
        self, what: str, probe: Callable[[], object], *, cap_s: float | None = None, interval_s: float = 2
    ) -> object:
        """Poll ``probe`` until it returns something truthy, within ``cap_s`` and the budget."""
        deadline = self.budget.deadline(cap_s)
        while True:
            self.check_alive()
            result = probe()
            if result:
                return result
            if time.monotonic() >= deadline:
                kind = BudgetExceeded if self.budget.remaining() <= 0 else StackError
                raise kind(
                    f"{what} after {self.budget.elapsed():.0f} s of the module's "
                    f"{self.budget.total_s:.0f} s budget\n" + self.tail_logs()
                )
            time.sleep(interval_s)

    def wait_healthy(self) -> None:
        """Until the scheduler reports healthy and the execution API (what workers call) answers."""

        def healthy() -> bool:
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                r = httpx.get(f"{self.api}/api/v2/monitor/health", timeout=5)
                ok = r.status_code == 200 and r.json()["scheduler"]["status"] == "healthy"
                return ok and httpx.get(f"{self.api}/execution/health", timeout=5).status_code == 200
            return False

        self._until("api-server/scheduler not healthy", healthy, cap_s=240, interval_s=1)

    def wait_dags(self, dag_ids: list[str]) -> None:
        """Until the dag-processor has serialised every DAG."""
        with self.client() as c:

            def parsed() -> bool:
                r = c.get("/dags", params={"limit": 100})
                return r.status_code == 200 and set(dag_ids) <= {d["dag_id"] for d in r.json()["dags"]}

            self._until("DAGs not parsed", parsed, cap_s=240, interval_s=1)

    def set_paused(self, dag_id: str, paused: bool) -> None:
        with self.client() as c:
            c.patch(f"/dags/{dag_id}", json={"is_paused": paused}).raise_for_status()

    def trigger(self, dag_id: str) -> str:
        with self.client() as c:
            r = c.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None})
            r.raise_for_status()
            return r.json()["dag_run_id"]

    def all_runs(self) -> list[dict]:
        """Every DAG run of this stack's (private) metadata DB, newest first: one request."""
        with self.client() as c:
            r = c.get("/dags/~/dagRuns", params={"order_by": "-start_date", "limit": 100})
            r.raise_for_status()
            return r.json()["dag_runs"]

    def task_instances(self, dag_id: str = "~", run_id: str = "~") -> list[dict]:
        with self.client() as c:
            r = c.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
            r.raise_for_status()
            return r.json()["task_instances"]

    def wait_runs(
        self, dag_ids: list[str], *, after: dict[str, int] | None = None, cap_s: float | None = None
    ) -> dict[str, dict]:
        """Wait until each DAG has more than ``after[dag_id]`` runs (default 0) and its newest
        run is finished; returns that run per DAG."""
        after = after or {}

        def finished() -> dict[str, dict] | None:
            newest: dict[str, list[dict]] = {}
            for run in self.all_runs():
                newest.setdefault(run["dag_id"], []).append(run)
            done = {
                d: rs[0]
                for d, rs in newest.items()
                if d in dag_ids and len(rs) > after.get(d, 0) and rs[0]["state"] in FINISHED
            }
            return done if len(done) == len(dag_ids) else None

        return self._until(f"runs of {dag_ids} unfinished", finished, cap_s=cap_s)  # type: ignore[return-value]

    def timeline(self) -> str:
        """Per task: queued → start → end relative to the first task's queue time (diagnosis)."""
        tis = [t for t in self.task_instances() if t.get("start_date")]
        if not tis:
            return "(no task started)"
        from datetime import datetime

        def ts(value: str | None) -> float | None:
            return datetime.fromisoformat(value).timestamp() if value else None

        t0 = min(ts(t["queued_when"]) or ts(t["start_date"]) for t in tis)
        lines = []
        for t in sorted(tis, key=lambda t: t["start_date"]):
            q, s, e = ts(t["queued_when"]), ts(t["start_date"]), ts(t["end_date"])
            lines.append(
                f"{t['dag_id']:>28}.{t['task_id']:<18} try {t['try_number']} "
                f"queued {(q or s) - t0:6.1f}  start {s - t0:6.1f}  "
                f"end {(e - t0) if e else float('nan'):6.1f}  ({t['state']})"
            )
        return "\n".join(lines)


@contextlib.contextmanager
def airflow_stack(
    root: Path, hdp_home: Path, budget: Budget, during_migration: Callable[[AirflowStack], None] | None = None
) -> Iterator[AirflowStack]:
    """A started stack; always stopped (processes swept, databases dropped) on the way out."""
    with temporary_postgres_database("hdp_it") as airflow_db, temporary_postgres_database("hdp_it") as hdp_db:
        stack = AirflowStack(
            root=root, airflow_db=airflow_db, hdp_db=hdp_db, hdp_home=hdp_home, budget=budget
        )
        try:
            stack.start(during_migration=(lambda: during_migration(stack)) if during_migration else None)
            yield stack
        finally:
            stopping = time.monotonic()
            swept = stack.stop()
            print(
                f"\nstack stopped in {time.monotonic() - stopping:.0f} s"
                + (f"; swept {len(swept)} stray processes" if swept else "")
            )
