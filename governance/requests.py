"""Access requests: filing and editing drafts, submission, the holders' reviews and decisions,
amendments, decision deadlines, and the views of requests.

The workflow's rules (which action moves which status where, when a holder and a request are
decided) are pure (``governance.workflow``); these functions lock the request, check who may
act, apply the rules and record each change in the request's history (``governance.history``).
An approval by every holder issues the permit (``governance.permits``) in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from governance import auditing
from governance.catalogue import reviewers_required
from governance.errors import (
    DuplicateDecision,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    SelfDecision,
)
from governance.history import record_event
from governance.models import ConfigRow, DecisionRow, HolderReviewRow, RequestRow
from governance.permits import apply_amendment, issue_permit, permit_row
from governance.request_fields import (
    PERMIT_AMENDABLE,
    REQUEST_FIELDS,
    Problem,
    check_field_names,
    check_justification,
    clean_fields,
    row_fields,
)
from governance.transactions import aware_now, flush, lock_request
from governance.users import user_row
from governance.values import DecisionView, HolderReview, RequestView
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

DEFAULT_DEADLINE_DAYS = 30

#: The Five Safes a steward may tick with a decision (safe projects, people, settings, data,
#: outputs), and the acknowledgement that the disclosure pre-check's groups at risk were seen.
FIVE_SAFES = ("projects", "people", "settings", "data", "outputs")
AT_RISK_ACKNOWLEDGED = "at_risk_acknowledged"
CHECKLIST_ITEMS = (*FIVE_SAFES, AT_RISK_ACKNOWLEDGED)


def file_request(
    session: Session,
    *,
    applicant: str,
    now: datetime | None = None,
    request_id: int | None = None,
    **fields: Any,
) -> int:
    """File a draft request; returns its id.

    Fields: project, purpose (``governance.purposes.PURPOSES``), legal_basis (``LEGAL_BASES``),
    ethics_ref (``2024-01234-01``), variables ("table.column" from schemas/variables.json), holders,
    members (user names), cohort_criteria ({variable: condition}), period ((start, end) dates),
    data_form ("anonymised" default | "pseudonymised" + pseudonymisation_justification),
    output_tier ("aggregate" default | "record", which needs data_form "pseudonymised": record
    rows carry the release pseudonym), access_days (365 default).

    ``request_id`` files it under a given id: a node mirrors the hub's application under the
    hub's own number, so that one id names it everywhere (refused if the id is taken).
    """
    check_field_names(fields, REQUEST_FIELDS)
    now = aware_now(now)
    clean = clean_fields(session, applicant, fields, now)
    if request_id is not None and session.get(RequestRow, request_id) is not None:
        raise InvalidRequest([("request.id_taken", f"request {request_id} already exists")])
    row = RequestRow(
        id=request_id,
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
    flush(session)
    record_event(session, row, actor=applicant, action="file", from_status=None, now=now)
    flush(session)
    return row.id


def update_draft(
    session: Session, *, request_id: int, actor: str, now: datetime | None = None, **changes: Any
) -> RequestView:
    """Edit a draft (or a request returned for changes); submitted requests need ``amend_request``."""
    check_field_names(changes, REQUEST_FIELDS)
    now = aware_now(now)
    row = lock_request(session, request_id)
    if actor != row.applicant:
        raise PermissionDenied(f"only the applicant may edit request {request_id}")
    if row.parent_id is not None and set(changes) - PERMIT_AMENDABLE:
        raise InvalidRequest(
            [("amendment.field", f"an amendment may change only {sorted(PERMIT_AMENDABLE)}")]
        )
    from_status = row.status
    row.status = next_status(row.status, Action.EDIT).value
    clean = clean_fields(session, row.applicant, {**row_fields(row), **changes}, now)
    for k, v in clean.items():
        setattr(row, k, v)
    row.updated_at = now
    record_event(
        session, row, actor=actor, action="edit", from_status=from_status, now=now, fields=sorted(changes)
    )
    flush(session)
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
    if holder_id is not None and holder_id not in reviewers_required():
        raise InvalidRequest([("config.unknown_holder", f"unknown holder {holder_id!r}")])
    key = "deadline_days" if holder_id is None else f"deadline_days.{holder_id}"
    cfg = session.get(ConfigRow, key)
    if cfg is None:
        session.add(ConfigRow(key=key, value=days))
    else:
        cfg.value = days
    flush(session)
    auditing.queue(session, event="governance.deadline_set", holder_id=holder_id, days=days, actor=actor)


def _open_round(session: Session, row: RequestRow, now: datetime) -> None:
    row.review_round += 1
    required = reviewers_required()
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
    now = aware_now(now)
    row = lock_request(session, request_id)
    if actor != row.applicant:
        raise PermissionDenied(f"only the applicant may submit request {request_id}")
    from_status = row.status
    row.status = next_status(row.status, Action.SUBMIT).value
    # Re-validate: users may have been disabled or the catalogue changed since the draft was saved.
    clean_fields(session, row.applicant, row_fields(row), now)
    row.submitted_at = row.submitted_at or now
    row.updated_at = now
    _open_round(session, row, now)
    record_event(
        session,
        row,
        actor=actor,
        action="submit",
        from_status=from_status,
        now=now,
        review_round=row.review_round,
    )
    flush(session)


def round_reviews(session: Session, row: RequestRow) -> list[HolderReviewRow]:
    """The holders' reviews of the request's current round, re-read from the database."""
    return list(
        session.execute(
            select(HolderReviewRow)
            .where(HolderReviewRow.request_id == row.id, HolderReviewRow.review_round == row.review_round)
            .execution_options(populate_existing=True)
        ).scalars()
    )


def _checked_decision(decision: str, justification: str) -> str:
    """The decision's justification, normalised; InvalidRequest lists every problem of the input."""
    problems: list[Problem] = []
    if decision not in {d.value for d in Decision}:
        problems.append(("decision.unknown", f"decision must be approve, reject or return, not {decision!r}"))
    justification, problem = check_justification(
        justification,
        code="decision.justification",
        label="justification",
        too_short="every decision needs a justification",
    )
    if problem:
        problems.append(problem)
    if problems:
        raise InvalidRequest(problems)
    return justification


