"""Governance workflows over HTTP: the same service functions as ``hdp request|consent|...``.

``make_router(get_session, current_user)`` returns an ``APIRouter`` (paths under ``/governance``):

* ``get_session``: a FastAPI dependency yielding a SQLAlchemy ``Session`` on the governance store;
* ``current_user``: a dependency returning the authenticated user (``name``, ``roles``,
  ``holder_ids``) or refusing with 401 itself.

Every mutation commits on success and rolls back on any error, so nothing partial is stored.
Refusals are JSON ``{"error": <code>, "message": <text>, "problems": [[code, text], ...]}`` with a
4xx status (404 unknown or not visible to you, 403 not allowed, 409 invalid transition or
conflict, 422 malformed request); malformed bodies get FastAPI's 422 naming the field.
The transparency register (JSON and an HTML page) is public and holds no personal data.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated aliases at runtime.

from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from access.ports import User
from access.web import precheck
from access.web.pages import make_environment
from governance import ledger, service
from governance.catalogue import load_catalogue
from governance.errors import GovernanceError, NotFound
from governance.purposes import LEGAL_BASES, PURPOSES
from governance.values import RequestView, TransparencyEntry
from hdp.settings import get_settings, holders
from privacy.cellkey import PerturbationSettings

STAFF = frozenset({"steward", "admin", "operator"})


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileBody(_Body):
    project: str = Field(max_length=200)
    purpose: str
    legal_basis: str
    ethics_ref: str = Field(max_length=32)
    variables: list[str] = Field(max_length=500)
    holders: list[str] = Field(max_length=50)
    members: list[str] = Field(default_factory=list, max_length=100)
    cohort_criteria: dict[str, Any] = Field(default_factory=dict)
    period: tuple[date | None, date | None] = (None, None)
    data_form: Literal["anonymised", "pseudonymised"] = "anonymised"
    pseudonymisation_justification: str | None = Field(default=None, max_length=5000)
    output_tier: Literal["aggregate", "record"] = "aggregate"
    access_days: int = 365
    submit: bool = False


class EditBody(_Body):
    project: str | None = Field(default=None, max_length=200)
    purpose: str | None = None
    legal_basis: str | None = None
    ethics_ref: str | None = Field(default=None, max_length=32)
    variables: list[str] | None = Field(default=None, max_length=500)
    holders: list[str] | None = Field(default=None, max_length=50)
    members: list[str] | None = Field(default=None, max_length=100)
    cohort_criteria: dict[str, Any] | None = None
    period: tuple[date | None, date | None] | None = None
    data_form: Literal["anonymised", "pseudonymised"] | None = None
    pseudonymisation_justification: str | None = Field(default=None, max_length=5000)
    output_tier: Literal["aggregate", "record"] | None = None
    access_days: int | None = None


class DecisionBody(_Body):
    holder_id: str
    decision: Literal["approve", "reject", "return"]
    justification: str = Field(max_length=5000)
    # What the steward ticked: the Five Safes and "at_risk_acknowledged" (governance.requests).
    checklist: dict[str, bool] | None = None


class CommentBody(_Body):
    body: str = Field(max_length=8000)  # the service refuses more than MAX_COMMENT characters


class AmendBody(_Body):
    changes: EditBody
    reason: str = Field(max_length=5000)


class RevokeBody(_Body):
    justification: str = Field(max_length=5000)


class ConsentBody(_Body):
    consent_key: str = Field(max_length=128)
    scope: str
    choice: Literal["opt_out", "opt_in"]
    source_ref: str = Field(max_length=128)
    valid_from: datetime | None = None
    valid_to: datetime | None = None


class WithdrawBody(_Body):
    consent_key: str = Field(max_length=128)
    scope: str = "secondary_use"
    source_ref: str = Field(max_length=128)


class UserBody(_Body):
    name: str = Field(max_length=64)
    roles: list[str]
    holder_ids: list[str] = Field(default_factory=list)
    organisation: str | None = Field(default=None, max_length=400)  # the service allows 200


class OrganisationBody(_Body):
    organisation: str | None = Field(max_length=400)  # null or blank clears it


class DeadlineBody(_Body):
    days: int
    holder_id: str | None = None


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, frozenset | set):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _refusal(exc: GovernanceError) -> JSONResponse:
    body: dict[str, Any] = {"error": exc.code, "message": exc.message}
    if problems := getattr(exc, "problems", None):
        body["problems"] = [list(p) for p in problems]
    return JSONResponse(body, status_code=exc.http_status)


class BudgetBody(BaseModel):
    queries: int = Field(ge=0, le=100_000)
    justification: str = Field(min_length=10, max_length=2_000)


def _deny(message: str, code: str = "auth.forbidden", status: int = 403) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def _run(session: Session, fn: Callable[[], Any], *, status: int = 200, mutate: bool = True) -> Any:
    """Call the service; commit a mutation, or roll back and answer the refusal."""
    try:
        result = fn()
        if mutate:
            session.commit()
    except GovernanceError as exc:
        session.rollback()
        return _refusal(exc)
    return JSONResponse(_jsonable(result), status_code=status)


def _roles(user: User) -> frozenset[str]:
    return frozenset(user.roles)


def _may_see(user: User, view: RequestView) -> bool:
    roles = _roles(user)
    if user.name == view.applicant or user.name in view.members or roles & {"admin", "operator"}:
        return True
    # Stewards see submitted requests that concern one of their holders (not others' drafts).
    return "steward" in roles and view.status != "draft" and bool(set(user.holder_ids) & set(view.holders))


def _visible(session: Session, user: User, request_id: int) -> RequestView:
    view = service.get_request(session, request_id=request_id)
    if not _may_see(user, view):
        # Same answer as for a missing request: do not reveal that it exists.
        raise NotFound(f"request {request_id} does not exist", code="request.not_found")
    return view


_pages = make_environment()


def transparency_html(entries: list[TransparencyEntry]) -> str:
    """The register as a plain English page (template ``governance_transparency.html``)."""
    return _pages.get_template("governance_transparency.html").render(entries=entries)


SessionDependency = Callable[..., Any]  # yields a sqlalchemy Session
UserDependency = Callable[..., User]


def make_router(get_session: SessionDependency, current_user: UserDependency) -> APIRouter:
    """The governance API; mount with ``app.include_router(make_router(get_session, current_user))``."""
    router = APIRouter(prefix="/governance", tags=["governance"])
    router.include_router(public_router(get_session))
    router.include_router(requests_router(get_session, current_user))
    router.include_router(consent_router(get_session, current_user))
    router.include_router(follow_up_router(get_session, current_user))
    router.include_router(admin_router(get_session, current_user))
    return router


def public_router(get_session: SessionDependency) -> APIRouter:
    """Purposes, variables, disclosure settings and the transparency register: no login."""
    router = APIRouter()
    DbSession = Annotated[Session, Depends(get_session)]

    @router.get("/purposes")
    def purposes() -> dict[str, Any]:
        return {"purposes": dict(PURPOSES), "legal_bases": dict(LEGAL_BASES)}

    @router.get("/variables")
    def variables() -> list[dict[str, str]]:
        return list(load_catalogue().values())

    @router.get("/disclosure")
    def disclosure() -> list[dict[str, Any]]:
        """Each holder's disclosure settings, public like the register (never a key)."""
        return [
            {
                "holder_id": h.id,
                "min_cell_count": h.min_cell_count,
                "k_anonymity": h.k_anonymity,
                "perturbation": PerturbationSettings.for_holder(
                    h.min_cell_count, dict(h.perturbation)
                ).public(),
            }
            for h in holders()
        ]

    @router.get("/transparency")
    def transparency(session: DbSession) -> Any:
        return _run(session, lambda: service.transparency_register(session), mutate=False)

    @router.get("/transparency.html", response_class=HTMLResponse)
    def transparency_page(session: DbSession) -> HTMLResponse:
        return HTMLResponse(transparency_html(service.transparency_register(session)))

    return router


