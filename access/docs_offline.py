"""Swagger UI and ReDoc served from this machine: no CDN, no web font, no validator badge.

FastAPI's default ``/docs`` and ``/redoc`` pages load their JavaScript and CSS from
cdn.jsdelivr.net and their favicon from fastapi.tiangolo.com, so inside a closed network they
stay blank. Following FastAPI's "Self-hosting JavaScript and CSS for docs", an app is created
with ``docs_url=None, redoc_url=None`` (:data:`NO_CDN_DOCS`) and :func:`serve_offline_docs`
adds both pages over the assets of the locked ``fastapi-offline`` package, served straight
from its installed directory (2.8 MB that need not live in the repository). ReDoc's bundle
is served with its one hard-coded remote image (the Redocly logo) replaced by an empty one.

Every FastAPI app of the platform (the access layer, and the hub, which is the access app with
the federation's routes beside it) gets its docs through this one function.
"""

from __future__ import annotations

import hashlib
from base64 import b64encode
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

#: Keyword arguments for ``FastAPI(...)``: no default docs pages (they would load from CDNs).
NO_CDN_DOCS: dict[str, Any] = {"docs_url": None, "redoc_url": None}

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
#: Where the Swagger UI / ReDoc bundles are served (a path of its own, apart from /web/static).
ASSETS_URL = "/docs-assets"
#: The four files the pages load, all inside fastapi-offline's ``static`` directory.
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")

#: ReDoc's sidebar footer draws the Redocly logo from this URL whatever its options say; the
#: bundle is served with an empty inline image there instead (:func:`redoc_bundle`).
REDOC_REMOTE_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
EMPTY_IMAGE = b"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E"

#: Swagger UI's defaults plus: no validator badge (it would send the schema's URL to
#: validator.swagger.io and load an image from there).
SWAGGER_UI_PARAMETERS: dict[str, Any] = {"validatorUrl": None}


def assets_dir() -> Path:
    """The installed ``fastapi_offline/static`` directory; fails if a bundle is missing."""
    directory = Path(str(files("fastapi_offline") / "static"))
    missing = [name for name in ASSET_FILES if not (directory / name).is_file()]
    if missing:
        raise RuntimeError(f"fastapi-offline is installed without {', '.join(missing)} in {directory}")
    return directory


@cache
def redoc_bundle() -> bytes:
    """ReDoc's standalone bundle without its remote logo; fails if the bundle no longer has it
    where we expect (a new ReDoc must be looked at again, not trusted)."""
    bundle = (assets_dir() / "redoc.standalone.js").read_bytes()
    if bundle.count(REDOC_REMOTE_LOGO) != 1:
        raise RuntimeError("redoc.standalone.js changed: check what it loads before serving it")
    return bundle.replace(REDOC_REMOTE_LOGO, EMPTY_IMAGE)


def _inline_script_hashes(html: str) -> str:
    """CSP source expressions for the page's inline scripts (Swagger UI's start-up script)."""
    hashes = []
    start = 0
    while (open_at := html.find("<script>", start)) != -1:
        close_at = html.index("</script>", open_at)
        body = html[open_at + len("<script>") : close_at]
        hashes.append(f"'sha256-{b64encode(hashlib.sha256(body.encode()).digest()).decode()}'")
        start = close_at
    return " ".join(hashes)


def _content_security_policy(html: str) -> str:
    """The browser itself refuses anything from elsewhere, should a bundle ever try.

    Styles are inline ('unsafe-inline': both UIs set style attributes from script); ReDoc's
    search runs in a worker made from a blob; the schema is fetched from this origin.
    """
    return (
        "default-src 'none'; "
        f"script-src 'self' {_inline_script_hashes(html)}; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
        "connect-src 'self'; worker-src 'self' blob:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


def _with_policy(page: HTMLResponse) -> HTMLResponse:
    html = bytes(page.body).decode()
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": _content_security_policy(html),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def serve_offline_docs(app: FastAPI) -> None:
    """Add ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) to ``app``, every asset served by ``app``.

    ``app`` must have been created with :data:`NO_CDN_DOCS`: FastAPI registers its CDN pages
    when the app is built, and two routes for ``/docs`` would leave the first one winning.
    """
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("create the app with FastAPI(**NO_CDN_DOCS): its default docs load from CDNs")
    if app.openapi_url is None:
        raise ValueError("the app has no OpenAPI schema to show")
    openapi_url = app.openapi_url
    redoc_bundle()  # at start-up: a changed bundle stops the app rather than reach out later

    # before the mount, so that this route and not the file answers for the bundle
    @app.get(f"{ASSETS_URL}/redoc.standalone.js", include_in_schema=False)
    async def redoc_js() -> Response:
        return Response(redoc_bundle(), media_type="text/javascript")

    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _with_policy(
            get_swagger_ui_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                oauth2_redirect_url=None,  # bearer tokens only: no OAuth2 flow to return from
                swagger_ui_parameters={**(app.swagger_ui_parameters or {}), **SWAGGER_UI_PARAMETERS},
            )
        )

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _with_policy(
            get_redoc_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                with_google_fonts=False,  # fonts.googleapis.com: the fallback fonts do
            )
        )
