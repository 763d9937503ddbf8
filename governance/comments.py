"""A request's comment thread: the stewards of its holders and its applicant side talk about it.

Who may read and post: an active steward of a holder in the request's scope (once the request
is submitted; a draft is not the holders' business yet), the applicant and the request's
members. Anyone else is told the request does not exist, as the pages do. Comments are plain
text (``governance.text``'s rules, multi-line, at most ``MAX_COMMENT`` characters), never
edited or deleted; each post is recorded in the request's history and in the audit log (ids
and the text's length only: the text belongs to the case, in the store).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from governance import text as free_text
from governance.errors import InvalidRequest, NotFound
from governance.history import record_event
from governance.models import RequestCommentRow, RequestRow
from governance.transactions import aware_now, flush
from governance.users import user_row
from governance.values import CommentView
from governance.workflow import Status

MAX_COMMENT = 4000  # characters


def _row_for(session: Session, request_id: int, user_name: str) -> RequestRow:
    """The request if ``user_name`` takes part in its thread; NotFound otherwise (no existence leak)."""
    row = session.get(RequestRow, request_id)
    missing = NotFound(f"request {request_id} does not exist", code="request.not_found")
    if row is None:
        raise missing
    if user_name == row.applicant or user_name in row.members:
        return row
    user = user_row(session, user_name)
    if (
        user is not None
        and user.disabled_at is None
        and "steward" in user.roles
        and set(user.holder_ids) & set(row.holders)
        and row.status != Status.DRAFT.value
    ):
        return row
    raise missing


def may_take_part(session: Session, *, request_id: int, user_name: str) -> bool:
    """True when ``user_name`` may read and post on the request's thread."""
    try:
        _row_for(session, request_id, user_name)
    except NotFound:
        return False
    return True


def _view(c: RequestCommentRow) -> CommentView:
    return CommentView(id=c.id, request_id=c.request_id, author=c.author, body=c.body, posted_at=c.posted_at)


def list_comments(session: Session, *, request_id: int, reader: str) -> list[CommentView]:
    """The request's comments, oldest first, for someone who takes part in its thread."""
    _row_for(session, request_id, reader)
    rows = session.execute(
        select(RequestCommentRow)
        .where(RequestCommentRow.request_id == request_id)
        .order_by(RequestCommentRow.posted_at, RequestCommentRow.id)
    ).scalars()
    return [_view(c) for c in rows]


def post_comment(
    session: Session, *, request_id: int, author: str, body: str, now: datetime | None = None
) -> CommentView:
    """Add a comment to the request's thread; InvalidRequest for empty, too long or unsafe text."""
    row = _row_for(session, request_id, author)
    stripped = (body or "").strip()
    if not stripped:
        raise InvalidRequest([("comment.empty", "a comment needs some text")])
    if len(stripped) > MAX_COMMENT:
        raise InvalidRequest([("comment.too_long", f"a comment has at most {MAX_COMMENT} characters")])
    clean, problem = free_text.check(stripped, code="comment.body", label="comment", multiline=True)
    if problem:
        raise InvalidRequest([problem])
    now = aware_now(now)
    comment = RequestCommentRow(request_id=row.id, author=author, body=clean, posted_at=now)
    session.add(comment)
    flush(session)
    # History and audit log: who posted which comment when, and its length; never the text.
    record_event(
        session,
        row,
        actor=author,
        action="comment",
        from_status=row.status,
        now=now,
        comment_id=comment.id,
        chars=len(clean),
    )
    return _view(comment)
