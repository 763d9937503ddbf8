"""Governance events into the keyed audit log, written only with the transaction; and the
audit logs' head checkpoints, kept in the governance store.

Service functions queue events on the session; they are appended just before the transaction
commits. If the audit log cannot be written, the commit fails and nothing is stored (fail closed):
no decision exists that the audit log does not show. Events carry ids, decisions and account
names, never a personal identifier, consent key or health value. The head the events reach is
checkpointed in the same transaction (``gov_audit_checkpoint``, migration 0004), so a decision
and the second copy of its audit head are committed together.

:class:`StoreCheckpoints` is the :class:`hdp.audit.CheckpointStore` of the other writers (the
access layer every N entries and at shutdown) and of ``hdp audit verify``. The store is a
separate system from the host's audit folder (Postgres in production), so whoever can rewrite
that folder cannot make a replaced or shortened log agree with the checkpoints.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from governance.models import AuditCheckpointRow
from governance.store import engine_for, session_scope
from hdp.audit import AuditLog, Checkpoint
from hdp.settings import get_settings

log = logging.getLogger(__name__)

_KEY = "hdp_governance_audit"
GOVERNANCE_LOG = "audit.jsonl"


def queue(session: Session, **fields: Any) -> None:
    session.info.setdefault(_KEY, []).append({"area": "governance", **fields})


@event.listens_for(Session, "before_commit")
def _flush_audit(session: Session) -> None:
    pending = session.info.pop(_KEY, None)
    if not pending:
        return
    # No checkpoint store on the log itself: its checkpoint goes into this very transaction
    # (a second session would wait for this one's write lock on SQLite).
    audit_log = AuditLog(get_settings().audit_dir / GOVERNANCE_LOG, checkpoints=None)
    last: dict[str, Any] = {}
    for entry in pending:
        last = audit_log.append(dict(entry))
    _record(session, audit_log.log_id, int(last["seq"]), str(last["hash"]))


@event.listens_for(Session, "after_rollback")
def _drop_audit(session: Session) -> None:
    session.info.pop(_KEY, None)


def _record(session: Session, log_id: str, seq: int, entry_hash: str) -> None:
    """Add a checkpoint unless (log, seq) is recorded already; a different hash for it is
    reported (the log was replaced) and the first record kept."""
    existing = session.get(AuditCheckpointRow, (log_id, seq))
    if existing is None:
        session.add(
            AuditCheckpointRow(log_id=log_id, seq=seq, entry_hash=entry_hash, recorded_at=datetime.now(UTC))
        )
    elif existing.entry_hash != entry_hash:
        _conflict(log_id, seq)


def _conflict(log_id: str, seq: int) -> None:
    log.error(
        "audit log %s: entry %d differs from its checkpoint: the log was replaced or re-chained "
        "(run 'hdp audit verify')",
        log_id,
        seq,
    )


class StoreCheckpoints:
    """Audit-log head checkpoints in the governance store at ``url``."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __repr__(self) -> str:
        return "StoreCheckpoints(<governance store>)"

    def record(self, log_id: str, seq: int, entry_hash: str) -> None:
        try:
            with session_scope(self.url) as session:
                _record(session, log_id, seq, entry_hash)
        except IntegrityError:  # another writer recorded the same head meanwhile
            recorded = {c.seq: c.hash for c in self.load(log_id)}
            if recorded.get(seq) != entry_hash:
                _conflict(log_id, seq)

    def log_ids(self) -> list[str]:
        """Every log with a checkpoint (a log deleted from the folder is still named here)."""
        with session_scope(self.url, readonly=True) as session:
            return sorted(session.scalars(select(AuditCheckpointRow.log_id).distinct()))

    def load(self, log_id: str) -> list[Checkpoint]:
        with session_scope(self.url, readonly=True) as session:
            rows = session.execute(
                select(AuditCheckpointRow.seq, AuditCheckpointRow.entry_hash)
                .where(AuditCheckpointRow.log_id == log_id)
                .order_by(AuditCheckpointRow.seq)
            ).all()
        return [Checkpoint(int(seq), str(h)) for seq, h in rows]


def checkpoint_table_exists(url: str) -> bool:
    """Whether the store at ``url`` exists and has the checkpoint table (migration 0004);
    never creates a SQLite file."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return False
    with engine_for(url).connect() as conn:
        return inspect(conn).has_table(AuditCheckpointRow.__tablename__)
