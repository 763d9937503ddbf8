"""A request's case history: every change, who made it and why, kept in the store.

Free text (justifications, amendment reasons) belongs to the case and stays in the store's
history; the audit log gets ids and decisions only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from governance import auditing
from governance.models import RequestEventRow, RequestRow

_FREE_TEXT = frozenset({"justification", "reason"})

#: One history entry: at (ISO time), actor, action, from_status, to_status, detail (a JSON object).
HistoryEntry = dict[str, Any]


def record_event(
    session: Session,
    row: RequestRow,
    *,
    actor: str,
    action: str,
    from_status: str | None,
    now: datetime,
    **detail: Any,
) -> None:
    """Record a change of ``row`` (already applied) in its history, and its facts in the audit log."""
    session.add(
        RequestEventRow(
            request_id=row.id,
            at=now,
            actor=actor,
            action=action,
            from_status=from_status,
            to_status=row.status,
            detail=detail,
        )
    )
    # The audit log gets ids and decisions only: free text (justifications, reasons) stays in the
    # store's request history, where it belongs to the case.
    auditing.queue(
        session,
        event=f"governance.request.{action}",
        request_id=row.id,
        actor=actor,
        from_status=from_status,
        to_status=row.status,
        **{k: v for k, v in detail.items() if k not in _FREE_TEXT},
    )


def request_history(session: Session, *, request_id: int) -> list[HistoryEntry]:
    """Every recorded change of the request, oldest first, as JSON-ready entries."""
    rows = session.execute(
        select(RequestEventRow).where(RequestEventRow.request_id == request_id).order_by(RequestEventRow.id)
    ).scalars()
    return [
        {
            "at": r.at.isoformat(),
            "actor": r.actor,
            "action": r.action,
            "from_status": r.from_status,
            "to_status": r.to_status,
            "detail": dict(r.detail),
        }
        for r in rows
    ]