def requests_router(get_session: SessionDependency, current_user: UserDependency) -> APIRouter:
    """Data requests through their life (file, edit, submit, decide, amend, revoke) and my permits."""
    router = APIRouter()
    DbSession = Annotated[Session, Depends(get_session)]
    CurrentUser = Annotated[User, Depends(current_user)]

    @router.post("/requests", status_code=201)
    def file_request(body: FileBody, session: DbSession, user: CurrentUser) -> Any:
        if "researcher" not in _roles(user):
            return _deny("filing a request needs the researcher role")
        fields = body.model_dump(exclude={"submit"})

        def go() -> dict[str, Any]:
            rid = service.file_request(session, applicant=user.name, **fields)
            if body.submit:
                service.submit_request(session, request_id=rid, actor=user.name)
            return {"request_id": rid, "status": "submitted" if body.submit else "draft"}

        return _run(session, go, status=201)

    @router.get("/requests")
    def list_requests(
        session: DbSession, user: CurrentUser, status: str | None = None, holder_id: str | None = None
    ) -> Any:
        def go() -> list[dict[str, Any]]:
            try:
                views = service.list_requests(session, status=status, holder_id=holder_id)
            except ValueError:
                raise NotFound(f"unknown status {status!r}", code="request.bad_status") from None
            return [
                {
                    "id": v.id,
                    "status": v.status,
                    "project": v.project,
                    "purpose": v.purpose,
                    "holders": v.holders,
                    "applicant": v.applicant,
                    "submitted_at": v.submitted_at,
                }
                for v in views
                if _may_see(user, v)
            ]

        return _run(session, go, mutate=False)

    @router.get("/requests/{request_id}")
    def get_request(request_id: int, session: DbSession, user: CurrentUser) -> Any:
        def go() -> dict[str, Any]:
            view = _visible(session, user, request_id)
            return {
                "request": view,
                "permit": service.permit_for_request(session, request_id=request_id),
                "history": service.request_history(session, request_id=request_id),
            }

        return _run(session, go, mutate=False)

    @router.patch("/requests/{request_id}")
    def edit_request(request_id: int, body: EditBody, session: DbSession, user: CurrentUser) -> Any:
        changes = body.model_dump(exclude_unset=True)

        def go() -> Any:
            _visible(session, user, request_id)
            return service.update_draft(session, request_id=request_id, actor=user.name, **changes)

        return _run(session, go)

    @router.post("/requests/{request_id}/submit")
    def submit_request(request_id: int, session: DbSession, user: CurrentUser) -> Any:
        def go() -> dict[str, Any]:
            _visible(session, user, request_id)
            service.submit_request(session, request_id=request_id, actor=user.name)
            return {
                "request_id": request_id,
                "status": service.get_request(session, request_id=request_id).status,
            }

        return _run(session, go)

    @router.post("/requests/{request_id}/decisions")
    def decide(request_id: int, body: DecisionBody, session: DbSession, user: CurrentUser) -> Any:
        def go() -> dict[str, Any]:
            view = _visible(session, user, request_id)
            if body.decision == "approve":
                precheck.require_at_risk_acknowledged(
                    view, body.checklist, research_db=get_settings().research_db
                )
            status = service.decide(
                session,
                request_id=request_id,
                holder_id=body.holder_id,
                reviewer=user.name,
                decision=body.decision,
                justification=body.justification,
                checklist=body.checklist,
            )
            return {"request_id": request_id, "status": status}

        return _run(session, go)

    @router.get("/requests/{request_id}/comments")
    def list_comments(request_id: int, session: DbSession, user: CurrentUser) -> Any:
        return _run(
            session,
            lambda: service.list_comments(session, request_id=request_id, reader=user.name),
            mutate=False,
        )

    @router.post("/requests/{request_id}/comments", status_code=201)
    def post_comment(request_id: int, body: CommentBody, session: DbSession, user: CurrentUser) -> Any:
        return _run(
            session,
            lambda: service.post_comment(session, request_id=request_id, author=user.name, body=body.body),
            status=201,
        )

    @router.post("/requests/{request_id}/amendments", status_code=201)
    def amend(request_id: int, body: AmendBody, session: DbSession, user: CurrentUser) -> Any:
        changes = body.changes.model_dump(exclude_unset=True)

        def go() -> dict[str, Any]:
            _visible(session, user, request_id)
            new_id = service.amend_request(
                session, request_id=request_id, actor=user.name, changes=changes, reason=body.reason
            )
            return {"request_id": new_id, "amends": request_id, "separate_request": new_id != request_id}

        return _run(session, go, status=201)

    @router.post("/requests/{request_id}/revoke")
    def revoke(request_id: int, body: RevokeBody, session: DbSession, user: CurrentUser) -> Any:
        def go() -> Any:
            _visible(session, user, request_id)
            return service.revoke_permit(
                session, request_id=request_id, actor=user.name, justification=body.justification
            )

        return _run(session, go)

    @router.get("/permits")
    def my_permits(session: DbSession, user: CurrentUser) -> Any:
        return _run(
            session,
            lambda: service.releases_for_user(session, user_name=user.name, at=datetime.now(UTC)),
            mutate=False,
        )

    return router


