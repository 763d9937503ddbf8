"""Browser test fixtures: the real access app under uvicorn, Debian's Chromium through Playwright.

The app runs in a subprocess (``uvicorn access.app:create_app --factory``) against a temporary
HDP_HOME with a SQLite governance store that the test seeds beforehand and reads afterwards.
Playwright never downloads a browser: it launches /usr/bin/chromium.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
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

sys.path.insert(0, str(REPO_ROOT / "tests" / "web"))  # reuse the web tests' seeding helpers


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is required in CI (apt-get install -y chromium)")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium); set CI=1 to make this fail")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[dict]:
    """Seeded data home + the app on a free port: {"url", "world", "home"}."""
    _require_chromium()
    from webtest_helpers import seed, write_research_zone

    from governance.store import dispose_all
    from hdp import audit
    from hdp.settings import get_settings
    from privacy import audit_key

    home = tmp_path_factory.mktemp("browser_home")
    saved = {k: os.environ.get(k) for k in ("HDP_HOME", "HDP_GOVERNANCE_URL", "HDP_ENV", "HDP_KEK_DIR")}
    os.environ["HDP_HOME"] = str(home)
    # Test process and server share one KEK, and the test's own governance writes are keyed with
    # the home's audit key as the server's are (one keyed audit log, whoever appends).
    os.environ["HDP_KEK_DIR"] = str(tmp_path_factory.mktemp("kek"))
    previous_source = audit.key_source()
    audit_key.configure()
    os.environ.pop("HDP_GOVERNANCE_URL", None)
    os.environ.pop("HDP_ENV", None)
    get_settings.cache_clear()
    settings = get_settings()
    world = seed(settings.governance_url)
    write_research_zone(settings.research_db("ndr"))
    port = _free_port()
    env = {**os.environ, "HDP_HOME": str(home)}
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
            env=env,
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
        yield {"url": url, "world": world, "home": home, "settings": settings}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        dispose_all()
        audit.set_key_source(previous_source)
        audit_key.forget()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def browser(live):
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def shot(request):
    """shot(page, "step") saves test-artifacts/browser/<test>__<nn>-<step>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    counter = iter(range(1, 100))

    def take(page, step: str) -> Path:
        path = ARTIFACTS / f"{request.node.name}__{next(counter):02d}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
