"""Consent registry: opt-out of secondary use, opt-in / opt-out per purpose, withdrawal.

Persons are known only by their consent key (the consent-domain keyed pseudonym from
``privacy.domains.consent_key``); the plain identifier never reaches this store. Every record
has a validity period [valid_from, valid_to) and a source document reference.

Resolution for a purpose at time ``at`` (records valid at ``at`` only):

1. a record for this purpose decides if there is one (the latest by valid_from, then entry order):
   a specific choice beats a general one;
2. otherwise a general ``secondary_use`` record decides (latest wins);
3. otherwise the person is included (EHDS: secondary use unless the person opted out).

Withdrawal closes every open record of the scope (all scopes for a general withdrawal) at ``at``
and records an open-ended opt-out from ``at``: the person is excluded at every later time unless
they record a new choice afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from governance import auditing
from governance.errors import InvalidConsent, NotFound
from governance.models import ConsentRow
from governance.purposes import PURPOSES, SECONDARY_USE
from governance.values import ConsentRecord

CHOICES = ("opt_out", "opt_in")
_KEY = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
# A consent key is a keyed hash, never a personnummer/samordningsnummer: anything made only of digits
# and separators is refused (a hex HMAC-SHA256 is all digits with probability 0.625**64).
_PNR_LIKE = re.compile(r"^[\d+ -]+$")


def _check_key(consent_key: str) -> None:
    if isinstance(consent_key, str) and _PNR_LIKE.match(consent_key):
        raise InvalidConsent(
            "that looks like a personal identity number, not a consent key; "
            "derive the key with privacy.domains.consent_key in the restricted zone",
            code="consent.plain_identifier",
        )
    if not isinstance(consent_key, str) or not _KEY.match(consent_key):
        raise InvalidConsent(
            "consent key must be a consent-domain pseudonym (16-128 chars of A-Z a-z 0-9 _ -)",
            code="consent.bad_key",
        )


def _check_scope(scope: str) -> None:
    if scope != SECONDARY_USE and scope not in PURPOSES:
        raise InvalidConsent(
            f"scope must be {SECONDARY_USE!r} or a purpose: {', '.join(PURPOSES)}", code="consent.bad_scope"
        )


def _aware(dt: datetime | None, name: str) -> None:
    if dt is not None and dt.tzinfo is None:
        raise InvalidConsent(f"{name} must be timezone-aware", code="consent.naive_time")


def record_consent(
    session: Session,
    *,
    consent_key: str,
    scope: str,
    choice: str,
    source_ref: str,
    actor: str,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    now: datetime | None = None,
) -> int:
    """Record one choice; returns the record id. ``valid_from`` defaults to now."""
    _check_key(consent_key)
    _check_scope(scope)
    if choice not in CHOICES:
        raise InvalidConsent(f"choice must be one of {CHOICES}", code="consent.bad_choice")
    if not (source_ref or "").strip() or len(source_ref) > 128:
        raise InvalidConsent(
            "a source document reference (1-128 chars) is required", code="consent.no_source"
        )
    _aware(valid_from, "valid_from")
    _aware(valid_to, "valid_to")
    _aware(now, "now")
    now = now or datetime.now(UTC)
    valid_from = valid_from or now
    if valid_to is not None and valid_to <= valid_from:
        raise InvalidConsent("valid_to must be after valid_from", code="consent.bad_period")
    row = ConsentRow(
        consent_key=consent_key,
        scope=scope,
        choice=choice,
        valid_from=valid_from,
        valid_to=valid_to,
        source_ref=source_ref.strip(),
        recorded_at=now,
        recorded_by=actor,
    )
    session.add(row)
    session.flush()
    auditing.queue(
        session,
        event="governance.consent_recorded",
        consent_record_id=row.id,
        scope=scope,
        choice=choice,
        actor=actor,
    )
    return row.id


def withdraw_consent(
    session: Session,
    *,
    consent_key: str,
    source_ref: str,
    actor: str,
    scope: str = SECONDARY_USE,
    at: datetime | None = None,
) -> int:
    """Withdraw at ``at`` (default now): close open records of the scope, record an opt-out."""
    _check_key(consent_key)
    _check_scope(scope)
    _aware(at, "at")
    at = at or datetime.now(UTC)
    q = select(ConsentRow).where(
        ConsentRow.consent_key == consent_key, or_(ConsentRow.valid_to.is_(None), ConsentRow.valid_to > at)
    )
    if scope != SECONDARY_USE:
        q = q.where(ConsentRow.scope == scope)
    closed = 0
    for row in session.execute(q.with_for_update()).scalars():
        # A record starting later than `at` is closed too: it becomes an empty interval.
        row.valid_to = at
        closed += 1
    record_id = record_consent(
        session,
        consent_key=consent_key,
        scope=scope,
        choice="opt_out",
        source_ref=source_ref,
        actor=actor,
        valid_from=at,
        now=at,
    )
    auditing.queue(
        session,
        event="governance.consent_withdrawn",
        consent_record_id=record_id,
        scope=scope,
        closed=closed,
        actor=actor,
    )
    return record_id


def consent_records(session: Session, *, consent_key: str) -> list[ConsentRecord]:
    _check_key(consent_key)
    rows = session.execute(
        select(ConsentRow).where(ConsentRow.consent_key == consent_key).order_by(ConsentRow.id)
    ).scalars()
    return [
        ConsentRecord(
            r.id, r.scope, r.choice, r.valid_from, r.valid_to, r.source_ref, r.recorded_at, r.recorded_by
        )
        for r in rows
    ]


def _resolve(records: Iterable[Any], purpose: str) -> bool:
    """True when the records (all valid at the same moment, one person) exclude the person.

    ``records`` need ``scope``, ``choice``, ``valid_from`` and ``id`` (rows or ORM objects).
    """
    specific = [r for r in records if r.scope == purpose]
    general = [r for r in records if r.scope == SECONDARY_USE]
    for group in (specific, general):
        if group:
            latest = max(group, key=lambda r: (r.valid_from, r.id))
            choice: str = latest.choice
            return choice == "opt_out"
    return False


def _valid_at(session: Session, purpose: str, at: datetime, consent_key: str | None = None) -> list[Any]:
    # Plain column tuples, not ORM objects: a register holds up to millions of opt-outs.
    q = select(
        ConsentRow.consent_key, ConsentRow.scope, ConsentRow.choice, ConsentRow.valid_from, ConsentRow.id
    ).where(
        ConsentRow.scope.in_([SECONDARY_USE, purpose]),
        ConsentRow.valid_from <= at,
        or_(ConsentRow.valid_to.is_(None), ConsentRow.valid_to > at),
    )
    if consent_key is not None:
        q = q.where(ConsentRow.consent_key == consent_key)
    return list(session.execute(q).all())


def excluded_consent_keys(session: Session, *, purpose: str, at: datetime) -> frozenset[str]:
    """Consent keys of persons opted out of secondary use in general or of ``purpose`` at ``at``.

    Resolved in the database (one window-function query; the same rule as ``_resolve``, which
    ``is_excluded`` and the tests use as the reference): per person, the valid record for this
    purpose if any, else the valid general record, latest first; excluded if it is an opt-out.
    """
    if purpose not in PURPOSES:
        raise InvalidConsent(f"unknown purpose {purpose!r}", code="consent.bad_scope")
    _aware(at, "at")
    if at is None:
        raise InvalidConsent("at is required", code="consent.naive_time")
    specific_first = case((ConsentRow.scope == purpose, 0), else_=1)
    ranked = (
        select(
            ConsentRow.consent_key,
            ConsentRow.choice,
            func.row_number()
            .over(
                partition_by=ConsentRow.consent_key,
                order_by=(specific_first, ConsentRow.valid_from.desc(), ConsentRow.id.desc()),
            )
            .label("rn"),
        )
        .where(
            ConsentRow.scope.in_([SECONDARY_USE, purpose]),
            ConsentRow.valid_from <= at,
            or_(ConsentRow.valid_to.is_(None), ConsentRow.valid_to > at),
        )
        .subquery()
    )
    q = select(ranked.c.consent_key).where(ranked.c.rn == 1, ranked.c.choice == "opt_out")
    return frozenset(session.execute(q).scalars())


def next_validity_boundary(session: Session, *, after: datetime) -> datetime | None:
    """The first moment after ``after`` at which any record starts or ends (None: none does).

    Until then, and while no record is written, every resolution made at ``after`` holds: a
    cache of ``excluded_consent_keys`` may serve [after, boundary).
    """
    _aware(after, "after")
    starts = select(func.min(ConsentRow.valid_from)).where(ConsentRow.valid_from > after).scalar_subquery()
    ends = select(func.min(ConsentRow.valid_to)).where(ConsentRow.valid_to > after).scalar_subquery()
    first_start, first_end = session.execute(select(starts, ends)).one()
    found = [t for t in (first_start, first_end) if t is not None]
    return min(found) if found else None


def is_excluded(session: Session, *, consent_key: str, purpose: str, at: datetime) -> bool:
    _check_key(consent_key)
    if purpose not in PURPOSES:
        raise InvalidConsent(f"unknown purpose {purpose!r}", code="consent.bad_scope")
    return _resolve(_valid_at(session, purpose, at, consent_key), purpose)


def end_consent_record(session: Session, *, record_id: int, at: datetime, actor: str) -> None:
    """End one record's validity at ``at`` (e.g. a person lifts an earlier opt-out)."""
    _aware(at, "at")
    row = session.get(ConsentRow, record_id)
    if row is None:
        raise NotFound(f"consent record {record_id} does not exist", code="consent.not_found")
    if row.valid_to is None or row.valid_to > at:
        row.valid_to = at
    session.flush()
    auditing.queue(session, event="governance.consent_ended", consent_record_id=record_id, actor=actor)
