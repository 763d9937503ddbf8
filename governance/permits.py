"""Permits: issued when every holder approves, bound to a release, in force until they expire
or are revoked; the access layer asks for the permit in force at every query.

A permit grants access only once a release is bound to it (``governance.releases``) and only
to the users, variables and purpose of the request; it fails closed (:meth:`Permit.is_active`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from governance import auditing
from governance.errors import InvalidRequest, InvalidTransition, NotFound, PermissionDenied
from governance.history import record_event
from governance.models import PermitRow, RequestRow
from governance.request_fields import check_justification
from governance.transactions import aware_now, flush, lock_request
from governance.users import has_role, user_row
from governance.values import Permit, PermitOverlap
from governance.workflow import Action, Status, next_status

#: Statuses of a permit in force: approved (no release yet) and active (bound to its release).
IN_FORCE = frozenset({"approved", "active"})


def permit_status(p: PermitRow, at: datetime) -> str:
    """revoked, expired (at ``at``), active (bound to a release) or approved (not yet released)."""
    if p.revoked_at is not None:
        return "revoked"
    if at >= p.expires_at:
        return "expired"
    return "active" if p.release_id is not None else "approved"


def permit_value(p: PermitRow, at: datetime | None = None, project: str = "") -> Permit:
    """The permit as a value, its status as of ``at`` (default now)."""
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
        status=permit_status(p, at or datetime.now(UTC)),
        project=project,
    )


def permit_row(session: Session, request_id: int) -> PermitRow | None:
    """The request's permit row, re-read from the database (None before approval)."""
    return session.execute(
        select(PermitRow).where(PermitRow.request_id == request_id).execution_options(populate_existing=True)
    ).scalar_one_or_none()


def permit_by_id(session: Session, permit_id: int) -> PermitRow:
    """The permit row with this id, re-read from the database, or NotFound."""
    p = session.get(PermitRow, permit_id, populate_existing=True)
    if p is None:
        raise NotFound(f"permit {permit_id} does not exist", code="permit.not_found")
    return p


def issue_permit(session: Session, row: RequestRow, now: datetime) -> None:
    """Issue the permit of a request every holder approved (not yet bound to a release)."""
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
    flush(session)
    auditing.queue(
        session,
        event="governance.permit_issued",
        request_id=row.id,
        permit_id=permit.id,
        expires_at=permit.expires_at.isoformat(),
    )


def apply_amendment(session: Session, child: RequestRow, *, parent_id: int, now: datetime) -> None:
    """Carry an approved amendment (members, access days) over to its parent request and permit."""
    parent = lock_request(session, parent_id)
    permit = permit_row(session, parent.id)
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
    record_event(
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


def _project(session: Session, request_id: int) -> str:
    return session.execute(select(RequestRow.project).where(RequestRow.id == request_id)).scalar_one()


def active_permit(session: Session, *, user_name: str, release_id: str, at: datetime) -> Permit | None:
    """The permit letting ``user_name`` use ``release_id`` at ``at``, or None (fails closed)."""
    p = session.execute(
        select(PermitRow).where(PermitRow.release_id == release_id).execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if p is None or user_name not in p.users:
        return None
    value = permit_value(p, at, _project(session, p.request_id))
    if not value.is_active(at) or not has_role(session, user_name, "researcher"):
        return None
    return value


def releases_for_user(session: Session, *, user_name: str, at: datetime) -> list[Permit]:
    """The permits in force at ``at`` that let ``user_name`` (an active researcher) use a release."""
    if not has_role(session, user_name, "researcher"):
        return []
    rows = session.execute(
        select(PermitRow, RequestRow.project)
        .join(RequestRow, RequestRow.id == PermitRow.request_id)
        .where(PermitRow.release_id.is_not(None), PermitRow.revoked_at.is_(None))
        .order_by(PermitRow.id)
    ).all()
    return [
        v for p, project in rows if user_name in p.users and (v := permit_value(p, at, project)).is_active(at)
    ]


def permit_for_request(session: Session, *, request_id: int, at: datetime | None = None) -> Permit | None:
    """The request's permit, in any state (None when it was never approved)."""
    p = permit_row(session, request_id)
    return None if p is None else permit_value(p, at, _project(session, request_id))


def overlapping_permits(
    session: Session, *, request_id: int, at: datetime | None = None
) -> list[PermitOverlap]:
    """The applicant's other permits in force at ``at`` that share a holder or a variable with
    the request, oldest first. Two extracts of one person about the same persons can be linked
    (a re-identification risk), so stewards see them before deciding.
    """
    at = at or datetime.now(UTC)
    row = session.get(RequestRow, request_id)
    if row is None:
        raise NotFound(f"request {request_id} does not exist", code="request.not_found")
    holders, variables = set(row.holders), set(row.variables)
    found = session.execute(
        select(PermitRow, RequestRow.project)
        .join(RequestRow, RequestRow.id == PermitRow.request_id)
        .where(PermitRow.request_id != request_id, PermitRow.revoked_at.is_(None), PermitRow.expires_at > at)
        .order_by(PermitRow.id)
    ).all()
    out = []
    for p, project in found:
        if row.applicant not in p.users:
            continue
        shared_h, shared_v = sorted(holders & set(p.holders)), sorted(variables & set(p.variables))
        if shared_h or shared_v:
            out.append(
                PermitOverlap(
                    permit_id=p.id,
                    request_id=p.request_id,
                    project=project,
                    status=permit_status(p, at),
                    expires_at=p.expires_at,
                    shared_holders=tuple(shared_h),
                    shared_variables=tuple(shared_v),
                )
            )
    return out


def revoke_permit(
    session: Session, *, request_id: int, actor: str, justification: str, now: datetime | None = None
) -> Permit:
    """Revoke at once (a steward of a holder in scope, or an admin); the release is due for deletion."""
    now = aware_now(now)
    justification, problem = check_justification(
        justification,
        code="revoke.justification",
        label="justification",
        too_short="revocation needs a justification",
    )
    if problem:
        raise InvalidRequest([problem])
    row = lock_request(session, request_id)
    user = user_row(session, actor)
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
    permit = permit_row(session, request_id)
    assert permit is not None
    permit.revoked_at = permit.ended_at = now
    permit.deletion_due_at = now
    row.updated_at = now
    record_event(
        session,
        row,
        actor=actor,
        action="revoke",
        from_status=from_status,
        now=now,
        justification=justification.strip(),
        release_id=permit.release_id,
    )
    flush(session)
    return permit_value(permit, now, row.project)


def expire_permits(session: Session, *, at: datetime | None = None) -> list[int]:
    """Mark permits past their expiry as expired (access already stops at ``expires_at``)."""
    at = aware_now(at)
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
        row = lock_request(session, request_id)
        if Status(row.status) not in (Status.APPROVED, Status.RELEASED):
            continue  # changed while we waited for the lock
        permit = permit_row(session, request_id)
        assert permit is not None
        from_status = row.status
        row.status = next_status(row.status, Action.EXPIRE).value
        permit.ended_at = permit.expires_at
        permit.deletion_due_at = permit.expires_at
        row.updated_at = at
        record_event(
            session,
            row,
            actor="scheduler",
            action="expire",
            from_status=from_status,
            now=at,
            release_id=permit.release_id,
        )
        expired.append(request_id)
    flush(session)
    return expired
