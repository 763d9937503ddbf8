"""What every store-backed governance module shares: the caller's clock, flushing with lost
races turned into ``ConcurrencyConflict``, the request row lock, and the change counters.

Callers own the transaction (``governance.store.session_scope``): every function validates
first and raises a specific ``governance.errors`` exception before writing, and the scope rolls
back on any error, so nothing partial is stored.

Concurrency: every change of a request first locks its row (``SELECT ... FOR UPDATE`` on
Postgres, ``BEGIN IMMEDIATE`` on SQLite) and re-reads it under that lock, so two stewards
approving at once are serialised: both decisions are kept and the permit is issued exactly once.
Unique constraints (one decision per reviewer and round, one permit per request and per
release) and the optimistic ``version`` column back this up; :func:`flush` turns their
violations into ``ConcurrencyConflict``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from governance.errors import ConcurrencyConflict, NotFound
from governance.models import ChangeCounterRow, RequestRow


def aware_now(now: datetime | None) -> datetime:
    """``now`` as given (it must be timezone-aware), or the current UTC time when None."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("pass a timezone-aware datetime")
    return now


def flush(session: Session) -> None:
    """Flush now, turning lost races into a clear ConcurrencyConflict (the caller rolls back)."""
    try:
        session.flush()
    except StaleDataError as exc:
        raise ConcurrencyConflict("the request was changed by someone else at the same time; retry") from exc
    except IntegrityError as exc:
        raise ConcurrencyConflict(
            "a concurrent change already recorded this (unique constraint); reload and retry"
        ) from exc


def lock_request(session: Session, request_id: int) -> RequestRow:
    """The request row, locked for this transaction and re-read from the database."""
    row = session.execute(
        select(RequestRow)
        .where(RequestRow.id == request_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"request {request_id} does not exist", code="request.not_found")
    return row


def change_versions(session: Session | Connection) -> dict[str, int]:
    """Scope -> current version of the change counters (``governance.models.CHANGE_SCOPES``).

    Every committed write to a scope's tables has bumped its version (triggers), so a value
    read after a version was read is current for as long as the version stays the same.
    """
    return {
        scope: int(v)
        for scope, v in session.execute(select(ChangeCounterRow.scope, ChangeCounterRow.version))
    }
