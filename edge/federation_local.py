"""A whole federation on one machine: the hub and one node per data holder as separate processes,
each with its own data home and its own key-encryption key, talking over loopback HTTP.

Used by the federated demo, the integration tests and the federation benchmark. Every party is
driven only through its own commands (``hdp-hub``, ``hdp-node``, ``hdp`` with the party's
environment), exactly as its operator would, so nothing here reaches into a party's files except
to hand each holder its delivery, as the holder itself would.

Layout under ``root``::

    hub/                  the hub's data home (no restricted/: its private zone is secure/)
    nodes/<holder>/       each node's data home (restricted/ with its landing area, zones, keys)
    logs/<party>.log      what each party's commands and processes print (Airflow, Great
                          Expectations, hub, node agent), owner-only; never on the console
    keks/<party>/         each party's development key-encryption key (outside every data home;
                          ``kek_root`` puts them elsewhere, as the demo does: ~/.config/hdp/federation)
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from governance.requests import FIVE_SAFES
from hdp.settings import ensure_private_dir, holders, open_private

BIN = Path(sys.executable).parent
#: the hub's usual port on one machine (``make demo``), so that printed commands work as shown
HUB_PORT = 8700


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class PartyFailed(RuntimeError):
    """A party's command failed; the message names the command, never its output's data."""


@dataclass
class LocalFederation:
    root: Path
    holder_ids: tuple[str, ...] = field(default_factory=lambda: tuple(h.id for h in holders()))
    port: int = field(default_factory=free_port)
    #: where each party's development KEK is kept (default ``root/keks``): outside every data home
    kek_root: Path | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    # -- homes and environments -------------------------------------------------------------
    @property
    def hub_home(self) -> Path:
        return self.root / "hub"

    def node_home(self, holder_id: str) -> Path:
        return self.root / "nodes" / holder_id

    def kek_dir(self, party: str) -> Path:
        return (self.kek_root or self.root / "keks") / party

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, party: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of one party's processes: only its own home and KEK."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("HDP_", "AIRFLOW_"))}
        home = self.hub_home if party == "hub" else self.node_home(party)
        env = {
            **base,
            "HDP_HOME": str(home),
            "HDP_KEK_DIR": str(self.kek_dir(party)),
            "AIRFLOW_HOME": str(home / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(Path(__file__).resolve().parent.parent / "dags"),
            "GX_ANALYTICS_ENABLED": "false",
        }
        if party == "hub":
            env |= {"HDP_FEDERATION_ROLE": "hub", "HDP_HUB_URL": self.hub_url}
        else:
            env |= {
                "HDP_FEDERATION_ROLE": "node",
                "HDP_NODE_HOLDER": party,
                "HDP_HUB_URL": self.hub_url,
                "HDP_HUB_IDENTITY": str(home / "hub-identity.json"),
            }
        return env | dict(extra or {})

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def log_path(self, party: str) -> Path:
        """Where everything a party's commands and processes print goes (``logs/<party>.log``)."""
        return self.logs_dir / f"{party}.log"

    def open_log(self, party: str) -> int:
        """An owner-only append descriptor on the party's log (its lines may name users and ids)."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        return open_private(self.log_path(party), os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def shell_command(self, party: str, program: str, *args: str) -> str:
        """A command line an operator can paste to run one of a party's programs in its own
        environment (its ``HDP_*`` and ``AIRFLOW_*`` variables; the program by absolute path)."""
        env = self.env(party)
        assignments = [
            f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()) if k.startswith(("HDP_", "AIRFLOW"))
        ]
        return " ".join(["env", *assignments, shlex.join([str(BIN / program), *args])])

    def _log_output(
        self, party: str, argv: Sequence[str], done: subprocess.CompletedProcess[str], quiet: bool
    ) -> None:
        fd = self.open_log(party)
        with os.fdopen(fd, "a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(argv)}  (exit {done.returncode})\n")
            if not quiet:  # a command whose output holds a secret (a fresh token) is not logged
                log.write(done.stdout)
            log.write(done.stderr)

    def command(
        self,
        party: str,
        program: str,
        *args: str,
        token: str | None = None,
        check: bool = True,
        secret_output: bool = False,
    ) -> str:
        """Run one of a party's commands (``hdp``, ``hdp-hub``, ``hdp-node``); returns its stdout.
        What it prints goes to the party's log, not to the console (``secret_output``: stdout not)."""
        extra = {"HDP_TOKEN": token} if token else None
        done = subprocess.run(
            [str(BIN / program), *args],
            env=self.env(party, extra),
            capture_output=True,
            text=True,
            timeout=1800,
        )
        self._log_output(party, [program, *args[:2]], done, secret_output)
        if check and done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
            raise PartyFailed(
                f"{party}: {program} {args[0] if args else ''} failed ({done.returncode}): {last}"
            )
        return done.stdout

    # -- deliveries and pipelines ------------------------------------------------------------------
    def deliver(self, *, persons: int, seed: int = 42, defect_rate: float = 0.0) -> None:
        """Generate one synthetic population and hand each holder its own delivery, as the holder
        would deliver it to its own node; the generator's home is removed afterwards."""
        generator = self.root / "generator"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HDP_", "AIRFLOW_"))}
        env |= {"HDP_HOME": str(generator), "HDP_KEK_DIR": str(self.kek_dir("generator"))}
        argv = [
            "hdp",
            "generate",
            "--persons",
            str(persons),
            "--seed",
            str(seed),
            "--defect-rate",
            str(defect_rate),
        ]
        done = subprocess.run(
            [str(BIN / argv[0]), *argv[1:]], env=env, capture_output=True, text=True, timeout=1800
        )
        self._log_output("generator", argv, done, False)
        done.check_returncode()
        try:
            for holder_id in self.holder_ids:
                restricted = ensure_private_dir(self.node_home(holder_id) / "restricted" / holder_id)
                target = restricted / "landing"
                if target.exists():
                    shutil.rmtree(target)
                shutil.move(str(generator / "restricted" / holder_id / "landing"), str(target))
        finally:
            shutil.rmtree(generator, ignore_errors=True)

    def run_pipelines(
        self, holder_ids: Iterable[str] | None = None, *, parallel: int = 2
    ) -> dict[str, float]:
        """Each node runs its own ingest and pseudonymisation DAGs through its own Airflow;
        returns the seconds each node took."""

        def one(holder_id: str) -> float:
            started = time.perf_counter()
            self.command(holder_id, "hdp", "run", "--stage", "ingest")
            self.command(holder_id, "hdp", "run", "--stage", "pseudonymise")
            return time.perf_counter() - started

        ids = list(holder_ids or self.holder_ids)
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            return dict(zip(ids, pool.map(one, ids), strict=True))

    # -- processes -------------------------------------------------------------------------
    def start_hub(self) -> None:
        self.hub_home.mkdir(parents=True, exist_ok=True)
        self.command("hub", "hdp-hub", "identity", "--output", str(self.root / "hub-identity.json"))
        self._start("hub", ["hdp-hub", "serve", "--port", str(self.port)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.hub_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            self._check_alive("hub")
            time.sleep(0.2)
        raise PartyFailed("hub: did not start within 60 s")

    def enrol_nodes(self, holder_ids: Iterable[str] | None = None) -> None:
        """Out of band, as operators would: each node gets the hub's identity, the hub registers each node's."""
        for holder_id in holder_ids or self.holder_ids:
            home = self.node_home(holder_id)
            home.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.root / "hub-identity.json", home / "hub-identity.json")
            identity = self.root / f"{holder_id}-identity.json"
            self.command(holder_id, "hdp-node", "identity", "--output", str(identity))
            self.command("hub", "hdp-hub", "register-node", str(identity))

    def start_node(self, holder_id: str) -> None:
        self._start(holder_id, ["hdp-node", "run"])

    def start_nodes(self) -> None:
        for holder_id in self.holder_ids:
            self.start_node(holder_id)

    def _start(self, party: str, argv: Sequence[str]) -> None:
        fd = self.open_log(party)
        try:
            self.processes[party] = subprocess.Popen(
                [str(BIN / argv[0]), *argv[1:]],
                env=self.env(party),
                stdout=fd,
                stderr=fd,
                start_new_session=True,
            )
        finally:
            os.close(fd)  # the process holds its own copy

    def _check_alive(self, party: str) -> None:
        process = self.processes.get(party)
        if process is not None and process.poll() is not None:
            raise PartyFailed(f"{party}: exited with {process.returncode} (see {self.log_path(party)})")

    def kill(self, party: str) -> None:
        """Kill a party at once (SIGKILL), as a crash would."""
        process = self.processes.pop(party, None)
        if process is not None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)

    def stop(self, party: str | None = None) -> None:
        """Stop one party, or all (nodes first), gracefully."""
        names = [party] if party else [p for p in self.processes if p != "hub"]
        for group in (names, [] if party else ["hub"]):
            stopping = {name: self.processes.pop(name) for name in group if name in self.processes}
            for process in stopping.values():
                os.killpg(process.pid, signal.SIGTERM)
            for process in stopping.values():
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=30)

    # -- people ------------------------------------------------------------------------------
    def add_user(self, party: str, name: str, role: str, holder_ids: Sequence[str] = ()) -> str:
        """Create a user in a party's governance store; returns a fresh API token."""
        args = ["user", "add", name, "--role", role]
        for holder_id in holder_ids:
            args += ["--holder", holder_id]
        self.command(party, "hdp", *args, check=False)  # already there on a re-run
        out = self.command(party, "hdp", "user", "token", name, secret_output=True)
        return next(w for w in out.split() if w.startswith("hdp_"))

    def has_application(self, holder_id: str, request_id: int, *, token: str) -> bool:
        """Has the hub's application reached this node's own store (seen as its steward sees it)?"""
        shown = self.command(holder_id, "hdp", "request", "show", str(request_id), token=token, check=False)
        return f"request {request_id} " in shown

    def decide(
        self,
        holder_id: str,
        request_id: int,
        *,
        token: str,
        decision: str = "approve",
        justification: str,
        safes: Sequence[str] = FIVE_SAFES,
        acknowledge_at_risk: bool = True,
    ) -> None:
        """A steward decides at their own node, with the node's own CLI: by default having checked
        every one of the Five Safes and seen the disclosure pre-check's groups below k (approving
        without that acknowledgement is refused when there are any)."""
        args = ["request", "decide", str(request_id), "--holder", holder_id, "--decision", decision]
        args += ["--justification", justification]
        for safe in safes:
            args += ["--safe", safe]
        if acknowledge_at_risk:
            args.append("--ack-at-risk")
        self.command(holder_id, "hdp", *args, token=token)

    def hub_api(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.hub_url, headers={"Authorization": f"Bearer {token}"}, timeout=120)

    def wait_for(self, what: str, check: Any, timeout: float = 120.0, every: float = 0.3) -> Any:
        """Poll ``check()`` until it returns something truthy; fails naming ``what``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            for party in list(self.processes):
                self._check_alive(party)
            time.sleep(every)
        raise TimeoutError(f"waited {timeout:.0f} s for {what}")

    def status(self, permit_id: int) -> dict[str, Any]:
        return dict(httpx.get(f"{self.hub_url}/federation/v1/permits/{permit_id}/status", timeout=30).json())

    def summary(self) -> dict[str, Any]:
        return {"root": str(self.root), "hub": self.hub_url, "nodes": list(self.holder_ids)}

    def dump(self) -> str:
        return json.dumps(self.summary())
