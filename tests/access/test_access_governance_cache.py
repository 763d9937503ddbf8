"""Cached governance answers never differ from governance itself.

Unit tests drive ``VersionedCache`` with a fake counter; the property test drives the real
governance store (SQLite) through random sequences of consent writes and clock steps and
compares the cached answer with an uncached ``governance.consent.excluded_consent_keys`` after
every step; further tests revoke tokens and permits and disable users between two lookups.
"""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from access.governance_adapter import ServiceGovernance
from access.governance_cache import Answer, VersionedCache

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class FakeCounter:
    def __init__(self) -> None:
        self.version = 0
        self.loads = 0

    def __call__(self) -> int:
        return self.version

    def loader(self, value, *, valid_from=None, valid_until=None, cacheable=True):
        def load():
            self.loads += 1
            return Answer(value, self.version, valid_from, valid_until, cacheable)

        return load


def test_cache_hits_only_while_nothing_changed_and_within_the_window():
    c = FakeCounter()
    cache = VersionedCache(c)
    first = cache.get(
        "p", c.loader(frozenset({"a"}), valid_from=T0, valid_until=T0 + timedelta(seconds=5)), at=T0
    )
    assert first == {"a"} and c.loads == 1
    again = cache.get("p", c.loader(frozenset({"x"})), at=T0 + timedelta(seconds=1))
    assert again is first and c.loads == 1  # hit: the same object, no load
    c.version = 1  # a write
    assert cache.get(
        "p",
        c.loader(
            frozenset({"a", "b"}), valid_from=T0 + timedelta(seconds=2), valid_until=T0 + timedelta(seconds=5)
        ),
        at=T0 + timedelta(seconds=2),
    ) == {"a", "b"}
    assert c.loads == 2
    cache.get("p", c.loader(frozenset()), at=T0 + timedelta(seconds=4))
    assert c.loads == 2  # still inside the window
    t5 = T0 + timedelta(seconds=5)
    cache.get("p", c.loader(frozenset(), valid_from=t5), at=t5)
    assert c.loads == 3  # the window's end (a record starts or ends) forces a reload
    cache.get("p", c.loader(frozenset(), valid_from=T0), at=T0)
    assert c.loads == 4  # a clock before the window: reload, never reuse
    cache.get("other-purpose", c.loader(frozenset()), at=T0)
    assert c.loads == 5  # per key


def test_refusals_are_not_cached_and_evict_the_key():
    c = FakeCounter()
    cache = VersionedCache(c)
    assert cache.get("tok", c.loader("alice")) == "alice"
    assert cache.get("tok", c.loader(None, cacheable=False)) == "alice"  # version unchanged: hit
    c.version = 1
    assert cache.get("tok", c.loader(None, cacheable=False)) is None
    assert cache.get("tok", c.loader(None, cacheable=False)) is None
    assert c.loads == 3  # a refusal is asked again every time


def test_capacity_is_bounded():
    c = FakeCounter()
    cache = VersionedCache(c, capacity=3)
    for i in range(10):
        cache.get(i, c.loader(i))
    assert len(cache._entries) == 3


def test_version_read_failure_propagates():
    c = FakeCounter()

    def broken():
        raise OSError("store down")

    cache = VersionedCache(broken)
    cache.get("p", c.loader("v"))
    with pytest.raises(OSError):
        cache.get("p", c.loader("v"))


# -- the real store -----------------------------------------------------------------------

PURPOSE = "scientific_research"
KEYS = [f"consentkey{i:02d}abcdefghij" for i in range(4)]
SCOPES = ["secondary_use", PURPOSE, "public_health"]

op = st.one_of(
    st.tuples(
        st.just("record"),
        st.sampled_from(KEYS),
        st.sampled_from(SCOPES),
        st.sampled_from(["opt_out", "opt_in"]),
        st.integers(-120, 120),  # valid_from offset (s) from the current time
        st.one_of(st.none(), st.integers(1, 240)),
    ),  # validity length (s)
    st.tuples(st.just("withdraw"), st.sampled_from(KEYS), st.sampled_from(SCOPES), st.integers(-60, 60)),
    st.tuples(st.just("end"), st.integers(0, 20), st.integers(-90, 90)),  # back-dated and future ends
    st.tuples(st.just("tick"), st.integers(0, 200)),
)


