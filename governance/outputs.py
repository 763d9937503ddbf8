"""Output checking (the airlock) as a pure state machine: no I/O, no database.

EHDS art. 73: only non-personal data may leave a secure processing environment. A record-level
result that is to leave becomes an *output request*; two output checkers, neither of them the
requester nor anyone else on the permit, check it; only an output that two distinct checkers
approved in the same round can be downloaded, and only by its requester (OpenSAFELY Airlock)::

    submitted ──approve (1 of 2)──► under_review ──approve (2nd checker)──► approved (downloadable)
      │  ▲                             │
      │  │ resubmit (new round:        ├──return──► returned ──resubmit──┘ (back to submitted)
      │  │ earlier approvals void)     │               │
      │  └─────────────────────────────┘               └──withdraw──► withdrawn   (final)
      ├──reject (any one checker) ──────────────────────────────────► rejected    (final)
      └──withdraw (requester) ──────────────────────────────────────► withdrawn   (final)

Who may check (``check_refusal``): a user with the ``output_checker`` role (trained output
checkers serving every holder), or a steward of a data holder in the permit's scope (the
holder's own accountable people). Never the requester, never a user named on the permit
(project members check nothing of their own project), never the same person twice in a round.

The service layer (``governance.service`` for the store, ``access.ports.InMemoryGovernance``
for tests) only persists what ``decide`` / ``resubmit`` / ``withdraw`` return; ``download_refusal``
is the one rule every download passes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import TypedDict, Unpack

from governance import text as free_text
from governance.errors import (
    DuplicateDecision,
    InvalidRequest,
    InvalidTransition,
    PermissionDenied,
    SelfDecision,
)

#: Distinct checkers whose approval, in one round, lets an output leave.
APPROVALS_REQUIRED = 2
CHECKER_ROLE = "output_checker"
MIN_COMMENT = 10
MIN_CONTEXT = 20
MAX_TEXT = 5000
MIN_EXCEPTION_JUSTIFICATION = 30
FORMATS = ("csv", "parquet", "arrow", "json")


class OutputStatus(StrEnum):
    SUBMITTED = "submitted"
    UNDER_REVIEW = "under_review"
    RETURNED = "returned"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


class CheckDecision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    RETURN = "return"


S = OutputStatus
IN_CHECK: frozenset[OutputStatus] = frozenset({S.SUBMITTED, S.UNDER_REVIEW})
FINAL: frozenset[OutputStatus] = frozenset({S.REJECTED, S.WITHDRAWN})
WITHDRAWABLE: frozenset[OutputStatus] = frozenset({S.SUBMITTED, S.UNDER_REVIEW, S.RETURNED})


@dataclass(frozen=True)
class OutputCheck:
    """One checker's decision in one round."""

    checker: str
    decision: str
    comment: str
    round: int
    decided_at: datetime


@dataclass(frozen=True)
class OutputException:
    """A steward's justified exception on a permit: row-level outputs may be requested."""

    id: int
    permit_id: int
    steward: str
    holder_id: str
    justification: str
    recorded_at: datetime
    withdrawn_at: datetime | None = None
    withdrawn_by: str | None = None

    def in_force(self, at: datetime) -> bool:
        return self.recorded_at <= at and (self.withdrawn_at is None or at < self.withdrawn_at)


class FileFacts(TypedDict, total=False):
    """The facts of an output's file that a resubmission may replace (a new file)."""

    query_masked: str
    query_sha256: str
    format: str
    file_name: str
    sha256: str
    size_bytes: int
    rows: int
    columns: tuple[str, ...]
    row_level: bool
    row_level_reasons: tuple[str, ...]
    consent_sha256: str


@dataclass(frozen=True)
class OutputRequest:
    """An output request with its file's facts and every check (values only, never the data).

    ``file_name`` is the stored file's name inside the restricted outputs area; the file's
    SHA-256 is checked again at every download. ``query_masked`` is the sandbox's masked text
    (literals hidden), as in the access audit log.
    """

    id: int
    permit_id: int
    release_id: str
    requester: str
    status: str
    round: int
    title: str
    context: str
    query_masked: str
    query_sha256: str
    format: str
    file_name: str
    sha256: str
    size_bytes: int
    rows: int
    columns: tuple[str, ...]
    row_level: bool
    row_level_reasons: tuple[str, ...]
    exception_id: int | None
    consent_sha256: str
    created_at: datetime
    updated_at: datetime
    decided_at: datetime | None = None
    downloads: int = 0
    checks: tuple[OutputCheck, ...] = ()

    @property
    def current_checks(self) -> tuple[OutputCheck, ...]:
        return tuple(c for c in self.checks if c.round == self.round)

    @property
    def approvers(self) -> frozenset[str]:
        """Distinct checkers who approved in the current round."""
        return frozenset(c.checker for c in self.current_checks if c.decision == CheckDecision.APPROVE)

    @property
    def downloadable(self) -> bool:
        return download_refusal(self, self.requester) is None


