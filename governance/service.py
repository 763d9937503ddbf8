"""Governance service: the contract used by the access layer, the DAGs and the CLI.

Keyword-only functions over a SQLAlchemy ``Session`` (see ``governance.store.session_scope``);
they return frozen values from ``governance.values``. Callers own the transaction: every
function validates first and raises a specific ``governance.errors`` exception before writing, and
``session_scope`` rolls back on any error, so nothing partial is stored.

Concurrency: every change of a request first locks its row (``SELECT ... FOR UPDATE`` on
Postgres, ``BEGIN IMMEDIATE`` on SQLite) and re-reads the decisions under that lock, so two
stewards approving at once are serialised: both decisions are kept and the permit is issued
exactly once. Unique constraints (one decision per reviewer and round, one permit per request and
per release) and the optimistic ``version`` column back this up.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from governance import auditing, cohort
from governance import text as free_text
from governance.catalogue import load_catalogue, table_holders
from governance.consent import (  # noqa: F401  (re-exported: part of the service API)
    consent_records,
    excluded_consent_keys,
    is_excluded,
    next_validity_boundary,
    record_consent,
    withdraw_consent,
)
from governance.errors import (
    AlreadyReleased,
    ConcurrencyConflict,
    DuplicateDecision,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    SelfDecision,
)
from governance.models import (
    ApiTokenRow,
    ChangeCounterRow,
    ConfigRow,
    DecisionRow,
    HolderReviewRow,
    PermitRow,
    RequestEventRow,
    RequestRow,
    UserRow,
)
from governance.purposes import LEGAL_BASES, PURPOSES
from governance.reporting import (  # noqa: F401  (re-exported)
    key_figures,
    overdue_reviews,
    transparency_register,
)
from governance.values import (
    ROLES,
    ApprovedRequest,
    DecisionView,
    HolderReview,
    Permit,
    RequestView,
    User,
)
from governance.workflow import (
    IN_REVIEW,
    Action,
    Decision,
    HolderVerdict,
    ReviewDecision,
    Status,
    holder_outcome,
    next_status,
    request_outcome,
)

ETHICS_REF = re.compile(r"^(\d{4})-(\d{5})-(\d{2})$")
USER_NAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
MIN_JUSTIFICATION = 10
MIN_PSEUDONYMISATION_JUSTIFICATION = 30
MAX_ACCESS_DAYS = 3650
DEFAULT_ACCESS_DAYS = 365
DEFAULT_DEADLINE_DAYS = 30
DATA_FORMS = ("anonymised", "pseudonymised")
OUTPUT_TIERS = ("record", "aggregate")
#: Fields of a permitted request that an amendment may change (new member, extension).
PERMIT_AMENDABLE = frozenset({"members", "access_days"})
_FREE_TEXT = frozenset({"justification", "reason"})
REQUEST_FIELDS = (
    "project",
    "purpose",
    "legal_basis",
    "ethics_ref",
    "variables",
    "holders",
    "members",
    "cohort_criteria",
    "period",
    "data_form",
    "pseudonymisation_justification",
    "output_tier",
    "access_days",
)


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("pass a timezone-aware datetime")
    return now


def _holder_settings() -> dict[str, int]:
    from hdp.settings import holders

    return {h.id: h.reviewers_required for h in holders()}


def _flush(session: Session) -> None:
    """Flush now, turning lost races into a clear ConcurrencyConflict (the caller rolls back)."""
    try:
        session.flush()
    except StaleDataError as exc:
        raise ConcurrencyConflict("the request was changed by someone else at the same time; retry") from exc
    except IntegrityError as exc:
        raise ConcurrencyConflict(
            "a concurrent change already recorded this (unique constraint); reload and retry"
        ) from exc


# --------------------------------------------------------------------------- users and tokens


def _user_value(row: UserRow) -> User:
    return User(name=row.name, roles=frozenset(row.roles), holder_ids=frozenset(row.holder_ids))


def _user_row(session: Session, name: str) -> UserRow | None:
    return session.execute(select(UserRow).where(UserRow.name == name)).scalar_one_or_none()


def create_user(
    session: Session,
    *,
    name: str,
    roles: Iterable[str],
    holder_ids: Iterable[str] = (),
    actor: str = "system",
    now: datetime | None = None,
) -> User:
    """Create an account; stewards must name the holders they review for."""
    roles_set, holders_set = frozenset(roles), frozenset(holder_ids)
    problems: list[tuple[str, str]] = []
    if not USER_NAME.match(name or ""):
        problems.append(
            ("user.bad_name", "user name must be 2-64 chars: lower-case letter, then a-z 0-9 . _ -")
        )
    if not roles_set:
        problems.append(("user.no_role", f"give at least one role of {sorted(ROLES)}"))
    if unknown := roles_set - ROLES:
        problems.append(("user.unknown_role", f"unknown role(s) {sorted(unknown)}; known: {sorted(ROLES)}"))
    known_holders = _holder_settings()
    if unknown_h := holders_set - known_holders.keys():
        problems.append(("user.unknown_holder", f"unknown holder(s) {sorted(unknown_h)}"))
    if "steward" in roles_set and not holders_set:
        problems.append(("user.steward_without_holder", "a steward must review for at least one holder"))
    if not problems and _user_row(session, name) is not None:
        problems.append(("user.exists", f"user {name!r} already exists"))
    if problems:
        raise InvalidRequest(problems)
    row = UserRow(name=name, roles=sorted(roles_set), holder_ids=sorted(holders_set), created_at=_now(now))
    session.add(row)
    _flush(session)
    auditing.queue(
        session,
        event="governance.user_created",
        user=name,
        roles=sorted(roles_set),
        holder_ids=sorted(holders_set),
        actor=actor,
    )
    return _user_value(row)


def get_user(session: Session, *, name: str) -> User:
    row = _user_row(session, name)
    if row is None or row.disabled_at is not None:
        raise NotFound(f"no active user named {name!r}", code="user.not_found")
    return _user_value(row)


def list_users(session: Session) -> list[User]:
    rows = session.execute(
        select(UserRow).where(UserRow.disabled_at.is_(None)).order_by(UserRow.name)
    ).scalars()
    return [_user_value(r) for r in rows]


def disable_user(session: Session, *, name: str, actor: str, now: datetime | None = None) -> None:
    """Disable an account at once: its tokens stop working and it loses access to every release."""
    row = _user_row(session, name)
    if row is None:
        raise NotFound(f"no user named {name!r}", code="user.not_found")
    row.disabled_at = row.disabled_at or _now(now)
    _flush(session)
    auditing.queue(session, event="governance.user_disabled", user=name, actor=actor)


def has_role(session: Session, user_name: str, role: str) -> bool:
    row = _user_row(session, user_name)
    return row is not None and row.disabled_at is None and role in row.roles


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(session: Session, *, user_name: str, now: datetime | None = None) -> str:
    """A new API token for the user; only its SHA-256 is stored, the plain token is returned once."""
    row = _user_row(session, user_name)
    if row is None or row.disabled_at is not None:
        raise NotFound(f"no active user named {user_name!r}", code="user.not_found")
    token = "hdp_" + secrets.token_urlsafe(32)  # 32 random bytes from the OS CSPRNG
    session.add(ApiTokenRow(user_id=row.id, token_sha256=_token_hash(token), created_at=_now(now)))
    _flush(session)
    auditing.queue(session, event="governance.token_issued", user=user_name)
    return token


def revoke_tokens(session: Session, *, user_name: str, now: datetime | None = None) -> int:
    """Revoke every token of the user; returns how many were active."""
    row = _user_row(session, user_name)
    if row is None:
        raise NotFound(f"no user named {user_name!r}", code="user.not_found")
    tokens = (
        session.execute(
            select(ApiTokenRow).where(ApiTokenRow.user_id == row.id, ApiTokenRow.revoked_at.is_(None))
        )
        .scalars()
        .all()
    )
    for t in tokens:
        t.revoked_at = _now(now)
    _flush(session)
    auditing.queue(session, event="governance.tokens_revoked", user=user_name, count=len(tokens))
    return len(tokens)


def authenticate_token(session: Session, token: str) -> User | None:
    """The user holding this token, or None (unknown, revoked, disabled, malformed)."""
    if not isinstance(token, str) or not token or len(token) > 256:
        return None
    digest = _token_hash(token)
    found = session.execute(
        select(ApiTokenRow, UserRow)
        .join(UserRow, UserRow.id == ApiTokenRow.user_id)
        .where(ApiTokenRow.token_sha256 == digest)
    ).first()
    if found is None:
        return None
    tok, user = found
    # The lookup is by hash (an attacker cannot steer it); compare in constant time anyway.
    if not hmac.compare_digest(tok.token_sha256, digest):
        return None
    if tok.revoked_at is not None or user.disabled_at is not None:
        return None
    return _user_value(user)


def change_versions(session: Session | Connection) -> dict[str, int]:
    """Scope -> current version of the change counters (``governance.models.CHANGE_SCOPES``).

    Every committed write to a scope's tables has bumped its version (triggers), so a value
    read after a version was read is current for as long as the version stays the same.
    """
    return {
        scope: int(v)
        for scope, v in session.execute(select(ChangeCounterRow.scope, ChangeCounterRow.version))
    }


# --------------------------------------------------------------------------- request validation


def _clean_fields(
    session: Session, applicant: str, fields: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    """Validate a complete request; return normalised column values or raise InvalidRequest (all problems)."""
    p: list[tuple[str, str]] = []
    out: dict[str, Any] = {}

    project, problem = free_text.check(
        str(fields.get("project") or "").strip(), code="request.project", label="project title"
    )
    if problem:
        p.append(problem)
    elif not 3 <= len(project) <= 200:
        p.append(("request.project", "project title must be 3-200 characters"))
    out["project"] = project

    purpose = fields.get("purpose")
    if purpose not in PURPOSES:
        p.append(
            ("request.purpose", f"purpose {purpose!r} is not in the controlled list: {', '.join(PURPOSES)}")
        )
    out["purpose"] = purpose

    basis = fields.get("legal_basis")
    if basis not in LEGAL_BASES:
        p.append(
            ("request.legal_basis", f"legal basis {basis!r} unknown; choose one of {', '.join(LEGAL_BASES)}")
        )
    out["legal_basis"] = basis

    ethics = str(fields.get("ethics_ref") or "").strip()
    m = ETHICS_REF.match(ethics)
    if not m:
        p.append(
            ("request.ethics_ref", "ethics approval reference must look like 2024-01234-01 (YYYY-NNNNN-NN)")
        )
    elif not 2000 <= int(m.group(1)) <= now.year + 1:
        p.append(("request.ethics_ref", f"ethics approval year {m.group(1)} is not plausible"))
    out["ethics_ref"] = ethics

    known_holders = _holder_settings()
    raw_holders = fields.get("holders") or ()
    holders = sorted(set([raw_holders] if isinstance(raw_holders, str) else raw_holders))
    if not holders:
        p.append(("request.holders", "name at least one data holder"))
    if unknown := [h for h in holders if h not in known_holders]:
        p.append(("request.holders", f"unknown data holder(s) {unknown}; known: {sorted(known_holders)}"))
    out["holders"] = holders

    catalogue = load_catalogue()
    t_holders = table_holders()
    raw_vars = fields.get("variables") or ()
    variables = sorted(set([raw_vars] if isinstance(raw_vars, str) else raw_vars))
    if not variables:
        p.append(("request.variables", "choose at least one variable from schemas/variables.json"))
    if unknown_v := [v for v in variables if v not in catalogue]:
        p.append(
            ("request.variables", f"{len(unknown_v)} variable(s) not in the catalogue: {unknown_v[:10]}")
        )
    known_vars = [v for v in variables if v in catalogue]
    not_held = [v for v in known_vars if not (t_holders[catalogue[v]["table"]] & set(holders))]
    if not_held and holders:
        p.append(
            (
                "request.variable_not_held",
                f"{len(not_held)} variable(s) held by no data holder in scope: {not_held[:10]}",
            )
        )
    idle = [
        h
        for h in holders
        if known_vars and not any(h in t_holders[catalogue[v]["table"]] for v in known_vars)
    ]
    if idle:
        p.append(
            ("request.holder_without_variables", f"holder(s) {idle} deliver none of the requested variables")
        )
    out["variables"] = variables

    raw_members = fields.get("members") or ()
    members = sorted(set([raw_members] if isinstance(raw_members, str) else raw_members) - {applicant})
    for name in [applicant, *members]:
        row = _user_row(session, name)
        if row is None or row.disabled_at is not None:
            p.append(("request.unknown_user", f"user {name!r} does not exist"))
        elif "researcher" not in row.roles:
            p.append(("request.not_researcher", f"user {name!r} does not have the researcher role"))
    out["members"] = members

    criteria = fields.get("cohort_criteria") or {}
    if not isinstance(criteria, Mapping):
        p.append(("request.cohort_criteria", "cohort criteria must be an object: variable -> condition"))
        criteria = {}
    elif bad := [k for k in criteria if k not in catalogue]:
        p.append(("request.cohort_criteria", f"cohort criteria on unknown variable(s) {bad[:10]}"))
    else:
        try:
            cohort.parse(criteria)  # the release builder applies exactly what is accepted here
        except cohort.InvalidCriteria as exc:
            p.append(("request.cohort_criteria", str(exc)))
    out["cohort_criteria"] = dict(criteria)

    period = fields.get("period") or (None, None)
    try:
        start, end = (
            None if d is None else (d if isinstance(d, date) else date.fromisoformat(str(d))) for d in period
        )
    except (TypeError, ValueError):
        p.append(("request.period", "period must be (start, end) ISO dates, either may be empty"))
        start = end = None
    if start and end and start > end:
        p.append(("request.period", f"period starts {start} after it ends {end}"))
    out["period_start"], out["period_end"] = start, end

    data_form = fields.get("data_form") or "anonymised"
    justification = (fields.get("pseudonymisation_justification") or "").strip() or None
    if justification is not None:
        justification, problem = free_text.check(
            justification,
            code="request.pseudonymisation_justification",
            label="pseudonymisation justification",
            multiline=True,
        )
        if problem:
            p.append(problem)
    if data_form not in DATA_FORMS:
        p.append(("request.data_form", f"data form must be one of {DATA_FORMS}"))
    if data_form == "pseudonymised" and len(justification or "") < MIN_PSEUDONYMISATION_JUSTIFICATION:
        p.append(
            (
                "request.pseudonymisation_justification",
                f"pseudonymised data needs a justification of at least {MIN_PSEUDONYMISATION_JUSTIFICATION} "
                "characters (anonymised is the default)",
            )
        )
    linkage = [v for v in known_vars if catalogue[v]["sensitivity"] == "pseudonym"]
    if linkage and data_form != "pseudonymised":
        p.append(
            (
                "request.pseudonym_needs_justification",
                f"{linkage[:5]} are linkage keys: ask for pseudonymised data and justify it",
            )
        )
    out["data_form"], out["pseudonymisation_justification"] = data_form, justification

    tier = fields.get("output_tier") or "aggregate"
    if tier not in OUTPUT_TIERS:
        p.append(("request.output_tier", f"output tier must be one of {OUTPUT_TIERS}"))
    if tier == "record" and data_form != "pseudonymised":
        # Record-level rows carry each person's release pseudonym (the access layer needs it to
        # apply withdrawals), so they are pseudonymised data whatever the request calls them.
        p.append(
            (
                "request.record_needs_pseudonymised",
                "record-level output carries each person's release pseudonym: ask for pseudonymised "
                "data and justify it, or choose aggregate output",
            )
        )
    out["output_tier"] = tier

    access_days = fields.get("access_days", DEFAULT_ACCESS_DAYS)
    if (
        not isinstance(access_days, int)
        or isinstance(access_days, bool)
        or not 1 <= access_days <= MAX_ACCESS_DAYS
    ):
        p.append(("request.access_days", f"access period must be 1-{MAX_ACCESS_DAYS} days"))
    out["access_days"] = access_days

    if p:
        raise InvalidRequest(p)
    return out


def _row_fields(row: RequestRow) -> dict[str, Any]:
    return {
        "project": row.project,
        "purpose": row.purpose,
        "legal_basis": row.legal_basis,
        "ethics_ref": row.ethics_ref,
        "variables": list(row.variables),
        "holders": list(row.holders),
        "members": list(row.members),
        "cohort_criteria": dict(row.cohort_criteria),
        "period": (row.period_start, row.period_end),
        "data_form": row.data_form,
        "pseudonymisation_justification": row.pseudonymisation_justification,
        "output_tier": row.output_tier,
        "access_days": row.access_days,
    }


def _check_field_names(changes: Mapping[str, Any], allowed: Iterable[str]) -> None:
    allowed = set(allowed)
    if unknown := sorted(set(changes) - allowed):
        raise InvalidRequest(
            [("request.unknown_field", f"cannot change {unknown}; changeable: {sorted(allowed)}")]
        )


# --------------------------------------------------------------------------- requests


def _event(
    session: Session,
    row: RequestRow,
    *,
    actor: str,
    action: str,
    from_status: str | None,
    now: datetime,
    **detail: Any,
) -> None:
    session.add(
        RequestEventRow(
            request_id=row.id,
            at=now,
            actor=actor,
            action=action,
            from_status=from_status,
            to_status=row.status,
            detail=detail,
        )
    )
    # The audit log gets ids and decisions only: free text (justifications, reasons) stays in the
    # store's request history, where it belongs to the case.
    auditing.queue(
        session,
        event=f"governance.request.{action}",
        request_id=row.id,
        actor=actor,
        from_status=from_status,
        to_status=row.status,
        **{k: v for k, v in detail.items() if k not in _FREE_TEXT},
    )


def _lock_request(session: Session, request_id: int) -> RequestRow:
    """The request row, locked for this transaction and re-read from the database."""
    row = session.execute(
        select(RequestRow)
        .where(RequestRow.id == request_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"request {request_id} does not exist", code="request.not_found")
    return row


def file_request(session: Session, *, applicant: str, now: datetime | None = None, **fields: Any) -> int:
    """File a draft request; returns its id.

    Fields: project, purpose (``governance.purposes.PURPOSES``), legal_basis (``LEGAL_BASES``),
    ethics_ref (``2024-01234-01``), variables ("table.column" from schemas/variables.json), holders,
    members (user names), cohort_criteria ({variable: condition}), period ((start, end) dates),
    data_form ("anonymised" default | "pseudonymised" + pseudonymisation_justification),
    output_tier ("aggregate" default | "record", which needs data_form "pseudonymised": record
    rows carry the release pseudonym), access_days (365 default).
    """
    _check_field_names(fields, REQUEST_FIELDS)
    now = _now(now)
    clean = _clean_fields(session, applicant, fields, now)
    row = RequestRow(
        applicant=applicant,
        status=Status.DRAFT.value,
        review_round=0,
        parent_id=None,
        amendment=None,
        created_at=now,
        updated_at=now,
        **clean,
    )
    session.add(row)
    _flush(session)
    _event(session, row, actor=applicant, action="file", from_status=None, now=now)
    _flush(session)
    return row.id


def update_draft(
    session: Session, *, request_id: int, actor: str, now: datetime | None = None, **changes: Any
) -> RequestView:
    """Edit a draft (or a request returned for changes); submitted requests need ``amend_request``."""
    _check_field_names(changes, REQUEST_FIELDS)
    now = _now(now)
    row = _lock_request(session, request_id)
    if actor != row.applicant:
        raise PermissionDenied(f"only the applicant may edit request {request_id}")
    if row.parent_id is not None and set(changes) - PERMIT_AMENDABLE:
        raise InvalidRequest(
            [("amendment.field", f"an amendment may change only {sorted(PERMIT_AMENDABLE)}")]
        )
    from_status = row.status
    row.status = next_status(row.status, Action.EDIT).value
    clean = _clean_fields(session, row.applicant, {**_row_fields(row), **changes}, now)
    for k, v in clean.items():
        setattr(row, k, v)
    row.updated_at = now
    _event(session, row, actor=actor, action="edit", from_status=from_status, now=now, fields=sorted(changes))
    _flush(session)
    return _request_view(session, row)


def _deadline_days(session: Session, holder_id: str) -> int:
    for key in (f"deadline_days.{holder_id}", "deadline_days"):
        cfg = session.get(ConfigRow, key)
        if cfg is not None:
            return int(cfg.value)
    return DEFAULT_DEADLINE_DAYS


def set_decision_deadline(
    session: Session, *, days: int, holder_id: str | None = None, actor: str = "system"
) -> None:
    """Days a holder has to decide after submission (all holders when ``holder_id`` is None)."""
    if not isinstance(days, int) or not 1 <= days <= 365:
        raise InvalidRequest([("config.deadline_days", "decision deadline must be 1-365 days")])
    if holder_id is not None and holder_id not in _holder_settings():
        raise InvalidRequest([("config.unknown_holder", f"unknown holder {holder_id!r}")])
    key = "deadline_days" if holder_id is None else f"deadline_days.{holder_id}"
    cfg = session.get(ConfigRow, key)
    if cfg is None:
        session.add(ConfigRow(key=key, value=days))
    else:
        cfg.value = days
    _flush(session)
    auditing.queue(session, event="governance.deadline_set", holder_id=holder_id, days=days, actor=actor)


def _open_round(session: Session, row: RequestRow, now: datetime) -> None:
    row.review_round += 1
    required = _holder_settings()
    for h in row.holders:
        session.add(
            HolderReviewRow(
                request_id=row.id,
                holder_id=h,
                review_round=row.review_round,
                reviewers_required=required[h],
                verdict=HolderVerdict.PENDING.value,
                opened_at=now,
                due_at=now + timedelta(days=_deadline_days(session, h)),
                decided_at=None,
            )
        )


def submit_request(session: Session, *, request_id: int, actor: str, now: datetime | None = None) -> None:
    """Submit a draft (or a returned request) for review by every holder in scope."""
    now = _now(now)
    row = _lock_request(session, request_id)
    if actor != row.applicant:
        raise PermissionDenied(f"only the applicant may submit request {request_id}")
    from_status = row.status
    row.status = next_status(row.status, Action.SUBMIT).value
    # Re-validate: users may have been disabled or the catalogue changed since the draft was saved.
    _clean_fields(session, row.applicant, _row_fields(row), now)
    row.submitted_at = row.submitted_at or now
    row.updated_at = now
    _open_round(session, row, now)
    _event(
        session,
        row,
        actor=actor,
        action="submit",
        from_status=from_status,
        now=now,
        review_round=row.review_round,
    )
    _flush(session)


def _round_reviews(session: Session, row: RequestRow) -> list[HolderReviewRow]:
    return list(
        session.execute(
            select(HolderReviewRow)
            .where(HolderReviewRow.request_id == row.id, HolderReviewRow.review_round == row.review_round)
            .execution_options(populate_existing=True)
        ).scalars()
    )


def decide(
    session: Session,
    *,
    request_id: int,
    holder_id: str,
    reviewer: str,
    decision: str,
    justification: str,
    now: datetime | None = None,
) -> str:
    """Record one steward's decision for one holder; returns the request's status afterwards.

    The request is approved (and its permit issued) only when every holder in scope has approved
    with its required number of distinct reviewers; one rejection or return decides at once.
    """
    now = _now(now)
    problems = []
    if decision not in {d.value for d in Decision}:
        problems.append(("decision.unknown", f"decision must be approve, reject or return, not {decision!r}"))
    if len((justification or "").strip()) < MIN_JUSTIFICATION:
        problems.append(
            (
                "decision.justification",
                f"every decision needs a justification (at least {MIN_JUSTIFICATION} characters)",
            )
        )
    else:
        justification, problem = free_text.check(
            justification, code="decision.justification", label="justification", multiline=True
        )
        if problem:
            problems.append(problem)
    if problems:
        raise InvalidRequest(problems)
    row = _lock_request(session, request_id)
    if Status(row.status) not in IN_REVIEW:
        raise InvalidTransition(
            f"request {request_id} is {row.status}; decisions are taken only while it is submitted or under review",
            code=f"transition.{row.status}.decide",
        )
    if holder_id not in row.holders:
        raise InvalidRequest(
            [
                (
                    "decision.holder_not_in_scope",
                    f"holder {holder_id!r} is not in scope of request {request_id}",
                )
            ]
        )
    user = _user_row(session, reviewer)
    if (
        user is None
        or user.disabled_at is not None
        or "steward" not in user.roles
        or holder_id not in user.holder_ids
    ):
        raise PermissionDenied(f"{reviewer!r} is not a steward of {holder_id!r}", code="decision.not_steward")
    if reviewer == row.applicant or reviewer in row.members:
        raise SelfDecision(
            f"{reviewer!r} applied for or works on request {request_id} and may not decide on it"
        )
    reviews = {r.holder_id: r for r in _round_reviews(session, row)}
    review = reviews[holder_id]
    if review.verdict != HolderVerdict.PENDING.value:
        raise InvalidTransition(
            f"holder {holder_id!r} has already decided ({review.verdict}) in this round",
            code="decision.holder_already_decided",
        )
    earlier = (
        session.execute(
            select(DecisionRow).where(
                DecisionRow.request_id == row.id,
                DecisionRow.holder_id == holder_id,
                DecisionRow.review_round == row.review_round,
            )
        )
        .scalars()
        .all()
    )
    if any(d.reviewer == reviewer for d in earlier):
        raise DuplicateDecision(
            f"{reviewer!r} has already decided for {holder_id!r} in this round; a second reviewer is needed"
        )
    session.add(
        DecisionRow(
            request_id=row.id,
            holder_id=holder_id,
            review_round=row.review_round,
            reviewer=reviewer,
            decision=decision,
            justification=justification.strip(),
            decided_at=now,
        )
    )
    verdict = holder_outcome(
        [ReviewDecision(d.reviewer, Decision(d.decision)) for d in earlier]
        + [ReviewDecision(reviewer, Decision(decision))],
        review.reviewers_required,
    )
    review.verdict = verdict.value
    if verdict is not HolderVerdict.PENDING:
        review.decided_at = now
    action = request_outcome({h: HolderVerdict(r.verdict) for h, r in reviews.items()})
    from_status = row.status
    row.status = next_status(row.status, action).value
    row.updated_at = now
    if action in (Action.APPROVE, Action.REJECT, Action.RETURN):
        row.decided_at = now
    _event(
        session,
        row,
        actor=reviewer,
        action="decide",
        from_status=from_status,
        now=now,
        holder_id=holder_id,
        decision=decision,
        holder_verdict=verdict.value,
        review_round=row.review_round,
    )
    if action is Action.APPROVE:
        if row.parent_id is None:
            _issue_permit(session, row, now)
        else:
            _apply_amendment(session, row, now)
    _flush(session)
    return row.status


def _issue_permit(session: Session, row: RequestRow, now: datetime) -> None:
    permit = PermitRow(
        request_id=row.id,
        release_id=None,
        manifest_sha256=None,
        users=sorted({row.applicant, *row.members}),
        variables=list(row.variables),
        holders=list(row.holders),
        purpose=row.purpose,
        output_tier=row.output_tier,
        issued_at=now,
        expires_at=now + timedelta(days=row.access_days),
    )
    session.add(permit)
    _flush(session)
    auditing.queue(
        session,
        event="governance.permit_issued",
        request_id=row.id,
        permit_id=permit.id,
        expires_at=permit.expires_at.isoformat(),
    )


def _permit_row(session: Session, request_id: int) -> PermitRow | None:
    return session.execute(
        select(PermitRow).where(PermitRow.request_id == request_id).execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _apply_amendment(session: Session, child: RequestRow, now: datetime) -> None:
    parent = _lock_request(session, child.parent_id)  # type: ignore[arg-type]
    permit = _permit_row(session, parent.id)
    if (
        permit is None
        or Status(parent.status) not in (Status.APPROVED, Status.RELEASED)
        or permit.revoked_at is not None
        or permit.expires_at <= now
    ):
        raise InvalidTransition(
            f"request {parent.id}'s permit is no longer in force; reject amendment {child.id} or file a new request",
            code="amendment.parent_inactive",
        )
    permit.users = sorted({parent.applicant, *child.members})
    permit.expires_at = permit.issued_at + timedelta(days=child.access_days)
    parent.members = list(child.members)
    parent.access_days = child.access_days
    parent.updated_at = now
    _event(
        session,
        parent,
        actor="workflow",
        action="amendment_applied",
        from_status=parent.status,
        now=now,
        amendment_request_id=child.id,
        expires_at=permit.expires_at.isoformat(),
        users=len(permit.users),
    )


def amend_request(
    session: Session,
    *,
    request_id: int,
    actor: str,
    changes: Mapping[str, Any],
    reason: str,
    now: datetime | None = None,
) -> int:
    """Change a submitted request through a logged amendment; returns the id that carries it.

    * In review (submitted / under review): the request itself changes, the change is logged and
      the review restarts in a new round (every holder decides again).
    * Approved / released: a new child request (members or access_days only: new member,
      extension) goes through the same workflow; on approval it updates the permit.
    """
    now = _now(now)
    if len((reason or "").strip()) < MIN_JUSTIFICATION:
        raise InvalidRequest(
            [("amendment.reason", f"an amendment needs a reason (at least {MIN_JUSTIFICATION} characters)")]
        )
    reason, problem = free_text.check(
        reason, code="amendment.reason", label="amendment reason", multiline=True
    )
    if problem:
        raise InvalidRequest([problem])
    if not changes:
        raise InvalidRequest([("amendment.empty", "an amendment must change at least one field")])
    _check_field_names(changes, REQUEST_FIELDS)
    row = _lock_request(session, request_id)
    if actor != row.applicant:
        raise PermissionDenied(f"only the applicant may amend request {request_id}")
    if row.parent_id is not None:
        raise InvalidRequest([("amendment.of_amendment", "amend the original request, not an amendment")])
    from_status = row.status
    target = next_status(row.status, Action.AMEND)
    if Status(from_status) not in IN_REVIEW and (not_allowed := sorted(set(changes) - PERMIT_AMENDABLE)):
        raise InvalidRequest(
            [
                (
                    "amendment.field",
                    f"a permit can be amended only in {sorted(PERMIT_AMENDABLE)}; {not_allowed} needs a new request",
                )
            ]
        )
    clean = _clean_fields(session, row.applicant, {**_row_fields(row), **changes}, now)
    if Status(from_status) in IN_REVIEW:
        for k, v in clean.items():
            setattr(row, k, v)
        row.status = target.value
        row.updated_at = now
        _open_round(session, row, now)
        _event(
            session,
            row,
            actor=actor,
            action="amend",
            from_status=from_status,
            now=now,
            fields=sorted(changes),
            reason=reason.strip(),
            review_round=row.review_round,
        )
        _flush(session)
        return row.id
    permit = _permit_row(session, row.id)
    if permit is None or permit.revoked_at is not None or permit.expires_at <= now:
        raise InvalidTransition(
            f"request {request_id}'s permit is no longer in force", code="amendment.parent_inactive"
        )
    child = RequestRow(
        applicant=row.applicant,
        status=Status.DRAFT.value,
        review_round=0,
        parent_id=row.id,
        amendment={"fields": sorted(changes), "reason": reason.strip()},
        created_at=now,
        updated_at=now,
        **clean,
    )
    session.add(child)
    _flush(session)
    _event(
        session,
        child,
        actor=actor,
        action="file_amendment",
        from_status=None,
        now=now,
        parent_id=row.id,
        fields=sorted(changes),
    )
    _event(
        session,
        row,
        actor=actor,
        action="amend",
        from_status=from_status,
        now=now,
        amendment_request_id=child.id,
        fields=sorted(changes),
        reason=reason.strip(),
    )
    _flush(session)
    return child.id


# --------------------------------------------------------------------------- views


def _request_view(session: Session, row: RequestRow) -> RequestView:
    reviews = session.execute(
        select(HolderReviewRow)
        .where(HolderReviewRow.request_id == row.id)
        .order_by(HolderReviewRow.review_round, HolderReviewRow.holder_id)
    ).scalars()
    decisions = session.execute(
        select(DecisionRow).where(DecisionRow.request_id == row.id).order_by(DecisionRow.id)
    ).scalars()
    return RequestView(
        id=row.id,
        status=row.status,
        applicant=row.applicant,
        members=tuple(row.members),
        project=row.project,
        purpose=row.purpose,
        legal_basis=row.legal_basis,
        ethics_ref=row.ethics_ref,
        variables=tuple(row.variables),
        holders=tuple(row.holders),
        cohort_criteria=dict(row.cohort_criteria),
        period=(row.period_start, row.period_end),
        data_form=row.data_form,
        pseudonymisation_justification=row.pseudonymisation_justification,
        output_tier=row.output_tier,
        access_days=row.access_days,
        review_round=row.review_round,
        parent_id=row.parent_id,
        amendment=row.amendment,
        created_at=row.created_at,
        submitted_at=row.submitted_at,
        decided_at=row.decided_at,
        released_at=row.released_at,
        reviews=tuple(
            HolderReview(
                r.holder_id,
                r.review_round,
                r.reviewers_required,
                r.verdict,
                r.opened_at,
                r.due_at,
                r.decided_at,
            )
            for r in reviews
        ),
        decisions=tuple(
            DecisionView(d.holder_id, d.reviewer, d.decision, d.justification, d.decided_at, d.review_round)
            for d in decisions
        ),
    )


def get_request(session: Session, *, request_id: int) -> RequestView:
    row = session.get(RequestRow, request_id, populate_existing=True)
    if row is None:
        raise NotFound(f"request {request_id} does not exist", code="request.not_found")
    return _request_view(session, row)


def list_requests(
    session: Session,
    *,
    status: str | None = None,
    applicant: str | None = None,
    holder_id: str | None = None,
    user_name: str | None = None,
) -> list[RequestView]:
    """Requests, newest first, filtered by status / applicant / holder in scope / user involved."""
    q = select(RequestRow).order_by(RequestRow.id.desc())
    if status is not None:
        q = q.where(RequestRow.status == Status(status).value)
    if applicant is not None:
        q = q.where(RequestRow.applicant == applicant)
    rows = session.execute(q).scalars().all()
    if holder_id is not None:
        rows = [r for r in rows if holder_id in r.holders]
    if user_name is not None:
        rows = [r for r in rows if user_name == r.applicant or user_name in r.members]
    return [_request_view(session, r) for r in rows]


def request_history(session: Session, *, request_id: int) -> list[dict[str, Any]]:
    rows = session.execute(
        select(RequestEventRow).where(RequestEventRow.request_id == request_id).order_by(RequestEventRow.id)
    ).scalars()
    return [
        {
            "at": r.at.isoformat(),
            "actor": r.actor,
            "action": r.action,
            "from_status": r.from_status,
            "to_status": r.to_status,
            "detail": dict(r.detail),
        }
        for r in rows
    ]


# --------------------------------------------------------------------------- permits and releases


def _permit_status(p: PermitRow, at: datetime) -> str:
    if p.revoked_at is not None:
        return "revoked"
    if at >= p.expires_at:
        return "expired"
    return "active" if p.release_id is not None else "approved"


def _permit_value(p: PermitRow, at: datetime | None = None, project: str = "") -> Permit:
    return Permit(
        id=p.id,
        request_id=p.request_id,
        release_id=p.release_id,
        users=frozenset(p.users),
        variables=frozenset(p.variables),
        holders=tuple(p.holders),
        purpose=p.purpose,
        output_tier=p.output_tier,
        expires_at=p.expires_at,
        issued_at=p.issued_at,
        released_at=p.released_at,
        revoked_at=p.revoked_at,
        status=_permit_status(p, at or datetime.now(UTC)),
        project=project,
    )


def requests_ready_for_release(session: Session, *, at: datetime | None = None) -> list[ApprovedRequest]:
    """Approved by every holder in scope, permit in force at ``at`` (default now), no release yet."""
    now = _now(at)
    rows = session.execute(
        select(RequestRow, PermitRow)
        .join(PermitRow, PermitRow.request_id == RequestRow.id)
        .where(
            RequestRow.status == Status.APPROVED.value,
            RequestRow.parent_id.is_(None),
            PermitRow.release_id.is_(None),
            PermitRow.revoked_at.is_(None),
        )
        .order_by(RequestRow.id)
    ).all()
    out = []
    for req, permit in rows:
        if permit.expires_at <= now:
            continue
        approvals = session.execute(
            select(DecisionRow)
            .where(
                DecisionRow.request_id == req.id,
                DecisionRow.review_round == req.review_round,
                DecisionRow.decision == Decision.APPROVE.value,
            )
            .order_by(DecisionRow.id)
        ).scalars()
        out.append(
            ApprovedRequest(
                request_id=req.id,
                project=req.project,
                purpose=req.purpose,
                holders=tuple(req.holders),
                variables=tuple(req.variables),
                output_tier=req.output_tier,
                approvals=tuple(
                    {
                        "holder_id": d.holder_id,
                        "reviewer": d.reviewer,
                        "decided_at": d.decided_at.isoformat(),
                        "justification": d.justification,
                    }
                    for d in approvals
                ),
                period=(req.period_start, req.period_end),
                data_form=req.data_form,
                cohort_criteria=dict(req.cohort_criteria),
                users=frozenset(permit.users),
            )
        )
    return out


RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def record_release(
    session: Session, *, request_id: int, release_id: str, manifest_sha256: str, now: datetime | None = None
) -> Permit:
    """Bind the built release to the request's permit (exactly once); the permit now grants access."""
    now = _now(now)
    problems = []
    if not RELEASE_ID.match(release_id or ""):
        problems.append(("release.bad_id", "release id must be 1-128 chars of A-Z a-z 0-9 . _ -"))
    if not SHA256_HEX.match(manifest_sha256 or ""):
        problems.append(("release.bad_sha256", "manifest_sha256 must be 64 lower-case hex digits"))
    if problems:
        raise InvalidRequest(problems)
    row = _lock_request(session, request_id)
    permit = _permit_row(session, request_id)
    if permit is not None and permit.release_id is not None:
        raise AlreadyReleased(f"request {request_id} already has release {permit.release_id}")
    if row.parent_id is not None:
        raise InvalidTransition(
            f"request {request_id} is an amendment; it has no release of its own", code="release.amendment"
        )
    from_status = row.status
    row.status = next_status(row.status, Action.RELEASE).value
    assert permit is not None  # approved requests always have one (issued in the same transaction)
    if permit.revoked_at is not None or permit.expires_at <= now:
        raise InvalidTransition(
            f"request {request_id}'s permit is no longer in force", code="release.permit_inactive"
        )
    taken = session.execute(select(PermitRow.id).where(PermitRow.release_id == release_id)).first()
    if taken is not None:
        raise AlreadyReleased(f"release id {release_id!r} is already bound to another permit")
    permit.release_id, permit.manifest_sha256, permit.released_at = release_id, manifest_sha256, now
    row.released_at = now
    row.updated_at = now
    _event(
        session,
        row,
        actor="release",
        action="release",
        from_status=from_status,
        now=now,
        release_id=release_id,
        manifest_sha256=manifest_sha256,
    )
    _flush(session)
    return _permit_value(permit, now, row.project)


