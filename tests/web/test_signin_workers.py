"""Sign-in under the default `hdp serve` (two uvicorn worker processes), as through a proxy:
every request on a new TCP connection, no keep-alive, no cookie jar shared between attempts.

With sessions in each worker's memory, 1 of 12 such sign-ins worked (the login form's CSRF
token or the new session lived in the other worker). The sealed cookie (access.web.sessions)
opens in whichever worker gets the request.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path

import psutil
import pytest
from webtest_helpers import csrf_of, seed

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
HDP = Path(sys.executable).parent / "hdp"
SIGN_INS = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Fresh:
    """One HTTP request per new TCP connection (``Connection: close``); cookies only as given."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connections = 0

    def request(
        self, method: str, path: str, *, cookie: str | None = None, form: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str, str | None]:
        """(status, headers, body, the hdp_session value the response set, "" if it deleted it)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.connections += 1
        headers = {"Connection": "close", "Accept-Language": "en"}
        body = None
        if cookie is not None:
            headers["Cookie"] = f"hdp_session={cookie}"
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            text = r.read().decode("utf-8", "replace")
            set_cookie = None
            for name, value in r.getheaders():
                if name.lower() == "set-cookie":
                    jar: SimpleCookie = SimpleCookie()
                    jar.load(value)
                    if "hdp_session" in jar:
                        morsel = jar["hdp_session"]
                        set_cookie = "" if morsel["max-age"] == "0" else morsel.value
            assert r.getheader("Connection", "").lower() == "close" or r.will_close
            return r.status, {k.lower(): v for k, v in r.getheaders()}, text, set_cookie
        finally:
            conn.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[dict]:
    """`hdp serve` (default workers) on a free loopback port over a seeded data home."""
    from governance.store import dispose_all
    from hdp.settings import get_settings
    from privacy.keys import load_kek

    home = tmp_path_factory.mktemp("signin_home")
    kek_dir = tmp_path_factory.mktemp("signin_kek")
    saved = {k: os.environ.get(k) for k in ("HDP_HOME", "HDP_KEK_DIR", "HDP_GOVERNANCE_URL", "HDP_ENV")}
    os.environ.update(HDP_HOME=str(home), HDP_KEK_DIR=str(kek_dir))
    for k in ("HDP_GOVERNANCE_URL", "HDP_ENV", "HDP_ACCESS_WORKERS"):
        os.environ.pop(k, None)
    get_settings.cache_clear()
    settings = get_settings()
    assert settings.access_workers == 2  # the default the test is about
    world = seed(settings.governance_url)
    load_kek(settings)  # as after `hdp keys`/the first pipeline run; the web secret is left to the workers
    port = _free_port()
    log_path = home / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(HDP), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env={**os.environ},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers share its process group: stopped together
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    c.close()
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"hdp serve did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        workers = [
            c for c in psutil.Process(proc.pid).children(recursive=True) if "spawn" in " ".join(c.cmdline())
        ]
        yield {"port": port, "world": world, "settings": settings, "workers": workers, "log": log_path}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        dispose_all()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()


def sign_in(http_: Fresh, token: str, *, landing: str) -> tuple[bool, str, str | None]:
    """Login form, POST with its CSRF token, then a protected page: three fresh connections.
    Returns (signed in, why not, the session cookie)."""
    status, _, html, anon = http_.request("GET", "/web/login")
    if status != 200 or not anon:
        return False, f"form {status}", None
    status, headers, _, session = http_.request(
        "POST", "/web/login", cookie=anon, form={"token": token, "csrf_token": csrf_of(html), "next": ""}
    )
    if status != 303 or headers.get("location") != landing or not session:
        return False, f"post {status} {headers.get('location')}", None
    status, _, page, _ = http_.request("GET", landing, cookie=session)
    if status != 200 or "/web/logout" not in page:
        return False, f"page {status}", None
    return True, "", session


def test_twenty_sign_ins_on_fresh_connections_all_succeed(served):
    assert len(served["workers"]) >= 2, "hdp serve should run two worker processes"
    http_ = Fresh(served["port"])
    tokens = served["world"].tokens
    results = []
    started = time.monotonic()
    for i in range(SIGN_INS):
        who, landing = ("s-ndr", "/web/steward") if i % 2 else ("alice", "/web/researcher")
        results.append(sign_in(http_, tokens[who], landing=landing))
    elapsed = time.monotonic() - started
    failures = [why for ok, why, _ in results if not ok]
    print(
        f"\n{SIGN_INS - len(failures)}/{SIGN_INS} sign-ins, {http_.connections} connections, {elapsed:.2f} s"
    )
    assert failures == [], failures
    assert http_.connections == 3 * SIGN_INS
    assert len({cookie for _, _, cookie in results}) == SIGN_INS  # one session each
    # Every worker opened sessions it did not seal: the workers agree on one secret file.
    keys = list(served["settings"].keys_dir.glob("web_session.key*"))
    assert [k.name for k in keys] == ["web_session.key"]


def test_logout_in_one_worker_ends_the_copies_in_every_worker(served):
    http_ = Fresh(served["port"])
    ok, why, cookie = sign_in(http_, served["world"].tokens["bob"], landing="/web/researcher")
    assert ok, why
    status, _, page, _ = http_.request("GET", "/web/researcher", cookie=cookie)
    status, headers, _, cleared = http_.request(
        "POST", "/web/logout", cookie=cookie, form={"csrf_token": csrf_of(page)}
    )
    assert status == 303 and "logged_out" in headers["location"] and cleared == ""
    for _ in range(6):  # whichever worker gets the replay refuses it
        status, headers, _, _ = http_.request("GET", "/web/researcher", cookie=cookie)
        assert status == 303 and headers["location"].startswith("/web/login")


def test_revoked_token_ends_the_session_in_every_worker(served):
    from governance import service
    from governance.store import session_scope

    http_ = Fresh(served["port"])
    ok, why, cookie = sign_in(http_, served["world"].tokens["carol"], landing="/web/researcher")
    assert ok, why
    with session_scope(served["world"].url) as s:
        service.revoke_tokens(s, user_name="carol")
    for _ in range(6):
        status, headers, _, _ = http_.request("GET", "/web/researcher", cookie=cookie)
        assert status == 303 and "session_expired" in headers["location"]


def test_the_log_holds_no_token(served):
    text = served["log"].read_text(errors="replace")
    for token in served["world"].tokens.values():
        assert token not in text
    assert not re.search(r"gAAAAA[A-Za-z0-9_-]{40,}", text)  # no sealed cookie either
