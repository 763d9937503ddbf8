"""The access layer's view of governance: a small port, so the layer can be tested alone.

``Governance`` mirrors the "Governance service API" in docs/ARCHITECTURE.md without the
session argument; ``access.governance_adapter.ServiceGovernance`` implements it over
``governance.service``; ``InMemoryGovernance`` implements it in memory for tests, the
benchmark and the embedded demo.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from governance import outputs as out
from governance.errors import InvalidTransition, NotFound, PermissionDenied
from governance.outputs import OutputException, OutputRequest  # the airlock's values
from governance.users import token_hash

# One permit type and one user type for governance and access.
from governance.values import ROLES, Permit, User

RECORD = "record"
AGGREGATE = "aggregate"


@runtime_checkable
class Governance(Protocol):
    def authenticate_token(self, token: str) -> User | None: ...

    def active_permit(self, *, user_name: str, release_id: str, at: datetime) -> Permit | None: ...

    def releases_for_user(self, *, user_name: str, at: datetime) -> list[Permit]: ...

    def excluded_consent_keys(self, *, purpose: str, at: datetime) -> frozenset[str]: ...


@runtime_checkable
class OutputGovernance(Protocol):
    """The airlock's port (``access.outputs``): output requests, their checks, downloads and
    stewards' row-level exceptions. Rules live in ``governance.outputs``; both implementations
    (the store through ``ServiceGovernance``, and ``InMemoryGovernance``) only apply them.
    Refusals are ``governance.errors.GovernanceError`` (code and HTTP status)."""

    def file_output(self, *, at: datetime, **facts: object) -> OutputRequest: ...

    def get_output(self, *, output_id: int) -> OutputRequest: ...

    def list_outputs(self, *, requester: str) -> list[OutputRequest]: ...

    def outputs_for_checker(self, *, checker: str) -> list[OutputRequest]: ...

    def output_scope(self, *, permit_id: int) -> tuple[frozenset[str], frozenset[str]]: ...

    def check_output(
        self, *, output_id: int, checker: str, decision: str, comment: str, at: datetime
    ) -> OutputRequest: ...

    def resubmit_output(
        self, *, output_id: int, actor: str, context: str, replacement: dict[str, Any] | None, at: datetime
    ) -> OutputRequest: ...

    def withdraw_output(self, *, output_id: int, actor: str, at: datetime) -> OutputRequest: ...

    def record_output_download(
        self, *, output_id: int, actor: str, sha256: str, at: datetime
    ) -> OutputRequest: ...

    def record_output_exception(
        self, *, permit_id: int, steward: str, justification: str, at: datetime, holder_id: str | None = None
    ) -> OutputException: ...

    def withdraw_output_exception(
        self, *, exception_id: int, actor: str, at: datetime
    ) -> OutputException: ...

    def output_exceptions(self, *, permit_id: int) -> list[OutputException]: ...


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
    _output_store: dict[int, OutputRequest] = field(default_factory=dict, repr=False)  # the airlock
    _exception_store: list[OutputException] = field(default_factory=list, repr=False)

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
            self._tokens[token_hash(token)] = name
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
            name = self._tokens.get(token_hash(token))
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

    # -- the airlock (OutputGovernance), the same rules as the store --------------------
    def _outputs(self) -> dict[int, OutputRequest]:
        return self._output_store

    def _exceptions(self) -> list[OutputException]:
        return self._exception_store

    def _permit_by_id(self, permit_id: int) -> Permit:
        for p in self.permits:
            if p.id == permit_id:
                return p
        raise NotFound(f"permit {permit_id} does not exist", code="permit.not_found")

    def _party(self, name: str) -> out.Party:
        user = self.users.get(name)
        return out.party(user) if user else out.Party(name, frozenset())

    def _exception_in_force(self, permit_id: int, at: datetime) -> OutputException | None:
        live = [e for e in self._exceptions() if e.permit_id == permit_id and e.in_force(at)]
        return live[-1] if live else None

    def _locked_output(self, output_id: int) -> OutputRequest:
        o = self._outputs().get(output_id)
        if o is None:
            raise NotFound(f"output {output_id} does not exist", code="output.not_found")
        return o

    def _require_permit(self, permit_id: int, user: str, at: datetime, code: str) -> Permit:
        p = self._permit_by_id(permit_id)
        u = self.users.get(user)
        if user not in p.users or u is None or "researcher" not in u.roles or not at < p.expires_at:
            raise PermissionDenied(f"permit {permit_id} is not in force for {user!r}", code=code)
        return p

    def file_output(self, *, at: datetime, **facts: Any) -> OutputRequest:
        # ``facts``: governance.service.file_output_request's keyword arguments, as the access
        # layer's airlock passes them on; checked here as the store checks them.
        with self._lock:
            permit_id = int(facts["permit_id"])
            p = self._require_permit(permit_id, str(facts["requester"]), at, "output.not_on_permit")
            exception = self._exception_in_force(permit_id, at) if facts.get("row_level") else None
            if facts.get("row_level") and exception is None:
                raise PermissionDenied(
                    "a row-level output needs a steward's exception in force on the permit",
                    code="output.row_level_needs_exception",
                )
            oid = len(self._outputs()) + 1
            o = out.OutputRequest(
                id=oid,
                permit_id=permit_id,
                release_id=p.release,
                requester=str(facts["requester"]),
                status=out.OutputStatus.SUBMITTED.value,
                round=1,
                title=out.clean_text(
                    str(facts["title"]), field="title", minimum=3, maximum=200, multiline=False
                ),
                context=out.clean_text(str(facts["context"]), field="context", minimum=out.MIN_CONTEXT),
                query_masked=str(facts["query_masked"]),
                query_sha256=str(facts["query_sha256"]),
                format=str(facts["format"]),
                file_name=str(facts["file_name"]),
                sha256=str(facts["sha256"]),
                size_bytes=int(facts["size_bytes"]),
                rows=int(facts["rows"]),
                columns=tuple(facts["columns"]),
                row_level=bool(facts.get("row_level")),
                row_level_reasons=tuple(facts.get("row_level_reasons") or ()),
                exception_id=exception.id if exception else None,
                consent_sha256=str(facts.get("consent_sha256") or "0" * 64),
                created_at=at,
                updated_at=at,
            )
            self._outputs()[oid] = o
            return o

    def get_output(self, *, output_id: int) -> OutputRequest:
        with self._lock:
            return self._locked_output(output_id)

    def list_outputs(self, *, requester: str) -> list[OutputRequest]:
        with self._lock:
            return sorted(
                (o for o in self._outputs().values() if o.requester == requester), key=lambda o: -o.id
            )

    def output_scope(self, *, permit_id: int) -> tuple[frozenset[str], frozenset[str]]:
        with self._lock:
            p = self._permit_by_id(permit_id)
            return frozenset(p.users), frozenset(p.holders)

    def outputs_for_checker(self, *, checker: str) -> list[OutputRequest]:
        with self._lock:
            who = self._party(checker)
            found = []
            for o in sorted(self._outputs().values(), key=lambda o: -o.id):
                try:
                    p = self._permit_by_id(o.permit_id)
                except Exception:  # noqa: BLE001 - a revoked permit's outputs are nobody's to check
                    continue
                if (
                    out.check_refusal(
                        who, requester=o.requester, permit_users=p.users, permit_holders=p.holders
                    )
                    is None
                ):
                    found.append(o)
            return found

    def check_output(
        self, *, output_id: int, checker: str, decision: str, comment: str, at: datetime
    ) -> OutputRequest:
        with self._lock:
            o = self._locked_output(output_id)
            p = self._permit_by_id(o.permit_id)
            o = out.decide(
                o,
                self._party(checker),
                decision,
                comment,
                permit_users=p.users,
                permit_holders=p.holders,
                at=at,
            )
            self._outputs()[output_id] = o
            return o

    def resubmit_output(
        self, *, output_id: int, actor: str, context: str, replacement: dict[str, Any] | None, at: datetime
    ) -> OutputRequest:
        with self._lock:
            repl = dict(replacement or {})
            if "columns" in repl:
                repl["columns"] = tuple(repl["columns"])
            if "row_level_reasons" in repl:
                repl["row_level_reasons"] = tuple(repl["row_level_reasons"])
            o = out.resubmit(self._locked_output(output_id), actor, context, at=at, **repl)
            self._require_permit(o.permit_id, actor, at, "output.permit_inactive")
            if o.row_level:
                exception = self._exception_in_force(o.permit_id, at)
                if exception is None:
                    raise PermissionDenied(
                        "a row-level output needs a steward's exception in force on the permit",
                        code="output.row_level_needs_exception",
                    )
                o = replace(o, exception_id=exception.id)
            self._outputs()[output_id] = o
            return o

    def withdraw_output(self, *, output_id: int, actor: str, at: datetime) -> OutputRequest:
        with self._lock:
            o = out.withdraw(self._locked_output(output_id), actor, at=at)
            self._outputs()[output_id] = o
            return o

    def record_output_download(
        self, *, output_id: int, actor: str, sha256: str, at: datetime
    ) -> OutputRequest:
        with self._lock:
            o = self._locked_output(output_id)
            if (refusal := out.download_refusal(o, actor)) is not None:
                raise refusal
            try:
                self._require_permit(o.permit_id, actor, at, "output.permit_inactive")
            except Exception as exc:  # a revoked permit is gone from memory: same refusal
                raise PermissionDenied(
                    f"permit {o.permit_id} is not in force for {actor!r}", code="output.permit_inactive"
                ) from exc
            if o.row_level and self._exception_in_force(o.permit_id, at) is None:
                raise PermissionDenied(
                    "the steward's exception for row-level outputs is no longer in force",
                    code="output.exception_withdrawn",
                )
            if not hmac.compare_digest(sha256 or "", o.sha256):
                raise InvalidTransition(
                    "the stored file is not the file that was checked", code="output.integrity"
                )
            o = replace(o, downloads=o.downloads + 1)
            self._outputs()[output_id] = o
            return o

    def record_output_exception(
        self, *, permit_id: int, steward: str, justification: str, at: datetime, holder_id: str | None = None
    ) -> OutputException:
        with self._lock:
            p = self._permit_by_id(permit_id)
            who = self._party(steward)
            holder = holder_id or next(iter(sorted(who.holder_ids & set(p.holders))), "")
            if (
                refusal := out.exception_refusal(
                    who, holder_id=holder, permit_users=p.users, permit_holders=p.holders
                )
            ) is not None:
                raise refusal
            e = OutputException(
                id=len(self._exceptions()) + 1,
                permit_id=permit_id,
                steward=steward,
                holder_id=holder,
                recorded_at=at,
                justification=out.clean_text(
                    justification, field="justification", minimum=out.MIN_EXCEPTION_JUSTIFICATION
                ),
            )
            self._exceptions().append(e)
            return e

    def withdraw_output_exception(self, *, exception_id: int, actor: str, at: datetime) -> OutputException:
        with self._lock:
            found = [i for i, e in enumerate(self._exceptions()) if e.id == exception_id]
            if not found:
                raise NotFound(f"exception {exception_id} does not exist", code="exception.not_found")
            e = self._exceptions()[found[0]]
            p = self._permit_by_id(e.permit_id)
            who = self._party(actor)
            mine = sorted(who.holder_ids & set(p.holders))
            refusal = (
                out.exception_refusal(who, holder_id=mine[0], permit_users=p.users, permit_holders=p.holders)
                if mine
                else PermissionDenied(
                    f"{actor!r} is not a steward of a holder in the permit", code="exception.not_steward"
                )
            )
            if refusal is not None:
                raise refusal
            if e.withdrawn_at is None:
                e = replace(e, withdrawn_at=at, withdrawn_by=actor)
                self._exceptions()[found[0]] = e
            return e

    def output_exceptions(self, *, permit_id: int) -> list[OutputException]:
        with self._lock:
            return [e for e in self._exceptions() if e.permit_id == permit_id]
