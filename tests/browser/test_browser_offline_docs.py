"""/docs and /redoc in Chromium: every request the browser makes stays on this machine, and the
pages do render (a blank page would also make no outside request).

Requests are recorded in the test itself with ``page.on("request")``; Content-Security-Policy
violations (something a bundle tried and the browser refused) show up as console errors.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the offline check in ops/
from ops.offline import is_local  # noqa: E402

pytestmark = pytest.mark.slow


def _open(browser, url: str):
    """A fresh page that records every request and every console error."""
    context = browser.new_context()
    page = context.new_page()
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="networkidle")
    return context, page, requests, errors


def test_swagger_ui_renders_with_every_request_on_loopback(live, browser, shot):
    context, page, requests, errors = _open(browser, live["url"] + "/docs")
    try:
        operation = page.locator(".opblock").first
        operation.wait_for(state="visible", timeout=15_000)
        assert page.locator(".opblock").count() >= 5  # the API's operations, from /openapi.json
        page.locator(".opblock-summary").first.click()  # the UI works, not only draws
        page.locator(".opblock-body").first.wait_for(state="visible", timeout=5_000)
        page.wait_for_load_state("networkidle")
        shot(page, "swagger")
        assert page.locator(".validator-badge, img[src*='validator']").count() == 0
    finally:
        context.close()
    assert any(u.endswith("/docs-assets/swagger-ui-bundle.js") for u in requests)
    assert any(u.endswith("/openapi.json") for u in requests)
    assert [u for u in requests if not is_local(u)] == []
    assert [e for e in errors if "Content Security Policy" in e or "Refused" in e] == []


def test_redoc_renders_with_every_request_on_loopback(live, browser, shot):
    context, page, requests, errors = _open(browser, live["url"] + "/redoc")
    try:
        page.locator("[role=menuitem]").first.wait_for(state="visible", timeout=20_000)
        assert page.locator("h1").first.inner_text().startswith("Health-data platform")
        assert page.locator("[role=menuitem]").count() >= 5
        page.wait_for_load_state("networkidle")
        shot(page, "redoc")
        # ReDoc draws with whatever fonts the machine has: no stylesheet link to a font service
        links = page.eval_on_selector_all("link[href]", "els => els.map(e => e.href)")
        assert [u for u in links if not is_local(u)] == []
    finally:
        context.close()
    assert any(u.endswith("/docs-assets/redoc.standalone.js") for u in requests)
    assert [u for u in requests if not is_local(u)] == []
    assert [e for e in errors if "Content Security Policy" in e or "Refused" in e] == []


@contextmanager
def _static_server(directory: Path) -> Iterator[str]:
    """``directory`` over HTTP on a free loopback port (as an operator might serve Data Docs)."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_data_docs_render_with_no_request_leaving_the_site(live, browser, shot, tmp_path):
    from datetime import UTC, datetime

    from quality.test_data_docs import gate_result

    from pipelines.quality import docs

    started = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)
    docs.render(tmp_path, gate_result("browser", "ndr", started, passed=True), {})
    index = docs.render(tmp_path, gate_result("browser", "region_uppsala", started, passed=False), {})
    with _static_server(index.parent) as site:
        context = browser.new_context()
        page = context.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        try:
            page.goto(site + "/index.html", wait_until="networkidle")
            assert page.locator("tbody tr").count() == 4
            shot(page, "index")
            page.locator("a", has_text="raw.region_uppsala.register_visit").click()
            page.wait_for_load_state("networkidle")
            assert page.get_by_text("2 of 400 rows failed").first.is_visible()
            shot(page, "validation")
            page.get_by_role("link", name="Home").click()  # the breadcrumb leads back to the index
            page.wait_for_load_state("networkidle")
            assert page.url == site + "/index.html"
        finally:
            context.close()
    assert any(u.endswith(docs.STYLESHEET) for u in requests)
    assert [u for u in requests if not u.startswith(site + "/")] == []
