"""Server-rendered pages: steward review queue and request page, researcher page, public register.

Mounted by ``access.app`` with ``app.include_router(build_router())``; every path is under
``/web``. The governance store is the only data source, read through ``governance.service``
inside ``governance.store.session_scope``; pages never show a patient identifier or a health
value (only request metadata, thresholds, and counts).

Security model (see also ``access.web.sessions``):

* Login: the user pastes their API token into a form (or signs in through OIDC,
  ``access.web.oidc``); the token is checked with ``service.authenticate_token`` and never
  kept. The browser gets a sealed (encrypted and authenticated), HttpOnly, SameSite=Strict
  session cookie (Secure when served over HTTPS or in production) that any worker opens.
* Every page re-checks the session against the store (token unrevoked, user enabled, not
  logged out), so revocation takes effect at once, in every worker.
* Every POST form carries the session's CSRF token; a missing or wrong one is refused (403).
* Jinja autoescaping is on for every template; a strict Content-Security-Policy forbids inline
  script and style and any third-party origin; authenticated pages are ``Cache-Control: no-store``.
* Stewards see only requests with one of their holders in scope; others get 404, not 403, so
  the page does not reveal that a request exists. Separation of duties (no decision on one's own
  request) is enforced by governance; the page shows governance's error text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from access.ports import Governance, User
from access.web import precheck, quality, request_aids
from access.web.apply import add_apply_pages
from access.web.codebook import add_codebook_pages
from access.web.datadocs import add_datadocs_pages, docs_url
from access.web.followup import add_followup_pages
from access.web.oidc import OidcPages, add_oidc_pages
from access.web.outputs import add_output_pages
from access.web.pages import PREFIX, STATIC_DIR, Page, PageKit, landing_page, safe_next
from access.web.prom import add_prom_pages
from access.web.sessions import TOKEN, Sessions
from access.web.workspace import add_workspace_pages
from governance import service
from governance.catalogue import load_catalogue
from governance.errors import GovernanceError, NotFound
from governance.purposes import legal_basis_label, purpose_label
from governance.users import token_hash
from governance.values import Permit, RequestView
from hdp.settings import Settings, holders

log = logging.getLogger(__name__)

IN_REVIEW = ("submitted", "under_review")
DECISIONS = ("approve", "reject", "return")
MAX_JUSTIFICATION = 4000  # characters; longer text is refused before it reaches the store

__all__ = ["PREFIX", "WebApp", "build_router", "pending_holders", "safe_next"]


@dataclass(frozen=True)
class QueueItem:
    """A request awaiting the steward's decision: for which of their holders, due when."""

    request: RequestView
    holders: list[str]
    due: datetime