def _steward(user: User) -> JSONResponse | None:
    if not _roles(user) & {"steward", "admin"}:
        return _deny("consent records are kept by stewards")
    return None


def consent_router(get_session: SessionDependency, current_user: UserDependency) -> APIRouter:
    """Consent records, kept by stewards."""
    router = APIRouter()
    DbSession = Annotated[Session, Depends(get_session)]
    CurrentUser = Annotated[User, Depends(current_user)]

    @router.post("/consent", status_code=201)
    def record_consent(body: ConsentBody, session: DbSession, user: CurrentUser) -> Any:
        if (denied := _steward(user)) is not None:
            return denied
        return _run(
            session,
            lambda: {
                "consent_record_id": service.record_consent(
                    session,
                    consent_key=body.consent_key,
                    scope=body.scope,
                    choice=body.choice,
                    source_ref=body.source_ref,
                    actor=user.name,
                    valid_from=body.valid_from,
                    valid_to=body.valid_to,
                )
            },
            status=201,
        )

    @router.post("/consent/withdraw", status_code=201)
    def withdraw_consent(body: WithdrawBody, session: DbSession, user: CurrentUser) -> Any:
        if (denied := _steward(user)) is not None:
            return denied
        return _run(
            session,
            lambda: {
                "consent_record_id": service.withdraw_consent(
                    session,
                    consent_key=body.consent_key,
                    scope=body.scope,
                    source_ref=body.source_ref,
                    actor=user.name,
                )
            },
            status=201,
        )

    @router.get("/consent/{consent_key}")
    def show_consent(consent_key: str, session: DbSession, user: CurrentUser) -> Any:
        if (denied := _steward(user)) is not None:
            return denied
        now = datetime.now(UTC)

        def go() -> dict[str, Any]:
            records = service.consent_records(session, consent_key=consent_key)
            state = {
                p: service.is_excluded(session, consent_key=consent_key, purpose=p, at=now) for p in PURPOSES
            }
            return {"records": records, "excluded_now": state}

        return _run(session, go, mutate=False)

    return router