def checked_checklist(checklist: Mapping[str, Any] | None) -> dict[str, bool] | None:
    """The ticks recorded with a decision: every item of ``CHECKLIST_ITEMS`` as True/False (an
    item not given is not ticked), or None when no checklist came with the decision."""
    if checklist is None:
        return None
    if not isinstance(checklist, Mapping):
        raise InvalidRequest([("decision.checklist", "the checklist must map items to true or false")])
    unknown = sorted(str(k) for k in checklist if k not in CHECKLIST_ITEMS)
    if unknown or not all(isinstance(v, bool) for v in checklist.values()):
        raise InvalidRequest(
            [("decision.checklist", f"checklist items are {', '.join(CHECKLIST_ITEMS)}, each true or false")]
        )
    return {item: bool(checklist.get(item, False)) for item in CHECKLIST_ITEMS}


def _check_may_decide(session: Session, row: RequestRow, *, holder_id: str, reviewer: str) -> None:
    """The request is in review, the holder in its scope, and ``reviewer`` an active steward of
    the holder who neither applied for nor works on the request."""
    if Status(row.status) not in IN_REVIEW:
        raise InvalidTransition(
            f"request {row.id} is {row.status}; decisions are taken only while it is submitted or under review",
            code=f"transition.{row.status}.decide",
        )
    if holder_id not in row.holders:
        raise InvalidRequest(
            [("decision.holder_not_in_scope", f"holder {holder_id!r} is not in scope of request {row.id}")]
        )
    user = user_row(session, reviewer)
    if (
        user is None
        or user.disabled_at is not None
        or "steward" not in user.roles
        or holder_id not in user.holder_ids
    ):
        raise PermissionDenied(f"{reviewer!r} is not a steward of {holder_id!r}", code="decision.not_steward")
    if reviewer == row.applicant or reviewer in row.members:
        raise SelfDecision(f"{reviewer!r} applied for or works on request {row.id} and may not decide on it")


def _round_decisions(session: Session, row: RequestRow, holder_id: str) -> list[DecisionRow]:
    """The decisions already taken for ``holder_id`` in the request's current round."""
    return list(
        session.execute(
            select(DecisionRow).where(
                DecisionRow.request_id == row.id,
                DecisionRow.holder_id == holder_id,
                DecisionRow.review_round == row.review_round,
            )
        ).scalars()
    )