class WebApp(PageKit):
    """The page handlers with their dependencies (session store, governance, settings)."""

    def __init__(
        self,
        *,
        sessions: Sessions | None = None,
        governance_url: Callable[[], str] | None = None,
        settings: Callable[[], Settings] | None = None,
        governance: Callable[[], Governance] | None = None,
        api_base_url: str | None = None,
        transparency_json_url: str = PREFIX + "/transparency.json",
        precheck_groups: bool = True,
    ) -> None:
        super().__init__(
            sessions=sessions, governance_url=governance_url, settings=settings, governance=governance
        )
        self.api_base_url = api_base_url
        self.transparency_json_url = transparency_json_url
        self.precheck_groups = precheck_groups
        self.oidc: OidcPages | None = None  # single sign-on (access/web/oidc.py), set by build_router

    # -- pages -------------------------------------------------------------------------------
    def home(self, request: Request) -> Response:
        p = self.page(request)
        if p.user is None:
            return self.login_form(request, page=p)
        if "steward" in p.roles:
            return self.redirect(p, f"{PREFIX}/steward")
        if "output_checker" in p.roles and "researcher" not in p.roles:
            return self.redirect(p, f"{PREFIX}/checking")  # the airlock's queue (access/web/outputs.py)
        return self.redirect(p, f"{PREFIX}/researcher")

    def login_form(
        self, request: Request, *, page: Page | None = None, status: int = 200, error: str | None = None
    ) -> Response:
        p = page or self.page(request)
        if p.user is not None and error is None:
            return self.redirect(p, safe_next(request.query_params.get("next")) or f"{PREFIX}/")
        self.ensure_session(p)
        notice = request.query_params.get("notice")
        if notice == "logged_out":
            p.flashes.append(("info", p.t("logged_out")))
        elif notice == "session_expired" or p.expired:
            p.flashes.append(("error", p.t("session_expired")))
        return self.render(
            p,
            "login.html",
            status=status,
            title=p.t("login_title"),
            error=error,
            next=safe_next(request.query_params.get("next")) or "",
            oidc_provider=config.provider_name if self.oidc and (config := self.oidc.config()) else None,
            continue_to=None,
        )

    def login(self, request: Request, token: str, csrf_token: str, next_url: str) -> Response:
        p = self.page(request)
        if not self.csrf_ok(p, csrf_token):
            # A fresh anonymous session for the re-rendered form (the old one may be forged).
            p.session = None
            return self.login_form(request, page=p, status=403, error=p.t("csrf_failed"))
        user = self.authenticate(token.strip())
        if user is None:
            log.info("web login failed")  # nothing about the token, not even its length
            return self.login_form(request, page=p, status=401, error=p.t("login_failed"))
        # A new session (new id and CSRF token: no fixation) holding the token's hash, never the token.
        self.start_session(p, user_name=user.name, auth=TOKEN, token_sha256=token_hash(token.strip()))
        log.info("web login user=%s", user.name)
        return self.redirect(p, safe_next(next_url) or landing_page(user))

    def logout(self, request: Request, csrf_token: str) -> Response:
        p = self.page(request)
        if p.session is None:
            return self.redirect(p, f"{PREFIX}/login")
        if not self.csrf_ok(p, csrf_token):
            return self.error(p, 403, "csrf_failed")
        if p.session.authenticated:  # recorded in the store: a copy of the cookie dies with it
            self.sessions.checks.end(p.session, until=self.sessions.codec().expires_at(p.session))
        p.session, p.clear_cookie = None, True
        return self.redirect(p, f"{PREFIX}/login?notice=logged_out")

    def steward_queue(self, request: Request) -> Response:
        p = self.page(request)
        if p.user is None:
            return self.login_redirect(p)
        if "steward" not in p.roles:
            return self.error(p, 403, "forbidden")
        mine = sorted(p.user.holder_ids)
        seen: dict[int, RequestView] = {}
        with self.store() as s:
            for h in mine:
                for r in service.list_requests(s, holder_id=h):
                    seen.setdefault(r.id, r)
        awaiting, others = split_queue(seen.values(), p.user)
        return self.render(
            p,
            "steward_queue.html",
            title=p.t("queue_title"),
            my_holders=mine,
            awaiting=awaiting,
            others=others,
        )

    def _visible_request(
        self, p: Page, user: User, request_id: int
    ) -> tuple[RequestView, Permit | None] | None:
        """The request and its permit if the caller may see it (steward of a holder in scope,
        applicant, member); None otherwise, as for a request that does not exist."""
        try:
            with self.store() as s:
                r = service.get_request(s, request_id=request_id)
                permit = service.permit_for_request(s, request_id=request_id)
        except NotFound:
            return None
        as_steward = (
            "steward" in p.roles and bool(set(user.holder_ids) & set(r.holders)) and r.status != "draft"
        )
        as_member = user.name == r.applicant or user.name in r.members
        if not (as_steward or as_member):
            return None
        return r, permit

    def request_page(
        self,
        request: Request,
        request_id: int,
        *,
        page: Page | None = None,
        status: int = 200,
        error: str | None = None,
        form: dict[str, str] | None = None,
    ) -> Response:
        p = page or self.page(request)
        if p.user is None:
            return self.login_redirect(p)
        visible = self._visible_request(p, p.user, request_id)
        if visible is None:
            return self.error(p, 404, "not_found")
        r, permit = visible
        steward_view = "steward" in p.roles and bool(set(p.user.holder_ids) & set(r.holders))
        context: dict[str, Any] = {
            "r": r,
            "permit": permit,
            "steward_view": steward_view,
            "error": error,
            "form": form or {},
            "purpose_text": purpose_label(r.purpose, p.lang),
            "legal_basis_text": legal_basis_label(r.legal_basis, p.lang),
            "holder_names": {h.id: h.name for h in holders()},
            "current_reviews": [rv for rv in r.reviews if rv.review_round == r.review_round],
            "comment_max": service.MAX_COMMENT,
        }
        with self.store() as s:
            # organisation, comment thread and (stewards) overlapping permits: request_aids
            context.update(request_aids.request_extras(s, r, p.user.name, steward_view=steward_view))
        if steward_view:
            context.update(self._steward_context(r, permit, p.user))
        else:
            context["variables"] = precheck.classify_variables(r.variables, load_catalogue())
        return self.render(
            p,
            "request.html",
            status=status,
            title=p.t("request_title", id=r.id, project=r.project),
            **context,
        )

    def _steward_context(self, r: RequestView, permit: Permit | None, user: User) -> dict[str, Any]:
        """What a steward of one of the request's holders sees besides the request: what awaits
        their decision, the disclosure pre-check, the quality gates and the release's label."""
        settings = self._settings()
        label = quality.release_label(settings.releases_dir, permit.release_id if permit else None)
        gates = [quality.latest_gate(settings.quality_dir, zone="research", scope=h) for h in r.holders]
        return {
            "pending": pending_holders(r, user),
            "check": self._precheck(r),
            "gates": gates,
            "docs_urls": {g.scope: docs_url(settings.quality_dir, g.scope, g.run_id) for g in gates},
            "release_label": quality.flatten_label(label) if label else None,
            "release_quality": quality.release_quality(label) if label else None,
        }

    def _precheck(self, r: RequestView) -> precheck.PreCheck:
        return precheck.for_request(
            r.variables,
            r.holders,
            r.cohort_criteria,
            research_db=self._settings().research_db,
            compute_groups=self.precheck_groups,
        )

    def decide(
        self,
        request: Request,
        request_id: int,
        *,
        csrf_token: str,
        holder_id: str,
        decision: str,
        justification: str,
        safes: list[str] | None = None,
        ack_at_risk: str = "",
    ) -> Response:
        p = self.page(request)
        if p.user is None:
            return self.login_redirect(p)
        if not self.csrf_ok(p, csrf_token):
            return self.error(p, 403, "csrf_failed")
        visible = self._visible_request(p, p.user, request_id)
        if visible is None or "steward" not in p.roles:
            return self.error(p, 404, "not_found")
        checklist = request_aids.checklist_from_form(safes or [], ack_at_risk)
        form = {"holder_id": holder_id, "decision": decision, "justification": justification}
        form.update({f"safe_{k}": "on" for k, ticked in checklist.items() if ticked})
        if len(justification) > MAX_JUSTIFICATION:
            msg = p.t("decision_error", message=f"justification longer than {MAX_JUSTIFICATION} characters")
            return self.request_page(request, request_id, page=p, status=422, error=msg, form=form)
        if decision == "approve" and not checklist[service.AT_RISK_ACKNOWLEDGED]:
            # Enforced here, not only by the form: the pre-check is recomputed for this request.
            at_risk = self._precheck(visible[0]).at_risk
            if at_risk:
                log.info("web decision refused request=%s code=decision.at_risk_not_acknowledged", request_id)
                msg = p.t("decision_error", message=p.t("ack_at_risk_required", tables=len(at_risk)))
                return self.request_page(request, request_id, page=p, status=422, error=msg, form=form)
        try:
            with self.store() as s:
                new_status = service.decide(
                    s,
                    request_id=request_id,
                    holder_id=holder_id,
                    reviewer=p.user.name,
                    decision=decision,
                    justification=justification,
                    checklist=checklist,
                )
        except GovernanceError as exc:
            # Governance messages name fields, states and ids, never a personal identifier.
            log.info("web decision refused request=%s code=%s", request_id, exc.code)
            return self.request_page(
                request,
                request_id,
                page=p,
                status=exc.http_status,
                error=p.t("decision_error", message=exc.message),
                form=form,
            )
        log.info(
            "web decision request=%s holder=%s decision=%s status=%s",
            request_id,
            holder_id,
            decision,
            new_status,
        )
        p.flash("success", p.t("decision_recorded", status=p.t(f"status_{new_status}")))
        return self.redirect(p, f"{PREFIX}/requests/{request_id}")

    def comment(self, request: Request, request_id: int, *, csrf_token: str, body: str) -> Response:
        """Post a comment on the request's thread (stewards of its holders, its applicant side)."""
        p = self.page(request)
        if p.user is None:
            return self.login_redirect(p)
        if not self.csrf_ok(p, csrf_token):
            return self.error(p, 403, "csrf_failed")
        if self._visible_request(p, p.user, request_id) is None:
            return self.error(p, 404, "not_found")
        try:
            with self.store() as s:
                service.post_comment(s, request_id=request_id, author=p.user.name, body=body)
        except NotFound:
            return self.error(p, 404, "not_found")
        except GovernanceError as exc:
            # The message names the rule (length, a character's code point), never the text.
            log.info("web comment refused request=%s code=%s", request_id, exc.code)
            return self.request_page(
                request,
                request_id,
                page=p,
                status=exc.http_status,
                error=p.t("thread_error", message=exc.message),
                form={"comment": body[: service.MAX_COMMENT + 1]},
            )
        log.info("web comment request=%s", request_id)
        p.flash("success", p.t("thread_posted"))
        return self.redirect(p, f"{PREFIX}/requests/{request_id}#comments")

    def researcher(self, request: Request) -> Response:
        p = self.page(request)
        if p.user is None:
            return self.login_redirect(p)
        now = datetime.now(UTC)
        with self.store() as s:
            requests = [r for r in service.list_requests(s, user_name=p.user.name)]
            releases = service.releases_for_user(s, user_name=p.user.name, at=now)
            # Permits do not always carry the project title; the request does.
            projects = {r.id: r.project for r in requests}
            for permit in releases:
                if not permit.project and permit.request_id not in projects:
                    projects[permit.request_id] = service.get_request(s, request_id=permit.request_id).project
        base = self.api_base_url or str(request.base_url).rstrip("/")
        example_release = releases[0].release_id if releases else p.t("howto_release_placeholder")
        return self.render(
            p,
            "researcher.html",
            title=p.t("researcher_title"),
            requests=requests,
            releases=releases,
            projects=projects,
            api_base=base,
            example_release=example_release,
        )

    def transparency(self, request: Request) -> Response:
        p = self.page(request)
        with self.store() as s:
            entries = service.transparency_register(s)
        response = self.render(
            p,
            "transparency.html",
            title=p.t("transparency_title"),
            entries=entries,
            holder_names={h.id: h.name for h in holders()},
            # the purposes' descriptions in the page's language (the register's JSON stays English)
            purposes=sorted(
                {(e.purpose, purpose_label(e.purpose, p.lang) or e.purpose_description) for e in entries}
            ),
            json_url=self.transparency_json_url,
        )
        if p.user is None:
            # Public and identical for every anonymous visitor: may be cached briefly.
            response.headers["Cache-Control"] = "public, max-age=60"
        return response

    def transparency_json(self) -> Response:
        """The public register as JSON (same entries as the page; no personal data)."""
        with self.store() as s:
            entries = [asdict(e) for e in service.transparency_register(s)]
        body = json.dumps(
            {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"), "permits": entries},
            default=str,
            ensure_ascii=False,
        )
        return Response(
            body,
            media_type="application/json",
            headers={
                "Cache-Control": "public, max-age=60",
                "X-Content-Type-Options": "nosniff",
                "Access-Control-Allow-Origin": "*",
            },
        )

    def stylesheet(self) -> Response:
        css = (STATIC_DIR / "style.css").read_text(encoding="utf-8")
        return Response(
            css,
            media_type="text/css",
            headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
        )


def split_queue(requests: Iterable[RequestView], user: User) -> tuple[list[QueueItem], list[RequestView]]:
    """A steward's queue: what awaits their decision (oldest first, with the earliest deadline)
    and the other submitted requests of their holders (newest first). Drafts are not the
    holders' business yet."""
    awaiting: list[QueueItem] = []
    others: list[RequestView] = []
    for r in sorted(requests, key=lambda r: r.id):
        if r.status == "draft":
            continue
        pending = pending_holders(r, user)
        if pending:
            due = min(
                rv.due_at for rv in r.reviews if rv.review_round == r.review_round and rv.holder_id in pending
            )
            awaiting.append(QueueItem(request=r, holders=pending, due=due))
        else:
            others.append(r)
    others.sort(key=lambda r: r.id, reverse=True)
    return awaiting, others


def pending_holders(r: RequestView, user: User) -> list[str]:
    """The steward's holders that still await a decision from this steward in the current round."""
    if r.status not in IN_REVIEW:
        return []
    decided_by_me = {
        d.holder_id for d in r.decisions if d.review_round == r.review_round and d.reviewer == user.name
    }
    return sorted(
        rv.holder_id
        for rv in r.reviews
        if rv.review_round == r.review_round
        and rv.verdict == "pending"
        and rv.holder_id in user.holder_ids
        and rv.holder_id not in decided_by_me
    )


def build_router(**options: Any) -> APIRouter:
    """The ``/web`` pages as a router; ``options`` go to ``WebApp`` (tests pass a session store)."""
    web = WebApp(**options)
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    router.web = web  # type: ignore[attr-defined]  # tests reach the session store through it

    @router.get("/", response_class=HTMLResponse)
    def home(request: Request) -> Response:
        return web.home(request)

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> Response:
        return web.login_form(request)

    @router.post("/login", response_class=HTMLResponse)
    def login(
        request: Request, token: str = Form(""), csrf_token: str = Form(""), next: str = Form("")
    ) -> Response:  # noqa: A002 - the form field's name
        return web.login(request, token, csrf_token, next)

    @router.post("/logout")
    def logout(request: Request, csrf_token: str = Form("")) -> Response:
        return web.logout(request, csrf_token)

    @router.get("/steward", response_class=HTMLResponse)
    def steward_queue(request: Request) -> Response:
        return web.steward_queue(request)

    @router.get("/requests/{request_id}", response_class=HTMLResponse)
    def request_page(request: Request, request_id: int) -> Response:
        return web.request_page(request, request_id)

    @router.post("/requests/{request_id}/decide", response_class=HTMLResponse)
    def decide(
        request: Request,
        request_id: int,
        csrf_token: str = Form(""),
        holder_id: str = Form(""),
        decision: str = Form(""),
        justification: str = Form(""),
        safe: Annotated[list[str] | None, Form()] = None,
        ack_at_risk: str = Form(""),
    ) -> Response:
        return web.decide(
            request,
            request_id,
            csrf_token=csrf_token,
            holder_id=holder_id,
            decision=decision,
            justification=justification,
            safes=safe,
            ack_at_risk=ack_at_risk,
        )

    @router.post("/requests/{request_id}/comments", response_class=HTMLResponse)
    def comment(
        request: Request, request_id: int, csrf_token: str = Form(""), body: str = Form("")
    ) -> Response:
        return web.comment(request, request_id, csrf_token=csrf_token, body=body)

    @router.get("/researcher", response_class=HTMLResponse)
    def researcher(request: Request) -> Response:
        return web.researcher(request)

    @router.get("/transparency", response_class=HTMLResponse)
    def transparency(request: Request) -> Response:
        return web.transparency(request)

    @router.get("/transparency.json")
    def transparency_json() -> Response:
        return web.transparency_json()

    @router.get("/static/style.css")
    def stylesheet() -> Response:
        return web.stylesheet()

    web.oidc = add_oidc_pages(router, web)  # single sign-on: /web/login/oidc (access/web/oidc.py)
    add_output_pages(router, web)  # the airlock: outputs, checking, exceptions
    add_prom_pages(router, web)  # PROM key figures for stewards (access/web/prom.py)
    add_apply_pages(router, web)  # the application form (access/web/apply.py)
    add_workspace_pages(router, web)  # SQL workspace on released data (access/web/workspace.py)
    add_followup_pages(router, web)  # access follow-up for stewards (access/web/followup.py)
    add_datadocs_pages(router, web)  # a holder's Data Docs for its stewards (access/web/datadocs.py)
    add_codebook_pages(router, web)  # a release's codebook for its researchers (access/web/codebook.py)
    return router
