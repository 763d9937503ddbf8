"""The application form: a researcher files an access request on the web, edits a draft,
submits it, and answers a "return for changes" by editing the returned request and resubmitting.

``add_apply_pages(router, web)`` adds the pages to the ``/web`` router (``access.web.routes``),
sharing its ``WebApp`` (sessions, CSRF, rendering, security headers):

* ``GET /web/apply``: a new application, and the caller's drafts and returned requests;
* ``POST /web/apply``: file it (button ``save``: a draft; ``submit``: filed and submitted);
* ``GET /web/apply/{id}``: edit a draft or a returned request (the applicant only; others 404);
* ``POST /web/apply/{id}``: save the changes, and submit them when asked.

The page only turns form strings into the values the API takes (lists from checkboxes, a JSON
object from the cohort-criteria box, an integer from the access-days box). Every rule is
``governance.service``'s (``file_request``, ``update_draft``, ``submit_request``): its
``InvalidRequest`` lists every problem at once, and each is shown next to the field it names
(``PROBLEM_FIELDS``). Anything the page cannot parse is passed on as typed, so that governance
refuses it with its own message rather than the page inventing a second rule.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from access.web import i18n
from access.web.pages import PREFIX, Page, PageKit
from governance import service
from governance.catalogue import load_catalogue, table_holders
from governance.errors import GovernanceError, InvalidRequest, NotFound
from governance.purposes import LEGAL_BASES, PURPOSES, legal_basis_label, purpose_label
from governance.values import RequestView
from hdp.settings import holders

log = logging.getLogger(__name__)

#: Statuses in which the applicant may still change the request (``governance.workflow``).
EDITABLE = ("draft", "returned")
#: Longest text the page passes on (the API's bound); longer is refused before the store.
MAX_TEXT = 5000
#: Most names in a list field (the API's bound for variables).
MAX_NAMES = 500
ACTIONS = ("save", "submit")

#: Which form field a governance problem code is about (``governance.request_fields``).
PROBLEM_FIELDS: Mapping[str, str] = {
    "request.project": "project",
    "request.purpose": "purpose",
    "request.legal_basis": "legal_basis",
    "request.ethics_ref": "ethics_ref",
    "request.holders": "holders",
    "request.holder_without_variables": "holders",
    "request.variables": "variables",
    "request.variable_not_held": "variables",
    "request.unknown_user": "members",
    "request.not_researcher": "members",
    "request.cohort_criteria": "cohort_criteria",
    "request.period": "period",
    "request.data_form": "data_form",
    "request.pseudonymisation_justification": "pseudonymisation_justification",
    "request.pseudonym_needs_justification": "data_form",
    "request.output_tier": "output_tier",
    "request.record_needs_pseudonymised": "output_tier",
    "request.access_days": "access_days",
}


def field_of(code: str) -> str | None:
    """The form field a problem code names (``request.project.forbidden_character`` -> project)."""
    while code:
        if code in PROBLEM_FIELDS:
            return PROBLEM_FIELDS[code]
        code = code.rpartition(".")[0]
    return None


Problem = tuple[str, str]  # (governance problem code, its message)


def problems_by_field(problems: tuple[Problem, ...]) -> tuple[dict[str, list[Problem]], list[Problem]]:
    """(field -> its problems, problems about no one field)."""
    by_field: dict[str, list[Problem]] = {}
    general: list[Problem] = []
    for code, message in problems:
        name = field_of(code)
        if name is None:
            general.append((code, message))
        else:
            by_field.setdefault(name, []).append((code, message))
    return by_field, general


@dataclass(frozen=True)
class Shown:
    """A problem as the page shows it: what to fix, and governance's own words when they differ."""

    text: str
    detail: str | None = None


def explain(problem: Problem, lang: str) -> Shown:
    """Governance's message (English, naming the values); on a Swedish page, what to fix in
    Swedish first (``apply_problem.<code>`` in the page's catalogue), with the message after it."""
    code, message = problem
    key = (
        "apply_problem.forbidden_character"
        if code.endswith(".forbidden_character")
        else f"apply_problem.{code}"
    )
    if lang == "en" or key not in i18n.catalogue(lang):
        return Shown(message)
    return Shown(i18n.translator(lang)(key), message)


