"""Single sign-on through OIDC against a real identity provider on the loopback interface.

The provider below is a small FastAPI app served by uvicorn on a free 127.0.0.1 port: discovery
document, authorisation endpoint, token endpoint (checks the PKCE S256 verifier with Authlib's
``compare_s256_code_challenge`` and, for a confidential client, HTTP Basic), and a JWKS; its ID
tokens are RS256-signed with joserfc. The platform talks to it over real HTTP; only the
browser's part is played by the test client (and the redirect to the provider by httpx).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from authlib.oauth2.rfc7636.challenge import compare_s256_code_challenge
from fastapi import FastAPI, Form, Request  # module level: the provider's routes resolve these names
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from webtest_helpers import csrf_of

from access.web.oidc import CALLBACK_PATH, TX_COOKIE, OidcConfig, check_url
from access.web.sessions import COOKIE_NAME

CLIENT_ID = "hdp-web"
BASE = "http://testserver"
REDIRECT_URI = BASE + CALLBACK_PATH


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Provider:
    """The identity provider's state and the knobs a test turns to make it misbehave."""

    issuer: str
    redirect_uri: str = REDIRECT_URI  # the one registered for our client
    interactive: bool = False  # a page the person clicks through, as at a real provider's login
    user: str = "s-ndr"  # who is signed in at the provider
    client_secret: str | None = None  # set: a confidential client, HTTP Basic required
    claims: dict[str, Any] = field(default_factory=dict)  # overrides of the ID token's claims
    header: dict[str, Any] = field(default_factory=dict)
    sign_with: Any = None  # another key (same kid): a forged signature
    keys: list[Any] = field(default_factory=list)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    jwks_fetches: int = 0

    def reset(self) -> None:
        from joserfc.jwk import RSAKey

        self.user, self.client_secret, self.claims, self.header, self.sign_with = "s-ndr", None, {}, {}, None
        self.redirect_uri = REDIRECT_URI
        self.interactive = False
        self.keys = [RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig"}, private=True)]
        self.codes.clear()
        self.token_requests.clear()
        self.jwks_fetches = 0

    def id_token(self, nonce: str) -> str:
        from joserfc import jwt

        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": "idp-" + self.user,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": nonce,
            "preferred_username": self.user,
        }
        claims.update(self.claims)
        claims = {k: v for k, v in claims.items() if v is not None}
        if isinstance(self.sign_with, bytes):  # HS256 with these bytes as the secret, by hand

            def b64(data: bytes) -> str:
                return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

            head = b64(json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode())
            body = b64(json.dumps(claims).encode())
            mac = hmac.new(self.sign_with, f"{head}.{body}".encode(), hashlib.sha256).digest()
            return f"{head}.{body}.{b64(mac)}"
        key = self.sign_with or self.keys[-1]
        header = {"alg": "RS256", "kid": key.kid, **self.header}
        return jwt.encode(header, claims, key)


