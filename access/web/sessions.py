"""Web sessions that every worker and process of a data home shares: a sealed cookie.

The session lives in the cookie, sealed with Fernet (``cryptography``: AES-128-CBC and
HMAC-SHA256, so it is both unreadable and tamper-evident) under a key derived from one secret
per data home. Any worker of ``hdp serve``, any process behind a proxy, opens any cookie: no
session lives in one process's memory (the former in-memory store made 11 of 12 sign-ins on
fresh connections fail under two workers).

What the cookie holds: a per-login random session id, the CSRF token, issued-at and last-seen
times, the user's name, how they signed in ("token" or "oidc"), flash messages, and for a
token sign-in the token's SHA-256. Never the API token: a stolen or decrypted cookie is no
bearer credential for the API (the API needs the token itself; its hash is what the store
already holds). Sealing the hash as well means not even that is visible.

Every request re-checks the session against the governance store (:class:`SessionChecks`):
the token is still unrevoked and its user's, the user still enabled, and the session not
logged out. Revoking a token, disabling a user or logging out therefore ends the web session
on the next request, in every worker (fails closed). Logging out writes a small record of the
ended session (the SHA-256 of its id, until its absolute expiry) to the governance store's
``gov_config`` table, so a copied cookie replayed after logout is refused.

Expiry: idle for ``idle_timeout`` or older than ``absolute_timeout`` (both checked from the
sealed times, which only the key holder can write); last-seen is refreshed at most every
``TOUCH_EVERY`` (the cookie is re-sealed then). Every session, the anonymous one the login form
gets included, has its own CSRF token; logging in starts a new session (new id, new CSRF
token), so a session planted before login is worthless after (no fixation).

The secret (:func:`load_secret`): 32 random bytes generated once per data home, stored wrapped
under the key-encryption key (``privacy.keys``) in ``restricted/keys/web_session.key`` (0600,
owner-only directory), created atomically so that workers starting together agree on one.
Never logged. Deleting the file and restarting ends every web session (key rotation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select

from access.ports import User
from governance import service
from governance.errors import NotFound
from governance.models import ApiTokenRow, ConfigRow, UserRow
from governance.store import session_scope
from hdp.settings import Settings, get_settings, open_private
from privacy.keys import KeyStoreError, default_kms

COOKIE_NAME = "hdp_session"
DEFAULT_IDLE = timedelta(minutes=30)
DEFAULT_ABSOLUTE = timedelta(hours=8)
#: Last-seen is re-sealed at most this often: fewer Set-Cookie headers, idle timeout still exact
#: to within this.
TOUCH_EVERY = timedelta(minutes=1)
#: Cookies longer than this are not even decrypted (browsers keep at most 4096 bytes).
MAX_COOKIE = 4096
MAX_FLASHES = 4
MAX_FLASH_CHARS = 600
#: Sessions a clock skew of up to this is forgiven for (iat slightly in the future).
CLOCK_SKEW = timedelta(seconds=60)

TOKEN = "token"
OIDC = "oidc"
AUTH_METHODS = (TOKEN, OIDC)

SECRET_FILE = "web_session.key"
_SECRET_AAD = b"hdp-web-session-secret|v1"
_SECRET_BYTES = 32
#: gov_config keys of logged-out sessions: this prefix and the SHA-256 of the session id.
ENDED_PREFIX = "web.session_ended."
_FORMAT = 1


def _now() -> datetime:
    return datetime.now(UTC)


def _epoch(t: datetime) -> int:
    return int(t.timestamp())


def _from_epoch(value: Any) -> datetime | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    return datetime.fromtimestamp(value, UTC)


def derive_key(secret: bytes, purpose: bytes) -> Fernet:
    """A Fernet key for one purpose (the session cookie, the OIDC transaction cookie), derived
    from the data home's secret with HKDF: a value sealed for one purpose never opens as another."""
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)
    return Fernet(base64.urlsafe_b64encode(raw))


