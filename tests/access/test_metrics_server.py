"""``hdp serve`` with two uvicorn workers: /metrics reflects the requests every worker served.

A real server in a subprocess, on loopback; each request opens a new connection, so the
kernel hands them to both workers. The workers keep their counts in prometheus_client's
multiprocess files under the data home (owner-only), and whichever worker answers the scrape
sums them all.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hdp.settings import REPO_ROOT

pytestmark = pytest.mark.slow

REQUESTS = 40
UNAUTHENTICATED = 7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hdp(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def _counts(text: str) -> dict[tuple[str, str, str], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name == "hdp_http_requests":
            for s in family.samples:
                if s.name == "hdp_http_requests_total":
                    out[(s.labels["route"], s.labels["method"], s.labels["status_class"])] = s.value
    return out


def test_metrics_after_requests_through_two_workers_reflect_all_of_them(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HDP_", "PROMETHEUS_"))}
    env.update(HDP_HOME=str(home), HDP_KEK_DIR=str(tmp_path / "kek"))
    _hdp(env, "governance", "upgrade")
    _hdp(env, "user", "add", "olle", "--role", "operator")
    token = _hdp(env, "user", "token", "olle").splitlines()[-1]
    port = _free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "serve", "--port", str(port), "--workers", "2"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        started = time.monotonic()
        # One connection per request (no keep-alive), eight at a time: both workers accept some.
        paths = ["/health"] * (REQUESTS - 1) + ["/releases"] * UNAUTHENTICATED
        with ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(lambda p: httpx.get(url + p, headers={"Connection": "close"}).status_code, paths)
            )
        assert statuses == [200] * (REQUESTS - 1) + [401] * UNAUTHENTICATED
        elapsed = time.monotonic() - started
        auth = {"Authorization": f"Bearer {token}", "Connection": "close"}
        scrapes = [httpx.get(url + "/metrics", headers=auth) for _ in range(6)]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    print(f"\n{REQUESTS + UNAUTHENTICATED - 1} requests in {elapsed:.2f} s through two workers")
    assert all(r.status_code == 200 for r in scrapes), scrapes[0].text
    for r in scrapes:  # whichever worker answered, it counts every worker's requests
        counts = _counts(r.text)
        assert counts[("/health", "GET", "2xx")] == REQUESTS  # the readiness probe was one of them
        assert counts[("/releases", "GET", "4xx")] == UNAUTHENTICATED
    refusals = {
        s.labels["reason"]: s.value
        for f in text_string_to_metric_families(scrapes[-1].text)
        if f.name == "hdp_access_refusals"
        for s in f.samples
        if s.name.endswith("_total")
    }
    assert refusals["auth.missing_token"] == UNAUTHENTICATED
    shared = home / "monitoring" / "prometheus"
    assert stat.S_IMODE(shared.stat().st_mode) == 0o700
    files = list(shared.glob("counter_*.db"))
    assert len(files) == 2, [f.name for f in files]  # both workers served (and wrote) requests
    assert all(stat.S_IMODE(f.stat().st_mode) & 0o077 == 0 for f in files)
