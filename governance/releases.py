"""The release builder's side of governance: which approved requests await a release, what
each release is built from (``ApprovedRequest``), binding a built release to its permit, and
the deletion of releases whose permit ended.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from governance import auditing
from governance.errors import AlreadyReleased, InvalidRequest, InvalidTransition, NotFound
from governance.history import record_event
from governance.models import DecisionRow, PermitRow, RequestRow
from governance.permits import permit_row, permit_value
from governance.transactions import aware_now, flush, lock_request
from governance.values import ApprovedRequest, Permit
from governance.workflow import Action, Decision, Status, next_status

RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def requests_ready_for_release(session: Session, *, at: datetime | None = None) -> list[ApprovedRequest]:
    """Approved by every holder in scope, permit in force at ``at`` (default now), no release yet."""
    now = aware_now(at)
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
    return [_approved_request(session, req, permit) for req, permit in rows if permit.expires_at > now]


def approved_request(session: Session, *, request_id: int) -> ApprovedRequest:
    """What the release of an approved request is built from, in any later state too (released,
    expired, revoked): to rebuild a release and compare it with the published one."""
    req = session.get(RequestRow, request_id, populate_existing=True)
    if req is None:
        raise NotFound(f"request {request_id} does not exist", code="request.not_found")
    permit = permit_row(session, request_id)
    if permit is None:
        raise InvalidTransition(
            f"request {request_id} is {req.status}: it was never approved, so nothing is released from it",
            code="release.not_approved",
        )
    return _approved_request(session, req, permit)


def _approved_request(session: Session, req: RequestRow, permit: PermitRow) -> ApprovedRequest:
    """The request with the approvals of the round that approved it and the permit's users."""
    approvals = session.execute(
        select(DecisionRow)
        .where(
            DecisionRow.request_id == req.id,
            DecisionRow.review_round == req.review_round,
            DecisionRow.decision == Decision.APPROVE.value,
        )
        .order_by(DecisionRow.id)
    ).scalars()
    return ApprovedRequest(
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


def record_release(
    session: Session, *, request_id: int, release_id: str, manifest_sha256: str, now: datetime | None = None
) -> Permit:
    """Bind the built release to the request's permit (exactly once); the permit now grants access."""
    now = aware_now(now)
    problems = []
    if not RELEASE_ID.match(release_id or ""):
        problems.append(("release.bad_id", "release id must be 1-128 chars of A-Z a-z 0-9 . _ -"))
    if not SHA256_HEX.match(manifest_sha256 or ""):
        problems.append(("release.bad_sha256", "manifest_sha256 must be 64 lower-case hex digits"))
    if problems:
        raise InvalidRequest(problems)
    row = lock_request(session, request_id)
    permit = permit_row(session, request_id)
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
    record_event(
        session,
        row,
        actor="release",
        action="release",
        from_status=from_status,
        now=now,
        release_id=release_id,
        manifest_sha256=manifest_sha256,
    )
    flush(session)
    return permit_value(permit, now, row.project)


def releases_due_for_deletion(session: Session, *, at: datetime) -> list[Permit]:
    """Released permits that ended (revoked or expired by ``at``) and whose release is not deleted yet."""
    rows = session.execute(
        select(PermitRow)
        .where(PermitRow.release_id.is_not(None), PermitRow.deleted_at.is_(None))
        .order_by(PermitRow.id)
    ).scalars()
    return [permit_value(p, at) for p in rows if p.revoked_at is not None or p.expires_at <= at]


def mark_release_deleted(session: Session, *, release_id: str, now: datetime | None = None) -> None:
    """Record that the files of an ended release were deleted (refused while it is in force)."""
    now = aware_now(now)
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
    flush(session)