# --------------------------------------------------------------------------------------
# The session value
# --------------------------------------------------------------------------------------


@dataclass
class WebSession:
    """One browser session. ``user_name`` is None for an anonymous (not signed-in) session."""

    sid: str = field(repr=False)
    csrf_token: str = field(repr=False)
    created_at: datetime
    last_seen: datetime
    user_name: str | None = None
    auth: str | None = None  # TOKEN or OIDC for a signed-in session
    token_sha256: str | None = field(default=None, repr=False)  # never printed, never logged
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) shown once
    #: changed since it was opened: the response must carry the re-sealed cookie
    dirty: bool = field(default=False, repr=False, compare=False)

    @property
    def authenticated(self) -> bool:
        return self.user_name is not None

    def check_csrf(self, submitted: str | None) -> bool:
        """True when the form carried this session's CSRF token (constant-time comparison)."""
        if not submitted or not isinstance(submitted, str):
            return False
        return hmac.compare_digest(self.csrf_token.encode("utf-8"), submitted.encode("utf-8"))

    def add_flash(self, kind: str, text: str) -> None:
        """A message for the next page (kept in the cookie, so it is short and capped)."""
        self.flash = [*self.flash, (kind, text[:MAX_FLASH_CHARS])][-MAX_FLASHES:]
        self.dirty = True

    def take_flashes(self) -> list[tuple[str, str]]:
        taken, self.flash = self.flash, []
        if taken:
            self.dirty = True
        return taken


