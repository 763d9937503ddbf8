"""A holder's Great Expectations Data Docs, served to that holder's stewards only.

The gate writes one static site per run under ``$HDP_HOME/quality/docs/<run>/``
(``pipelines.quality.docs``; pages rewritten to load nothing from elsewhere). The steward's
request page links the latest research gate run of each holder in scope here:
``/web/quality/docs/<holder>/<run>/<path>``.

Who: a logged-in steward of ``<holder>``; anyone else gets 404 (as for other steward pages),
and so does a run without results for the holder. GX lays a suite's pages out as
``validations/<zone>/<scope>/...`` and ``expectations/<zone>/<scope>/...``: pages of another
scope are refused. The run's index lists every holder's validations, so a steward gets it
rebuilt with their holder's rows only (``scope_index_html``); the site's stylesheet and other
shared pages are served as they are.

Path traversal: the path is split into segments; empty, ``.``/``..``, hidden or backslash
segments are refused; the resolved file must lie inside the run's site (a symlink pointing
out is refused too); only a few file types are served, with a CSP that allows no script.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from access.web.pages import PREFIX, PageKit
from pipelines.quality.docs import docs_index, scope_index_html
from pipelines.quality.store import safe_name

ROUTE = "/quality/docs"
_RUN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,149}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.,:+=@-]{0,199}$")
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
#: The Data Docs pages carry no script (pipelines.quality.offline_html removes it) but do carry
#: inline styles; nothing may load from elsewhere.
CSP = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
SCOPED_DIRS = ("validations", "expectations")


def site_dir(quality_dir: Path, run_id: str) -> Path:
    """The run's Data Docs site directory (its index is ``pipelines.quality.docs.docs_index``)."""
    return docs_index(quality_dir, run_id).parent


def holder_in_run(site: Path, holder_id: str) -> bool:
    """True when the run's site has pages of ``holder_id`` (in any zone)."""
    scope = safe_name(holder_id)
    validations = site / "validations"
    return validations.is_dir() and any((zone / scope).is_dir() for zone in validations.iterdir())


def docs_url(quality_dir: Path, holder_id: str, run_id: str | None) -> str | None:
    """The page link to ``holder_id``'s Data Docs of ``run_id``, or None when the run has none."""
    if not run_id:
        return None
    try:
        index = docs_index(quality_dir, run_id)
    except ValueError:
        return None
    if not index.is_file() or not holder_in_run(index.parent, holder_id):
        return None
    return f"{PREFIX}{ROUTE}/{holder_id}/{index.parent.name}/index.html"


def resolve(site: Path, holder_id: str, path: str) -> Path | None:
    """The file ``path`` names inside ``site`` if the holder's steward may see it; else None."""
    parts = path.split("/")
    if not parts or any(not _SEGMENT.match(p) or ".." in p for p in parts):
        return None
    if parts[0] in SCOPED_DIRS and (len(parts) < 4 or parts[2] != safe_name(holder_id)):
        return None  # another holder's pages (or a listing of them)
    if Path(parts[-1]).suffix not in MEDIA_TYPES:
        return None
    root = site.resolve()
    target = root.joinpath(*parts).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        return None
    return target


class DataDocsPages:
    def __init__(self, web: PageKit) -> None:
        self.web = web

    def serve(self, request: Request, holder_id: str, run: str, path: str) -> Response:
        p = self.web.page(request)
        if p.user is None:
            return self.web.login_redirect(p)
        if "steward" not in p.roles or holder_id not in p.user.holder_ids or not _RUN.match(run):
            return self.web.error(p, 404, "not_found")
        quality_dir = self.web._settings().quality_dir
        site = quality_dir / "docs" / run
        target = resolve(site, holder_id, path) if site.is_dir() and holder_in_run(site, holder_id) else None
        if target is None:
            return self.web.error(p, 404, "not_found")
        if target == (site / "index.html").resolve():
            own = scope_index_html(quality_dir, run, holder_id)  # not the other holders' verdicts
            if own is None:
                return self.web.error(p, 404, "not_found")
            body = own.encode("utf-8")
        else:
            body = target.read_bytes()
        response = self.web.finish(p, Response(body, media_type=MEDIA_TYPES[target.suffix]))
        response.headers["Content-Security-Policy"] = CSP
        return response


def add_datadocs_pages(router: APIRouter, web: PageKit) -> None:
    """Add the Data Docs route to the ``/web`` router."""
    pages = DataDocsPages(web)
    router.add_api_route(ROUTE + "/{holder_id}/{run}/{path:path}", pages.serve, methods=["GET"])


__all__ = ["ROUTE", "add_datadocs_pages", "docs_url", "resolve"]
