"""Authorised re-identification: the only path from a release pseudonym back to a person.

For a patient-safety finding, a requester names a release and one release pseudonym. Two
different people holding the approver role (``reid_approver`` or ``steward``), neither of
them the requester, must approve. Only then may the requester resolve the request, once,
and get back that one person's identifier. Every step is appended to the hash-chained audit
log with ids and decisions only; the identifier is returned to the caller and written
nowhere (not to the store, the audit log or a log line).

Requests live in the restricted zone (``restricted/reid/reid.sqlite``). The role check is a
seam (``has_role(user_name, role) -> bool``) so the governance service provides the truth.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from hdp.audit import AuditLog
from hdp.settings import Settings, get_settings, holders
from pipelines.warehouse import read_connection
from privacy.domains import release_domain_name
from privacy.keys import KeyStore
from privacy.pseudonym import Pseudonymiser

HasRole = Callable[[str, str], bool]

APPROVER_ROLES = ("reid_approver", "steward")
APPROVALS_REQUIRED = 2
PENDING, APPROVED, REJECTED, RESOLVED = "pending", "approved", "rejected", "resolved"

_PSEUDONYM = re.compile(r"[0-9a-f]{64}")
_RELEASE_ID = re.compile(r"[A-Za-z0-9_.-]{1,100}")

SCHEMA = """
CREATE TABLE IF NOT EXISTS reid_request (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    release_id    TEXT NOT NULL,
    pseudonym     TEXT NOT NULL,
    requester     TEXT NOT NULL,
    justification TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    resolved_at   TEXT
);
CREATE TABLE IF NOT EXISTS reid_decision (
    request_id INTEGER NOT NULL REFERENCES reid_request(id),
    actor      TEXT NOT NULL,
    decision   TEXT NOT NULL,   -- 'approve' | 'reject'
    decided_at TEXT NOT NULL,
    UNIQUE (request_id, actor)
);
"""


class ReidError(RuntimeError):
    """Re-identification refused; the message says why (never with an identifier)."""


@dataclass(frozen=True)
class ReidRequest:
    id: int
    release_id: str
    requester: str
    status: str
    approvers: tuple[str, ...]
    created_at: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextmanager
def _db(settings: Settings) -> Iterator[sqlite3.Connection]:
    d = settings.restricted / "reid"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    with closing(sqlite3.connect(d / "reid.sqlite", timeout=30, isolation_level=None)) as con:
        con.executescript(SCHEMA)
        # BEGIN IMMEDIATE serialises writers across processes: two approvals racing cannot
        # both see "one approval so far" and both skip the second-approver check.
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


def _audit(settings: Settings, event: dict) -> None:
    AuditLog(settings.audit_dir / "audit.jsonl").append({"kind": event.pop("kind"), **event})


def _is_approver(has_role: HasRole, user: str) -> bool:
    return any(has_role(user, role) for role in APPROVER_ROLES)


def _load(con: sqlite3.Connection, request_id: int) -> tuple[sqlite3.Row | tuple, list[str]]:
    row = con.execute(
        "SELECT id, release_id, pseudonym, requester, status, created_at FROM reid_request WHERE id = ?",
        (request_id,),
    ).fetchone()
    if row is None:
        raise ReidError(f"no re-identification request {request_id}")
    approvers = [
        a
        for (a,) in con.execute(
            "SELECT actor FROM reid_decision WHERE request_id = ? AND decision = 'approve' ORDER BY decided_at, actor",
            (request_id,),
        ).fetchall()
    ]
    return row, approvers


def request_reid(
    *, release_id: str, pseudonym: str, requester: str, justification: str, settings: Settings | None = None
) -> int:
    """File a request; returns its id. ``justification`` stays in the restricted zone."""
    settings = settings or get_settings()
    if not _RELEASE_ID.fullmatch(release_id):
        raise ReidError("release id has an invalid form")
    if not _PSEUDONYM.fullmatch(pseudonym):
        raise ReidError("pseudonym must be the 64-character lower-case hex person_id of the release")
    if not justification.strip():
        raise ReidError("a justification (the patient-safety finding) is required")
    if not any(k.domain == release_domain_name(release_id) for k in KeyStore(settings).list()):
        raise ReidError(f"release {release_id} has no pseudonym key: no such release")
    with _db(settings) as con:
        cur = con.execute(
            "INSERT INTO reid_request (release_id, pseudonym, requester, justification, status, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (release_id, pseudonym, requester, justification, PENDING, _now()),
        )
        request_id = int(cur.lastrowid or 0)
    _audit(
        settings,
        {
            "kind": "reid.requested",
            "reid_request_id": request_id,
            "release_id": release_id,
            "actor": requester,
        },
    )
    return request_id


def _refuse(settings: Settings, request_id: int, actor: str, step: str, reason: str) -> ReidError:
    _audit(
        settings,
        {
            "kind": "reid.refused",
            "reid_request_id": request_id,
            "actor": actor,
            "step": step,
            "reason": reason,
        },
    )
    return ReidError(reason)


def decide_reid(
    *, request_id: int, actor: str, decision: str, has_role: HasRole, settings: Settings | None = None
) -> ReidRequest:
    """Approve or reject. Approvers need the role and may not be the requester or approve twice."""
    settings = settings or get_settings()
    if decision not in ("approve", "reject"):
        raise ReidError("decision must be 'approve' or 'reject'")
    with _db(settings) as con:
        row, approvers = _load(con, request_id)
        requester, status = row[3], row[4]
        if not _is_approver(has_role, actor):
            err = f"{actor} does not hold an approver role ({' or '.join(APPROVER_ROLES)})"
        elif actor == requester:
            err = "the requester cannot approve or reject their own request"
        elif status != PENDING:
            err = f"request {request_id} is {status}, not pending"
        elif con.execute(
            "SELECT 1 FROM reid_decision WHERE request_id = ? AND actor = ?", (request_id, actor)
        ).fetchone():
            err = f"{actor} has already decided on request {request_id}"
        else:
            err = ""
        if not err:
            con.execute(
                "INSERT INTO reid_decision VALUES (?, ?, ?, ?)", (request_id, actor, decision, _now())
            )
            if decision == "reject":
                status = REJECTED
            else:
                approvers.append(actor)
                if len(set(approvers)) >= APPROVALS_REQUIRED:
                    status = APPROVED
            con.execute("UPDATE reid_request SET status = ? WHERE id = ?", (status, request_id))
    if err:
        raise _refuse(settings, request_id, actor, decision, err)
    _audit(
        settings,
        {
            "kind": f"reid.{decision}d" if decision == "approve" else "reid.rejected",
            "reid_request_id": request_id,
            "actor": actor,
            "status": status,
        },
    )
    return get_reid(request_id, settings=settings)


def get_reid(request_id: int, *, settings: Settings | None = None) -> ReidRequest:
    with _db(settings or get_settings()) as con:
        row, approvers = _load(con, request_id)
    return ReidRequest(
        id=row[0],
        release_id=row[1],
        requester=row[3],
        status=row[4],
        approvers=tuple(approvers),
        created_at=row[5],
    )


def _release_holders(release_id: str, settings: Settings) -> list[str]:
    manifest = settings.releases_dir / release_id / "manifest.json"
    try:
        return list(json.loads(manifest.read_text(encoding="utf-8"))["request"]["holders"])
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        # no manifest (e.g. release being rebuilt): search every holder's person_link
        return [h.id for h in holders()]


def _find(release_id: str, pseudonym: str, settings: Settings) -> str | None:
    store = KeyStore(settings)
    domain = release_domain_name(release_id)
    # every key version of the release domain: a rotated release key must not orphan old releases
    pseudos = [
        Pseudonymiser(store.key(k.key_id).secret, key_id=k.key_id) for k in store.list() if k.domain == domain
    ]
    for holder_id in _release_holders(release_id, settings):
        path = settings.raw_db(holder_id)
        if not path.exists():
            continue
        with read_connection(path) as con:
            if not con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'person_link'"
            ).fetchall()[0][0]:
                continue
            ids = con.sql("SELECT DISTINCT personnummer FROM person_link").to_arrow_table()["personnummer"]
        ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        for p in pseudos:
            hits = [i for i, v in enumerate(p.many(ids).to_pylist()) if v == pseudonym]
            if hits:
                return ids[hits[0]].as_py()
    return None


def resolve_reid(*, request_id: int, actor: str, has_role: HasRole, settings: Settings | None = None) -> str:
    """The identifier behind an approved request's pseudonym; only for the requester, only once.

    Approvals are re-checked here (distinct approvers, still holding the role, none the
    requester), not trusted from the stored status.
    """
    settings = settings or get_settings()
    with _db(settings) as con:
        row, approvers = _load(con, request_id)
        release_id, pseudonym, requester, status = row[1], row[2], row[3], row[4]
        valid = {a for a in approvers if a != requester and _is_approver(has_role, a)}
        if actor != requester:
            err = "only the requester can resolve a request"
        elif status == RESOLVED:
            err = f"request {request_id} was already resolved"
        elif status != APPROVED or len(valid) < APPROVALS_REQUIRED:
            err = (
                f"request {request_id} needs approval by {APPROVALS_REQUIRED} different approvers "
                f"(has {len(valid)})"
            )
        else:
            err = ""
            # mark resolved inside the same transaction: a second resolve cannot slip in
            con.execute(
                "UPDATE reid_request SET status = ?, resolved_at = ? WHERE id = ?",
                (RESOLVED, _now(), request_id),
            )
    if err:
        raise _refuse(settings, request_id, actor, "resolve", err)
    identifier = _find(release_id, pseudonym, settings)
    _audit(
        settings,
        {
            "kind": "reid.resolved",
            "reid_request_id": request_id,
            "release_id": release_id,
            "actor": actor,
            "found": identifier is not None,
        },
    )
    if identifier is None:
        raise ReidError(f"pseudonym of request {request_id} is not a person of release {release_id}")
    return identifier