def session_digest(sid: str) -> str:
    """The SHA-256 of a session id, under which an ended session is recorded."""
    return hashlib.sha256(sid.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------
# Sealing and opening (pure: the secret and the clock are given)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Opened:
    """A cookie opened: the live session, or None with ``expired`` telling a timed-out signed-in
    session (worth a "session expired" notice) from a missing, tampered or foreign one."""

    session: WebSession | None
    expired: bool = False


class SessionCodec:
    """Seals sessions into cookie values and opens them again, with idle and absolute expiry."""

    def __init__(
        self,
        secret: bytes,
        *,
        idle_timeout: timedelta = DEFAULT_IDLE,
        absolute_timeout: timedelta = DEFAULT_ABSOLUTE,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        if len(secret) < _SECRET_BYTES:
            raise ValueError("the session secret must be at least 32 bytes")
        self._fernet = derive_key(secret, b"hdp web session cookie v1")
        self.idle_timeout = idle_timeout
        self.absolute_timeout = absolute_timeout
        self.clock = clock

    def new(
        self, *, user_name: str | None = None, auth: str | None = None, token_sha256: str | None = None
    ) -> WebSession:
        """A fresh session: new random id and CSRF token (256 bits each)."""
        if (user_name is None) != (auth is None) or (auth is not None and auth not in AUTH_METHODS):
            raise ValueError("a signed-in session names its user and how they signed in")
        if (auth == TOKEN) != (token_sha256 is not None):
            raise ValueError("a token sign-in, and only one, carries the token's hash")
        now = self.clock().replace(microsecond=0)
        return WebSession(
            sid=secrets.token_urlsafe(32),
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen=now,
            user_name=user_name,
            auth=auth,
            token_sha256=token_sha256,
            dirty=True,
        )

    def seal(self, session: WebSession) -> str:
        payload: dict[str, Any] = {
            "v": _FORMAT,
            "sid": session.sid,
            "csrf": session.csrf_token,
            "iat": _epoch(session.created_at),
            "seen": _epoch(session.last_seen),
            "u": session.user_name,
            "a": session.auth,
            "th": session.token_sha256,
            "f": [list(f) for f in session.flash],
        }
        value = self._fernet.encrypt(json.dumps(payload, separators=(",", ":")).encode("utf-8")).decode(
            "ascii"
        )
        if len(value) > MAX_COOKIE and session.flash:  # messages are the only variable part
            return self.seal(WebSession(**{**session.__dict__, "flash": []}))
        return value

    def open(self, value: str | None) -> Opened:
        if not value or not isinstance(value, str) or len(value) > MAX_COOKIE:
            return Opened(None)
        try:
            payload = json.loads(self._fernet.decrypt(value.encode("ascii")))
        except (InvalidToken, UnicodeError, ValueError, binascii.Error):
            return Opened(None)
        session = _from_payload(payload)
        if session is None:
            return Opened(None)
        now = self.clock()
        if session.created_at > now + CLOCK_SKEW or session.last_seen < session.created_at:
            return Opened(None)
        if now - session.last_seen > self.idle_timeout or now - session.created_at > self.absolute_timeout:
            return Opened(None, expired=session.authenticated)  # an old login form is no news
        return Opened(session)

    def touch(self, session: WebSession) -> None:
        """Record activity (re-sealed only when last-seen moved by ``TOUCH_EVERY`` or more)."""
        now = self.clock().replace(microsecond=0)
        if now - session.last_seen >= TOUCH_EVERY:
            session.last_seen = now
            session.dirty = True

    def max_age(self, session: WebSession) -> int:
        """Seconds the browser should keep the cookie: until the session's absolute expiry."""
        left = session.created_at + self.absolute_timeout - self.clock()
        return max(0, int(left.total_seconds()))

    def expires_at(self, session: WebSession) -> datetime:
        return session.created_at + self.absolute_timeout


def _from_payload(p: Any) -> WebSession | None:
    """The session a decrypted payload describes, or None if it is not one of ours."""
    if not isinstance(p, dict) or p.get("v") != _FORMAT:
        return None
    sid, csrf, user, auth, th, flashes = (
        p.get("sid"),
        p.get("csrf"),
        p.get("u"),
        p.get("a"),
        p.get("th"),
        p.get("f"),
    )
    created, seen = _from_epoch(p.get("iat")), _from_epoch(p.get("seen"))
    if not (isinstance(sid, str) and isinstance(csrf, str) and sid and csrf and created and seen):
        return None
    if user is not None and not (isinstance(user, str) and auth in AUTH_METHODS):
        return None
    if user is None and (auth is not None or th is not None):
        return None
    if (auth == TOKEN) != isinstance(th, str):
        return None
    if not isinstance(flashes, list) or not all(
        isinstance(f, list) and len(f) == 2 and all(isinstance(x, str) for x in f) for f in flashes
    ):
        return None
    return WebSession(
        sid=sid,
        csrf_token=csrf,
        created_at=created,
        last_seen=seen,
        user_name=user,
        auth=auth,
        token_sha256=th,
        flash=[(k, t) for k, t in flashes],
    )


# --------------------------------------------------------------------------------------
# The data home's secret
# --------------------------------------------------------------------------------------

_secrets: dict[str, bytes] = {}
_secrets_lock = threading.Lock()


def load_secret(settings: Settings | None = None) -> bytes:
    """The data home's session secret, generated on first use (see the module docstring).

    Cached per process and key folder. Two workers starting at once: each writes its own
    candidate to a temporary file and links it into place; ``link`` fails for all but the first,
    which then read the winner's, so every worker seals with the same key.
    """
    settings = settings or get_settings()
    path = settings.keys_dir / SECRET_FILE
    with _secrets_lock:
        cached = _secrets.get(str(path))
        if cached is not None:
            return cached
        kms = default_kms(settings)
        settings.ensure_restricted(settings.keys_dir)
        if not path.exists():
            wrapped = kms.wrap(secrets.token_bytes(_SECRET_BYTES), aad=_SECRET_AAD)
            tmp = path.with_name(f"{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            with os.fdopen(
                open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "w", encoding="ascii"
            ) as fh:
                fh.write(base64.b64encode(wrapped).decode("ascii") + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another worker won the race: use its key
            finally:
                tmp.unlink()
        try:
            secret = kms.unwrap(
                base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True), aad=_SECRET_AAD
            )
        except (OSError, ValueError, binascii.Error) as exc:
            raise KeyStoreError(f"the web session key {path} is unreadable ({type(exc).__name__})") from None
        if len(secret) != _SECRET_BYTES:
            raise KeyStoreError(f"the web session key {path} has the wrong length")
        _secrets[str(path)] = secret
        return secret


def forget_secrets() -> None:
    """Drop cached secrets (tests; after replacing the key file in a running process)."""
    with _secrets_lock:
        _secrets.clear()


# --------------------------------------------------------------------------------------
# Checks against the governance store (I/O)
# --------------------------------------------------------------------------------------


class SessionChecks:
    """What every request asks the governance store about a signed-in session, and logout's record."""

    def __init__(self, governance_url: Callable[[], str], *, clock: Callable[[], datetime] = _now) -> None:
        self._url = governance_url
        self._clock = clock

    def current_user(self, session: WebSession) -> User | None:
        """The session's user as the store has them now, or None: token revoked or not theirs,
        user disabled or gone, session logged out. One short read-only transaction."""
        if session.user_name is None:
            return None
        with session_scope(self._url(), readonly=True) as s:
            if s.get(ConfigRow, ENDED_PREFIX + session_digest(session.sid)) is not None:
                return None
            if session.auth == TOKEN:
                found = s.execute(
                    select(ApiTokenRow.revoked_at, UserRow.name)
                    .join(UserRow, UserRow.id == ApiTokenRow.user_id)
                    .where(ApiTokenRow.token_sha256 == session.token_sha256)
                ).first()
                if found is None or found.revoked_at is not None or found.name != session.user_name:
                    return None
            elif session.auth != OIDC:
                return None
            try:
                return service.get_user(s, name=session.user_name)
            except NotFound:  # no such user, or disabled
                return None

    def end(self, session: WebSession, *, until: datetime) -> None:
        """Record that ``session`` ended (logout) until it would have expired anyway; records of
        sessions past their expiry are dropped, so the table holds only the last hours' logouts."""
        now = self._clock()
        with session_scope(self._url()) as s:
            key = ENDED_PREFIX + session_digest(session.sid)
            if s.get(ConfigRow, key) is None:
                s.add(ConfigRow(key=key, value={"until": _epoch(until)}))
            for row in s.execute(select(ConfigRow).where(ConfigRow.key.startswith(ENDED_PREFIX))).scalars():
                until_at = row.value.get("until") if isinstance(row.value, dict) else None
                if not isinstance(until_at, int) or until_at < _epoch(now):
                    s.delete(row)


class Sessions:
    """The web pages' sessions: the codec of this data home's secret, and the store's checks."""

    def __init__(
        self,
        *,
        settings: Callable[[], Settings] = get_settings,
        governance_url: Callable[[], str] | None = None,
        idle_timeout: timedelta = DEFAULT_IDLE,
        absolute_timeout: timedelta = DEFAULT_ABSOLUTE,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._settings = settings
        self.idle_timeout = idle_timeout
        self.absolute_timeout = absolute_timeout
        self.clock = clock
        self.checks = SessionChecks(governance_url or (lambda: self._settings().governance_url), clock=clock)
        self._codec: tuple[bytes, SessionCodec] | None = None

    def codec(self) -> SessionCodec:
        """The codec of the current data home's secret (loaded once per process)."""
        secret = load_secret(self._settings())
        cached = self._codec
        if cached is None or not hmac.compare_digest(cached[0], secret):
            codec = SessionCodec(
                secret,
                idle_timeout=self.idle_timeout,
                absolute_timeout=self.absolute_timeout,
                clock=self.clock,
            )
            self._codec = cached = (secret, codec)
        return cached[1]
