"""Offline by default: no page the apps serve loads anything from outside the machine.

Inside a closed secure environment a CDN, a web font or a remote image never arrives, and a
request to one would also tell the outside who is reading what. ``/docs`` and ``/redoc`` come
from access/docs_offline.py; the web pages are crawled through their own links as every kind
of user (the web tests' seeded world). Data Docs are checked in tests/quality/test_data_docs.py,
and a real browser records every request in tests/browser/test_browser_offline_docs.py.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

from ops.offline import external_loads, external_loads_css, is_local

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "web"))  # the web tests' seeding helpers

_HREF = re.compile(r"""<a\b[^>]*\bhref="([^"]+)\"""", re.IGNORECASE)
_STYLESHEET = re.compile(r"""<link\b[^>]*\brel="stylesheet"[^>]*\bhref="([^"]+)\"""", re.IGNORECASE)


# -- the check itself: it finds what it should, and lets links be --------------------------------


@pytest.mark.parametrize(
    "html",
    [
        '<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>',
        '<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>',
        '<link href="https://fonts.googleapis.com/css?family=Roboto" rel="stylesheet">',
        '<img src="https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png?d=1&x=y">',
        '<img src="//example.org/pixel.gif">',
        '<img srcset="/local.png 1x, https://example.org/big.png 2x">',
        "<style>.x { background: url('https://example.org/logo.png') }</style>",
        '<style>@import "https://fonts.googleapis.com/css2?family=Inter";</style>',
        '<div style="background-image:url(http://example.org/a.png)"></div>',
        '<form action="https://example.org/collect"></form>',
        '<meta http-equiv="refresh" content="0; url=https://example.org/">',
        '<link rel="shortcut icon" href="https://fastapi.tiangolo.com/img/favicon.png">',
    ],
)
def test_the_check_finds_every_kind_of_outside_load(html):
    assert external_loads(html), html


def test_the_check_allows_links_relative_inline_and_loopback_urls():
    html = (
        '<a href="https://fastapi.tiangolo.com/">docs</a><link rel="stylesheet" href="/web/static/style.css">'
        '<script src="../static/x.js"></script><img src="data:image/png;base64,iVBO">'
        '<img src="http://127.0.0.1:8000/a.png"><form action="/web/login"></form>'
        "<style>.x { background: url(data:image/svg+xml;utf8,<svg/>) } .y { background: url(img/a.png) }</style>"
    )
    assert external_loads(html) == []
    assert external_loads_css("@import url(http://localhost/a.css); a { b: url('/x.png') }") == []
    assert not is_local("//cdn.example.org/x.js") and not is_local("wss://example.org/")


# -- the apps' pages ----------------------------------------------------------------------------


@pytest.fixture
def client(hdp_home) -> Iterator:
    from fastapi.testclient import TestClient
    from webtest_helpers import seed, write_research_zone

    from access.app import create_app
    from governance.store import dispose_all

    world = seed(hdp_home.governance_url)
    write_research_zone(hdp_home.research_db("ndr"))
    with TestClient(create_app(), base_url="http://testserver") as c:
        c.world = world  # type: ignore[attr-defined]
        yield c
    dispose_all()


def _assert_offline(client, path: str, html: str) -> None:
    assert external_loads(html) == [], path
    for href in _STYLESHEET.findall(html):  # a same-origin stylesheet may still @import a CDN
        css = client.get(urljoin(path, href))
        assert css.status_code == 200, href
        assert external_loads_css(css.text) == [], href


def test_docs_and_redoc_are_served_whole_from_this_machine(client):
    from access.docs_offline import ASSET_FILES, ASSETS_URL, EMPTY_IMAGE, REDOC_REMOTE_LOGO, assets_dir

    docs = client.get("/docs")
    redoc = client.get("/redoc")
    assert docs.status_code == redoc.status_code == 200
    for path, page in (("/docs", docs), ("/redoc", redoc)):
        _assert_offline(client, path, page.text)
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "http" not in csp
    assert f'src="{ASSETS_URL}/swagger-ui-bundle.js"' in docs.text
    assert f'src="{ASSETS_URL}/redoc.standalone.js"' in redoc.text
    assert '"validatorUrl": null' in docs.text  # no badge from validator.swagger.io
    assert "fonts.googleapis" not in redoc.text and "fonts.googleapis" not in docs.text
    # the pages' assets are the installed package's files, byte for byte, but for ReDoc's logo
    for name in ASSET_FILES:
        served = client.get(f"{ASSETS_URL}/{name}")
        expected = (assets_dir() / name).read_bytes()
        if name == "redoc.standalone.js":
            assert REDOC_REMOTE_LOGO in expected and REDOC_REMOTE_LOGO not in served.content
            expected = expected.replace(REDOC_REMOTE_LOGO, EMPTY_IMAGE)
        assert served.status_code == 200 and served.content == expected, name
    assert b"cdn.redoc.ly" not in client.get(f"{ASSETS_URL}/redoc.standalone.js").content
    assert client.get("/openapi.json").json()["info"]["title"].startswith("Health-data platform")
    # the bundles themselves fetch no font or stylesheet from elsewhere
    assert external_loads_css(client.get(f"{ASSETS_URL}/swagger-ui.css").text) == []
    assert b"fonts.googleapis" not in (assets_dir() / "redoc.standalone.js").read_bytes()


def test_the_cdn_pages_cannot_come_back_beside_the_offline_ones():
    from fastapi import FastAPI

    from access.docs_offline import NO_CDN_DOCS, serve_offline_docs

    with pytest.raises(ValueError, match="CDN"):
        serve_offline_docs(FastAPI())
    app = FastAPI(**NO_CDN_DOCS)
    serve_offline_docs(app)
    docs_routes = [r for r in app.routes if getattr(r, "path", "") in ("/docs", "/redoc")]
    assert len(docs_routes) == 2


def _crawl(client, start: list[str], seen: dict[str, str]) -> None:
    """Every same-origin GET page reachable by links from ``start``: path -> HTML."""
    queue = list(start)
    while queue:
        path = queue.pop()
        if path in seen or "logout" in path:
            continue
        r = client.get(path)
        if "text/html" not in r.headers.get("content-type", ""):
            continue
        seen[path] = r.text
        for href in _HREF.findall(r.text):
            target = urljoin(path, href.replace("&amp;", "&"))
            parts = urlsplit(target)
            if is_local(target) and not parts.netloc and parts.path.startswith("/web"):
                queue.append(parts.path + (f"?{parts.query}" if parts.query else ""))


def test_every_web_page_of_every_user_loads_nothing_from_outside(client):
    from webtest_helpers import login

    world = client.world
    pages: dict[tuple[str, str], str] = {}
    # every GET page without a path parameter, whether or not a link leads there, then the links
    routes = [r for r in client.app.routes if "GET" in (getattr(r, "methods", None) or ())]
    start = sorted({r.path for r in routes if r.path.startswith("/web") and "{" not in r.path})
    start.append("/web/requests/999999")  # the error page
    for user in ("anonymous", "alice", "s-ndr", "dual", "s-upp"):
        client.cookies.clear()
        if user != "anonymous":
            assert login(client, world.tokens[user]).status_code == 200
        seen: dict[str, str] = {}
        _crawl(client, [*start, f"/web/requests/{world.request_id}"], seen)
        pages.update({(user, path): html for path, html in seen.items()})
    for (_, path), html in pages.items():
        _assert_offline(client, path, html)
    visited = {path for _, path in pages}
    assert {"/web/login", "/web/transparency", "/web/researcher", "/web/steward", "/web/prom"} <= visited
    assert f"/web/requests/{world.request_id}" in visited
    assert len(pages) >= 12, sorted(pages)


def test_the_hub_serves_the_same_offline_docs_with_its_federation_routes(hdp_home, monkeypatch):
    from fastapi.testclient import TestClient

    from governance import store
    from hdp.settings import get_settings

    monkeypatch.setenv("HDP_FEDERATION_ROLE", "hub")
    monkeypatch.setenv("HDP_HUB_URL", "http://127.0.0.1:8700")
    get_settings.cache_clear()
    store.upgrade(get_settings().governance_url)
    from hub.app import create_hub_app

    client = TestClient(create_hub_app(), base_url="http://testserver")  # no start-up: no routing loop
    try:
        for path in ("/docs", "/redoc"):
            page = client.get(path)
            assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
            _assert_offline(client, path, page.text)
        assert any(p.startswith("/federation") for p in client.get("/openapi.json").json()["paths"])
    finally:
        store.dispose_all()
        get_settings.cache_clear()