@dataclass(frozen=True)
class Party:
    """What the rules need to know about a user: name, roles, the holders they act for."""

    name: str
    roles: frozenset[str]
    holder_ids: frozenset[str] = frozenset()


def party(user: object) -> Party:
    return Party(str(user.name), frozenset(user.roles), frozenset(getattr(user, "holder_ids", ()) or ()))  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- text rules


def clean_text(
    value: str | None, *, field: str, minimum: int, maximum: int = MAX_TEXT, multiline: bool = True
) -> str:
    """Stripped, normalised text of ``minimum``-``maximum`` characters; control and invisible
    format characters (bidi overrides, NUL, zero-width ...) are refused as everywhere in
    governance (``governance.text``): a checker must read exactly what was written."""
    cleaned, problem = free_text.check(
        (value or "").strip(), code=f"output.{field}", label=field, multiline=multiline
    )
    problems = [problem] if problem else []
    if not minimum <= len(cleaned) <= maximum:
        problems.append((f"output.{field}", f"{field} must be {minimum}-{maximum} characters"))
    if problems:
        raise InvalidRequest(problems)
    return cleaned


# --------------------------------------------------------------------------- who may do what


def check_refusal(
    checker: Party, *, requester: str, permit_users: Iterable[str], permit_holders: Iterable[str]
) -> PermissionDenied | None:
    """Why ``checker`` may not check an output of this permit, or None when they may."""
    if checker.name == requester:
        return SelfDecision(
            f"{checker.name!r} requested this output and may not check it", code="output.self_check"
        )
    if checker.name in set(permit_users):
        return SelfDecision(
            f"{checker.name!r} is named on the permit and may not check its outputs",
            code="output.project_member",
        )
    if CHECKER_ROLE in checker.roles:
        return None
    if "steward" in checker.roles and checker.holder_ids & set(permit_holders):
        return None
    return PermissionDenied(
        f"{checker.name!r} is neither an output checker nor a steward of a holder in the permit",
        code="output.not_checker",
    )


def exception_refusal(
    steward: Party, *, holder_id: str, permit_users: Iterable[str], permit_holders: Iterable[str]
) -> PermissionDenied | None:
    """Why ``steward`` may not record (or withdraw) a row-level exception for ``holder_id`` on this permit."""
    if steward.name in set(permit_users):
        return SelfDecision(
            f"{steward.name!r} is named on the permit and may not grant it exceptions",
            code="exception.project_member",
        )
    if "steward" not in steward.roles or holder_id not in steward.holder_ids:
        return PermissionDenied(
            f"{steward.name!r} is not a steward of {holder_id!r}", code="exception.not_steward"
        )
    if holder_id not in set(permit_holders):
        return PermissionDenied(
            f"holder {holder_id!r} is not in the permit's scope", code="exception.holder_not_in_scope"
        )
    return None


def download_refusal(output: OutputRequest, user: str) -> PermissionDenied | InvalidTransition | None:
    """Why ``user`` may not download ``output`` now (the permit's state is checked by the caller).

    The law: approved in its current round by at least two distinct checkers, none of them
    the requester, with no objection in that round; downloaded by its requester only.
    """
    if user != output.requester:
        return PermissionDenied("only the requester may download an output", code="output.not_requester")
    current = output.current_checks
    approvers = {c.checker for c in current if c.decision == CheckDecision.APPROVE} - {output.requester}
    objected = any(c.decision != CheckDecision.APPROVE for c in current)
    if output.status != S.APPROVED or objected or len(approvers) < APPROVALS_REQUIRED:
        return InvalidTransition(
            f"output {output.id} is {output.status}; it can be downloaded only after {APPROVALS_REQUIRED} "
            "output checkers have approved it",
            code="output.not_approved",
        )
    return None


# --------------------------------------------------------------------------- transitions


