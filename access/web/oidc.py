"""Single sign-on for the web pages: OpenID Connect, authorisation code flow with PKCE (S256).

Flow: ``GET /web/login/oidc`` makes a fresh state, nonce and PKCE verifier, seals them (with
the page to return to) in a short-lived transaction cookie and sends the browser to the
provider. The provider sends it back to ``<HDP_OIDC_REDIRECT_BASE>/web/login/oidc/callback``
with a code; the callback checks the state against the cookie (constant time), redeems the code
with the verifier at the token endpoint, and verifies the ID token: signature against the
provider's JWKS (asymmetric algorithms only), issuer, audience (our client id), expiry, issued
at, nonce, and authorised party, through Authlib's ``CodeIDToken`` rules and joserfc.

Who signs in: the value of the claim ``HDP_OIDC_USER_CLAIM`` must name an existing, enabled
platform user. Nobody is ever created, and rights come from the governance store alone, never
from the token's claims. Unknown or disabled: refused with a plain message.

Why a second cookie: the session cookie is SameSite=Strict, which browsers do not send on the
provider's redirect back (a cross-site navigation). The transaction cookie is SameSite=Lax,
scoped to ``/web/login/oidc``, lives ten minutes and is spent by the callback. For the same
reason the callback answers with a small page that continues to the target (a navigation our
own page starts, so the Strict session cookie goes with it) instead of a redirect.

Configuration: ``HDP_OIDC_ISSUER``, ``HDP_OIDC_CLIENT_ID``, ``HDP_OIDC_REDIRECT_BASE`` (all
three, or web SSO is off), optional ``HDP_OIDC_CLIENT_SECRET`` (confidential clients, sent
with HTTP Basic), ``HDP_OIDC_USER_CLAIM``, ``HDP_OIDC_DISCOVERY_URL``,
``HDP_OIDC_PROVIDER_NAME``. Provider URLs must be https, except on the loopback interface
outside production (tests, a provider on the same machine); the redirect base is https in
production.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from cryptography.fernet import InvalidToken
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from access.ports import User
from access.web.pages import PREFIX, landing_page, safe_next
from access.web.sessions import OIDC, derive_key, load_secret
from governance import service
from governance.errors import NotFound
from hdp.settings import Settings

if TYPE_CHECKING:
    from access.web.routes import WebApp

log = logging.getLogger(__name__)

TX_COOKIE = "hdp_oidc"
TX_PATH = PREFIX + "/login/oidc"
CALLBACK_PATH = TX_PATH + "/callback"
TX_TTL_S = 600
#: Asymmetric only: an HS256 token "signed" with a public key is the classic confusion attack.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
LEEWAY_S = 60
METADATA_TTL_S = 3600
JWKS_TTL_S = 300
HTTP_TIMEOUT_S = 5.0
SCOPE = "openid profile"


class OidcError(Exception):
    """The sign-in cannot go on. ``reason`` is a key of the login page's messages (i18n
    ``oidc_<reason>``); details go to the log, never to the page."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str, *, production: bool, any_http_host: bool = False) -> str:
    """``url`` if it is https, or http outside production on the loopback interface (on any
    host with ``any_http_host``: our own redirect base on a development machine); ValueError
    otherwise."""
    parts = urlsplit(url)
    if not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"{what} must be an absolute URL without query or fragment")
    if parts.scheme == "https" or (
        parts.scheme == "http" and not production and (any_http_host or _loopback(parts.hostname))
    ):
        return url
    raise ValueError(f"{what} must be https (http only outside production, on the loopback interface)")


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    redirect_uri: str
    discovery_url: str
    provider_name: str
    user_claim: str = "preferred_username"
    client_secret: str | None = field(default=None, repr=False)
    production: bool = False

    @classmethod
    def from_settings(cls, s: Settings) -> OidcConfig | None:
        """The configuration, None when web SSO is off; ValueError when it is set but unusable."""
        if not (s.oidc_client_id and s.oidc_redirect_base):
            return None
        if not s.oidc_issuer:
            raise ValueError("HDP_OIDC_CLIENT_ID needs HDP_OIDC_ISSUER")
        prod = s.is_production
        issuer = check_url(s.oidc_issuer, "HDP_OIDC_ISSUER", production=prod)
        base = check_url(
            s.oidc_redirect_base.rstrip("/"), "HDP_OIDC_REDIRECT_BASE", production=prod, any_http_host=True
        )
        discovery = s.oidc_discovery_url or issuer.rstrip("/") + "/.well-known/openid-configuration"
        return cls(
            issuer=issuer,
            client_id=s.oidc_client_id,
            redirect_uri=base + CALLBACK_PATH,
            discovery_url=check_url(discovery, "HDP_OIDC_DISCOVERY_URL", production=prod),
            provider_name=s.oidc_provider_name or (urlsplit(issuer).hostname or issuer),
            user_claim=s.oidc_user_claim,
            client_secret=s.oidc_client_secret.get_secret_value() if s.oidc_client_secret else None,
            production=prod,
        )


