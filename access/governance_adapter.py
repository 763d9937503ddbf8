"""``Governance`` port over ``governance.service`` (SQLAlchemy; SQLite or Postgres).

Each call opens its own short session: the access layer asks at the moment of every query,
so a revoked permit or a withdrawal committed by another process is seen by the next query.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from access.ports import Permit, User, to_permit, to_user


@dataclass
class ServiceGovernance:
    url: str

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
        from governance import service

        with self._scope() as session:
            return frozenset(service.excluded_consent_keys(session, purpose=purpose, at=at))
