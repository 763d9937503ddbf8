"""Frozen value objects returned by the service (never ORM objects).

Free text in a value (project titles, justifications) is display-safe: the service refuses
control and invisible format characters at input (``governance.text``), and a value built from
text stored before that rule shows each such character as U+FFFD instead, so no register entry,
web page, CLI table or JSON answer can carry a bidi override or a NUL to its reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from governance.text import display_text

ROLES: frozenset[str] = frozenset(
    {"researcher", "steward", "operator", "admin", "reid_approver", "output_checker"}
)


@dataclass(frozen=True)
class User:
    name: str
    roles: frozenset[str]
    holder_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class DecisionView:
    holder_id: str
    reviewer: str
    decision: str
    justification: str
    decided_at: datetime
    review_round: int
    checklist: dict[str, bool] | None = None  # the ticks recorded with it (None: taken without)

    def __post_init__(self) -> None:
        _display_safe(self, multiline=("justification",))


@dataclass(frozen=True)
class CommentView:
    """One comment on a request's thread (plain text; pages escape it)."""

    id: int
    request_id: int
    author: str
    body: str
    posted_at: datetime

    def __post_init__(self) -> None:
        _display_safe(self, multiline=("body",))


@dataclass(frozen=True)
class PermitOverlap:
    """Another permit in force of the same applicant that shares holders or variables with a
    request: linking two extracts about the same persons is a re-identification risk."""

    permit_id: int
    request_id: int
    project: str
    status: str
    expires_at: datetime
    shared_holders: tuple[str, ...]
    shared_variables: tuple[str, ...]

    def __post_init__(self) -> None:
        _display_safe(self, single=("project",))


@dataclass(frozen=True)
class HolderReview:
    holder_id: str
    review_round: int
    reviewers_required: int
    verdict: str
    opened_at: datetime
    due_at: datetime
    decided_at: datetime | None


@dataclass(frozen=True)
class RequestView:
    id: int
    status: str
    applicant: str
    members: tuple[str, ...]
    project: str
    purpose: str
    legal_basis: str
    ethics_ref: str
    variables: tuple[str, ...]
    holders: tuple[str, ...]
    cohort_criteria: dict[str, Any]
    period: tuple[date | None, date | None]
    data_form: str
    pseudonymisation_justification: str | None
    output_tier: str
    access_days: int
    review_round: int
    parent_id: int | None
    amendment: dict[str, Any] | None
    created_at: datetime
    submitted_at: datetime | None
    decided_at: datetime | None
    released_at: datetime | None
    reviews: tuple[HolderReview, ...] = ()
    decisions: tuple[DecisionView, ...] = ()

    def __post_init__(self) -> None:
        _display_safe(self, single=("project",), multiline=("pseudonymisation_justification",))


@dataclass(frozen=True)
class ApprovedRequest:
    """What a release is built from: an approved request, the approvals of the round that
    approved it (holder_id, reviewer, decided_at as ISO text, justification), the permit's users."""

    request_id: int
    project: str
    purpose: str
    holders: tuple[str, ...]
    variables: tuple[str, ...]
    output_tier: str
    approvals: tuple[dict[str, str], ...]
    period: tuple[date | None, date | None]
    data_form: str = "anonymised"
    cohort_criteria: dict[str, Any] = field(default_factory=dict)
    users: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Permit:
    id: int
    request_id: int
    release_id: str | None
    users: frozenset[str]
    variables: frozenset[str]
    holders: tuple[str, ...]
    purpose: str
    output_tier: str
    expires_at: datetime
    issued_at: datetime | None = None
    released_at: datetime | None = None
    revoked_at: datetime | None = None
    status: str = "active"
    project: str = ""

    def __post_init__(self) -> None:
        _display_safe(self, single=("project",))

    @property
    def release(self) -> str:
        """The release this permit grants; the access layer is given released permits only."""
        if self.release_id is None:
            raise ValueError(f"permit {self.id} is not bound to a release yet")
        return self.release_id

    def is_active(self, at: datetime) -> bool:
        """True only for a released, unrevoked permit within its validity (fails closed)."""
        return (
            self.release_id is not None
            and self.revoked_at is None
            and self.issued_at is not None
            and self.issued_at <= at < self.expires_at
        )


@dataclass(frozen=True)
class ConsentRecord:
    id: int
    scope: str
    choice: str
    valid_from: datetime
    valid_to: datetime | None
    source_ref: str
    recorded_at: datetime
    recorded_by: str


@dataclass(frozen=True)
class Overdue:
    request_id: int
    holder_id: str
    project: str
    due_at: datetime
    days_overdue: float

    def __post_init__(self) -> None:
        _display_safe(self, single=("project",))


@dataclass(frozen=True)
class KeyFigure:
    holder_id: str
    period: str
    submitted: int
    decided: int
    approved: int
    rejected: int
    returned: int
    released: int
    median_days_to_decision: float | None
    median_days_decision_to_release: float | None


@dataclass(frozen=True)
class TransparencyEntry:
    """One permit in the public register: no personal data (no user names, no applicant)."""

    permit_id: int
    request_id: int
    project: str
    purpose: str
    purpose_description: str
    holders: tuple[str, ...]
    issued_on: date
    expires_on: date
    released_on: date | None
    status: str

    def __post_init__(self) -> None:
        _display_safe(self, single=("project", "purpose", "purpose_description"))


def _display_safe(obj: Any, *, single: tuple[str, ...] = (), multiline: tuple[str, ...] = ()) -> None:
    """Replace forbidden characters in the named text fields of a frozen value (see governance.text)."""
    for names, multi in ((single, False), (multiline, True)):
        for name in names:
            value = getattr(obj, name)
            if isinstance(value, str):
                safe = display_text(value, multiline=multi)
                if safe is not value:
                    object.__setattr__(obj, name, safe)
