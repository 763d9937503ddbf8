"""Helpers shared by the browser tests and the screenshot script (docs/screenshots/make_screenshots.py).

* ``serve(home)``: the real access app under uvicorn on a free loopback port, for a data home;
* ``ExternalRequests``: records every request a browser context makes and names those that
  leave the machine (anything but loopback, ``data:``, ``blob:``, ``about:``);
* ``login``, ``check_output``, ``record_release``: steps several journeys take.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM = Path("/usr/bin/chromium")
REPO_ROOT = Path(__file__).resolve().parents[2]
# Without the background-networking flags Chromium tries to reach Google services, which this
# closed network refuses (and which a browser test must not do anyway).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INLINE_SCHEMES = ("data", "blob", "about")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(home: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``access.app:create_app`` for ``home`` (one worker) until the block ends; yields its URL."""
    port = free_port()
    log_path = home / "uvicorn.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "access.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--no-access-log",
            ],
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {}), "HDP_HOME": str(home)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start; see {log_path}:\n" + log_path.read_text()[-3000:])
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def is_loopback(url: str) -> bool:
    """True for a request that stays on this machine (a browser's request URLs are absolute)."""
    parts = urlsplit(url)
    if parts.scheme.lower() in INLINE_SCHEMES:
        return True
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() not in ("http", "https", "ws", "wss") or not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ExternalRequests:
    """Every request of the browser contexts it watches; ``external`` are those off the machine."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def watch(self, context) -> None:
        context.on("request", lambda request: self.seen.append(request.url))

    @property
    def external(self) -> list[str]:
        return [u for u in self.seen if not is_loopback(u)]


def login(
    browser, url: str, token: str, *, locale: str = "en-GB", label: str = "API token", button: str = "Log in"
):
    """A new browser context logged in with ``token`` through the login form; (context, page)."""
    ctx = browser.new_context(locale=locale, accept_downloads=True)
    page = ctx.new_page()
    page.goto(f"{url}/web/login")
    page.get_by_label(label).fill(token)
    page.get_by_role("button", name=button).click()
    page.wait_for_load_state()
    return ctx, page


def check_output(
    page, url: str, oid: int, link: str, decision: str, comment_label: str, comment: str, button: str
) -> None:
    """A checker opens output ``oid`` from the checking queue and records ``decision``."""
    page.goto(f"{url}/web/checking")
    page.get_by_role("link", name=f"{link} {oid}").click()
    page.wait_for_url(f"{url}/web/outputs/{oid}")
    assert page.get_by_test_id("output-preview").is_visible()  # checkers see what is to leave
    page.get_by_label(decision, exact=True).check()
    page.get_by_label(comment_label).fill(comment)
    page.get_by_role("button", name=button).click()
    page.wait_for_url(f"{url}/web/outputs/{oid}")


def record_release(
    governance_url: str, releases_dir: Path, request_id: int, release_id: str, **sizes: int
) -> None:
    """What the release DAG does at its end, with a small synthetic release in the contract layout."""
    from access.demo_release import write_release
    from governance import service
    from governance.store import session_scope

    rel = releases_dir / release_id
    manifest = write_release(rel, **({"persons": 200, "visits": 800} | sizes))  # random synthetic values
    manifest["quality"] = {"label": "passed", "checks": {"pass": 12, "fail": 0}}
    (rel / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    sha = hashlib.sha256((rel / "manifest.json").read_bytes()).hexdigest()
    with session_scope(governance_url) as s:
        service.record_release(s, request_id=request_id, release_id=release_id, manifest_sha256=sha)
