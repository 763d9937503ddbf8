"""``Governance`` port over ``governance.service`` (SQLAlchemy; SQLite or Postgres).

Each call opens its own short read-only session: the access layer asks at the moment of every
query, so a revoked permit or a withdrawal committed by another process is seen by the next
query. Token and permit lookups are single indexed reads and are not cached (a revocation
must bite at once). The exclusion set is cached per purpose and revalidated by a cheap probe
at every query (``access.consent_cache``), so it is exactly as current as an uncached read.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from access.consent_cache import ConsentCache, Probe
from access.ports import Permit, User, to_permit, to_user


def _ms(column: Any, dialect: str) -> Any:
    """``column`` (a UTC datetime) as integer milliseconds since the epoch, per backend.

    Integers, so the fingerprint's sum is exact however many records there are."""
    from sqlalchemy import BigInteger, Integer, cast, func

    if dialect == "sqlite":
        # Stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC); julianday keeps the fraction.
        return cast(func.round((func.julianday(column) - 2440587.5) * 86400000.0), Integer)
    return cast(func.floor(func.extract("epoch", column) * 1000), BigInteger)


def consent_probe(session: Any, *, since: datetime, at: datetime) -> Probe:
    """One aggregate scan of the consent registry: fingerprint and boundaries in (since, at]."""
    from sqlalchemy import and_, case, func, or_, select

    from governance.models import ConsentRow as C

    dialect = session.get_bind().dialect.name
    crossed = or_(and_(C.valid_from > since, C.valid_from <= at),
                  and_(C.valid_to.is_not(None), C.valid_to > since, C.valid_to <= at))
    row = session.execute(select(
        func.count(), func.max(C.id), func.count(C.valid_to), func.sum(_ms(C.valid_to, dialect)),
        func.count(case((crossed, 1))),
    )).one()
    count, max_id, closed, closed_sum, n_crossed = row
    return Probe(fingerprint=(int(count), max_id, int(closed), int(closed_sum or 0)),
                 boundaries_crossed=int(n_crossed))


@dataclass
class ServiceGovernance:
    url: str
    _consent: ConsentCache = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._consent = ConsentCache(self._probe, self._load_exclusions)

    def _scope(self):  # type: ignore[no-untyped-def]
        from governance.store import session_scope

        # Read-only sessions: on SQLite a plain deferred BEGIN in WAL mode, so a lookup never
        # queues behind a writer (BEGIN IMMEDIATE would serialise every query with every
        # steward's decision), and any accidental write is rolled back.
        return session_scope(self.url, readonly=True)

    def authenticate_token(self, token: str) -> User | None:
        from governance import service

        with self._scope() as session:
            user = service.authenticate_token(session, token)
        return None if user is None else to_user(user)

    def active_permit(self, *, user_name: str, release_id: str, at: datetime) -> Permit | None:
        from governance import service

        with self._scope() as session:
            permit = service.active_permit(session, user_name=user_name, release_id=release_id, at=at)
        return None if permit is None or permit.release_id is None else to_permit(permit)

    def releases_for_user(self, *, user_name: str, at: datetime) -> list[Permit]:
        from governance import service

        with self._scope() as session:
            permits = service.releases_for_user(session, user_name=user_name, at=at)
        return [to_permit(p) for p in permits if p.release_id is not None]

    def excluded_consent_keys(self, *, purpose: str, at: datetime) -> frozenset[str]:
        return self._consent.get(purpose, at)

    # -- the cache's two reads -------------------------------------------------------
    def _probe(self, since: datetime, at: datetime) -> Probe:
        with self._scope() as session:
            return consent_probe(session, since=since, at=at)

    def _load_exclusions(self, purpose: str, at: datetime) -> tuple[Hashable, frozenset[str]]:
        from governance import service

        with self._scope() as session:  # one snapshot: fingerprint first, then the set
            fingerprint = consent_probe(session, since=at, at=at).fingerprint
            keys = frozenset(service.excluded_consent_keys(session, purpose=purpose, at=at))
        return fingerprint, keys