def _check_not_decided(review: HolderReviewRow, earlier: list[DecisionRow], reviewer: str) -> None:
    """The holder is still pending in this round and ``reviewer`` has not decided for it yet."""
    if review.verdict != HolderVerdict.PENDING.value:
        raise InvalidTransition(
            f"holder {review.holder_id!r} has already decided ({review.verdict}) in this round",
            code="decision.holder_already_decided",
        )
    if any(d.reviewer == reviewer for d in earlier):
        raise DuplicateDecision(
            f"{reviewer!r} has already decided for {review.holder_id!r} in this round; "
            "a second reviewer is needed"
        )


def _update_holder_verdict(
    review: HolderReviewRow, earlier: list[DecisionRow], latest: ReviewDecision, now: datetime
) -> HolderVerdict:
    """The holder's verdict with ``latest`` added to its earlier decisions, stored on its review."""
    verdict = holder_outcome(
        [ReviewDecision(d.reviewer, Decision(d.decision)) for d in earlier] + [latest],
        review.reviewers_required,
    )
    review.verdict = verdict.value
    if verdict is not HolderVerdict.PENDING:
        review.decided_at = now
    return verdict


def _move_request(row: RequestRow, reviews: Mapping[str, HolderReviewRow], now: datetime) -> Action:
    """Move the request to the status its holders' verdicts call for; returns the action taken."""
    action = request_outcome({h: HolderVerdict(r.verdict) for h, r in reviews.items()})
    row.status = next_status(row.status, action).value
    row.updated_at = now
    if action in (Action.APPROVE, Action.REJECT, Action.RETURN):
        row.decided_at = now
    return action


def _grant(session: Session, row: RequestRow, now: datetime) -> None:
    """An approved request issues its permit; an approved amendment updates its parent's permit."""
    if row.parent_id is None:
        issue_permit(session, row, now)
    else:
        apply_amendment(session, row, parent_id=row.parent_id, now=now)


def decide(
    session: Session,
    *,
    request_id: int,
    holder_id: str,
    reviewer: str,
    decision: str,
    justification: str,
    now: datetime | None = None,
    checklist: Mapping[str, Any] | None = None,
) -> str:
    """Record one steward's decision for one holder; returns the request's status afterwards.

    The request is approved (and its permit issued) only when every holder in scope has approved
    with its required number of distinct reviewers; one rejection or return decides at once.
    ``checklist`` (optional) holds what the steward ticked (``CHECKLIST_ITEMS``); it is stored
    with the decision and its ticked items in the request's history.
    """
    now = aware_now(now)
    justification = _checked_decision(decision, justification)
    ticks = checked_checklist(checklist)
    row = lock_request(session, request_id)
    _check_may_decide(session, row, holder_id=holder_id, reviewer=reviewer)
    reviews = {r.holder_id: r for r in round_reviews(session, row)}
    review = reviews[holder_id]
    earlier = _round_decisions(session, row, holder_id)
    _check_not_decided(review, earlier, reviewer)
    session.add(
        DecisionRow(
            request_id=row.id,
            holder_id=holder_id,
            review_round=row.review_round,
            reviewer=reviewer,
            decision=decision,
            justification=justification.strip(),
            decided_at=now,
            checklist=ticks,
        )
    )
    verdict = _update_holder_verdict(review, earlier, ReviewDecision(reviewer, Decision(decision)), now)
    from_status = row.status
    action = _move_request(row, reviews, now)
    record_event(
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
        **({"checklist": sorted(k for k, v in ticks.items() if v)} if ticks is not None else {}),
    )
    if action is Action.APPROVE:
        _grant(session, row, now)
    flush(session)
    return row.status


@dataclass(frozen=True)
class _Amendment:
    """What an amendment changes and why, as recorded in the history."""

    actor: str
    fields: tuple[str, ...]  # the changed field names, sorted
    reason: str  # normalised and stripped
    now: datetime


