"""Accounts, their roles and holders, and their API tokens.

A token is stored only as its SHA-256 (:func:`token_hash`); the plain token is shown once, when
issued. Disabling an account ends its tokens and its access to every release at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from governance import auditing
from governance import text as free_text
from governance.catalogue import reviewers_required
from governance.errors import InvalidRequest, NotFound
from governance.models import ApiTokenRow, UserRow
from governance.text import display_text
from governance.transactions import aware_now, flush
from governance.values import ROLES, User

USER_NAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
MAX_ORGANISATION = 200  # characters (the column's size)


def _user_value(row: UserRow) -> User:
    return User(name=row.name, roles=frozenset(row.roles), holder_ids=frozenset(row.holder_ids))


def user_row(session: Session, name: str) -> UserRow | None:
    """The account's row, disabled or not (None when there is no such account)."""
    return session.execute(select(UserRow).where(UserRow.name == name)).scalar_one_or_none()


def create_user(
    session: Session,
    *,
    name: str,
    roles: Iterable[str],
    holder_ids: Iterable[str] = (),
    actor: str = "system",
    now: datetime | None = None,
    organisation: str | None = None,
) -> User:
    """Create an account; stewards must name the holders they review for. ``organisation`` is
    the employer an applicant works for (shown to the stewards who decide on their requests)."""
    roles_set, holders_set = frozenset(roles), frozenset(holder_ids)
    problems: list[tuple[str, str]] = []
    organisation, problem = _checked_organisation(organisation)
    if problem:
        problems.append(problem)
    if not USER_NAME.match(name or ""):
        problems.append(
            ("user.bad_name", "user name must be 2-64 chars: lower-case letter, then a-z 0-9 . _ -")
        )
    if not roles_set:
        problems.append(("user.no_role", f"give at least one role of {sorted(ROLES)}"))
    if unknown := roles_set - ROLES:
        problems.append(("user.unknown_role", f"unknown role(s) {sorted(unknown)}; known: {sorted(ROLES)}"))
    known_holders = reviewers_required()
    if unknown_h := holders_set - known_holders.keys():
        problems.append(("user.unknown_holder", f"unknown holder(s) {sorted(unknown_h)}"))
    if "steward" in roles_set and not holders_set:
        problems.append(("user.steward_without_holder", "a steward must review for at least one holder"))
    if not problems and user_row(session, name) is not None:
        problems.append(("user.exists", f"user {name!r} already exists"))
    if problems:
        raise InvalidRequest(problems)
    row = UserRow(
        name=name,
        roles=sorted(roles_set),
        holder_ids=sorted(holders_set),
        created_at=aware_now(now),
        organisation=organisation,
    )
    session.add(row)
    flush(session)
    auditing.queue(
        session,
        event="governance.user_created",
        user=name,
        roles=sorted(roles_set),
        holder_ids=sorted(holders_set),
        actor=actor,
    )
    return _user_value(row)


def _checked_organisation(organisation: str | None) -> tuple[str | None, tuple[str, str] | None]:
    """(normalised organisation or None, None) or (input, its problem): one line of at most
    ``MAX_ORGANISATION`` characters that ``governance.text`` allows; blank means not recorded."""
    if organisation is None or not organisation.strip():
        return None, None
    text = organisation.strip()
    if len(text) > MAX_ORGANISATION:
        return organisation, (
            "user.organisation.too_long",
            f"organisation is longer than {MAX_ORGANISATION} characters",
        )
    return free_text.check(text, code="user.organisation", label="organisation")


def set_organisation(
    session: Session, *, name: str, organisation: str | None, actor: str, now: datetime | None = None
) -> None:
    """Record (or clear, with None or blank) the organisation an account's holder works for."""
    row = user_row(session, name)
    if row is None:
        raise NotFound(f"no user named {name!r}", code="user.not_found")
    clean, problem = _checked_organisation(organisation)
    if problem:
        raise InvalidRequest([problem])
    row.organisation = clean
    flush(session)
    # The organisation's name is not personal data, but the audit log keeps to facts: set or cleared.
    auditing.queue(
        session, event="governance.user_organisation", user=name, set=clean is not None, actor=actor
    )


def user_organisation(session: Session, name: str) -> str | None:
    """The organisation recorded for the account (None when none is, or there is no such account)."""
    row = user_row(session, name)
    return None if row is None else display_text(row.organisation)


def get_user(session: Session, *, name: str) -> User:
    row = user_row(session, name)
    if row is None or row.disabled_at is not None:
        raise NotFound(f"no active user named {name!r}", code="user.not_found")
    return _user_value(row)


def list_users(session: Session) -> list[User]:
    rows = session.execute(
        select(UserRow).where(UserRow.disabled_at.is_(None)).order_by(UserRow.name)
    ).scalars()
    return [_user_value(r) for r in rows]


def disable_user(session: Session, *, name: str, actor: str, now: datetime | None = None) -> None:
    """Disable an account at once: its tokens stop working and it loses access to every release."""
    row = user_row(session, name)
    if row is None:
        raise NotFound(f"no user named {name!r}", code="user.not_found")
    row.disabled_at = row.disabled_at or aware_now(now)
    flush(session)
    auditing.queue(session, event="governance.user_disabled", user=name, actor=actor)


def has_role(session: Session, user_name: str, role: str) -> bool:
    """True when the account exists, is not disabled and has ``role``."""
    row = user_row(session, user_name)
    return row is not None and row.disabled_at is None and role in row.roles


def token_hash(token: str) -> str:
    """The SHA-256 (hex) under which a token is stored and looked up; the plain token is never kept."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(session: Session, *, user_name: str, now: datetime | None = None) -> str:
    """A new API token for the user; only its SHA-256 is stored, the plain token is returned once."""
    row = user_row(session, user_name)
    if row is None or row.disabled_at is not None:
        raise NotFound(f"no active user named {user_name!r}", code="user.not_found")
    token = "hdp_" + secrets.token_urlsafe(32)  # 32 random bytes from the OS CSPRNG
    session.add(ApiTokenRow(user_id=row.id, token_sha256=token_hash(token), created_at=aware_now(now)))
    flush(session)
    auditing.queue(session, event="governance.token_issued", user=user_name)
    return token


def revoke_tokens(session: Session, *, user_name: str, now: datetime | None = None) -> int:
    """Revoke every token of the user; returns how many were active."""
    row = user_row(session, user_name)
    if row is None:
        raise NotFound(f"no user named {user_name!r}", code="user.not_found")
    tokens = (
        session.execute(
            select(ApiTokenRow).where(ApiTokenRow.user_id == row.id, ApiTokenRow.revoked_at.is_(None))
        )
        .scalars()
        .all()
    )
    for t in tokens:
        t.revoked_at = aware_now(now)
    flush(session)
    auditing.queue(session, event="governance.tokens_revoked", user=user_name, count=len(tokens))
    return len(tokens)


def authenticate_token(session: Session, token: str) -> User | None:
    """The user holding this token, or None (unknown, revoked, disabled, malformed)."""
    if not isinstance(token, str) or not token or len(token) > 256:
        return None
    digest = token_hash(token)
    found = session.execute(
        select(ApiTokenRow, UserRow)
        .join(UserRow, UserRow.id == ApiTokenRow.user_id)
        .where(ApiTokenRow.token_sha256 == digest)
    ).first()
    if found is None:
        return None
    tok, user = found
    # The lookup is by hash (an attacker cannot steer it); compare in constant time anyway.
    if not hmac.compare_digest(tok.token_sha256, digest):
        return None
    if tok.revoked_at is not None or user.disabled_at is not None:
        return None
    return _user_value(user)