def round_outcome(checks: Iterable[OutputCheck], *, requester: str) -> OutputStatus:
    """The status a round's checks lead to: one rejection rejects, one return returns,
    ``APPROVALS_REQUIRED`` distinct approvals (never the requester's) approve."""
    approvers: set[str] = set()
    for c in checks:
        if c.decision == CheckDecision.REJECT:
            return S.REJECTED
        if c.decision == CheckDecision.RETURN:
            return S.RETURNED
        if c.checker != requester:
            approvers.add(c.checker)
    if len(approvers) >= APPROVALS_REQUIRED:
        return S.APPROVED
    return S.UNDER_REVIEW if approvers else S.SUBMITTED


def decide(
    output: OutputRequest,
    checker: Party,
    decision: str,
    comment: str,
    *,
    permit_users: Iterable[str],
    permit_holders: Iterable[str],
    at: datetime,
) -> OutputRequest:
    """The output after ``checker``'s decision; raises (nothing changes) when it is not allowed."""
    problems = []
    if decision not in {d.value for d in CheckDecision}:
        problems.append(("output.decision", f"decision must be approve, reject or return, not {decision!r}"))
    text = (comment or "").strip()
    if len(text) < MIN_COMMENT:
        problems.append(
            ("output.comment", f"every check needs a comment (at least {MIN_COMMENT} characters)")
        )
    if problems:
        raise InvalidRequest(problems)
    text = clean_text(text, field="comment", minimum=MIN_COMMENT)
    if OutputStatus(output.status) not in IN_CHECK:
        raise InvalidTransition(
            f"output {output.id} is {output.status}; checks are taken only while it is "
            "submitted or under review",
            code=f"output.transition.{output.status}.check",
        )
    refusal = check_refusal(
        checker, requester=output.requester, permit_users=permit_users, permit_holders=permit_holders
    )
    if refusal is not None:
        raise refusal
    if any(c.checker == checker.name for c in output.current_checks):
        raise DuplicateDecision(
            f"{checker.name!r} has already checked output {output.id} in this round; "
            "a second, independent checker is needed",
            code="output.duplicate_check",
        )
    check = OutputCheck(checker.name, CheckDecision(decision).value, text, output.round, at)
    status = round_outcome((*output.current_checks, check), requester=output.requester)
    return replace(
        output,
        status=status.value,
        checks=(*output.checks, check),
        updated_at=at,
        decided_at=at if status in (S.APPROVED, S.REJECTED, S.RETURNED) else output.decided_at,
    )


def resubmit(
    output: OutputRequest, actor: str, context: str, *, at: datetime, **replacement: Unpack[FileFacts]
) -> OutputRequest:
    """A returned output, answered: a new round (earlier approvals no longer count), with new
    context and, optionally, a new file (``replacement``: the file's facts)."""
    if actor != output.requester:
        raise PermissionDenied("only the requester may resubmit an output", code="output.not_requester")
    if output.status != S.RETURNED:
        raise InvalidTransition(
            f"output {output.id} is {output.status}; only a returned output can be resubmitted",
            code=f"output.transition.{output.status}.resubmit",
        )
    text = clean_text(context, field="context", minimum=MIN_CONTEXT)
    return replace(
        output,
        status=S.SUBMITTED.value,
        round=output.round + 1,
        context=text,
        updated_at=at,
        decided_at=None,
        **replacement,
    )


def withdraw(output: OutputRequest, actor: str, *, at: datetime) -> OutputRequest:
    if actor != output.requester:
        raise PermissionDenied("only the requester may withdraw an output", code="output.not_requester")
    if OutputStatus(output.status) not in WITHDRAWABLE:
        raise InvalidTransition(
            f"output {output.id} is {output.status} and can no longer be withdrawn",
            code=f"output.transition.{output.status}.withdraw",
        )
    return replace(output, status=S.WITHDRAWN.value, updated_at=at, decided_at=at)


def awaiting(
    output: OutputRequest, checker: Party, *, permit_users: Iterable[str], permit_holders: Iterable[str]
) -> bool:
    """True when ``checker`` may check ``output`` now and has not yet in this round (their queue)."""
    return (
        OutputStatus(output.status) in IN_CHECK
        and check_refusal(
            checker, requester=output.requester, permit_users=permit_users, permit_holders=permit_holders
        )
        is None
        and all(c.checker != checker.name for c in output.current_checks)
    )