def _project(session: Session, request_id: int) -> str:
    return session.execute(select(RequestRow.project).where(RequestRow.id == request_id)).scalar_one()


def active_permit(session: Session, *, user_name: str, release_id: str, at: datetime) -> Permit | None:
    """The permit letting ``user_name`` use ``release_id`` at ``at``, or None (fails closed)."""
    p = session.execute(
        select(PermitRow).where(PermitRow.release_id == release_id).execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if p is None or user_name not in p.users:
        return None
    value = _permit_value(p, at, _project(session, p.request_id))
    if not value.is_active(at) or not has_role(session, user_name, "researcher"):
        return None
    return value


def releases_for_user(session: Session, *, user_name: str, at: datetime) -> list[Permit]:
    if not has_role(session, user_name, "researcher"):
        return []
    rows = session.execute(
        select(PermitRow, RequestRow.project)
        .join(RequestRow, RequestRow.id == PermitRow.request_id)
        .where(PermitRow.release_id.is_not(None), PermitRow.revoked_at.is_(None))
        .order_by(PermitRow.id)
    ).all()
    return [
        v
        for p, project in rows
        if user_name in p.users and (v := _permit_value(p, at, project)).is_active(at)
    ]


def permit_for_request(session: Session, *, request_id: int, at: datetime | None = None) -> Permit | None:
    p = _permit_row(session, request_id)
    return None if p is None else _permit_value(p, at, _project(session, request_id))


def revoke_permit(
    session: Session, *, request_id: int, actor: str, justification: str, now: datetime | None = None
) -> Permit:
    """Revoke at once (a steward of a holder in scope, or an admin); the release is due for deletion."""
    now = _now(now)
    if len((justification or "").strip()) < MIN_JUSTIFICATION:
        raise InvalidRequest(
            [
                (
                    "revoke.justification",
                    f"revocation needs a justification (at least {MIN_JUSTIFICATION} characters)",
                )
            ]
        )
    justification, problem = free_text.check(
        justification, code="revoke.justification", label="justification", multiline=True
    )
    if problem:
        raise InvalidRequest([problem])
    row = _lock_request(session, request_id)
    user = _user_row(session, actor)
    allowed = (
        user is not None
        and user.disabled_at is None
        and ("admin" in user.roles or ("steward" in user.roles and set(user.holder_ids) & set(row.holders)))
    )
    if not allowed:
        raise PermissionDenied(
            f"{actor!r} may not revoke request {request_id}: needs admin or a steward of one of its holders"
        )
    from_status = row.status
    row.status = next_status(row.status, Action.REVOKE).value
    permit = _permit_row(session, request_id)
    assert permit is not None
    permit.revoked_at = permit.ended_at = now
    permit.deletion_due_at = now
    row.updated_at = now
    _event(
        session,
        row,
        actor=actor,
        action="revoke",
        from_status=from_status,
        now=now,
        justification=justification.strip(),
        release_id=permit.release_id,
    )
    _flush(session)
    return _permit_value(permit, now, row.project)


def expire_permits(session: Session, *, at: datetime | None = None) -> list[int]:
    """Mark permits past their expiry as expired (access already stops at ``expires_at``)."""
    at = _now(at)
    due = (
        session.execute(
            select(PermitRow.request_id)
            .join(RequestRow, RequestRow.id == PermitRow.request_id)
            .where(
                PermitRow.expires_at <= at,
                PermitRow.revoked_at.is_(None),
                RequestRow.status.in_([Status.APPROVED.value, Status.RELEASED.value]),
            )
            .order_by(PermitRow.request_id)
        )
        .scalars()
        .all()
    )
    expired = []
    for request_id in due:
        row = _lock_request(session, request_id)
        if Status(row.status) not in (Status.APPROVED, Status.RELEASED):
            continue  # changed while we waited for the lock
        permit = _permit_row(session, request_id)
        assert permit is not None
        from_status = row.status
        row.status = next_status(row.status, Action.EXPIRE).value
        permit.ended_at = permit.expires_at
        permit.deletion_due_at = permit.expires_at
        row.updated_at = at
        _event(
            session,
            row,
            actor="scheduler",
            action="expire",
            from_status=from_status,
            now=at,
            release_id=permit.release_id,
        )
        expired.append(request_id)
    _flush(session)
    return expired


def releases_due_for_deletion(session: Session, *, at: datetime) -> list[Permit]:
    """Released permits that ended (revoked or expired by ``at``) and whose release is not deleted yet."""
    rows = session.execute(
        select(PermitRow)
        .where(PermitRow.release_id.is_not(None), PermitRow.deleted_at.is_(None))
        .order_by(PermitRow.id)
    ).scalars()
    return [_permit_value(p, at) for p in rows if p.revoked_at is not None or p.expires_at <= at]


def mark_release_deleted(session: Session, *, release_id: str, now: datetime | None = None) -> None:
    now = _now(now)
    p = session.execute(
        select(PermitRow).where(PermitRow.release_id == release_id).with_for_update()
    ).scalar_one_or_none()
    if p is None:
        raise NotFound(f"no permit has release {release_id!r}", code="release.not_found")
    if p.revoked_at is None and p.expires_at > now:
        raise InvalidTransition(
            f"release {release_id!r} is still in force; revoke it first", code="release.in_force"
        )
    p.deleted_at = p.deleted_at or now
    auditing.queue(
        session, event="governance.release_deleted", release_id=release_id, request_id=p.request_id
    )
    _flush(session)


# --------------------------------------------------------------------------- output requests (the airlock)
#
# EHDS art. 73: a record-level result that is to leave the secure processing environment is
# filed here as an output request (the file itself stays in the restricted area of the access
# layer; only its facts are stored) and leaves only after two output checkers approve. The
# rules are the pure state machine in ``governance.outputs``; these functions load, lock,
# apply and persist. Free text (context, comments, justifications) stays in the store; the
# audit log gets ids, decisions and counts.

from dataclasses import replace as _replace  # noqa: E402  (kept with the functions that use it)

from governance import outputs as _out  # noqa: E402
from governance.models import OutputCheckRow, OutputExceptionRow, OutputRequestRow  # noqa: E402

_OUTPUT_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _party(session: Session, name: str) -> _out.Party | None:
    row = _user_row(session, name)
    if row is None or row.disabled_at is not None:
        return None
    return _out.Party(row.name, frozenset(row.roles), frozenset(row.holder_ids))


def _permit_by_id(session: Session, permit_id: int) -> PermitRow:
    p = session.get(PermitRow, permit_id, populate_existing=True)
    if p is None:
        raise NotFound(f"permit {permit_id} does not exist", code="permit.not_found")
    return p


def _exception_value(row: OutputExceptionRow) -> _out.OutputException:
    return _out.OutputException(
        id=row.id,
        permit_id=row.permit_id,
        steward=row.steward,
        holder_id=row.holder_id,
        justification=row.justification,
        recorded_at=row.recorded_at,
        withdrawn_at=row.withdrawn_at,
        withdrawn_by=row.withdrawn_by,
    )


def output_exceptions(session: Session, *, permit_id: int) -> list[_out.OutputException]:
    """Every row-level exception ever recorded on the permit, oldest first (withdrawn ones too)."""
    rows = session.execute(
        select(OutputExceptionRow)
        .where(OutputExceptionRow.permit_id == permit_id)
        .order_by(OutputExceptionRow.id)
    ).scalars()
    return [_exception_value(r) for r in rows]


def output_exception(
    session: Session, *, permit_id: int, at: datetime | None = None
) -> _out.OutputException | None:
    """The latest row-level exception in force on the permit at ``at``, or None."""
    at = _now(at)
    live = [e for e in output_exceptions(session, permit_id=permit_id) if e.in_force(at)]
    return live[-1] if live else None


def record_output_exception(
    session: Session,
    *,
    permit_id: int,
    steward: str,
    justification: str,
    holder_id: str | None = None,
    now: datetime | None = None,
) -> _out.OutputException:
    """A steward of a holder in the permit's scope records why row-level outputs of this permit's
    pseudonymised data may be requested (each is still checked by two output checkers)."""
    now = _now(now)
    text = _out.clean_text(justification, field="justification", minimum=_out.MIN_EXCEPTION_JUSTIFICATION)
    permit = _permit_by_id(session, permit_id)
    who = _party(session, steward)
    if who is None:
        raise PermissionDenied(f"{steward!r} is not an active user", code="exception.not_steward")
    if holder_id is None:
        mine = sorted(who.holder_ids & set(permit.holders))
        holder_id = mine[0] if mine else ""
    refusal = _out.exception_refusal(
        who, holder_id=holder_id, permit_users=permit.users, permit_holders=permit.holders
    )
    if refusal is not None:
        raise refusal
    if not _permit_value(permit, now).is_active(now):
        raise InvalidTransition(f"permit {permit_id} is not in force", code="exception.permit_inactive")
    row = OutputExceptionRow(
        permit_id=permit_id, holder_id=holder_id, steward=steward, justification=text, recorded_at=now
    )
    session.add(row)
    _flush(session)
    auditing.queue(
        session,
        event="governance.output_exception.recorded",
        exception_id=row.id,
        permit_id=permit_id,
        holder_id=holder_id,
        actor=steward,
    )
    return _exception_value(row)


def withdraw_output_exception(
    session: Session, *, exception_id: int, actor: str, now: datetime | None = None
) -> _out.OutputException:
    """End an exception at once (a steward of a holder in scope): no new row-level output request
    under it, and no download of a row-level output filed under it."""
    now = _now(now)
    row = session.get(OutputExceptionRow, exception_id, populate_existing=True)
    if row is None:
        raise NotFound(f"exception {exception_id} does not exist", code="exception.not_found")
    permit = _permit_by_id(session, row.permit_id)
    who = _party(session, actor)
    mine = sorted(who.holder_ids & set(permit.holders)) if who else []
    refusal = (
        _out.exception_refusal(
            who, holder_id=mine[0], permit_users=permit.users, permit_holders=permit.holders
        )
        if who and mine
        else PermissionDenied(
            f"{actor!r} is not a steward of a holder in the permit", code="exception.not_steward"
        )
    )
    if refusal is not None:
        raise refusal
    if row.withdrawn_at is None:
        row.withdrawn_at, row.withdrawn_by = now, actor
        _flush(session)
        auditing.queue(
            session,
            event="governance.output_exception.withdrawn",
            exception_id=row.id,
            permit_id=row.permit_id,
            actor=actor,
        )
    return _exception_value(row)


def _output_value(session: Session, row: OutputRequestRow) -> _out.OutputRequest:
    checks = session.execute(
        select(OutputCheckRow).where(OutputCheckRow.output_id == row.id).order_by(OutputCheckRow.id)
    ).scalars()
    return _out.OutputRequest(
        id=row.id,
        permit_id=row.permit_id,
        release_id=row.release_id,
        requester=row.requester,
        status=row.status,
        round=row.review_round,
        title=row.title,
        context=row.context,
        query_masked=row.query_masked,
        query_sha256=row.query_sha256,
        format=row.format,
        file_name=row.file_name,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        rows=row.rows,
        columns=tuple(row.columns),
        row_level=bool(row.row_level),
        row_level_reasons=tuple(row.row_level_reasons),
        exception_id=row.exception_id,
        consent_sha256=row.consent_sha256,
        created_at=row.created_at,
        updated_at=row.updated_at,
        decided_at=row.decided_at,
        downloads=row.downloads,
        checks=tuple(
            _out.OutputCheck(c.checker, c.decision, c.comment, c.review_round, c.decided_at) for c in checks
        ),
    )


def _lock_output(session: Session, output_id: int) -> OutputRequestRow:
    row = session.execute(
        select(OutputRequestRow)
        .where(OutputRequestRow.id == output_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"output {output_id} does not exist", code="output.not_found")
    return row


def _file_facts(
    file_name: str, sha256: str, size_bytes: int, rows: int, columns: Iterable[str], fmt: str
) -> list[tuple[str, str]]:
    problems = []
    if not _OUTPUT_FILE.match(file_name or "") or ".." in file_name:
        problems.append(("output.file_name", "file name must be a plain name (A-Z a-z 0-9 . _ -)"))
    if not SHA256_HEX.match(sha256 or ""):
        problems.append(("output.sha256", "sha256 must be 64 lower-case hex digits"))
    if fmt not in _out.FORMATS:
        problems.append(("output.format", f"format must be one of {_out.FORMATS}"))
    if size_bytes < 0 or rows < 0 or not list(columns):
        problems.append(("output.file", "an output has a size, a row count and at least one column"))
    return problems


def file_output_request(
    session: Session,
    *,
    permit_id: int,
    requester: str,
    title: str,
    context: str,
    query_masked: str,
    query_sha256: str,
    format: str,
    file_name: str,
    sha256: str,
    size_bytes: int,
    rows: int,  # noqa: A002
    columns: Iterable[str],
    row_level: bool,
    row_level_reasons: Iterable[str] = (),
    consent_sha256: str = "0" * 64,
    now: datetime | None = None,
) -> _out.OutputRequest:
    """File an output request for checking. The requester must hold the (active) permit; a
    row-level output needs a steward's exception in force on the permit."""
    now = _now(now)
    problems = _file_facts(file_name, sha256, size_bytes, rows, columns, format)
    try:
        clean_title = _out.clean_text(title, field="title", minimum=3, maximum=200, multiline=False)
    except InvalidRequest as exc:
        problems += list(exc.problems)
        clean_title = ""
    try:
        clean_context = _out.clean_text(context, field="context", minimum=_out.MIN_CONTEXT)
    except InvalidRequest as exc:
        problems += list(exc.problems)
        clean_context = ""
    if problems:
        raise InvalidRequest(problems)
    permit = _permit_by_id(session, permit_id)
    if requester not in permit.users or not has_role(session, requester, "researcher"):
        raise PermissionDenied(f"{requester!r} holds no permit {permit_id}", code="output.not_on_permit")
    if not _permit_value(permit, now).is_active(now):
        raise InvalidTransition(f"permit {permit_id} is not in force", code="output.permit_inactive")
    exception = output_exception(session, permit_id=permit_id, at=now) if row_level else None
    if row_level and exception is None:
        raise PermissionDenied(
            "a row-level output of pseudonymised data may leave only under an exception that a steward of a "
            "holder in the permit has recorded; aggregate the result, or ask a steward",
            code="output.row_level_needs_exception",
        )
    row = OutputRequestRow(
        permit_id=permit_id,
        release_id=permit.release_id or "",
        requester=requester,
        status=_out.OutputStatus.SUBMITTED.value,
        review_round=1,
        title=clean_title,
        context=clean_context,
        query_masked=query_masked,
        query_sha256=query_sha256,
        format=format,
        file_name=file_name,
        sha256=sha256,
        size_bytes=size_bytes,
        rows=rows,
        columns=list(columns),
        row_level=bool(row_level),
        row_level_reasons=list(row_level_reasons),
        exception_id=exception.id if exception else None,
        consent_sha256=consent_sha256,
        created_at=now,
        updated_at=now,
        decided_at=None,
        downloads=0,
    )
    session.add(row)
    _flush(session)
    auditing.queue(
        session,
        event="governance.output.filed",
        output_id=row.id,
        permit_id=permit_id,
        release_id=row.release_id,
        actor=requester,
        format=format,
        rows=rows,
        sha256=sha256,
        row_level=bool(row_level),
        exception_id=row.exception_id,
        query_sha256=query_sha256,
    )
    return _output_value(session, row)


def get_output_request(session: Session, *, output_id: int) -> _out.OutputRequest:
    row = session.get(OutputRequestRow, output_id, populate_existing=True)
    if row is None:
        raise NotFound(f"output {output_id} does not exist", code="output.not_found")
    return _output_value(session, row)


def list_output_requests(
    session: Session, *, requester: str | None = None, permit_id: int | None = None, status: str | None = None
) -> list[_out.OutputRequest]:
    """Output requests, newest first, filtered by requester / permit / status."""
    q = select(OutputRequestRow).order_by(OutputRequestRow.id.desc())
    if requester is not None:
        q = q.where(OutputRequestRow.requester == requester)
    if permit_id is not None:
        q = q.where(OutputRequestRow.permit_id == permit_id)
    if status is not None:
        q = q.where(OutputRequestRow.status == _out.OutputStatus(status).value)
    return [_output_value(session, r) for r in session.execute(q).scalars().all()]


def output_permit_scope(session: Session, *, permit_id: int) -> tuple[frozenset[str], frozenset[str]]:
    """(users, holders) of the permit: who may not check its outputs, whose stewards may."""
    p = _permit_by_id(session, permit_id)
    return frozenset(p.users), frozenset(p.holders)


def outputs_for_checker(session: Session, *, checker: str) -> list[_out.OutputRequest]:
    """Every output ``checker`` may check (any state), newest first; none for an unknown user."""
    who = _party(session, checker)
    if who is None:
        return []
    out = []
    for o in list_output_requests(session):
        users, holders = output_permit_scope(session, permit_id=o.permit_id)
        if _out.check_refusal(who, requester=o.requester, permit_users=users, permit_holders=holders) is None:
            out.append(o)
    return out


def output_check_queue(session: Session, *, checker: str) -> list[_out.OutputRequest]:
    """Outputs awaiting ``checker``'s check in their current round, oldest first."""
    who = _party(session, checker)
    if who is None:
        return []
    return sorted(
        (
            o
            for o in outputs_for_checker(session, checker=checker)
            if _out.OutputStatus(o.status) in _out.IN_CHECK
            and all(c.checker != checker for c in o.current_checks)
        ),
        key=lambda o: o.id,
    )


def _persist_output(session: Session, row: OutputRequestRow, value: _out.OutputRequest) -> None:
    row.status, row.review_round, row.context = value.status, value.round, value.context
    row.updated_at, row.decided_at = value.updated_at, value.decided_at
    for f in (
        "query_masked",
        "query_sha256",
        "format",
        "file_name",
        "sha256",
        "size_bytes",
        "rows",
        "row_level",
        "consent_sha256",
        "exception_id",
    ):
        setattr(row, f, getattr(value, f))
    row.columns, row.row_level_reasons = list(value.columns), list(value.row_level_reasons)


def check_output(
    session: Session,
    *,
    output_id: int,
    checker: str,
    decision: str,
    comment: str,
    now: datetime | None = None,
) -> _out.OutputRequest:
    """Record one output checker's decision; the output is approved when two distinct checkers
    approved in this round, rejected or returned at once on one objection."""
    now = _now(now)
    row = _lock_output(session, output_id)
    who = _party(session, checker) or _out.Party(checker, frozenset())
    users, holders = output_permit_scope(session, permit_id=row.permit_id)
    before = _output_value(session, row)
    after = _out.decide(before, who, decision, comment, permit_users=users, permit_holders=holders, at=now)
    new = after.checks[-1]
    session.add(
        OutputCheckRow(
            output_id=row.id,
            review_round=new.round,
            checker=new.checker,
            decision=new.decision,
            comment=new.comment,
            decided_at=now,
        )
    )
    _persist_output(session, row, after)
    _flush(session)
    auditing.queue(
        session,
        event="governance.output.checked",
        output_id=row.id,
        permit_id=row.permit_id,
        actor=checker,
        decision=new.decision,
        round=new.round,
        from_status=before.status,
        to_status=after.status,
        approvals=len(after.approvers),
    )
    return _output_value(session, row)


def resubmit_output_request(
    session: Session,
    *,
    output_id: int,
    actor: str,
    context: str,
    replacement: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> _out.OutputRequest:
    """Answer a return: new context and optionally a new file (``replacement``: query_masked,
    query_sha256, format, file_name, sha256, size_bytes, rows, columns, row_level,
    row_level_reasons, consent_sha256). A new round starts; earlier approvals no longer count."""
    now = _now(now)
    row = _lock_output(session, output_id)
    repl = dict(replacement or {})
    if repl:
        allowed = {
            "query_masked",
            "query_sha256",
            "format",
            "file_name",
            "sha256",
            "size_bytes",
            "rows",
            "columns",
            "row_level",
            "row_level_reasons",
            "consent_sha256",
        }
        if unknown := sorted(set(repl) - allowed):
            raise InvalidRequest([("output.unknown_field", f"cannot replace {unknown}")])
        if problems := _file_facts(
            repl["file_name"],
            repl["sha256"],
            repl["size_bytes"],
            repl["rows"],
            repl["columns"],
            repl["format"],
        ):
            raise InvalidRequest(problems)
        repl["columns"] = tuple(repl["columns"])
        repl["row_level_reasons"] = tuple(repl.get("row_level_reasons", ()))
    before = _output_value(session, row)
    after = _out.resubmit(before, actor, context, at=now, **repl)
    permit = _permit_by_id(session, row.permit_id)
    if not _permit_value(permit, now).is_active(now):
        raise InvalidTransition(f"permit {row.permit_id} is not in force", code="output.permit_inactive")
    if after.row_level:
        exception = output_exception(session, permit_id=row.permit_id, at=now)
        if exception is None:
            raise PermissionDenied(
                "a row-level output needs a steward's exception in force on the permit",
                code="output.row_level_needs_exception",
            )
        after = _replace(after, exception_id=exception.id)
    _persist_output(session, row, after)
    _flush(session)
    auditing.queue(
        session,
        event="governance.output.resubmitted",
        output_id=row.id,
        permit_id=row.permit_id,
        actor=actor,
        round=after.round,
        new_file=bool(repl),
        sha256=after.sha256,
    )
    return _output_value(session, row)


def withdraw_output_request(
    session: Session, *, output_id: int, actor: str, now: datetime | None = None
) -> _out.OutputRequest:
    now = _now(now)
    row = _lock_output(session, output_id)
    after = _out.withdraw(_output_value(session, row), actor, at=now)
    _persist_output(session, row, after)
    _flush(session)
    auditing.queue(
        session, event="governance.output.withdrawn", output_id=row.id, permit_id=row.permit_id, actor=actor
    )
    return _output_value(session, row)


def record_output_download(
    session: Session, *, output_id: int, actor: str, sha256: str, now: datetime | None = None
) -> _out.OutputRequest:
    """Allow and record one download: by the requester, of an output two checkers approved,
    while the permit is in force (and, for a row-level output, its exception too), of a file
    whose SHA-256 (computed by the caller from the stored file) is the one filed and checked."""
    now = _now(now)
    row = _lock_output(session, output_id)
    value = _output_value(session, row)
    refusal = _out.download_refusal(value, actor)
    if refusal is not None:
        raise refusal
    permit = _permit_by_id(session, row.permit_id)
    if (
        not _permit_value(permit, now).is_active(now)
        or not has_role(session, actor, "researcher")
        or actor not in permit.users
    ):
        raise PermissionDenied(
            f"permit {row.permit_id} is not in force for {actor!r}", code="output.permit_inactive"
        )
    if value.row_level and output_exception(session, permit_id=row.permit_id, at=now) is None:
        raise PermissionDenied(
            "the steward's exception for row-level outputs on this permit is no longer in force",
            code="output.exception_withdrawn",
        )
    if not hmac.compare_digest(sha256 or "", row.sha256):
        raise InvalidTransition(
            "the stored file is not the file that was checked (SHA-256 differs)", code="output.integrity"
        )
    row.downloads += 1
    _flush(session)
    auditing.queue(
        session,
        event="governance.output.downloaded",
        output_id=row.id,
        permit_id=row.permit_id,
        actor=actor,
        sha256=row.sha256,
        downloads=row.downloads,
    )
    return _output_value(session, row)
