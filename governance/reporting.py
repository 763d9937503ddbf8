"""Read-only reports: overdue reviews, key figures (nyckeltal), the public transparency register."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from governance.models import HolderReviewRow, PermitRow, RequestRow
from governance.permits import permit_status
from governance.purposes import PURPOSES
from governance.values import KeyFigure, Overdue, TransparencyEntry
from governance.workflow import IN_REVIEW, HolderVerdict

PERIODS = ("month", "quarter", "year")
_DAY = 86400.0


def overdue_reviews(session: Session, *, at: datetime | None = None) -> list[Overdue]:
    """Holder reviews still pending past their deadline, most overdue first."""
    at = at or datetime.now(UTC)
    rows = session.execute(
        select(HolderReviewRow, RequestRow)
        .join(RequestRow, RequestRow.id == HolderReviewRow.request_id)
        .where(
            HolderReviewRow.verdict == HolderVerdict.PENDING.value,
            HolderReviewRow.review_round == RequestRow.review_round,
            RequestRow.status.in_([s.value for s in IN_REVIEW]),
            HolderReviewRow.due_at < at,
        )
    ).all()
    out = [
        Overdue(
            req.id, rev.holder_id, req.project, rev.due_at, round((at - rev.due_at).total_seconds() / _DAY, 2)
        )
        for rev, req in rows
    ]
    return sorted(out, key=lambda o: (-o.days_overdue, o.request_id, o.holder_id))


def period_key(dt: datetime, period: str) -> str:
    """``2025-03`` (month), ``2025-Q1`` (quarter) or ``2025`` (year)."""
    if period == "month":
        return f"{dt.year:04d}-{dt.month:02d}"
    if period == "quarter":
        return f"{dt.year:04d}-Q{(dt.month - 1) // 3 + 1}"
    if period == "year":
        return f"{dt.year:04d}"
    raise ValueError(f"period must be one of {PERIODS}")


@dataclass
class _Tally:
    """One holder's reviews opened in one period: counts, and the days each step took."""

    submitted: int = 0
    decided: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)  # decided reviews by verdict
    released: int = 0
    days_to_decision: list[float] = field(default_factory=list)
    days_to_release: list[float] = field(default_factory=list)


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def key_figures(session: Session, *, period: str = "month") -> list[KeyFigure]:
    """Per holder and period of submission: counts, median days submission→decision→release.

    A review round counts as one submission to that holder; "decision" is the holder's verdict
    (approved, rejected or returned), "release" is when the request's release was recorded.
    """
    if period not in PERIODS:
        raise ValueError(f"period must be one of {PERIODS}")
    rows = session.execute(
        select(HolderReviewRow, RequestRow, PermitRow)
        .join(RequestRow, RequestRow.id == HolderReviewRow.request_id)
        .outerjoin(PermitRow, PermitRow.request_id == RequestRow.id)
    ).all()
    tallies: dict[tuple[str, str], _Tally] = defaultdict(_Tally)
    for rev, req, permit in rows:
        t = tallies[(rev.holder_id, period_key(rev.opened_at, period))]
        t.submitted += 1
        if rev.decided_at is not None:
            t.decided += 1
            t.verdicts[rev.verdict] += 1
            t.days_to_decision.append((rev.decided_at - rev.opened_at).total_seconds() / _DAY)
            if (
                rev.verdict == HolderVerdict.APPROVED.value
                and permit is not None
                and permit.released_at is not None
                and rev.review_round == req.review_round
            ):
                t.released += 1
                t.days_to_release.append((permit.released_at - rev.decided_at).total_seconds() / _DAY)
    return [
        KeyFigure(
            holder_id=h,
            period=p,
            submitted=t.submitted,
            decided=t.decided,
            approved=t.verdicts[HolderVerdict.APPROVED.value],
            rejected=t.verdicts[HolderVerdict.REJECTED.value],
            returned=t.verdicts[HolderVerdict.RETURNED.value],
            released=t.released,
            median_days_to_decision=_median(t.days_to_decision),
            median_days_decision_to_release=_median(t.days_to_release),
        )
        for (h, p), t in sorted(tallies.items(), key=lambda item: item[0])
    ]


def transparency_register(session: Session, *, at: datetime | None = None) -> list[TransparencyEntry]:
    """Every permit ever issued: project, purpose, holders, dates, status. No personal data."""
    at = at or datetime.now(UTC)
    rows = session.execute(
        select(PermitRow, RequestRow)
        .join(RequestRow, RequestRow.id == PermitRow.request_id)
        .order_by(PermitRow.id)
    ).all()
    out = []
    for p, req in rows:
        out.append(
            TransparencyEntry(
                permit_id=p.id,
                request_id=req.id,
                project=req.project,
                purpose=p.purpose,
                purpose_description=PURPOSES.get(p.purpose, ""),
                holders=tuple(p.holders),
                issued_on=p.issued_at.date(),
                expires_on=p.expires_at.date(),
                released_on=p.released_at.date() if p.released_at else None,
                status=permit_status(p, at),
            )
        )
    return out


def permit_counts(session: Session, *, at: datetime | None = None) -> dict[tuple[str, str], int]:
    """(holder_id, status) → permits naming the holder, status as in the transparency register
    (active: bound to a release in force; approved: not yet released; expired; revoked)."""
    at = at or datetime.now(UTC)
    counts: Counter[tuple[str, str]] = Counter()
    for p in session.scalars(select(PermitRow)):
        status = permit_status(p, at)
        for holder_id in p.holders:
            counts[(holder_id, status)] += 1
    return dict(counts)
