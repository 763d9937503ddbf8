"""Start the production shape natively: Airflow 3 with the Postgres metadata database and the
CeleryExecutor on this machine's Postgres and Redis, as subprocesses of the test.

Isolation: a fresh ``AIRFLOW_HOME`` and ``$HDP_HOME`` under the test's tmp dir, fresh Postgres
databases (``hdp_it_<random>`` for Airflow, ``hdp_it_<random>`` for governance + run metrics,
dropped afterwards), a Redis database and a Celery queue of its own, free TCP ports. Every
process is started in its own session and stopped by its process-group id.
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from hdp.settings import REPO_ROOT

from .services import REDIS_HOST, REDIS_PORT, temporary_postgres_database

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


class StackError(RuntimeError):
    """The stack did not come up or a run did not finish in time; the message names the logs."""


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
    api_port: int = field(default_factory=free_port)
    queue: str = field(default_factory=lambda: f"hdp_it_{secrets.token_hex(3)}")
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
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": self.airflow_db.replace("+psycopg:", "+psycopg_async:"),
            "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{self._redis_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.airflow_db,
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            # prefork (Celery's default, as in production) unless a diagnosis asks otherwise
            **({"AIRFLOW__CELERY__POOL": os.environ["HDP_IT_CELERY_POOL"]}
               if os.environ.get("HDP_IT_CELERY_POOL") else {}),
            # Notice a dead worker quickly (default 300 s) so the kill test stays short.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
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
        proc = subprocess.Popen([AIRFLOW, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=self.root)
        log.close()
        self.procs[name] = proc
        return proc

    def migrate(self) -> None:
        result = subprocess.run([AIRFLOW, "db", "migrate"], env=self.env, capture_output=True, text=True,
                                timeout=240, cwd=self.root)
        if result.returncode != 0:
            raise StackError(f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")

    def start(self) -> None:
        self.migrate()
        for component in COMPONENTS:
            self._start(component, [component])
        for _ in range(int(os.environ.get("HDP_IT_WORKERS", "1"))):
            self.start_worker()
        self.wait_healthy()

    def start_worker(self) -> str:
        self.worker_count += 1
        name = f"worker{self.worker_count}"
        self._start(name, ["celery", "worker", "--queues", self.queue, "--concurrency", "2",
                           "--celery-hostname", f"{name}_{self.queue}@%h"])
        return name

    def workers(self) -> list[str]:
        return [n for n in self.procs if n.startswith("worker")]

    def kill(self, name: str) -> None:
        """SIGKILL a component and everything it started (a lost host, an OOM kill)."""
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for name in list(self.procs):
            proc = self.procs.pop(name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

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

    def wait_healthy(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"{self.api}/api/v2/monitor/health", timeout=5)
                if r.status_code == 200 and r.json()["scheduler"]["status"] == "healthy":
                    return
            time.sleep(2)
        raise StackError(f"api-server/scheduler not healthy after {timeout_s:.0f} s\n" + self.tail_logs())

    def wait_dags(self, dag_ids: list[str], timeout_s: float = 180) -> None:
        """Until the dag-processor has serialised every DAG."""
        deadline = time.monotonic() + timeout_s
        with self.client() as c:
            while time.monotonic() < deadline:
                self.check_alive()
                r = c.get("/dags", params={"limit": 100})
                if r.status_code == 200 and set(dag_ids) <= {d["dag_id"] for d in r.json()["dags"]}:
                    return
                time.sleep(2)
        raise StackError(f"DAGs not parsed after {timeout_s:.0f} s\n" + self.tail_logs())

    def set_paused(self, dag_id: str, paused: bool) -> None:
        with self.client() as c:
            c.patch(f"/dags/{dag_id}", json={"is_paused": paused}).raise_for_status()

    def trigger(self, dag_id: str) -> str:
        with self.client() as c:
            r = c.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None})
            r.raise_for_status()
            return r.json()["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        with self.client() as c:
            r = c.get(f"/dags/{dag_id}/dagRuns", params={"order_by": "-start_date", "limit": 20})
            r.raise_for_status()
            return r.json()["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        with self.client() as c:
            r = c.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
            r.raise_for_status()
            return r.json()["task_instances"]

    def wait_runs(self, dag_ids: list[str], *, after: int = 0, timeout_s: float = 300,
                  on_poll=None) -> dict[str, dict]:
        """Wait until each DAG has more than ``after`` runs and its newest one is finished."""
        deadline = time.monotonic() + timeout_s
        done: dict[str, dict] = {}
        while time.monotonic() < deadline:
            self.check_alive()
            for dag_id in dag_ids:
                if dag_id in done:
                    continue
                runs = self.runs(dag_id)
                if len(runs) > after and runs[0]["state"] in ("success", "failed"):
                    done[dag_id] = runs[0]
            if len(done) == len(dag_ids):
                return done
            if on_poll is not None:
                on_poll()
            time.sleep(2)
        pending = sorted(set(dag_ids) - set(done))
        raise StackError(f"runs of {pending} unfinished after {timeout_s:.0f} s\n" + self.tail_logs())


@contextlib.contextmanager
def airflow_stack(root: Path, hdp_home: Path) -> Iterator[AirflowStack]:
    with temporary_postgres_database("hdp_it") as airflow_db, temporary_postgres_database("hdp_it") as hdp_db:
        stack = AirflowStack(root=root, airflow_db=airflow_db, hdp_db=hdp_db, hdp_home=hdp_home)
        try:
            stack.start()
            yield stack
        finally:
            stack.stop()
