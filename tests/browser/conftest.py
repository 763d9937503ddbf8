"""Browser test fixtures: the real access app under uvicorn, Debian's Chromium through Playwright.

The app runs in a subprocess (``uvicorn access.app:create_app --factory``) against a temporary
HDP_HOME with a SQLite governance store that the test seeds beforehand and reads afterwards.
Playwright never downloads a browser: it launches /usr/bin/chromium.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # browser_support, under any --import-mode
from browser_support import CHROMIUM, CHROMIUM_ARGS, REPO_ROOT, ExternalRequests, serve  # noqa: E402

ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"

sys.path.insert(0, str(REPO_ROOT / "tests" / "web"))  # reuse the web tests' seeding helpers


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is required in CI (apt-get install -y chromium)")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium); set CI=1 to make this fail")


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
    try:
        with serve(home) as url:
            yield {"url": url, "world": world, "home": home, "settings": settings}
    finally:
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


@pytest.fixture(autouse=True)
def no_external_requests(request) -> Iterator[ExternalRequests | None]:
    """Every browser test: record each request of every context and page it opens, and fail when
    any leaves the machine (a CDN, a font, a tracking image, a search engine ...)."""
    if "browser" not in request.fixturenames:
        yield None
        return
    b = request.getfixturevalue("browser")
    recorder = ExternalRequests()
    new_context, new_page = b.new_context, b.new_page

    def watched_context(*args, **kwargs):
        ctx = new_context(*args, **kwargs)
        recorder.watch(ctx)
        return ctx

    def watched_page(*args, **kwargs):
        page = new_page(*args, **kwargs)
        recorder.watch(page)
        return page

    b.new_context, b.new_page = watched_context, watched_page
    try:
        yield recorder
    finally:
        del b.new_context, b.new_page  # the class's own methods again
    assert recorder.seen, "the test's pages made no request: the recorder was not attached"
    assert not recorder.external, (
        f"pages requested URLs outside the machine: {sorted(set(recorder.external))}"
    )
