"""Sealed-cookie web sessions: expiry, tampering, no token in the cookie, the shared secret, and
the store's checks on every request (logout replay, revocation, disabling, CSRF binding)."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from webtest_helpers import csrf_of, login

from access.web.routes import safe_next
from access.web.sessions import (
    COOKIE_NAME,
    ENDED_PREFIX,
    MAX_COOKIE,
    OIDC,
    SECRET_FILE,
    TOKEN,
    SessionCodec,
    forget_secrets,
    load_secret,
)

SECRET = bytes(range(32))


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_idle_and_absolute_expiry():
    clock = Clock()
    codec = SessionCodec(
        SECRET, idle_timeout=timedelta(minutes=30), absolute_timeout=timedelta(hours=2), clock=clock
    )
    session = codec.new(user_name="alice", auth=TOKEN, token_sha256="ab" * 32)
    for _ in range(5):  # activity keeps it alive (each page re-seals last-seen) ...
        clock.now += timedelta(minutes=20)
        opened = codec.open(codec.seal(session))
        assert opened.session is not None
        codec.touch(opened.session)
        assert opened.session.dirty
        session = opened.session
    clock.now += timedelta(minutes=25)  # ... but never past the absolute limit (2 h)
    gone = codec.open(codec.seal(session))
    assert gone.session is None and gone.expired
    anon = codec.seal(codec.new())
    clock.now += timedelta(minutes=31)  # idle for longer than 30 minutes
    assert codec.open(anon).session is None and not codec.open(anon).expired  # no notice for a stale form


def test_touch_reseals_at_most_once_a_minute():
    clock = Clock()
    codec = SessionCodec(SECRET, clock=clock)
    session = codec.open(codec.seal(codec.new())).session
    assert session is not None and not session.dirty
    clock.now += timedelta(seconds=30)
    codec.touch(session)
    assert not session.dirty  # no Set-Cookie on every page
    clock.now += timedelta(seconds=31)
    codec.touch(session)
    assert session.dirty and session.last_seen == clock.now


def test_tampered_or_foreign_cookies_open_to_nothing():
    codec = SessionCodec(SECRET)
    value = codec.seal(codec.new(user_name="alice", auth=OIDC))
    assert codec.open(value).session.user_name == "alice"
    raw = bytearray(base64.urlsafe_b64decode(value))
    for i in (10, len(raw) // 2, len(raw) - 1):  # a flipped bit anywhere: header, body, MAC
        bad = raw.copy()
        bad[i] ^= 1
        opened = codec.open(base64.urlsafe_b64encode(bytes(bad)).decode())
        assert opened.session is None and not opened.expired
    other = SessionCodec(bytes(reversed(range(32))))  # another data home's key
    assert other.open(value).session is None


@pytest.mark.parametrize("value", [None, "", "x" * (MAX_COOKIE + 1), 42, "not-fernet", "gAAAAA=="])
def test_malformed_cookies(value):
    assert SessionCodec(SECRET).open(value).session is None


def test_cookie_carries_neither_token_nor_its_hash_nor_the_user_in_clear():
    codec = SessionCodec(SECRET)
    token = "hdp_" + "s" * 43
    digest = hashlib.sha256(token.encode()).hexdigest()
    session = codec.new(user_name="alice", auth=TOKEN, token_sha256=digest)
    value = codec.seal(session)
    clear = base64.urlsafe_b64decode(value)
    for secret in (token, digest, "alice", session.csrf_token, session.sid):
        assert secret not in value and secret.encode() not in clear
    assert "ab" * 32 not in repr(codec.new(user_name="a", auth=TOKEN, token_sha256="ab" * 32))


def test_new_sessions_have_fresh_ids_and_csrf_tokens_and_consistent_identity():
    codec = SessionCodec(SECRET)
    a, b = codec.new(), codec.new()
    assert a.sid != b.sid and a.csrf_token != b.csrf_token and len(a.csrf_token) >= 43
    with pytest.raises(ValueError):
        codec.new(user_name="alice")  # a signed-in session says how
    with pytest.raises(ValueError):
        codec.new(user_name="alice", auth=OIDC, token_sha256="ab" * 32)
    with pytest.raises(ValueError):
        SessionCodec(b"short")


def test_csrf_check():
    codec = SessionCodec(SECRET)
    session = codec.new()
    assert session.check_csrf(session.csrf_token)
    assert not session.check_csrf(None) and not session.check_csrf("")
    assert not session.check_csrf(session.csrf_token[:-1])
    assert not session.check_csrf(codec.new().csrf_token)


def test_flashes_travel_in_the_cookie_capped():
    codec = SessionCodec(SECRET)
    session = codec.new()
    for i in range(10):
        session.add_flash("info", f"message {i} " + "x" * 2000)
    value = codec.seal(session)
    assert len(value) <= MAX_COOKIE
    opened = codec.open(value).session
    assert opened is not None and 0 < len(opened.flash) <= 4
    assert opened.take_flashes()[-1][1].startswith("message 9") and opened.flash == [] and opened.dirty


def test_secret_is_generated_once_wrapped_and_owner_only(hdp_home):
    forget_secrets()
    secret = load_secret(hdp_home)
    path = hdp_home.keys_dir / SECRET_FILE
    assert len(secret) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(hdp_home.keys_dir.stat().st_mode) == 0o700
    stored = path.read_bytes()
    assert secret not in stored and base64.b64encode(secret) not in stored  # wrapped under the KEK
    forget_secrets()
    assert load_secret(hdp_home) == secret  # read back, not regenerated
    forget_secrets()


def test_an_altered_secret_file_or_another_kek_fails_closed(hdp_home, tmp_path, monkeypatch):
    from hdp.settings import get_settings
    from privacy.keys import KeyStoreError

    forget_secrets()
    load_secret(hdp_home)
    path = hdp_home.keys_dir / SECRET_FILE
    stored = path.read_text()
    forget_secrets()
    monkeypatch.setenv("HDP_KEK_DIR", str(tmp_path / "another-kek"))  # a different key-encryption key
    get_settings.cache_clear()
    with pytest.raises(KeyStoreError):
        load_secret(get_settings())
    monkeypatch.setenv("HDP_KEK_DIR", str(hdp_home.kek_dir))
    get_settings.cache_clear()
    path.write_text(stored[:-8] + "AAAAAAA\n")  # bytes flipped in the wrapped key
    forget_secrets()
    with pytest.raises(KeyStoreError):
        load_secret(get_settings())
    path.write_text("not base64 at all\n")
    with pytest.raises(KeyStoreError):
        load_secret(get_settings())
    forget_secrets()


def test_processes_starting_together_agree_on_one_secret(hdp_home, tmp_path):
    """Four processes race to create the key; all end up with the same one (no lost writes)."""
    forget_secrets()
    from privacy.keys import load_kek

    load_kek(hdp_home)  # the development KEK exists before the workers start, as with `hdp serve`
    code = (
        "import hashlib, sys; from access.web.sessions import load_secret;"
        "sys.stdout.write(hashlib.sha256(load_secret()).hexdigest())"
    )
    env = {**os.environ}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    outputs = {p.communicate(timeout=60)[0].decode() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert outputs == {hashlib.sha256(load_secret(hdp_home)).hexdigest()}
    assert not list(hdp_home.keys_dir.glob("*.tmp"))
    forget_secrets()


@pytest.mark.parametrize(
    "target,expected",
    [
        ("/web/requests/1", "/web/requests/1"),
        ("/web/", "/web/"),
        (None, None),
        ("", None),
        ("/api/x", None),
        ("//evil/web/", None),
        ("https://evil/web/", None),
        ("/web//evil", None),
        ("/web/\\evil", None),
        ("/web/x\r\nSet-Cookie: a=b", None),
    ],
)
def test_safe_next(target, expected):
    assert safe_next(target) == expected


# ------------------------------------------------------------------ through the app


def _codec(settings, clock=None):
    return SessionCodec(load_secret(settings), clock=clock or (lambda: datetime.now(UTC)))


def test_tampered_cookie_is_anonymous(client, world):
    login(client, world.tokens["alice"])
    value = client.cookies.get(COOKIE_NAME)
    assert client.get("/web/researcher", follow_redirects=False).status_code == 200
    client.cookies.set(COOKIE_NAME, value[:-6] + ("AAAAAA" if not value.endswith("AAAAAA") else "BBBBBB"))
    r = client.get("/web/researcher", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/web/login")
    assert "session_expired" not in r.headers["location"]  # a forged cookie is no expired session


def test_expired_session_goes_to_login_with_a_notice(client, world, hdp_home):
    token = world.tokens["alice"]
    past = datetime.now(UTC) - timedelta(hours=9)  # beyond the 8 h absolute limit
    old = _codec(hdp_home, clock=lambda: past).new(
        user_name="alice", auth=TOKEN, token_sha256=hashlib.sha256(token.encode()).hexdigest()
    )
    client.cookies.set(COOKIE_NAME, _codec(hdp_home, clock=lambda: past).seal(old))
    r = client.get("/web/researcher", follow_redirects=False)
    assert r.status_code == 303 and "notice=session_expired" in r.headers["location"]
    assert "Max-Age=0" in r.headers["set-cookie"]  # the dead cookie is deleted
    # The same session sealed now (within its limits) works: only the times differ.
    fresh = _codec(hdp_home).new(
        user_name="alice", auth=TOKEN, token_sha256=hashlib.sha256(token.encode()).hexdigest()
    )
    client.cookies.set(COOKIE_NAME, _codec(hdp_home).seal(fresh))
    assert client.get("/web/researcher", follow_redirects=False).status_code == 200


def test_logout_then_replaying_the_old_cookie_is_refused(client, world):
    from governance.models import ConfigRow
    from governance.store import session_scope

    page = login(client, world.tokens["alice"])
    copied = client.cookies.get(COOKIE_NAME)
    r = client.post("/web/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and "Max-Age=0" in r.headers["set-cookie"]
    client.cookies.clear()
    client.cookies.set(COOKIE_NAME, copied)  # the attacker's copy, taken before logout
    r = client.get("/web/researcher", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/web/login")
    with session_scope(world.url) as s:  # the record holds a hash, never the session id
        keys = [k for (k,) in s.query(ConfigRow.key).filter(ConfigRow.key.startswith(ENDED_PREFIX))]
    assert len(keys) == 1 and len(keys[0]) == len(ENDED_PREFIX) + 64
    # Another login of the same user is not affected by that logout.
    login(client, world.tokens["alice"])
    assert client.get("/web/researcher", follow_redirects=False).status_code == 200


def test_revoked_token_and_disabled_user_end_the_session(client, world):
    from governance import service
    from governance.store import session_scope

    login(client, world.tokens["bob"])
    assert client.get("/web/researcher", follow_redirects=False).status_code == 200
    with session_scope(world.url) as s:
        service.revoke_tokens(s, user_name="bob")
    r = client.get("/web/researcher", follow_redirects=False)
    assert r.status_code == 303 and "session_expired" in r.headers["location"]

    client.cookies.clear()
    login(client, world.tokens["carol"])
    with session_scope(world.url) as s:
        service.disable_user(s, name="carol", actor="admin")
    r = client.get("/web/researcher", follow_redirects=False)
    assert r.status_code == 303 and "session_expired" in r.headers["location"]


def test_a_token_of_another_user_cannot_be_swapped_into_a_session(client, world, hdp_home):
    """A forged session (only possible with the key) naming alice with bob's token hash is refused."""
    bob_hash = hashlib.sha256(world.tokens["bob"].encode()).hexdigest()
    forged = _codec(hdp_home).new(user_name="alice", auth=TOKEN, token_sha256=bob_hash)
    client.cookies.set(COOKIE_NAME, _codec(hdp_home).seal(forged))
    assert client.get("/web/researcher", follow_redirects=False).status_code == 303