@pytest.fixture(scope="module")
def consent_template(tmp_path_factory):
    from governance.store import engine_for, upgrade

    path = tmp_path_factory.mktemp("consent") / "template.sqlite"
    upgrade(f"sqlite:///{path}")
    engine_for(f"sqlite:///{path}").dispose()
    return path


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=1, max_size=14))
def test_cached_exclusions_equal_registry_after_every_step(ops, consent_template, tmp_path, monkeypatch):
    from governance import consent
    from governance.errors import GovernanceError
    from governance.store import session_scope
    from hdp.settings import get_settings

    monkeypatch.setenv("HDP_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    target = tmp_path / f"gov-{uuid.uuid4().hex[:8]}.sqlite"
    shutil.copy(consent_template, target)
    url = f"sqlite:///{target}"
    gov = ServiceGovernance(url)
    now = T0
    record_ids: list[int] = []

    def check() -> None:
        cached = gov.excluded_consent_keys(purpose=PURPOSE, at=now)
        with session_scope(url, readonly=True) as s:
            truth = consent.excluded_consent_keys(s, purpose=PURPOSE, at=now)
        assert cached == truth

    check()
    for o in ops:
        try:
            with session_scope(url) as s:
                if o[0] == "record":
                    _, key, scope, choice, start, length = o
                    vf = now + timedelta(seconds=start)
                    record_ids.append(
                        consent.record_consent(
                            s,
                            consent_key=key,
                            scope=scope,
                            choice=choice,
                            source_ref="form",
                            actor="steward",
                            valid_from=vf,
                            valid_to=None if length is None else vf + timedelta(seconds=length),
                            now=now,
                        )
                    )
                elif o[0] == "withdraw":
                    _, key, scope, offset = o
                    consent.withdraw_consent(
                        s,
                        consent_key=key,
                        source_ref="form",
                        actor="steward",
                        scope=scope,
                        at=now + timedelta(seconds=offset),
                    )
                elif o[0] == "end" and record_ids:
                    _, idx, offset = o
                    consent.end_consent_record(
                        s,
                        record_id=record_ids[idx % len(record_ids)],
                        at=now + timedelta(seconds=offset),
                        actor="steward",
                    )
                elif o[0] == "tick":
                    now += timedelta(seconds=o[1])
        except GovernanceError:
            pass  # a write the registry refuses changes nothing
        check()
    get_settings.cache_clear()


@pytest.mark.parametrize("opt_in_until", [None, T0 + timedelta(days=30)], ids=["open", "closed_later"])
def test_back_dated_end_of_a_record_is_seen_at_once(opt_in_until, consent_template, tmp_path, monkeypatch):
    """The update-only change: ending an opt-in (back-dated, no new row) re-exposes a general
    opt-out, so the person must be excluded by the very next lookup."""
    from governance import consent
    from governance.store import session_scope
    from hdp.settings import get_settings

    monkeypatch.setenv("HDP_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    target = tmp_path / "gov.sqlite"
    shutil.copy(consent_template, target)
    url = f"sqlite:///{target}"
    gov = ServiceGovernance(url)
    key = KEYS[0]
    with session_scope(url) as s:
        consent.record_consent(
            s,
            consent_key=key,
            scope="secondary_use",
            choice="opt_out",
            source_ref="f",
            actor="st",
            valid_from=T0 - timedelta(days=2),
            now=T0 - timedelta(days=2),
        )
        opt_in = consent.record_consent(
            s,
            consent_key=key,
            scope=PURPOSE,
            choice="opt_in",
            source_ref="f",
            actor="st",
            valid_from=T0 - timedelta(days=1),
            valid_to=opt_in_until,
            now=T0 - timedelta(days=1),
        )
    assert gov.excluded_consent_keys(purpose=PURPOSE, at=T0) == frozenset()
    assert gov.excluded_consent_keys(purpose=PURPOSE, at=T0 + timedelta(seconds=10)) == frozenset()
    assert gov._consent.hits == 1
    with session_scope(url) as s:  # ended as of an hour ago: before the cached moment
        consent.end_consent_record(s, record_id=opt_in, at=T0 - timedelta(hours=1), actor="st")
    assert gov.excluded_consent_keys(purpose=PURPOSE, at=T0 + timedelta(seconds=11)) == frozenset({key})
    get_settings.cache_clear()