@dataclass(frozen=True)
class CatalogueVariable:
    name: str
    column: str
    sensitivity: str


@dataclass(frozen=True)
class VariableGroup:
    """One research table's variables, with the holders that deliver it."""

    table: str
    holders: tuple[str, ...]
    variables: tuple[CatalogueVariable, ...]


def variable_groups(
    catalogue: Mapping[str, Mapping[str, str]], delivered_by: Mapping[str, frozenset[str]]
) -> list[VariableGroup]:
    """The catalogue's variables grouped by table, in catalogue order."""
    tables: dict[str, list[CatalogueVariable]] = {}
    for name, entry in catalogue.items():
        tables.setdefault(entry["table"], []).append(
            CatalogueVariable(name, entry["column"], entry["sensitivity"])
        )
    return [
        VariableGroup(table, tuple(sorted(delivered_by.get(table, ()))), tuple(variables))
        for table, variables in tables.items()
    ]


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _names(form: FormData, name: str) -> list[str]:
    return [v for v in form.getlist(name) if isinstance(v, str) and v]


def _int_or_as_typed(text: str) -> int | str:
    try:
        return int(text.strip())
    except ValueError:
        return text  # governance refuses it with the access-period rule


def _criteria(text: str) -> Any:
    if not text.strip():
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return text  # governance refuses it: criteria must be an object


def request_fields(form: FormData) -> dict[str, Any]:
    """The form's values as ``governance.service.file_request`` takes them."""
    return {
        "project": _text(form, "project"),
        "purpose": _text(form, "purpose"),
        "legal_basis": _text(form, "legal_basis"),
        "ethics_ref": _text(form, "ethics_ref"),
        "holders": _names(form, "holders"),
        "variables": _names(form, "variables"),
        "members": [m.strip() for m in _text(form, "members").replace("\n", ",").split(",") if m.strip()],
        "cohort_criteria": _criteria(_text(form, "cohort_criteria")),
        "period": (_text(form, "period_start") or None, _text(form, "period_end") or None),
        "data_form": _text(form, "data_form") or "anonymised",
        "pseudonymisation_justification": _text(form, "pseudonymisation_justification") or None,
        "output_tier": _text(form, "output_tier") or "aggregate",
        "access_days": _int_or_as_typed(_text(form, "access_days")),
    }


def too_long(form: FormData) -> bool:
    """True when a text is longer, or a list has more names, than the API accepts."""
    texts = (v for v in form.values() if isinstance(v, str))
    lists = (form.getlist(k) for k in ("holders", "variables"))
    return any(len(t) > MAX_TEXT for t in texts) or any(len(v) > MAX_NAMES for v in lists)


def shown_form(form: FormData) -> dict[str, Any]:
    """The submitted form as the template shows it again (lists kept as lists)."""
    shown: dict[str, Any] = {k: _text(form, k) for k in form if k not in ("csrf_token", "action")}
    shown["holders"] = _names(form, "holders")
    shown["variables"] = _names(form, "variables")
    return shown


def form_of(r: RequestView) -> dict[str, Any]:
    """A stored request as the form shows it."""
    start, end = r.period
    return {
        "project": r.project,
        "purpose": r.purpose,
        "legal_basis": r.legal_basis,
        "ethics_ref": r.ethics_ref,
        "holders": list(r.holders),
        "variables": list(r.variables),
        "members": ", ".join(r.members),
        "cohort_criteria": json.dumps(r.cohort_criteria, ensure_ascii=False) if r.cohort_criteria else "",
        "period_start": start.isoformat() if start else "",
        "period_end": end.isoformat() if end else "",
        "data_form": r.data_form,
        "pseudonymisation_justification": r.pseudonymisation_justification or "",
        "output_tier": r.output_tier,
        "access_days": str(r.access_days),
    }


