"""Server-side web sessions: the browser holds only an opaque random id.

Why server-side: the cookie must never carry the API token (a readable or stealable cookie would
be a bearer credential for the API too). The cookie holds 256 random bits; the store keys
sessions by the SHA-256 of that id, so not even a dump of the store's keys gives a usable cookie.
The session keeps the user's token in process memory only, so that every page re-authenticates
it against the governance store: revoking a token or disabling a user ends their web session on
the next request (fails closed), without a separate session-revocation list.

Every session, including the anonymous one the login form gets, has its own CSRF token; every
POST form must echo it (compared in constant time). Logging in replaces the anonymous session by
a new one (new id, new CSRF token), so a session id planted before login is worthless after.

Limits: sessions idle for ``idle_timeout`` or older than ``absolute_timeout`` end; at most
``max_sessions`` are held (the least recently used is dropped first), so anonymous visitors cannot
exhaust memory. Sessions live in one process: run the web pages with one worker per store (or
put the store behind the same interface in Redis) — documented in the report.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

COOKIE_NAME = "hdp_session"
DEFAULT_IDLE = timedelta(minutes=30)
DEFAULT_ABSOLUTE = timedelta(hours=8)
DEFAULT_MAX_SESSIONS = 10_000


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


@dataclass
class WebSession:
    """One browser session. ``token`` is None for an anonymous (not logged-in) session."""

    csrf_token: str
    created_at: datetime
    last_seen: datetime
    user_name: str | None = None
    token: str | None = field(default=None, repr=False)  # never printed, never logged
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) shown once

    @property
    def authenticated(self) -> bool:
        return self.token is not None

    def check_csrf(self, submitted: str | None) -> bool:
        """True when the form carried this session's CSRF token (constant-time comparison)."""
        if not submitted or not isinstance(submitted, str):
            return False
        return hmac.compare_digest(self.csrf_token.encode("utf-8"), submitted.encode("utf-8"))


class SessionStore:
    """Thread-safe in-memory store of web sessions with idle/absolute expiry and an LRU cap."""

    def __init__(
        self,
        *,
        idle_timeout: timedelta = DEFAULT_IDLE,
        absolute_timeout: timedelta = DEFAULT_ABSOLUTE,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.idle_timeout = idle_timeout
        self.absolute_timeout = absolute_timeout
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, WebSession] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def create(self, *, user_name: str | None = None, token: str | None = None) -> tuple[str, WebSession]:
        """A new session; returns (cookie value, session). The cookie value is not kept."""
        now = self._clock()
        session_id = secrets.token_urlsafe(32)
        session = WebSession(
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen=now,
            user_name=user_name,
            token=token,
        )
        with self._lock:
            self._sessions[_digest(session_id)] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> WebSession | None:
        """The live session for this cookie value, or None (unknown, expired, malformed)."""
        if not session_id or not isinstance(session_id, str) or len(session_id) > 128:
            return None
        key = _digest(session_id)
        now = self._clock()
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if (
                now - session.last_seen > self.idle_timeout
                or now - session.created_at > self.absolute_timeout
            ):
                del self._sessions[key]
                return None
            session.last_seen = now
            self._sessions.move_to_end(key)
            return session

    def delete(self, session_id: str | None) -> None:
        if not session_id or not isinstance(session_id, str):
            return
        with self._lock:
            self._sessions.pop(_digest(session_id), None)

    def purge_expired(self) -> int:
        """Drop expired sessions; returns how many."""
        now = self._clock()
        with self._lock:
            dead = [
                k
                for k, s in self._sessions.items()
                if now - s.last_seen > self.idle_timeout or now - s.created_at > self.absolute_timeout
            ]
            for k in dead:
                del self._sessions[k]
        return len(dead)
