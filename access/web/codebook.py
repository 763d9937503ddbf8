"""The codebook page of a release: ``GET /web/releases/{release_id}/codebook``.

What the page shows is ``access.codebook.codebook_for``, the code behind
``GET /releases/{id}/codebook`` and ``Client.describe()``: the same permit check (through
``AccessService.schema``, audited) and the same content. Only the release's researchers (an
active permit naming them) see it; anyone else gets 404, so the page does not reveal that a
release exists. Labels are shown in the page's language; rules and reasons through
``access.web.i18n``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from access.codebook import codebook_for
from access.errors import Refusal
from access.service import AccessService
from access.web.i18n import STRINGS
from access.web.pages import PageKit

log = logging.getLogger(__name__)

#: Enumerated values shown per variable before "…" (the JSON has them all).
MAX_VALUES = 12
_RULES_WITH_FIELDS = {"shift", "top_code"}


def rule_text(t: Callable[..., str], rule: Mapping[str, Any] | None) -> str:
    """The release policy's rule for a variable, in words."""
    if not rule:
        return ""
    action = str(rule.get("action", ""))
    fields = {k: v for k, v in rule.items() if k != "action"}
    if action == "keep":
        return ""
    if action in ("band5", "year", "month"):
        return t(f"codebook_rule_{action}")
    if action in _RULES_WITH_FIELDS:
        try:
            return t(f"codebook_rule_{action}", **fields)
        except KeyError:
            pass  # a field the words need is missing: name the action instead
    return t("codebook_rule_other", action=action)


def values_text(lang: str, variable: Mapping[str, Any]) -> str:
    """Enumerated values (``code = label``) or the range."""
    values = variable.get("values")
    if values:
        shown = [
            f"{v['code']} = {v['label'][lang]}" if v.get("label") and v["label"].get(lang) else str(v["code"])
            for v in values[:MAX_VALUES]
        ]
        return "; ".join(shown) + ("; …" if len(values) > MAX_VALUES else "")
    rng = variable.get("range")
    return f"{rng[0]}–{rng[1]}" if rng and len(rng) == 2 else ""


def gate_text(t: Callable[..., str], gate: Mapping[str, Any]) -> str:
    """One gate a holder's data passed before the release: zone, verdict, day, checks."""
    zone = str(gate.get("zone"))
    return t(
        "codebook_gate",
        zone=t(f"codebook_zone_{zone}") if zone in ("raw", "research") else zone,
        verdict=t("codebook_gate_passed") if gate.get("passed") else t("codebook_gate_failed"),
        date=gate.get("date"),
        checks=gate.get("checks"),
    )


class CodebookPages:
    def __init__(self, web: PageKit) -> None:
        self.web = web

    def show(self, request: Request, release_id: str) -> Response:
        p = self.web.page(request)
        if p.user is None:
            return self.web.login_redirect(p)
        svc: AccessService | None = getattr(request.app.state, "service", None)
        if svc is None or "researcher" not in p.roles:
            return self.web.error(p, 404, "not_found")
        try:
            book = codebook_for(svc, p.user, release_id)
        except Refusal as exc:
            log.info("web codebook refused code=%s", exc.reason)
            if exc.status >= 500:
                return self.web.error(p, 503, "workspace_unavailable")
            return self.web.error(p, 404, "not_found")  # no permit, unknown release: not found alike
        t = p.t
        variables = [
            {
                **v,
                "label_text": (v.get("label") or {}).get(p.lang, ""),
                "note_text": (v.get("note") or {}).get(p.lang, ""),
                "values_text": values_text(p.lang, v),
                "rule_text": rule_text(t, v.get("release_rule")),
                "class_text": t(f"codebook_class_{v['disclosure_class']}")
                if f"codebook_class_{v['disclosure_class']}" in STRINGS
                else v["disclosure_class"],
            }
            for v in book["variables"]
        ]
        prov = book["provenance"]
        tier = prov["disclosure"].get("output_tier")
        return self.web.render(
            p,
            "codebook.html",
            title=t("codebook_title", release=release_id),
            release_id=release_id,
            book=book,
            variables=variables,
            prov=prov,
            gates={h["id"]: [gate_text(t, g) for g in h["quality_gates"]] for h in prov["holders"]},
            tier_text=t(f"codebook_tier_{tier}") if tier in ("record", "aggregate") else str(tier or ""),
        )


def add_codebook_pages(router: APIRouter, web: PageKit) -> None:
    """Add ``/web/releases/{release_id}/codebook`` to the ``/web`` router."""
    pages = CodebookPages(web)
    router.add_api_route(
        "/releases/{release_id}/codebook", pages.show, methods=["GET"], response_class=HTMLResponse
    )
