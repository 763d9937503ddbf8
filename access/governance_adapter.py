"""``Governance`` port over ``governance.service`` (SQLAlchemy; SQLite or Postgres).

The access layer asks at the moment of every query, so a revoked token or permit, or a
withdrawal, committed by another process must be seen by the next query. Answers (token ->
user, user and release -> permit, purpose -> excluded consent keys) are cached and served
only while governance's change counter for their tables is unchanged and the query's time
lies in the answer's validity window (``access.governance_cache``): exactly as current as
an uncached read, at the cost of one primary-key read per lookup. Each read opens its own
short read-only session (on SQLite a plain deferred BEGIN in WAL mode, so a lookup never
queues behind a writer, and any accidental write is rolled back).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from access.governance_cache import Answer, VersionedCache
from governance import service
from governance.outputs import OutputException, OutputRequest
from governance.store import readonly_connection, session_scope
from governance.users import token_hash
from governance.values import Permit, User

T = TypeVar("T")

#: Change-counter scopes (governance.models.CHANGE_SCOPES): users, tokens, requests, permits;
#: consent records.
ACCESS, CONSENT = "access", "consent"


@dataclass
class ServiceGovernance:
    url: str
    _tokens: VersionedCache = field(init=False, repr=False)
    _permits: VersionedCache = field(init=False, repr=False)
    _consent: VersionedCache = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._tokens = VersionedCache(lambda: self._version(ACCESS))
        self._permits = VersionedCache(lambda: self._version(ACCESS))
        self._consent = VersionedCache(lambda: self._version(CONSENT), capacity=64)

    def _scope(self) -> AbstractContextManager[Session]:
        return session_scope(self.url, readonly=True)

    def _version(self, scope: str) -> int:
        """The scope's change counter, read fresh (once per cached lookup)."""
        with readonly_connection(self.url) as conn:
            return self._read_version(conn, scope)

    @staticmethod
    def _read_version(reader: Session | Connection, scope: str) -> int:
        return service.change_versions(reader)[scope]

    # -- the port ------------------------------------------------------------------------
    def authenticate_token(self, token: str) -> User | None:
        def load() -> Answer[User | None]:
            with self._scope() as session:
                version = self._read_version(session, ACCESS)
                user = service.authenticate_token(session, token)
            return Answer(user, version, cacheable=user is not None)

        # Malformed tokens are governance's to refuse (uncached, like every refusal).
        # Keyed by the token's hash: the plain token is not kept in memory beyond the request.
        return self._tokens.get(token_hash(token), load)

    def active_permit(self, *, user_name: str, release_id: str, at: datetime) -> Permit | None:
        def load() -> Answer[Permit | None]:
            with self._scope() as session:
                version = self._read_version(session, ACCESS)
                p = service.active_permit(session, user_name=user_name, release_id=release_id, at=at)
            if p is None or p.release_id is None:
                return Answer(None, version, cacheable=False)
            # Active from issue to expiry unless something is written (revocation bumps the version).
            return Answer(p, version, valid_from=p.issued_at, valid_until=p.expires_at)

        return self._permits.get((user_name, release_id), load, at=at)

    def releases_for_user(self, *, user_name: str, at: datetime) -> list[Permit]:
        with self._scope() as session:
            permits = service.releases_for_user(session, user_name=user_name, at=at)
        return [p for p in permits if p.release_id is not None]

    def excluded_consent_keys(self, *, purpose: str, at: datetime) -> frozenset[str]:
        def load() -> Answer[frozenset[str]]:
            with self._scope() as session:  # one snapshot: version first, then the set
                version = self._read_version(session, CONSENT)
                keys = frozenset(service.excluded_consent_keys(session, purpose=purpose, at=at))
                boundary = service.next_validity_boundary(session, after=at)
            # The set depends on time too (an opt-out valid from tomorrow): it holds until
            # the next moment any record starts or ends.
            return Answer(keys, version, valid_from=at, valid_until=boundary)

        return self._consent.get(purpose, load, at=at)

    # -- the airlock (access.ports.OutputGovernance) over governance.service -------------
    # Each call is one transaction: a refusal (GovernanceError) rolls it back whole.
    def _write(self, fn: Callable[..., T], **kwargs: Any) -> T:
        with session_scope(self.url) as session:
            return fn(session, **kwargs)

    def _read(self, fn: Callable[..., T], **kwargs: Any) -> T:
        with self._scope() as session:
            return fn(session, **kwargs)

    def file_output(self, *, at: datetime, **facts: Any) -> OutputRequest:
        return self._write(service.file_output_request, now=at, **facts)

    def get_output(self, *, output_id: int) -> OutputRequest:
        return self._read(service.get_output_request, output_id=output_id)

    def list_outputs(self, *, requester: str) -> list[OutputRequest]:
        return self._read(service.list_output_requests, requester=requester)

    def outputs_for_checker(self, *, checker: str) -> list[OutputRequest]:
        return self._read(service.outputs_for_checker, checker=checker)

    def output_scope(self, *, permit_id: int) -> tuple[frozenset[str], frozenset[str]]:
        return self._read(service.output_permit_scope, permit_id=permit_id)

    def check_output(
        self, *, output_id: int, checker: str, decision: str, comment: str, at: datetime
    ) -> OutputRequest:
        return self._write(
            service.check_output,
            output_id=output_id,
            checker=checker,
            decision=decision,
            comment=comment,
            now=at,
        )

    def resubmit_output(
        self, *, output_id: int, actor: str, context: str, replacement: Mapping[str, Any] | None, at: datetime
    ) -> OutputRequest:
        return self._write(
            service.resubmit_output_request,
            output_id=output_id,
            actor=actor,
            context=context,
            replacement=replacement,
            now=at,
        )

    def withdraw_output(self, *, output_id: int, actor: str, at: datetime) -> OutputRequest:
        return self._write(service.withdraw_output_request, output_id=output_id, actor=actor, now=at)

    def record_output_download(
        self, *, output_id: int, actor: str, sha256: str, at: datetime
    ) -> OutputRequest:
        return self._write(
            service.record_output_download, output_id=output_id, actor=actor, sha256=sha256, now=at
        )

    def record_output_exception(
        self, *, permit_id: int, steward: str, justification: str, at: datetime, holder_id: str | None = None
    ) -> OutputException:
        return self._write(
            service.record_output_exception,
            permit_id=permit_id,
            steward=steward,
            justification=justification,
            holder_id=holder_id,
            now=at,
        )

    def withdraw_output_exception(self, *, exception_id: int, actor: str, at: datetime) -> OutputException:
        return self._write(service.withdraw_output_exception, exception_id=exception_id, actor=actor, now=at)

    def output_exceptions(self, *, permit_id: int) -> list[OutputException]:
        return self._read(service.output_exceptions, permit_id=permit_id)


_shared: dict[str, ServiceGovernance] = {}
_shared_lock = threading.Lock()


def shared_governance(url: str) -> ServiceGovernance:
    """The one ``ServiceGovernance`` of this process for the store at ``url``.

    The web pages and the API authenticate through it (``shared_governance(url).authenticate_token(token)``)
    and so share one cache: a token is looked up once, and a revocation committed anywhere is
    seen by both at their next request (the cache checks the change counter on every lookup).
    """
    with _shared_lock:
        governance = _shared.get(url)
        if governance is None:
            governance = _shared[url] = ServiceGovernance(url)
        return governance