def _checked_reason(changes: Mapping[str, Any], reason: str) -> str:
    """The amendment's reason, normalised; InvalidRequest when it or the changes are unusable."""
    reason, problem = check_justification(
        reason, code="amendment.reason", label="amendment reason", too_short="an amendment needs a reason"
    )
    if problem:
        raise InvalidRequest([problem])
    if not changes:
        raise InvalidRequest([("amendment.empty", "an amendment must change at least one field")])
    check_field_names(changes, REQUEST_FIELDS)
    return reason


def _check_may_amend(row: RequestRow, actor: str) -> None:
    if actor != row.applicant:
        raise PermissionDenied(f"only the applicant may amend request {row.id}")
    if row.parent_id is not None:
        raise InvalidRequest([("amendment.of_amendment", "amend the original request, not an amendment")])


def _check_permit_amendable(changes: Mapping[str, Any]) -> None:
    """A permit in force can change only in ``PERMIT_AMENDABLE``; anything else needs a new request."""
    if not_allowed := sorted(set(changes) - PERMIT_AMENDABLE):
        raise InvalidRequest(
            [
                (
                    "amendment.field",
                    f"a permit can be amended only in {sorted(PERMIT_AMENDABLE)}; {not_allowed} needs a new request",
                )
            ]
        )


def _amend_in_review(
    session: Session, row: RequestRow, clean: Mapping[str, Any], target: Status, amendment: _Amendment
) -> int:
    """Change the request itself and restart its review in a new round; returns its id."""
    from_status = row.status
    for k, v in clean.items():
        setattr(row, k, v)
    row.status = target.value
    row.updated_at = amendment.now
    _open_round(session, row, amendment.now)
    record_event(
        session,
        row,
        actor=amendment.actor,
        action="amend",
        from_status=from_status,
        now=amendment.now,
        fields=list(amendment.fields),
        reason=amendment.reason,
        review_round=row.review_round,
    )
    flush(session)
    return row.id


def _check_permit_in_force(session: Session, row: RequestRow, now: datetime) -> None:
    permit = permit_row(session, row.id)
    if permit is None or permit.revoked_at is not None or permit.expires_at <= now:
        raise InvalidTransition(
            f"request {row.id}'s permit is no longer in force", code="amendment.parent_inactive"
        )


def _file_amendment(
    session: Session, row: RequestRow, clean: Mapping[str, Any], amendment: _Amendment
) -> int:
    """File a child request carrying the amendment of ``row``'s permit; returns the child's id."""
    now = amendment.now
    child = RequestRow(
        applicant=row.applicant,
        status=Status.DRAFT.value,
        review_round=0,
        parent_id=row.id,
        amendment={"fields": list(amendment.fields), "reason": amendment.reason},
        created_at=now,
        updated_at=now,
        **clean,
    )
    session.add(child)
    flush(session)
    record_event(
        session,
        child,
        actor=amendment.actor,
        action="file_amendment",
        from_status=None,
        now=now,
        parent_id=row.id,
        fields=list(amendment.fields),
    )
    record_event(
        session,
        row,
        actor=amendment.actor,
        action="amend",
        from_status=row.status,
        now=now,
        amendment_request_id=child.id,
        fields=list(amendment.fields),
        reason=amendment.reason,
    )
    flush(session)
    return child.id


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
    now = aware_now(now)
    reason = _checked_reason(changes, reason)
    row = lock_request(session, request_id)
    _check_may_amend(row, actor)
    target = next_status(row.status, Action.AMEND)
    in_review = Status(row.status) in IN_REVIEW
    if not in_review:
        _check_permit_amendable(changes)
    clean = clean_fields(session, row.applicant, {**row_fields(row), **changes}, now)
    amendment = _Amendment(actor=actor, fields=tuple(sorted(changes)), reason=reason.strip(), now=now)
    if in_review:
        return _amend_in_review(session, row, clean, target, amendment)
    _check_permit_in_force(session, row, now)
    return _file_amendment(session, row, clean, amendment)


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
            DecisionView(
                d.holder_id,
                d.reviewer,
                d.decision,
                d.justification,
                d.decided_at,
                d.review_round,
                dict(d.checklist) if d.checklist is not None else None,
            )
            for d in decisions
        ),
    )


def get_request(session: Session, *, request_id: int) -> RequestView:
    """The request with its reviews and decisions, or NotFound."""
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
