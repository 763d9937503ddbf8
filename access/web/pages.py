"""What every ``/web`` page shares: the caller (``Page``), authentication, rendering, security headers.

``PageKit`` is the plumbing under the page handlers of ``access.web.routes`` and
``access.web.outputs``. A session's token is checked on every request through the governance
port (``access.ports.Governance.authenticate_token``), the same cached port the API
authenticates through (``access.governance_adapter.shared_governance``), so a revocation
takes effect on the next page as on the next query.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.orm import Session

from access.governance_adapter import shared_governance
from access.ports import Governance, User
from access.web import i18n
from access.web.sessions import COOKIE_NAME, Sessions, WebSession
from governance.store import session_scope
from hdp.settings import Settings, get_settings

WEB_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"
PREFIX = "/web"

SECURITY_HEADERS = {
    # No script at all on these pages; styles only from our own stylesheet.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _fmt_date(value: date | datetime | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, datetime):
        return (
            value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
            if value.tzinfo
            else value.strftime("%Y-%m-%d %H:%M")
        )
    return value.isoformat()


def _fmt_day(value: date | datetime | None) -> str:
    if value is None:
        return "–"
    return (value.date() if isinstance(value, datetime) else value).isoformat()


def make_environment() -> Environment:
    """The Jinja environment: autoescape on for everything, undefined names are errors."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["dt"] = _fmt_date
    env.filters["day"] = _fmt_day
    return env


def safe_next(target: str | None) -> str | None:
    """A post-login redirect target only if it is a local web page (no open redirect).

    >>> safe_next("/web/requests/3"), safe_next("//evil.example/web"), safe_next("https://x/web")
    ('/web/requests/3', None, None)
    """
    if not target or not target.startswith(PREFIX + "/") or target.startswith("//") or "\\" in target:
        return None
    if any(ch in target for ch in "\r\n") or "//" in target:
        return None
    return target


def landing_page(user: User) -> str:
    """Where a sign-in lands when no page was asked for: the user's main page by role."""
    if "output_checker" in user.roles and not user.roles & {"steward", "researcher"}:
        return f"{PREFIX}/checking"
    return f"{PREFIX}/steward" if "steward" in user.roles else f"{PREFIX}/researcher"


@dataclass
class Page:
    """What a handler knows about the caller: language, session, authenticated user."""

    request: Request
    lang: str
    t: Callable[..., str]
    session: WebSession | None  # from the sealed cookie (access.web.sessions); re-sealed when dirty
    user: User | None = None  # set when the store still vouches for the session
    set_lang_cookie: bool = False
    clear_cookie: bool = False  # the session ended: the response deletes the cookie
    flashes: list[tuple[str, str]] = field(default_factory=list)
    expired: bool = False  # timed out, token revoked, user disabled or logged out elsewhere

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self.user.roles) if self.user else frozenset()

    def flash(self, kind: str, text: str) -> None:
        """A message for the next page this session sees (after a redirect)."""
        assert self.session is not None, "a page that redirects after a form has a session"
        self.session.add_flash(kind, text)


