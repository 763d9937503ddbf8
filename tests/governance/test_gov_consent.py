"""Consent registry: per-person, per-purpose, time-valid; withdrawal excludes at every later time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from governance import service
from governance.errors import InvalidConsent
from governance.store import session_scope

T0 = datetime(2025, 1, 1, tzinfo=UTC)
A, B, C = "a" * 64, "b" * 64, "c" * 64


def test_general_opt_out_and_specific_choices(url):
    with session_scope(url) as s:
        service.record_consent(
            s,
            consent_key=A,
            scope="secondary_use",
            choice="opt_out",
            source_ref="form-A",
            actor="s",
            valid_from=T0,
        )
        # B opted out generally but opted in to scientific research: the specific choice wins there.
        service.record_consent(
            s,
            consent_key=B,
            scope="secondary_use",
            choice="opt_out",
            source_ref="form-B",
            actor="s",
            valid_from=T0,
        )
        service.record_consent(
            s,
            consent_key=B,
            scope="scientific_research",
            choice="opt_in",
            source_ref="form-B2",
            actor="s",
            valid_from=T0 + timedelta(days=1),
        )
        # C opted out of education only, for a limited period.
        service.record_consent(
            s,
            consent_key=C,
            scope="education",
            choice="opt_out",
            source_ref="form-C",
            actor="s",
            valid_from=T0,
            valid_to=T0 + timedelta(days=30),
        )
    at = T0 + timedelta(days=2)
    with session_scope(url) as s:
        assert service.excluded_consent_keys(s, purpose="scientific_research", at=at) == {A}
        assert service.excluded_consent_keys(s, purpose="education", at=at) == {A, B, C}
        assert service.excluded_consent_keys(s, purpose="education", at=T0 + timedelta(days=30)) == {A, B}
        # Before B's opt-in started, B was out of research too.
        assert service.excluded_consent_keys(s, purpose="scientific_research", at=T0) == {A, B}
        assert (
            service.excluded_consent_keys(s, purpose="public_health", at=T0 - timedelta(days=1))
            == frozenset()
        )
        assert service.is_excluded(s, consent_key=C, purpose="education", at=at)


def test_withdrawal_closes_opt_ins(url):
    with session_scope(url) as s:
        service.record_consent(
            s,
            consent_key=A,
            scope="scientific_research",
            choice="opt_in",
            source_ref="f1",
            actor="s",
            valid_from=T0,
        )
        # An opt-in that would start later is closed too.
        service.record_consent(
            s,
            consent_key=A,
            scope="education",
            choice="opt_in",
            source_ref="f2",
            actor="s",
            valid_from=T0 + timedelta(days=100),
        )
        service.withdraw_consent(
            s, consent_key=A, source_ref="withdrawal-1", actor="s", at=T0 + timedelta(days=10)
        )
    with session_scope(url) as s:
        assert A not in service.excluded_consent_keys(
            s, purpose="scientific_research", at=T0 + timedelta(days=9)
        )
        for days in (10, 11, 150, 5000):
            for purpose in ("scientific_research", "education", "public_health"):
                assert A in service.excluded_consent_keys(s, purpose=purpose, at=T0 + timedelta(days=days))
        records = service.consent_records(s, consent_key=A)
        assert [r.choice for r in records] == ["opt_in", "opt_in", "opt_out"]
        assert all(r.valid_to is not None for r in records[:2])


@pytest.mark.parametrize(
    "key, code",
    [
        ("199001011234", "consent.plain_identifier"),
        ("19900101-1234", "consent.plain_identifier"),
        ("900101+1234", "consent.plain_identifier"),
        ("1990010112345678", "consent.plain_identifier"),
        ("x" * 200, "consent.bad_key"),
    ],
)
def test_consent_key_must_be_pseudonym(url, key, code):
    with session_scope(url) as s, pytest.raises(InvalidConsent) as exc:
        service.record_consent(
            s, consent_key=key, scope="secondary_use", choice="opt_out", source_ref="f", actor="s"
        )
    assert key not in str(exc.value)
    assert exc.value.code == code


def test_consent_input_errors(url):
    with session_scope(url) as s:
        for kwargs, code in [
            ({"scope": "marketing"}, "consent.bad_scope"),
            ({"choice": "maybe"}, "consent.bad_choice"),
            ({"source_ref": ""}, "consent.no_source"),
            ({"valid_from": T0, "valid_to": T0}, "consent.bad_period"),
            ({"valid_from": datetime(2025, 1, 1)}, "consent.naive_time"),
        ]:
            args = (
                dict(consent_key=A, scope="secondary_use", choice="opt_out", source_ref="f", actor="s")
                | kwargs
            )
            with pytest.raises(InvalidConsent) as exc:
                service.record_consent(s, **args)
            assert exc.value.code == code


_times = st.integers(min_value=0, max_value=60).map(lambda d: T0 + timedelta(days=d))
_scopes = st.sampled_from(["secondary_use", "scientific_research", "education"])
_ops = st.lists(
    st.tuples(
        st.sampled_from(["opt_in", "opt_out"]), _scopes, _times, st.integers(min_value=1, max_value=40)
    ),
    max_size=8,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops, withdraw_at=_times, scope=_scopes, probe=st.integers(min_value=0, max_value=200))
def test_withdrawal_law_property(url, ops, withdraw_at, scope, probe):
    """Whatever was recorded before, after a withdrawal at t the person is excluded at every t' >= t
    (for every purpose when the withdrawal was general, for that purpose otherwise)."""
    key = f"p{probe:03d}" + "0" * 20  # fresh person per example: the store is shared across examples
    with session_scope(url) as s:
        for choice, sc, start, length in ops:
            service.record_consent(
                s,
                consent_key=key,
                scope=sc,
                choice=choice,
                source_ref="f",
                actor="s",
                valid_from=start,
                valid_to=start + timedelta(days=length),
            )
        service.withdraw_consent(s, consent_key=key, scope=scope, source_ref="w", actor="s", at=withdraw_at)
    purposes = ["scientific_research", "education"] if scope == "secondary_use" else [scope]
    with session_scope(url) as s:
        for later in (0, 1, 17, 400):
            for purpose in purposes:
                assert key in service.excluded_consent_keys(
                    s, purpose=purpose, at=withdraw_at + timedelta(days=later)
                )


_record = st.tuples(
    st.sampled_from(KEYS_FOR_MODEL := ["m" * 20 + str(i) for i in range(4)]),
    _scopes,
    st.sampled_from(["opt_in", "opt_out"]),
    _times,
    st.none() | st.integers(1, 40),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=st.lists(_record, max_size=12),
    probe=_times,
    purpose=st.sampled_from(["scientific_research", "education"]),
    salt=st.integers(0, 10**6),
)
def test_sql_resolution_matches_reference(url, records, probe, purpose, salt):
    """The window-function query gives exactly the per-person reference rule, for any register."""
    keys = {k: f"{k}x{salt}" for k in KEYS_FOR_MODEL}  # fresh persons per example (shared store)
    with session_scope(url) as s:
        for k, sc, choice, start, length in records:
            service.record_consent(
                s,
                consent_key=keys[k],
                scope=sc,
                choice=choice,
                source_ref="f",
                actor="s",
                valid_from=start,
                valid_to=None if length is None else start + timedelta(days=length),
            )
    with session_scope(url) as s:
        got = service.excluded_consent_keys(s, purpose=purpose, at=probe) & set(keys.values())
        expected = {
            v for v in keys.values() if service.is_excluded(s, consent_key=v, purpose=purpose, at=probe)
        }
    assert got == expected
