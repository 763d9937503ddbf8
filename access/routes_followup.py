"""``GET /audit/follow-up``: the access follow-up report (logguppföljning) of one holder.

Operators and admins may ask for any holder; a steward only for the holders they review for
(anyone else: 403). The report itself is ``governance.followup`` over the access layer's and
the governance store's audit logs; it holds user names, ids, counts, reason codes and times.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated aliases at runtime.

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from access.errors import Forbidden, NotFound, QueryRefused
from access.ports import User
from governance.auditing import GOVERNANCE_LOG, StoreCheckpoints
from governance.followup import FollowUpError, build_follow_up_for
from hdp import settings as hdp_settings

OVERSEERS = frozenset({"operator", "admin"})


def may_follow_up(user: User, holder: str) -> bool:
    """Operators and admins for every holder, a steward for the holders they review for."""
    return bool(user.roles & OVERSEERS) or ("steward" in user.roles and holder in user.holder_ids)


def make_router(
    get_session: Callable[[], Iterator[Session]], current_user: Callable[..., User], access_log: Path
) -> APIRouter:
    router = APIRouter()
    DbSession = Annotated[Session, Depends(get_session)]
    CurrentUser = Annotated[User, Depends(current_user)]

    @router.get("/audit/follow-up")
    def follow_up(
        user: CurrentUser,
        session: DbSession,
        holder: Annotated[str, Query(max_length=80)],
        since: Annotated[str, Query(max_length=40)] = "30d",
        until: Annotated[str | None, Query(max_length=40)] = None,
        release: Annotated[str | None, Query(max_length=128)] = None,
    ) -> dict[str, Any]:
        return holder_follow_up(
            session, user, access_log, holder=holder, since=since, until=until, release=release
        )

    return router


def holder_follow_up(
    session: Session,
    user: User,
    access_log: Path,
    *,
    holder: str,
    since: str,
    until: str | None = None,
    release: str | None = None,
) -> dict[str, Any]:
    """The follow-up report of ``holder`` for ``user``, or the refusal (the API's and the web
    page's one rule: ``access.web.followup`` shows the same report)."""
    if not may_follow_up(user, holder):
        raise Forbidden(
            "role.not_holder_steward",
            "the follow-up of a holder is for its stewards, operators and admins",
        )
    if holder not in {h.id for h in hdp_settings.holders()}:
        raise NotFound("holder.unknown", "no such holder")
    settings = hdp_settings.get_settings()
    try:
        return build_follow_up_for(
            session,
            [access_log, settings.audit_dir / GOVERNANCE_LOG],
            holder=holder,
            since=since,
            until=until,
            release=release,
            checkpoints=StoreCheckpoints(settings.governance_url),
        )
    except FollowUpError as err:
        raise QueryRefused("followup.invalid", str(err)) from None
