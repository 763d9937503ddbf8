"""The access layer's view of governance: a small port, so the layer can be tested alone.

``Governance`` mirrors the "Governance service API" in docs/ARCHITECTURE.md without the
session argument; ``access.governance_adapter.ServiceGovernance`` implements it over
``governance.service``; ``InMemoryGovernance`` implements it in memory for tests, the
benchmark and the embedded demo.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from governance.values import User  # one user type for governance and access

ROLES = frozenset({"researcher", "steward", "operator", "admin"})
RECORD = "record"
AGGREGATE = "aggregate"


@dataclass(frozen=True)
class Permit:
    id: int
    request_id: int
    release_id: str
    users: frozenset[str]
    variables: frozenset[str]  # "table.column"
    holders: frozenset[str]
    purpose: str
    output_tier: str  # "record" | "aggregate"
    expires_at: datetime


@runtime_checkable
class Governance(Protocol):
    def authenticate_token(self, token: str) -> User | None: ...

    def active_permit(self, *, user_name: str, release_id: str, at: datetime) -> Permit | None: ...

    def releases_for_user(self, *, user_name: str, at: datetime) -> list[Permit]: ...

    def excluded_consent_keys(self, *, purpose: str, at: datetime) -> frozenset[str]: ...


def to_user(obj: object) -> User:
    """Copy any object with the User fields into the access layer's frozen value."""
    return User(
        name=str(obj.name),  # type: ignore[attr-defined]
        roles=frozenset(obj.roles),  # type: ignore[attr-defined]
        holder_ids=frozenset(getattr(obj, "holder_ids", ()) or ()),
    )


def to_permit(obj: object) -> Permit:
    """Copy any object with the Permit fields into the access layer's frozen value."""
    return Permit(
        id=int(obj.id),  # type: ignore[attr-defined]
        request_id=int(obj.request_id),  # type: ignore[attr-defined]
        release_id=str(obj.release_id),  # type: ignore[attr-defined]
        users=frozenset(obj.users),  # type: ignore[attr-defined]
        variables=frozenset(obj.variables),  # type: ignore[attr-defined]
        holders=frozenset(obj.holders),  # type: ignore[attr-defined]
        purpose=str(obj.purpose),  # type: ignore[attr-defined]
        output_tier=str(obj.output_tier),  # type: ignore[attr-defined]
        expires_at=obj.expires_at,  # type: ignore[attr-defined]
    )


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class InMemoryGovernance:
    """A thread-safe in-memory governance store (tests, benchmark, embedded demo).

    Tokens are kept hashed, as the real store does. Opt-outs are recorded per consent key,
    either for every purpose (``purpose=None``) or one purpose, from a given time.
    """

    users: dict[str, User] = field(default_factory=dict)
    permits: list[Permit] = field(default_factory=list)
    _tokens: dict[str, str] = field(default_factory=dict)
    _optouts: list[tuple[str, str | None, datetime]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_user(self, name: str, roles: set[str] | frozenset[str], holder_ids: tuple[str, ...] = ()) -> User:
        unknown = set(roles) - ROLES
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}; known: {sorted(ROLES)}")
        user = User(name=name, roles=frozenset(roles), holder_ids=frozenset(holder_ids))
        with self._lock:
            self.users[name] = user
        return user

    def issue_token(self, name: str) -> str:
        token = "hdp_" + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[_token_hash(token)] = name
        return token

    def add_permit(self, permit: Permit) -> Permit:
        with self._lock:
            self.permits.append(permit)
        return permit

    def revoke(self, permit_id: int) -> None:
        with self._lock:
            self.permits = [p for p in self.permits if p.id != permit_id]

    def opt_out(self, consent_key: str, at: datetime, purpose: str | None = None) -> None:
        with self._lock:
            self._optouts.append((consent_key, purpose, at))

    # -- the port -------------------------------------------------------
    def authenticate_token(self, token: str) -> User | None:
        with self._lock:
            name = self._tokens.get(_token_hash(token))
            return self.users.get(name) if name else None

    def active_permit(self, *, user_name: str, release_id: str, at: datetime) -> Permit | None:
        with self._lock:
            for p in self.permits:
                if p.release_id == release_id and user_name in p.users and at < p.expires_at:
                    return p
        return None

    def releases_for_user(self, *, user_name: str, at: datetime) -> list[Permit]:
        with self._lock:
            return [p for p in self.permits if user_name in p.users and at < p.expires_at]

    def excluded_consent_keys(self, *, purpose: str, at: datetime) -> frozenset[str]:
        with self._lock:
            return frozenset(
                key for key, p, since in self._optouts if since <= at and (p is None or p == purpose)
            )