def provider_app(idp: Provider):
    app = FastAPI()

    @app.get("/.well-known/openid-configuration")
    def discovery() -> dict[str, Any]:
        return {
            "issuer": idp.issuer,
            "authorization_endpoint": idp.issuer + "/authorize",
            "token_endpoint": idp.issuer + "/token",
            "jwks_uri": idp.issuer + "/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
        }

    @app.get("/jwks")
    def jwks() -> dict[str, Any]:
        idp.jwks_fetches += 1
        return {"keys": [k.as_dict(private=False) for k in idp.keys]}

    @app.get("/authorize")
    def authorize(request: Request) -> Any:
        q = request.query_params
        if (
            q.get("client_id") != CLIENT_ID
            or q.get("redirect_uri") != idp.redirect_uri
            or q.get("response_type") != "code"
            or q.get("code_challenge_method") != "S256"
            or not q.get("code_challenge")
            or "openid" not in q.get("scope", "").split()
        ):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = secrets.token_urlsafe(16)
        idp.codes[code] = {
            "challenge": q["code_challenge"],
            "nonce": q.get("nonce", ""),
            "redirect": q["redirect_uri"],
        }
        if idp.interactive:  # the way back starts from the provider's own page: a cross-site navigation
            return HTMLResponse(
                f'<form method="get" action="{q["redirect_uri"]}">'
                f'<input type="hidden" name="code" value="{code}">'
                f'<input type="hidden" name="state" value="{q.get("state", "")}">'
                '<button type="submit">Approve</button></form>'
            )
        return RedirectResponse(
            f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}", 302
        )

    @app.post("/token")
    def token(
        request: Request,
        grant_type: str = Form(""),
        code: str = Form(""),
        redirect_uri: str = Form(""),
        code_verifier: str = Form(""),
        client_id: str = Form(""),
    ) -> Any:
        idp.token_requests.append(
            {"code_verifier": code_verifier, "auth": request.headers.get("authorization", "")}
        )
        if idp.client_secret is not None:
            expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{idp.client_secret}".encode()).decode()
            if request.headers.get("authorization") != expected:
                return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = idp.codes.pop(code, None)  # one use only
        if (
            grant is None
            or grant_type != "authorization_code"
            or client_id != CLIENT_ID
            or redirect_uri != grant["redirect"]
            or not compare_s256_code_challenge(code_verifier, grant["challenge"])
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        return {
            "access_token": secrets.token_urlsafe(16),
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": idp.id_token(grant["nonce"]),
        }

    return app


@contextmanager
def serving(app: Any, port: int) -> Iterator[None]:
    """``app`` under uvicorn on 127.0.0.1:``port`` in a thread of this process."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    port = _free_port()
    idp = Provider(issuer=f"http://127.0.0.1:{port}")
    idp.reset()
    with serving(provider_app(idp), port):
        yield idp


@pytest.fixture
def sso(provider, world, monkeypatch):
    """The real app configured for single sign-on at ``provider``."""
    from fastapi.testclient import TestClient

    from access.app import create_app
    from hdp.settings import get_settings

    provider.reset()
    monkeypatch.setenv("HDP_OIDC_ISSUER", provider.issuer)
    monkeypatch.setenv("HDP_OIDC_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("HDP_OIDC_REDIRECT_BASE", BASE)
    monkeypatch.setenv("HDP_OIDC_PROVIDER_NAME", "Region Test IdP")
    get_settings.cache_clear()
    with TestClient(create_app(), base_url=BASE) as c:
        yield c


def start(client, next_url: str = "") -> tuple[str, dict[str, list[str]]]:
    """The browser follows "Sign in with ...": our redirect to the provider's authorisation URL."""
    r = client.get("/web/login/oidc" + (f"?next={next_url}" if next_url else ""), follow_redirects=False)
    assert r.status_code == 303, r.text
    assert TX_COOKIE in r.headers["set-cookie"] and "samesite=lax" in r.headers["set-cookie"].lower()
    location = r.headers["location"]
    return location, parse_qs(urlsplit(location).query)


def at_provider(location: str) -> str:
    """The browser at the provider (signed in there already): its redirect back to our callback."""
    with httpx.Client(trust_env=False) as http:
        r = http.get(location, follow_redirects=False)
    assert r.status_code == 302, r.text
    assert r.headers["location"].startswith(REDIRECT_URI + "?")
    return r.headers["location"]


def callback(client, back: str):
    parts = urlsplit(back)
    return client.get(f"{parts.path}?{parts.query}", follow_redirects=False)


def sign_in(client) -> Any:
    location, _ = start(client)
    return callback(client, at_provider(location))


def test_login_page_offers_the_provider_only_when_configured(sso, monkeypatch):
    from hdp.settings import get_settings

    page = sso.get("/web/login?lang=en")
    assert "Sign in with Region Test IdP" in page.text and 'href="/web/login/oidc"' in page.text
    monkeypatch.delenv("HDP_OIDC_CLIENT_ID")  # settings are read per request: SSO is off now
    get_settings.cache_clear()
    assert "Sign in with" not in sso.get("/web/login?lang=en").text
    assert sso.get("/web/login/oidc", follow_redirects=False).status_code == 404


def test_code_flow_with_pkce_signs_an_existing_steward_in(sso, provider):
    location, q = start(sso)
    assert location.startswith(provider.issuer + "/authorize?")
    assert q["response_type"] == ["code"] and q["client_id"] == [CLIENT_ID]
    assert q["redirect_uri"] == [REDIRECT_URI] and q["code_challenge_method"] == ["S256"]
    assert len(q["state"][0]) >= 43 and len(q["nonce"][0]) >= 43 and len(q["code_challenge"][0]) == 43
    r = callback(sso, at_provider(location))
    assert r.status_code == 200, r.text
    # A page that continues (so the SameSite=Strict session cookie goes with the next request).
    assert '<meta http-equiv="refresh" content="0;url=/web/steward">' in r.text
    assert COOKIE_NAME in r.cookies and f"{TX_COOKIE}=" in r.headers.get("set-cookie", "")
    # The verifier reached the token endpoint and matched the challenge (the provider checked it).
    assert len(provider.token_requests) == 1 and len(provider.token_requests[0]["code_verifier"]) >= 43
    assert q["code_challenge"][0] not in provider.token_requests[0]["code_verifier"]
    page = sso.get("/web/steward")
    assert page.status_code == 200 and "s-ndr" in page.text
    # The session works like a token session: logout ends it.
    r = sso.post("/web/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and sso.get("/web/steward", follow_redirects=False).status_code == 303


def test_next_page_survives_the_round_trip(sso, world):
    target = f"/web/requests/{world.request_id}"
    location, _ = start(sso, target)
    r = callback(sso, at_provider(location))
    assert f'content="0;url={target}"' in r.text
    assert sso.get(target).status_code == 200


@pytest.mark.parametrize("who", ["nobody-here", "carol-disabled"])
def test_unknown_or_disabled_users_are_refused_and_never_created(sso, provider, world, who):
    from governance import service
    from governance.store import session_scope

    if who == "carol-disabled":
        who = "carol"
        with session_scope(world.url) as s:
            service.disable_user(s, name="carol", actor="admin")
    provider.user = who
    r = sign_in(sso)
    assert r.status_code == 403
    assert "inget aktivt konto" in r.text and who not in r.text.split("<main", 1)[-1]
    assert (
        COOKIE_NAME not in r.cookies or sso.get("/web/researcher", follow_redirects=False).status_code == 303
    )
    with session_scope(world.url) as s:
        assert who not in {u.name for u in service.list_users(s)}


@pytest.mark.parametrize(
    "knob",
    [
        {"claims": {"aud": "another-client"}},
        {"claims": {"iss": "https://evil.example"}},
        {"claims": {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}},
        {"claims": {"nonce": "replayed-nonce"}},
        {"claims": {"nonce": None}},
        {"claims": {"aud": [CLIENT_ID, "other"], "azp": "other"}},
        {"forged": True},
    ],
    ids=["audience", "issuer", "expired", "nonce", "no-nonce", "azp", "signature"],
)
def test_id_tokens_that_fail_a_check_are_refused(sso, provider, knob):
    from joserfc.jwk import RSAKey

    provider.claims = knob.get("claims", {})
    if knob.get("forged"):
        provider.sign_with = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
    r = sign_in(sso)
    assert r.status_code == 403 and "intyg kunde inte verifieras" in r.text
    assert sso.get("/web/steward", follow_redirects=False).status_code == 303


def test_hs256_token_signed_with_the_public_key_is_refused(sso, provider):
    """The algorithm-confusion attack: only asymmetric algorithms are accepted."""
    provider.sign_with = provider.keys[0].as_pem(private=False)  # the JWKS's public key as HMAC secret
    r = sign_in(sso)
    assert r.status_code == 403 and "intyg kunde inte verifieras" in r.text


def test_state_must_match_and_belong_to_this_browser(sso, provider, world):
    from fastapi.testclient import TestClient

    from access.app import create_app

    location, _ = start(sso)
    back = at_provider(location)
    forged = back.replace("state=", "state=x")
    assert "(svaret hörde inte till den här webbläsaren)" in callback(sso, forged).text
    # A callback replayed into another browser (login CSRF) has no transaction there.
    with TestClient(create_app(), base_url=BASE) as other:
        r = callback(other, back)
        assert r.status_code == 403 and "startades i en annan webbläsare" in r.text
        assert other.get("/web/steward", follow_redirects=False).status_code == 303


def test_provider_error_and_code_reuse_are_refused(sso, provider):
    location, q = start(sso)
    r = sso.get(f"{CALLBACK_PATH}?error=access_denied&state={q['state'][0]}", follow_redirects=False)
    assert r.status_code == 403 and "avbröt inloggningen" in r.text
    location, _ = start(sso)
    back = at_provider(location)
    assert callback(sso, back).status_code == 200
    sso.cookies.clear()
    location2, _ = start(sso)  # a new transaction, but the old (spent) code
    code = parse_qs(urlsplit(back).query)["code"][0]
    state = parse_qs(urlsplit(location2).query)["state"][0]
    r = sso.get(f"{CALLBACK_PATH}?code={code}&state={state}", follow_redirects=False)
    assert r.status_code == 403 and "avbröt inloggningen" in r.text


def test_confidential_client_authenticates_with_its_secret(sso, provider, monkeypatch):
    from hdp.settings import get_settings

    provider.client_secret = "s3cret-at-the-provider"
    r = sign_in(sso)  # no secret configured yet: the provider refuses the code
    assert r.status_code == 403 and "avbröt inloggningen" in r.text
    monkeypatch.setenv("HDP_OIDC_CLIENT_SECRET", provider.client_secret)
    get_settings.cache_clear()
    r = sign_in(sso)
    assert r.status_code == 200 and provider.token_requests[-1]["auth"].startswith("Basic ")
    assert provider.client_secret not in r.text


def test_rotated_signing_key_is_fetched_again(sso, provider):
    from joserfc.jwk import RSAKey

    assert sign_in(sso).status_code == 200
    fetched = provider.jwks_fetches
    provider.keys.append(RSAKey.generate_key(2048, parameters={"kid": "k2"}, private=True))
    sso.cookies.clear()
    assert sign_in(sso).status_code == 200  # k2 was not in the cached set
    assert provider.jwks_fetches == fetched + 1


def test_disabling_the_user_ends_an_sso_session(sso, world):
    from governance import service
    from governance.store import session_scope

    assert sign_in(sso).status_code == 200
    assert sso.get("/web/steward").status_code == 200
    with session_scope(world.url) as s:
        service.disable_user(s, name="s-ndr", actor="admin")
    r = sso.get("/web/steward", follow_redirects=False)
    assert r.status_code == 303 and "session_expired" in r.headers["location"]


def test_provider_down_is_a_clear_refusal(world, monkeypatch):
    from fastapi.testclient import TestClient

    from access.app import create_app
    from hdp.settings import get_settings

    monkeypatch.setenv("HDP_OIDC_ISSUER", f"http://127.0.0.1:{_free_port()}")  # nothing listens
    monkeypatch.setenv("HDP_OIDC_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("HDP_OIDC_REDIRECT_BASE", BASE)
    get_settings.cache_clear()
    with TestClient(create_app(), base_url=BASE) as c:
        r = c.get("/web/login/oidc", follow_redirects=False)
        assert r.status_code == 502 and "svarar inte som den ska" in r.text


def test_provider_urls_must_be_https_except_on_loopback_in_development(tmp_path):
    from hdp.settings import load_settings

    assert check_url("http://127.0.0.1:9000", "x", production=False)
    assert check_url("https://idp.region.se/realms/hdp", "x", production=True)
    for url, production in [
        ("http://idp.region.se", False),
        ("http://127.0.0.1:9000", True),
        ("ftp://idp", False),
        ("https://idp/?a=b", False),
    ]:
        with pytest.raises(ValueError):
            check_url(url, "x", production=production)
    env = {"HDP_HOME": str(tmp_path), "HDP_OIDC_CLIENT_ID": CLIENT_ID, "HDP_OIDC_REDIRECT_BASE": BASE}
    assert OidcConfig.from_settings(load_settings({"HDP_HOME": str(tmp_path)})) is None
    with pytest.raises(ValueError):
        OidcConfig.from_settings(load_settings(env))  # a client id without an issuer
    config = OidcConfig.from_settings(
        load_settings({**env, "HDP_OIDC_ISSUER": "https://idp.region.se", "HDP_OIDC_CLIENT_SECRET": "pw"})
    )
    assert config is not None and config.redirect_uri == REDIRECT_URI
    assert config.discovery_url == "https://idp.region.se/.well-known/openid-configuration"
    assert config.provider_name == "idp.region.se" and "pw" not in repr(config)


@pytest.mark.browser
@pytest.mark.slow
def test_chromium_signs_in_through_the_provider_and_lands_signed_in(provider, world, monkeypatch):
    """In a real browser, where SameSite matters: the app on http://localhost, the provider on
    http://127.0.0.1 (another site). The Lax transaction cookie must come back on the provider's
    cross-site redirect, and the Strict session cookie must go with the continue navigation."""
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{chromium} is required in CI")
        pytest.skip(f"{chromium} is missing")
    from playwright.sync_api import sync_playwright

    from access.app import create_app
    from hdp.settings import get_settings

    port = _free_port()
    base = f"http://localhost:{port}"
    provider.reset()
    provider.redirect_uri = base + CALLBACK_PATH
    provider.interactive = True
    monkeypatch.setenv("HDP_OIDC_ISSUER", provider.issuer)
    monkeypatch.setenv("HDP_OIDC_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("HDP_OIDC_REDIRECT_BASE", base)
    monkeypatch.setenv("HDP_OIDC_PROVIDER_NAME", "Region Test IdP")
    get_settings.cache_clear()
    with serving(create_app(), port), sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )
        try:
            page = browser.new_context(locale="en-GB").new_page()
            page.goto(f"{base}/web/requests/{world.request_id}")  # asks to sign in first
            page.get_by_role("link", name="Sign in with Region Test IdP").click()
            page.get_by_role("button", name="Approve").click()  # at the provider, another site
            page.wait_for_url(f"{base}/web/requests/{world.request_id}")
            assert page.get_by_role("button", name="Log out").is_visible()
            assert "s-ndr" in page.content()
            cookies = {c["name"]: c for c in page.context.cookies()}
            assert cookies["hdp_session"]["sameSite"] == "Strict" and cookies["hdp_session"]["httpOnly"]
            assert TX_COOKIE not in cookies  # spent
        finally:
            browser.close()