class PageKit:
    """Sessions, authentication, rendering and responses, shared by every page handler."""

    def __init__(
        self,
        *,
        sessions: Sessions | None = None,
        governance_url: Callable[[], str] | None = None,
        settings: Callable[[], Settings] | None = None,
        governance: Callable[[], Governance] | None = None,
    ) -> None:
        self._settings = settings or get_settings
        self._governance_url = governance_url or (lambda: self._settings().governance_url)
        self.sessions = sessions or Sessions(settings=self._settings, governance_url=self._governance_url)
        # The API's port for the same store: one cache, one rule for who a token belongs to.
        self._governance = governance or (lambda: shared_governance(self._governance_url()))
        self.env = make_environment()

    def settings(self) -> Settings:
        return self._settings()

    def store(self) -> AbstractContextManager[Session]:
        """A session on the governance store, for what the port does not cover (review queue,
        requests and decisions, the public register)."""
        return session_scope(self._governance_url())

    def governance(self) -> Governance:
        """The governance port of this store (cached, shared with the API)."""
        return self._governance()

    def authenticate(self, token: str) -> User | None:
        """The user holding ``token`` now (None: unknown, revoked, disabled or malformed)."""
        return self.governance().authenticate_token(token)

    def page(self, request: Request) -> Page:
        lang = i18n.negotiate(
            request.query_params.get("lang"),
            request.cookies.get(i18n.LANG_COOKIE),
            request.headers.get("accept-language"),
        )
        cookie = request.cookies.get(COOKIE_NAME)
        opened = self.sessions.codec().open(cookie)
        p = Page(
            request=request,
            lang=lang,
            t=i18n.translator(lang),
            session=opened.session,
            set_lang_cookie=request.query_params.get("lang") in i18n.LANGUAGES,
            clear_cookie=cookie is not None and opened.session is None,  # expired, tampered, foreign
            expired=opened.expired and opened.session is None,
        )
        session = opened.session
        if session is not None and session.authenticated:
            # Every request asks the store: token revoked, user disabled or logged out ends the
            # session here, in whichever worker (fails closed).
            user = self.sessions.checks.current_user(session)
            if user is None:
                p.session, p.expired, p.clear_cookie = None, True, True
            else:
                p.user = user
        if p.session is not None:
            if p.user is not None:  # anonymous sessions are not re-sealed: no Set-Cookie on public pages
                self.sessions.codec().touch(p.session)
            p.flashes.extend(p.session.take_flashes())
        return p

    def ensure_session(self, p: Page) -> WebSession:
        """The caller's session, creating an anonymous one (for the login form's CSRF token)."""
        if p.session is None:
            p.session = self.sessions.codec().new()
        return p.session

    def start_session(self, p: Page, **who: str) -> WebSession:
        """A signed-in session replacing the caller's (new id and CSRF token: no fixation)."""
        p.session = self.sessions.codec().new(**who)
        p.clear_cookie = False
        return p.session

    def secure(self, request: Request) -> bool:
        """Cookies are Secure over HTTPS and always in production."""
        return request.url.scheme == "https" or bool(getattr(self._settings(), "is_production", False))

    def finish(self, p: Page, response: Response) -> Response:
        for k, v in SECURITY_HEADERS.items():
            response.headers[k] = v
        response.headers["Cache-Control"] = "no-store"
        response.headers["Vary"] = "Cookie, Accept-Language"
        secure = self.secure(p.request)
        if p.session is not None and p.session.dirty:
            codec = self.sessions.codec()
            response.set_cookie(
                COOKIE_NAME,
                codec.seal(p.session),
                httponly=True,
                samesite="strict",
                secure=secure,
                path="/",
                max_age=codec.max_age(p.session),
            )
        elif p.clear_cookie:
            response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict", secure=secure)
        if p.set_lang_cookie:
            response.set_cookie(
                i18n.LANG_COOKIE,
                p.lang,
                httponly=True,
                samesite="strict",
                secure=secure,
                path="/",
                max_age=365 * 86400,
            )
        return response

    def render(self, p: Page, template: str, *, status: int = 200, **context: Any) -> Response:
        csrf = p.session.csrf_token if p.session is not None else ""
        html = self.env.get_template(template).render(
            t=p.t,
            num=lambda value, digits=None: i18n.format_number(value, p.lang, digits=digits),
            lang=p.lang,
            user=p.user,
            roles=p.roles,
            csrf_token=csrf,
            flashes=p.flashes,
            path=p.request.url.path,
            prefix=PREFIX,
            **context,
        )
        return self.finish(p, HTMLResponse(html, status_code=status))

    def redirect(self, p: Page, url: str) -> Response:
        return self.finish(p, RedirectResponse(url, status_code=303))

    def login_redirect(self, p: Page) -> Response:
        notice = "&notice=session_expired" if p.expired else ""
        return self.redirect(p, f"{PREFIX}/login?next={quote(p.request.url.path, safe='/')}{notice}")

    def error(self, p: Page, status: int, key: str) -> Response:
        return self.render(p, "error.html", status=status, title=p.t("error_title"), message=p.t(key))

    def csrf_ok(self, p: Page, submitted: str | None) -> bool:
        return p.session is not None and p.session.check_csrf(submitted)