def test_csrf_token_of_another_session_is_refused(world):
    from fastapi.testclient import TestClient

    from access.app import create_app

    app = create_app()
    with (
        TestClient(app, base_url="http://testserver") as a,
        TestClient(app, base_url="http://testserver") as b,
    ):
        page_a = login(a, world.tokens["s-ndr"])
        login(b, world.tokens["s-ndr"])  # the same user, another session
        r = b.post("/web/logout", data={"csrf_token": csrf_of(page_a.text)})
        assert r.status_code == 403
        assert b.get("/web/steward", follow_redirects=False).status_code == 200  # still signed in
        r = b.post(
            f"/web/requests/{world.request_id}/decide",
            data={
                "csrf_token": csrf_of(page_a.text),
                "holder_id": "ndr",
                "decision": "approve",
                "justification": "x" * 40,
            },
        )
        assert r.status_code == 403


def test_flash_survives_the_redirect_across_workers(client, world):
    """A message set before a redirect is in the cookie, so whichever worker serves the next page shows it."""
    page = login(client, world.tokens["s-ndr"])
    r = client.post(
        f"/web/requests/{world.request_id}/decide",
        data={
            "csrf_token": csrf_of(client.get(f"/web/requests/{world.request_id}").text),
            "holder_id": "ndr",
            "decision": "return",
            "justification": "Please narrow the variable list to what the aim needs.",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303 and page.status_code == 200
    shown = client.get(r.headers["location"])
    assert 'class="notice notice-success"' in shown.text or "notice-success" in shown.text
    again = client.get(r.headers["location"])
    assert "notice-success" not in again.text  # shown once


def test_activity_reseals_signed_in_sessions_but_public_pages_set_no_cookie(client, world, hdp_home):
    five_minutes_ago = datetime.now(UTC) - timedelta(minutes=5)
    old = _codec(hdp_home, clock=lambda: five_minutes_ago)
    # An anonymous visitor (login form seen earlier) reading the public register: cacheable, no cookie.
    client.cookies.set(COOKIE_NAME, old.seal(old.new()))
    r = client.get("/web/transparency")
    assert r.status_code == 200 and "set-cookie" not in r.headers
    assert r.headers["cache-control"].startswith("public")
    # A signed-in user's activity moves last-seen forward (idle timeout counts from it).
    token = world.tokens["alice"]
    session = old.new(user_name="alice", auth=TOKEN, token_sha256=hashlib.sha256(token.encode()).hexdigest())
    client.cookies.set(COOKIE_NAME, old.seal(session))
    r = client.get("/web/researcher")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    resealed = _codec(hdp_home).open(r.cookies[COOKIE_NAME]).session
    assert resealed.sid == session.sid and resealed.created_at == session.created_at
    assert resealed.last_seen > session.last_seen + timedelta(minutes=4)
