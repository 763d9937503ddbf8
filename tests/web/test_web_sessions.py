"""Server-side web sessions: expiry, cap, CSRF comparison, no token in the key space."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from access.web.routes import safe_next
from access.web.sessions import SessionStore


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_idle_and_absolute_expiry():
    clock = Clock()
    store = SessionStore(idle_timeout=timedelta(minutes=30), absolute_timeout=timedelta(hours=2), clock=clock)
    sid, _ = store.create(user_name="alice", token="hdp_x")
    for _ in range(5):  # activity keeps it alive ...
        clock.now += timedelta(minutes=20)
        assert store.get(sid) is not None
    clock.now += timedelta(minutes=25)  # ... but never past the absolute limit (2 h)
    assert store.get(sid) is None
    sid2, _ = store.create()
    clock.now += timedelta(minutes=31)
    assert store.get(sid2) is None and len(store) == 0


def test_cap_drops_least_recently_used():
    store = SessionStore(max_sessions=3)
    ids = [store.create()[0] for _ in range(3)]
    assert store.get(ids[0]) is not None  # ids[0] is now the most recent
    store.create()
    assert store.get(ids[1]) is None and store.get(ids[0]) is not None and len(store) == 3


def test_store_keys_are_hashes_not_cookie_values_and_token_not_in_repr():
    store = SessionStore()
    sid, session = store.create(user_name="alice", token="hdp_secret")
    assert sid not in store._sessions and len(sid) >= 43  # 256 random bits
    assert "hdp_secret" not in repr(session)


@pytest.mark.parametrize("value", [None, "", "x" * 500, 42])
def test_malformed_session_ids(value):
    assert SessionStore().get(value) is None


def test_csrf_check():
    _, session = SessionStore().create()
    assert session.check_csrf(session.csrf_token)
    assert (
        not session.check_csrf(None)
        and not session.check_csrf("")
        and not session.check_csrf(session.csrf_token[:-1])
    )
    _, other = SessionStore().create()
    assert not session.check_csrf(other.csrf_token)


def test_delete_and_purge():
    clock = Clock()
    store = SessionStore(clock=clock)
    a, _ = store.create()
    store.create()
    store.delete(a)
    assert store.get(a) is None and len(store) == 1
    clock.now += timedelta(hours=1)
    assert store.purge_expired() == 1 and len(store) == 0


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
