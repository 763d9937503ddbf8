"""The request life cycle as a pure state machine (no I/O, no database).

::

    draft ──submit──► submitted ──review──► under_review
      ▲                 │  │                    │
      └──edit           │  └──────┬─────────────┘
                        ▼         ▼
    returned ◄──return── (every holder in scope decides independently)
      │ edit/submit       ├──reject──► rejected          (final)
      └──────────────►    └──approve─► approved ──release──► released
                                         │                     │
                                         ├──expire/revoke──────┴──► expired / revoked (final)

``holder_outcome`` folds one holder's decisions (in the current review round) into that holder's
verdict; ``request_outcome`` folds the holders' verdicts into the request's next action. The
service layer only persists what these functions decide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from governance.errors import InvalidTransition


class Status(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    UNDER_REVIEW = "under_review"
    APPROVED = "approved"
    REJECTED = "rejected"
    RETURNED = "returned"
    RELEASED = "released"
    EXPIRED = "expired"
    REVOKED = "revoked"


class Action(StrEnum):
    EDIT = "edit"
    SUBMIT = "submit"
    REVIEW = "review"  # a decision that leaves other decisions outstanding
    APPROVE = "approve"  # the last outstanding approval: every holder approved
    REJECT = "reject"
    RETURN = "return"
    AMEND = "amend"  # logged change of a submitted request (restarts review) or of a permit
    RELEASE = "release"
    EXPIRE = "expire"
    REVOKE = "revoke"


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    RETURN = "return"


class HolderVerdict(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    RETURNED = "returned"


S, A = Status, Action
_REVIEWABLE = (S.SUBMITTED, S.UNDER_REVIEW)
_PERMITTED = (S.APPROVED, S.RELEASED)

TRANSITIONS: Mapping[tuple[Status, Action], Status] = {
    (S.DRAFT, A.EDIT): S.DRAFT,
    (S.DRAFT, A.SUBMIT): S.SUBMITTED,
    (S.RETURNED, A.EDIT): S.RETURNED,
    (S.RETURNED, A.SUBMIT): S.SUBMITTED,
    **{(s, A.REVIEW): S.UNDER_REVIEW for s in _REVIEWABLE},
    **{(s, A.APPROVE): S.APPROVED for s in _REVIEWABLE},
    **{(s, A.REJECT): S.REJECTED for s in _REVIEWABLE},
    **{(s, A.RETURN): S.RETURNED for s in _REVIEWABLE},
    # An amendment of a request still in review changes it and restarts the review round.
    **{(s, A.AMEND): S.SUBMITTED for s in _REVIEWABLE},
    # An amendment of a permitted request is a separate child request; the parent keeps its state.
    **{(s, A.AMEND): s for s in _PERMITTED},
    (S.APPROVED, A.RELEASE): S.RELEASED,
    **{(s, A.EXPIRE): S.EXPIRED for s in _PERMITTED},
    **{(s, A.REVOKE): S.REVOKED for s in _PERMITTED},
}

FINAL: frozenset[Status] = frozenset({S.REJECTED, S.EXPIRED, S.REVOKED})
EDITABLE: frozenset[Status] = frozenset({S.DRAFT, S.RETURNED})
IN_REVIEW: frozenset[Status] = frozenset(_REVIEWABLE)


def next_status(status: Status | str, action: Action | str) -> Status:
    """The state after ``action``; InvalidTransition names the state and the allowed actions."""
    status, action = Status(status), Action(action)
    try:
        return TRANSITIONS[(status, action)]
    except KeyError:
        allowed = sorted(a.value for (s, a) in TRANSITIONS if s is status)
        raise InvalidTransition(
            f"cannot {action.value} a request that is {status.value}; "
            f"allowed: {', '.join(allowed) or 'nothing (final state)'}",
            code=f"transition.{status.value}.{action.value}",
        ) from None


@dataclass(frozen=True)
class ReviewDecision:
    reviewer: str
    decision: Decision


def holder_outcome(decisions: Iterable[ReviewDecision], reviewers_required: int) -> HolderVerdict:
    """One holder's verdict in the current round.

    A single rejection or return by any of the holder's reviewers decides for the holder (it is
    enough that one steward objects); approval needs ``reviewers_required`` distinct reviewers.
    """
    approvers: set[str] = set()
    for d in decisions:
        if d.decision is Decision.REJECT:
            return HolderVerdict.REJECTED
        if d.decision is Decision.RETURN:
            return HolderVerdict.RETURNED
        approvers.add(d.reviewer)
    return HolderVerdict.APPROVED if len(approvers) >= max(1, reviewers_required) else HolderVerdict.PENDING


def request_outcome(verdicts: Mapping[str, HolderVerdict]) -> Action:
    """The request's next action from every holder's verdict: all must approve."""
    if not verdicts:
        raise ValueError("a request needs at least one data holder in scope")
    values = set(verdicts.values())
    if HolderVerdict.REJECTED in values:
        return Action.REJECT
    if HolderVerdict.RETURNED in values:
        return Action.RETURN
    if values == {HolderVerdict.APPROVED}:
        return Action.APPROVE
    return Action.REVIEW
