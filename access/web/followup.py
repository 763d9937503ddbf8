"""The access follow-up (logguppföljning) as a steward's page: ``GET /web/follow-up``.

The report is the one ``GET /audit/follow-up`` and ``hdp audit follow-up`` give
(``governance.followup`` over the access layer's and the governance store's audit logs, each
log's chain verified first), made by the same function with the same rule
(``access.routes_followup.holder_follow_up``): a steward for the holders they review for,
operators and admins for every holder; anyone else is refused. The holder chooser offers only
the holders that rule allows, so a steward sees their own.

The period is typed as for the API and the CLI (``hdp.periods``: ``30d``, ``2w``, ``24h`` back
from now, or an ISO date), with links for common periods; the form is a GET (it changes
nothing), so a report has an address a steward can keep. The report holds user names, ids,
counts, reason codes and times only (``governance.followup`` builds it from an allow-list of
entry fields); nothing here adds to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from access.errors import Refusal
from access.routes_followup import holder_follow_up, may_follow_up
from access.service import AccessService
from access.web.i18n import format_number
from access.web.pages import PageKit
from governance.followup import detail_fields
from hdp.settings import holders

#: The period a report covers when none is asked for (as the API's default).
DEFAULT_SINCE = "30d"
#: Periods offered as links, in days.
PRESET_DAYS = (7, 30, 90, 365)
#: Longest accepted field values (as the API's query parameters).
MAX_LENGTHS = {"holder": 80, "since": 40, "until": 40, "release": 128}
#: The catalogue's text for each kind of finding ``governance.followup`` names; a kind without
#: one is shown as its code.
FINDING_KEYS = {
    "not_on_permit": "followup_finding_not_on_permit",
    "after_permit_end": "followup_finding_after_permit_end",
    "refusals": "followup_finding_refusals",
    "off_hours": "followup_finding_off_hours",
    "volume": "followup_finding_volume",
}
#: The catalogue's sentence for each kind's detail, over the finding's ``params`` (the same
#: placeholders as ``governance.followup.DETAILS``, which words the API's and the CLI's English
#: ``detail``); a kind without one shows the report's English detail.
DETAIL_KEYS = {kind: f"followup_detail_{kind}" for kind in FINDING_KEYS}
#: One refusal reason and its count in a detail, as the signals table shows them (code × count).
REASON = "{reason} × {count}"


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class Finding:
    kind: str
    label: str
    user: str
    release_id: str
    detail: str


def page_detail(finding: Mapping[str, Any], t: Callable[..., str], lang: str) -> str:
    """A finding's detail in the page's language from its params, counts formatted for the locale
    (``5 000`` / ``5,000``); the report's English detail for a kind the catalogues do not word
    (or a finding without params)."""
    key = DETAIL_KEYS.get(finding["kind"])
    if key is None or "params" not in finding:
        return str(finding["detail"])
    fields = detail_fields(finding["params"], number=lambda n: format_number(n, lang), reason=REASON)
    return t(key, **fields)


def page_report(report: Mapping[str, Any], t: Callable[..., str], lang: str) -> dict[str, Any]:
    """The report as the template shows it: times as datetimes, findings with their label and
    detail in the page's language (``lang``, whose translator ``t`` is)."""
    return {
        **report,
        "since": _when(report["since"]),
        "until": _when(report["until"]),
        "generated_at": _when(report.get("generated_at")),
        "releases": [{**r, "permit_ends": _when(r["permit_ends"])} for r in report["releases"]],
        "activity": [{**a, "first": _when(a["first"]), "last": _when(a["last"])} for a in report["activity"]],
        "findings": [
            Finding(
                kind=f["kind"],
                label=t(FINDING_KEYS[f["kind"]]) if f["kind"] in FINDING_KEYS else f["kind"],
                user=f["user"],
                release_id=f["release_id"],
                detail=page_detail(f, t, lang),
            )
            for f in report["findings"]
        ],
    }


class FollowUpPages:
    def __init__(self, web: PageKit) -> None:
        self.web = web

    def follow_up(self, request: Request) -> Response:
        p = self.web.page(request)
        if p.user is None:
            return self.web.login_redirect(p)
        user = p.user
        choices = [h for h in holders() if may_follow_up(user, h.id)]
        if not choices:
            return self.web.error(p, 403, "forbidden")
        svc: AccessService | None = getattr(request.app.state, "service", None)
        if svc is None:
            return self.web.error(p, 404, "not_found")
        q = request.query_params
        form = {
            "holder": q.get("holder") or choices[0].id,
            "since": q.get("since") or DEFAULT_SINCE,
            "until": q.get("until") or "",
            "release": q.get("release") or "",
        }
        context: dict[str, Any] = {
            "title": p.t("followup_title"),
            "holders": [(h.id, h.name) for h in choices],
            "form": form,
            "presets": PRESET_DAYS,
            "report": None,
            "error": None,
        }
        if any(len(form[k]) > n for k, n in MAX_LENGTHS.items()):
            context["error"] = p.t("followup_too_long")
            return self.web.render(p, "followup.html", status=422, **context)
        try:
            with self.web.store() as session:
                report = holder_follow_up(
                    session,
                    user,
                    svc.settings.audit_path,
                    holder=form["holder"],
                    since=form["since"],
                    until=form["until"] or None,
                    release=form["release"] or None,
                )
        except Refusal as exc:
            if exc.reason != "followup.invalid":  # not theirs, or no such holder: as the API
                message = p.t("followup_refused", message=exc.message)
                return self.web.render(
                    p, "error.html", status=exc.status, title=p.t("error_title"), message=message
                )
            context["error"] = p.t("followup_invalid", message=exc.message)
            return self.web.render(p, "followup.html", status=422, **context)
        names = dict(context["holders"])
        context["report"] = page_report(report, p.t, p.lang)
        context["holder_name"] = names.get(form["holder"], form["holder"])
        return self.web.render(p, "followup.html", **context)


def add_followup_pages(router: APIRouter, web: PageKit) -> None:
    """Add the follow-up page to the ``/web`` router."""
    pages = FollowUpPages(web)
    router.add_api_route("/follow-up", pages.follow_up, methods=["GET"], response_class=HTMLResponse)