NEW_FORM: Mapping[str, Any] = {
    "holders": [],
    "variables": [],
    "data_form": "anonymised",
    "output_tier": "aggregate",
    "access_days": str(service.DEFAULT_ACCESS_DAYS),
}


def permit_end_if_approved(access_days: Any, today: date) -> date | None:
    """When the permit would end if it were approved today (None: not a usable number)."""
    try:
        days = int(access_days)
    except (TypeError, ValueError):
        return None
    return today + timedelta(days=days) if 1 <= days <= service.MAX_ACCESS_DAYS else None


def returns_of(r: RequestView) -> list[Any]:
    """The stewards' "return for changes" decisions of the round that returned ``r``."""
    return [d for d in r.decisions if d.decision == "return" and d.review_round == r.review_round]


class ApplyPages:
    """The application form's handlers over the ``/web`` router's ``PageKit``."""

    def __init__(self, web: PageKit) -> None:
        self.web = web

    # -- plumbing ------------------------------------------------------------------------
    def researcher(self, request: Request) -> Page | Response:
        p = self.web.page(request)
        if p.user is None:
            return self.web.login_redirect(p)
        if "researcher" not in p.roles:
            return self.web.error(p, 403, "forbidden")
        return p

    def editable(self, p: Page, request_id: int) -> RequestView | None:
        """The caller's own request ``request_id``; None when it is not theirs or does not exist."""
        assert p.user is not None
        try:
            with self.web.store() as s:
                r = service.get_request(s, request_id=request_id)
        except NotFound:
            return None
        return r if r.applicant == p.user.name else None

    def render_form(
        self,
        p: Page,
        *,
        form: Mapping[str, Any],
        r: RequestView | None = None,
        status: int = 200,
        errors: Mapping[str, list[Shown]] | None = None,
        general: list[Shown] | None = None,
    ) -> Response:
        assert p.user is not None
        with self.web.store() as s:
            mine = [x for x in service.list_requests(s, applicant=p.user.name) if x.status in EDITABLE]
            organisation = service.user_organisation(s, p.user.name)
        title = p.t("apply_edit_title", id=r.id) if r else p.t("apply_title")
        return self.web.render(
            p,
            "apply.html",
            status=status,
            title=title,
            r=r,
            form=form,
            errors=errors or {},
            general=general or [],
            mine=[x for x in mine if r is None or x.id != r.id],
            returns=returns_of(r) if r and r.status == "returned" else [],
            purposes={code: purpose_label(code, p.lang) for code in PURPOSES},
            legal_bases={code: legal_basis_label(code, p.lang) for code in LEGAL_BASES},
            organisation=organisation,
            all_holders=holders(),
            groups=variable_groups(load_catalogue(), table_holders()),
            action_url=f"{PREFIX}/apply/{r.id}" if r else f"{PREFIX}/apply",
            permit_end=permit_end_if_approved(form.get("access_days"), datetime.now(UTC).date()),
            max_access_days=service.MAX_ACCESS_DAYS,
        )

    def refused(
        self, p: Page, exc: GovernanceError, form: Mapping[str, Any], r: RequestView | None
    ) -> Response:
        """Re-render the form with governance's problems beside their fields."""
        by_field, other = problems_by_field(exc.problems) if isinstance(exc, InvalidRequest) else ({}, [])
        errors = {name: [explain(x, p.lang) for x in found] for name, found in by_field.items()}
        general = [explain(x, p.lang) for x in other] or ([] if by_field else [Shown(exc.message)])
        log.info("web application refused request=%s code=%s", r.id if r else None, exc.code)
        return self.render_form(p, form=form, r=r, status=exc.http_status, errors=errors, general=general)

    def posted(
        self, request: Request, form: FormData, request_id: int | None
    ) -> tuple[Page, str, RequestView | None] | Response:
        """The caller, their chosen action and the request being edited; or the response that
        ends the request here (login, role, CSRF, not theirs, unknown action, over-long input)."""
        p = self.researcher(request)
        if isinstance(p, Response):
            return p
        if not self.web.csrf_ok(p, _text(form, "csrf_token")):
            return self.web.error(p, 403, "csrf_failed")
        r = None
        if request_id is not None and (r := self.editable(p, request_id)) is None:
            return self.web.error(p, 404, "not_found")
        action = _text(form, "action")
        if action not in ACTIONS:
            return self.web.error(p, 400, "apply_unknown_action")
        if too_long(form):
            general = [Shown(p.t("apply_too_long", chars=MAX_TEXT, names=MAX_NAMES))]
            return self.render_form(p, form=shown_form(form), r=r, status=422, general=general)
        return p, action, r

    # -- pages -----------------------------------------------------------------------------
    def new(self, request: Request) -> Response:
        p = self.researcher(request)
        return p if isinstance(p, Response) else self.render_form(p, form=NEW_FORM)

    def file(self, request: Request, form: FormData) -> Response:
        checked = self.posted(request, form, None)
        if isinstance(checked, Response):
            return checked
        p, action, _ = checked
        assert p.user is not None
        try:
            with self.web.store() as s:
                rid = service.file_request(s, applicant=p.user.name, **request_fields(form))
                if action == "submit":
                    service.submit_request(s, request_id=rid, actor=p.user.name)
        except GovernanceError as exc:
            return self.refused(p, exc, shown_form(form), None)
        log.info("web application filed request=%s action=%s", rid, action)
        return self.done(p, rid, action)

    def edit(self, request: Request, request_id: int) -> Response:
        p = self.researcher(request)
        if isinstance(p, Response):
            return p
        r = self.editable(p, request_id)
        if r is None:
            return self.web.error(p, 404, "not_found")
        if r.status not in EDITABLE:
            # Submitted requests change only through an amendment (API or CLI).
            p.flash("info", p.t("apply_not_editable", status=p.t(f"status_{r.status}")))
            return self.web.redirect(p, f"{PREFIX}/requests/{r.id}")
        return self.render_form(p, form=form_of(r), r=r)

    def save(self, request: Request, request_id: int, form: FormData) -> Response:
        checked = self.posted(request, form, request_id)
        if isinstance(checked, Response):
            return checked
        p, action, r = checked
        assert p.user is not None and r is not None
        try:
            with self.web.store() as s:
                service.update_draft(s, request_id=request_id, actor=p.user.name, **request_fields(form))
                if action == "submit":
                    service.submit_request(s, request_id=request_id, actor=p.user.name)
        except GovernanceError as exc:
            return self.refused(p, exc, shown_form(form), r)
        log.info("web application edited request=%s action=%s", request_id, action)
        return self.done(p, request_id, action)

    def done(self, p: Page, request_id: int, action: str) -> Response:
        if action == "submit":
            p.flash("success", p.t("apply_submitted", id=request_id))
            return self.web.redirect(p, f"{PREFIX}/requests/{request_id}")
        p.flash("success", p.t("apply_saved", id=request_id))
        return self.web.redirect(p, f"{PREFIX}/apply/{request_id}")


def add_apply_pages(router: APIRouter, web: PageKit) -> None:
    """Add the application form's pages to the ``/web`` router (``web``: its ``WebApp``)."""
    pages = ApplyPages(web)

    @router.get("/apply", response_class=HTMLResponse)
    def new(request: Request) -> Response:
        return pages.new(request)

    @router.post("/apply", response_class=HTMLResponse)
    async def file(request: Request) -> Response:
        form = await request.form()
        return await run_in_threadpool(pages.file, request, form)

    @router.get("/apply/{request_id}", response_class=HTMLResponse)
    def edit(request: Request, request_id: int) -> Response:
        return pages.edit(request, request_id)

    @router.post("/apply/{request_id}", response_class=HTMLResponse)
    async def save(request: Request, request_id: int) -> Response:
        form = await request.form()
        return await run_in_threadpool(pages.save, request, request_id, form)
