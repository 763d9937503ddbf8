"""Governance events into the hash-chained audit log, written only with the transaction.

Service functions queue events on the session; they are appended just before the transaction
commits. If the audit log cannot be written, the commit fails and nothing is stored (fail closed):
no decision exists that the audit log does not show. Events carry ids, decisions and account
names, never a personal identifier, consent key or health value.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

_KEY = "hdp_governance_audit"


def queue(session: Session, **fields: Any) -> None:
    session.info.setdefault(_KEY, []).append({"area": "governance", **fields})


@event.listens_for(Session, "before_commit")
def _flush_audit(session: Session) -> None:
    pending = session.info.pop(_KEY, None)
    if not pending:
        return
    from hdp.audit import AuditLog
    from hdp.settings import get_settings

    log = AuditLog(get_settings().audit_dir / "audit.jsonl")
    for entry in pending:
        log.append(dict(entry))


@event.listens_for(Session, "after_rollback")
def _drop_audit(session: Session) -> None:
    session.info.pop(_KEY, None)