def follow_up_router(get_session: SessionDependency, current_user: UserDependency) -> APIRouter:
    """Overdue reviews, key figures, query budgets and the query ledger, for staff."""
    router = APIRouter()
    DbSession = Annotated[Session, Depends(get_session)]
    CurrentUser = Annotated[User, Depends(current_user)]

    @router.get("/overdue")
    def overdue(session: DbSession, user: CurrentUser) -> Any:
        if not _roles(user) & STAFF:
            return _deny("overdue reviews are for stewards, operators and admins")
        return _run(session, lambda: service.overdue_reviews(session, at=datetime.now(UTC)), mutate=False)

    @router.get("/figures")
    def figures(
        session: DbSession,
        user: CurrentUser,
        period: Annotated[Literal["month", "quarter", "year"], Query()] = "month",
    ) -> Any:
        if not _roles(user) & STAFF:
            return _deny("key figures are for stewards, operators and admins")
        return _run(session, lambda: service.key_figures(session, period=period), mutate=False)

    @router.put("/permits/{permit_id}/budget")
    def set_budget(permit_id: int, body: BudgetBody, session: DbSession, user: CurrentUser) -> Any:
        """A steward of one of the permit's holders sets how many distinct aggregate queries it may ask."""

        def go() -> dict[str, Any]:
            ledger.set_query_budget(
                session,
                permit_id=permit_id,
                budget=body.queries,
                actor=user.name,
                justification=body.justification,
            )
            return {"permit_id": permit_id, "queries": body.queries}

        return _run(session, go)

    @router.get("/ledger")
    def ledger_follow_up(session: DbSession, user: CurrentUser) -> Any:
        """Operators' follow-up of aggregate queries: budgets used, flagged pairs (digests and ids only)."""
        if not _roles(user) & {"operator", "admin"}:
            return _deny("the query ledger follow-up is for operators and admins")
        return _run(session, lambda: ledger.follow_up(session), mutate=False)

    return router


def admin_router(get_session: SessionDependency, current_user: UserDependency) -> APIRouter:
    """Users, tokens and decision deadlines, for admins."""
    router = APIRouter()
    DbSession = Annotated[Session, Depends(get_session)]
    CurrentUser = Annotated[User, Depends(current_user)]

    @router.post("/users", status_code=201)
    def add_user(body: UserBody, session: DbSession, user: CurrentUser) -> Any:
        if "admin" not in _roles(user):
            return _deny("creating users needs the admin role")
        return _run(
            session,
            lambda: service.create_user(
                session,
                name=body.name,
                roles=body.roles,
                holder_ids=body.holder_ids,
                actor=user.name,
                organisation=body.organisation,
            ),
            status=201,
        )

    @router.put("/users/{name}/organisation")
    def set_organisation(name: str, body: OrganisationBody, session: DbSession, user: CurrentUser) -> Any:
        if "admin" not in _roles(user):
            return _deny("recording an organisation needs the admin role")

        def go() -> dict[str, Any]:
            service.set_organisation(session, name=name, organisation=body.organisation, actor=user.name)
            return {"user": name, "organisation": service.user_organisation(session, name)}

        return _run(session, go)

    @router.post("/users/{name}/tokens", status_code=201)
    def new_token(name: str, session: DbSession, user: CurrentUser) -> Any:
        if "admin" not in _roles(user):
            return _deny("issuing tokens needs the admin role")
        # The plain token is in this one response only; the store keeps its hash.
        return _run(
            session, lambda: {"user": name, "token": service.issue_token(session, user_name=name)}, status=201
        )

    @router.put("/deadline")
    def deadline(body: DeadlineBody, session: DbSession, user: CurrentUser) -> Any:
        if "admin" not in _roles(user):
            return _deny("changing decision deadlines needs the admin role")

        def go() -> dict[str, Any]:
            service.set_decision_deadline(session, days=body.days, holder_id=body.holder_id, actor=user.name)
            return {"days": body.days, "holder_id": body.holder_id}

        return _run(session, go)

    return router