@dataclass(frozen=True)
class Transaction:
    """What the callback must match: sealed in the transaction cookie, never shown."""

    state: str = field(repr=False)
    nonce: str = field(repr=False)
    verifier: str = field(repr=False)
    next_url: str = ""


def new_transaction(next_url: str = "") -> Transaction:
    # 256 random bits each; the verifier is 64 characters (RFC 7636 asks 43 to 128).
    return Transaction(
        state=secrets.token_urlsafe(32),
        nonce=secrets.token_urlsafe(32),
        verifier=secrets.token_urlsafe(48),
        next_url=next_url,
    )


class TransactionCodec:
    """Seals a transaction into its cookie (Fernet, a key of its own derived from the data
    home's session secret) and opens it, at most ``TX_TTL_S`` seconds later."""

    def __init__(self, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        self._fernet = derive_key(secret, b"hdp web oidc transaction v1")
        self._clock = clock

    def seal(self, tx: Transaction) -> str:
        body = json.dumps({"s": tx.state, "n": tx.nonce, "v": tx.verifier, "x": tx.next_url})
        return self._fernet.encrypt_at_time(body.encode(), int(self._clock())).decode("ascii")

    def open(self, value: str | None) -> Transaction | None:
        if not value or len(value) > 2048:
            return None
        try:
            p = json.loads(self._fernet.decrypt_at_time(value.encode("ascii"), TX_TTL_S, int(self._clock())))
        except (InvalidToken, UnicodeError, ValueError):
            return None
        if not isinstance(p, dict) or not all(isinstance(p.get(k), str) for k in "snvx"):
            return None
        return Transaction(state=p["s"], nonce=p["n"], verifier=p["v"], next_url=p["x"])


class OidcClient:
    """The relying party: authorisation URL, code redemption, ID token verification."""

    def __init__(
        self,
        config: OidcConfig,
        *,
        http: Callable[[], httpx.Client] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        # trust_env=False: no proxy or .netrc from the environment between us and the provider
        self._http = http or (
            lambda: httpx.Client(timeout=HTTP_TIMEOUT_S, trust_env=False, follow_redirects=False)
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._metadata: tuple[float, dict[str, Any]] | None = None
        self._jwks: tuple[float, dict[str, Any]] | None = None

    # -- provider documents ----------------------------------------------------------------
    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            with self._http() as client:
                r = client.get(url, headers={"Accept": "application/json"})
            r.raise_for_status()
            doc = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcError("provider_unreachable", f"{what}: {type(exc).__name__}") from None
        if not isinstance(doc, dict):
            raise OidcError("provider_unreachable", f"{what} is not a JSON object")
        return doc

    def metadata(self) -> dict[str, Any]:
        """The discovery document, checked: our issuer exactly, https endpoints (cached an hour)."""
        with self._lock:
            if self._metadata and self._clock() - self._metadata[0] < METADATA_TTL_S:
                return self._metadata[1]
        doc = self._get_json(self.config.discovery_url, "discovery document")
        if doc.get("issuer") != self.config.issuer:
            raise OidcError("provider_unreachable", "the discovery document names another issuer")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = doc.get(key)
            try:
                check_url(str(value), key, production=self.config.production)
            except ValueError as exc:
                raise OidcError("provider_unreachable", str(exc)) from None
        methods = doc.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise OidcError("provider_unreachable", "the provider does not support PKCE S256")
        with self._lock:
            self._metadata = (self._clock(), doc)
        return doc

    def _keys(self, *, refresh: bool = False) -> KeySet:
        with self._lock:
            cached = self._jwks
        if refresh or cached is None or self._clock() - cached[0] > JWKS_TTL_S:
            doc = self._get_json(self.metadata()["jwks_uri"], "JWKS")
            with self._lock:
                self._jwks = cached = (self._clock(), doc)
        try:
            return KeySet.import_key_set(cached[1])  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise OidcError("provider_unreachable", f"JWKS: {type(exc).__name__}") from None

    # -- the flow ---------------------------------------------------------------------------
    def authorization_url(self, tx: Transaction) -> str:
        """Where to send the browser: code flow, our redirect URI, state, nonce, S256 challenge."""
        return str(
            prepare_grant_uri(
                self.metadata()["authorization_endpoint"],
                self.config.client_id,
                "code",
                redirect_uri=self.config.redirect_uri,
                scope=SCOPE,
                state=tx.state,
                nonce=tx.nonce,
                code_challenge=create_s256_code_challenge(tx.verifier),
                code_challenge_method="S256",
            )
        )

    def finish(self, tx: Transaction, params: dict[str, str]) -> str:
        """The user name the provider vouches for, after every check; OidcError otherwise."""
        if "error" in params:
            raise OidcError("provider_refused", params.get("error", "")[:64])
        state, code = params.get("state", ""), params.get("code", "")
        if not state or not hmac.compare_digest(state.encode(), tx.state.encode()):
            raise OidcError("state_mismatch")
        if not code or len(code) > 2048:
            raise OidcError("provider_refused", "no code")
        tokens = self._redeem(code, tx.verifier)
        claims = self.verify_id_token(
            tokens.get("id_token"), nonce=tx.nonce, access_token=tokens.get("access_token")
        )
        name = claims.get(self.config.user_claim)
        if not isinstance(name, str) or not name:
            raise OidcError("no_user_claim", self.config.user_claim)
        return name

    def _redeem(self, code: str, verifier: str) -> dict[str, Any]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.config.redirect_uri,
            "code_verifier": verifier,
            "client_id": self.config.client_id,
        }
        secret = self.config.client_secret
        auth = httpx.BasicAuth(self.config.client_id, secret) if secret else httpx.USE_CLIENT_DEFAULT
        try:
            with self._http() as client:
                r = client.post(
                    self.metadata()["token_endpoint"],
                    data=form,
                    auth=auth,
                    headers={"Accept": "application/json"},
                )
            doc = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcError("provider_unreachable", f"token endpoint: {type(exc).__name__}") from None
        if r.status_code != 200 or not isinstance(doc, dict):
            error = doc.get("error") if isinstance(doc, dict) else None
            raise OidcError("provider_refused", f"token endpoint {r.status_code} {str(error)[:64]}")
        return doc

    def verify_id_token(self, id_token: Any, *, nonce: str, access_token: Any = None) -> dict[str, Any]:
        """The ID token's claims once signature, issuer, audience, times and nonce check out."""
        if not isinstance(id_token, str) or len(id_token) > 16_384:
            raise OidcError("bad_id_token", "missing")
        try:
            try:
                token = jwt.decode(id_token, self._keys(), algorithms=list(ALGORITHMS))
            except JoseError:
                # An unknown key id may be a key the provider rotated in: fetch the set once more.
                token = jwt.decode(id_token, self._keys(refresh=True), algorithms=list(ALGORITHMS))
            claims = CodeIDToken(
                token.claims,
                token.header,
                options={
                    "iss": {"essential": True, "value": self.config.issuer},
                    "aud": {"essential": True, "value": self.config.client_id},
                    "exp": {"essential": True},
                    "nonce": {"essential": True, "value": nonce},
                },
                params={
                    "nonce": nonce,
                    "client_id": self.config.client_id,
                    "access_token": access_token if isinstance(access_token, str) else None,
                },
            )
            claims.validate(now=int(self._clock()), leeway=LEEWAY_S)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise OidcError("bad_id_token", type(exc).__name__) from None
        return dict(claims)


# --------------------------------------------------------------------------------------
# The pages
# --------------------------------------------------------------------------------------


class OidcPages:
    """``/web/login/oidc`` and its callback, over the web app's sessions and store."""

    def __init__(self, web: WebApp) -> None:
        self.web = web
        self._clients: dict[OidcConfig, OidcClient] = {}
        self._lock = threading.Lock()

    def config(self) -> OidcConfig | None:
        """The current configuration; an unusable one is logged and counts as off (fails closed)."""
        try:
            return OidcConfig.from_settings(self.web.settings())
        except ValueError as exc:
            log.error("web single sign-on is off: %s", exc)
            return None

    def client(self, config: OidcConfig) -> OidcClient:
        with self._lock:
            if config not in self._clients:
                self._clients = {config: OidcClient(config)}  # a changed configuration replaces it
            return self._clients[config]

    def _codec(self) -> TransactionCodec:
        return TransactionCodec(load_secret(self.web.settings()))

    def start(self, request: Request) -> Response:
        p = self.web.page(request)
        config = self.config()
        if config is None:
            return self.web.error(p, 404, "not_found")
        tx = new_transaction(request.query_params.get("next", "")[:512])
        try:
            url = self.client(config).authorization_url(tx)
        except OidcError as exc:
            log.warning("web oidc start failed: %s", exc)
            return self.web.login_form(request, page=p, status=502, error=p.t("oidc_" + exc.reason))
        response = self.web.redirect(p, url)
        response.set_cookie(
            TX_COOKIE,
            self._codec().seal(tx),
            max_age=TX_TTL_S,
            path=TX_PATH,
            httponly=True,
            samesite="lax",  # sent on the provider's top-level redirect back, unlike Strict
            secure=self.web.secure(request) or urlsplit(config.redirect_uri).scheme == "https",
        )
        return response

    def callback(self, request: Request) -> Response:
        p = self.web.page(request)
        config = self.config()
        if config is None:
            return self.web.error(p, 404, "not_found")
        tx = self._codec().open(request.cookies.get(TX_COOKIE))
        try:
            if tx is None:
                raise OidcError("no_transaction")
            name = self.client(config).finish(tx, dict(request.query_params))
            user = self._platform_user(name)
        except OidcError as exc:
            log.info("web oidc login refused: %s", exc.reason)  # never the claim's value
            response = self.web.login_form(request, page=p, status=403, error=p.t("oidc_" + exc.reason))
        else:
            self.web.start_session(p, user_name=user.name, auth=OIDC)
            log.info("web login user=%s method=oidc", user.name)
            target = safe_next(tx.next_url) or landing_page(user)
            response = self.web.render(
                p,
                "login.html",
                title=p.t("login_title"),
                error=None,
                next="",
                oidc_provider=None,
                continue_to=target,
            )
        response.delete_cookie(TX_COOKIE, path=TX_PATH, httponly=True, samesite="lax")
        return response

    def _platform_user(self, name: str) -> User:
        """The existing, enabled platform user named ``name`` (never created here)."""
        if len(name) > 64:
            raise OidcError("unknown_user")
        try:
            with self.web.store() as s:
                return service.get_user(s, name=name)
        except NotFound:  # no such user, or disabled: the same answer for both
            raise OidcError("unknown_user") from None


def add_oidc_pages(router: APIRouter, web: WebApp) -> OidcPages:
    pages = OidcPages(web)

    @router.get("/login/oidc", response_class=HTMLResponse)
    def oidc_start(request: Request) -> Response:
        return pages.start(request)

    @router.get("/login/oidc/callback", response_class=HTMLResponse)
    def oidc_callback(request: Request) -> Response:
        return pages.callback(request)

    return pages
