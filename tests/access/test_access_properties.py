"""Laws, checked with Hypothesis:

* a withdrawn or opted-out person (or one without a consent link) never appears in any result.

The aggregate tier's laws are in test_aggregate_grammar.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from access_support import World
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from access.demo_release import consent_key, person_id
from access.ports import User

PERSONS = 300
UNLINKED = 5  # persons 295..299 have no consent link

QUERIES = [
    "SELECT person_id FROM register_visit",
    "SELECT DISTINCT person_id, sex FROM register_visit WHERE hba1c_mmol_mol > {v}",
    "SELECT p.person_id, count(*) FROM patient p JOIN register_visit r ON p.person_id = r.person_id "
    "GROUP BY p.person_id",
    "SELECT person_id FROM patient UNION SELECT person_id FROM register_visit",
    "SELECT list(person_id) AS ids FROM register_visit WHERE bmi < {v}",
    "WITH x AS (SELECT person_id, max(bmi) AS b FROM register_visit GROUP BY person_id) SELECT * FROM x",
]


@pytest.fixture(scope="module")
def consent_world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("consent_home"), persons=PERSONS, visits=1_200, unlinked=UNLINKED)
    yield w
    w.service.close()


@pytest.fixture(autouse=True)
def _whole_results(monkeypatch):
    """These laws are about what whole results hold: read record-level results beyond the
    preview bound (a development-only loosening of the export rule, see access.outputs)."""
    monkeypatch.setenv("HDP_ACCESS_PREVIEW_ROWS", "1000000")


def _text(result) -> str:
    return result.body.decode()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    withdrawn=st.sets(st.integers(0, PERSONS - 1), max_size=40),
    purpose_specific=st.booleans(),
    query=st.sampled_from(QUERIES),
    value=st.integers(20, 90),
)
def test_withdrawn_person_never_appears(consent_world, withdrawn, purpose_specific, query, value):
    w = consent_world
    alice = User("alice", frozenset({"researcher"}))
    sql = query.format(v=value)
    w.gov._optouts.clear()
    before = _text(w.service.query(alice, "r_rec", sql))
    # Withdraw (for all purposes or for this permit's purpose) a moment before the next query.
    for i in withdrawn:
        w.gov.opt_out(
            consent_key(i, seed=1),
            at=w.now - timedelta(seconds=1),
            purpose="diabetes-outcomes" if purpose_specific else None,
        )
    after = _text(w.service.query(alice, "r_rec", sql))
    for i in withdrawn:
        assert person_id(i, seed=1) not in after
    for i in range(PERSONS - UNLINKED, PERSONS):
        assert person_id(i, seed=1) not in before and person_id(i, seed=1) not in after
    # Those not withdrawn are still served (the filter removes exactly the withdrawn).
    if query == QUERIES[0]:
        kept = [i for i in range(PERSONS - UNLINKED) if i not in withdrawn]
        assert all(person_id(i, seed=1) in after for i in kept)
    w.gov._optouts.clear()


def test_opt_out_for_another_purpose_does_not_exclude(consent_world):
    w = consent_world
    alice = User("alice", frozenset({"researcher"}))
    w.gov._optouts.clear()
    w.gov.opt_out(consent_key(0, seed=1), at=w.now - timedelta(seconds=1), purpose="another-purpose")
    assert person_id(0, seed=1) in _text(w.service.query(alice, "r_rec", QUERIES[0]))
    w.gov._optouts.clear()
