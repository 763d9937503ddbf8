"""release_person_map and apply_release_policy."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pseudonymise.raw_fixtures import ANNA, BERTIL, build_ndr, build_region

from pipelines.pseudonymise import pseudonymise_holder
from pipelines.release_identity import (
    PersonLinkMissing,
    apply_release_policy,
    describe_release_policy,
    release_person_map,
    shift_days,
)
from privacy.domains import consent_key
from privacy.policy import load_release_policy
from privacy.pseudonym import Pseudonymiser


@pytest.fixture
def two_holders(hdp_home, kek_env):
    build_ndr(hdp_home)
    build_region(hdp_home)
    pseudonymise_holder("ndr", settings=hdp_home)
    pseudonymise_holder("region_uppsala", settings=hdp_home)
    return hdp_home


def test_same_person_links_inside_a_release_not_across(two_holders):
    s = two_holders
    m1 = release_person_map(
        holder_ids=("ndr", "region_uppsala"), release_domain="release:rel-00001", settings=s
    )
    m2 = release_person_map(
        holder_ids=("ndr", "region_uppsala"), release_domain="release:rel-00002", settings=s
    )
    assert m1.column_names == ["holder", "person_id", "release_person_id", "consent_key"]
    rows = m1.to_pylist()
    by_release = {}
    for r in rows:
        by_release.setdefault(r["release_person_id"], set()).add(r["holder"])
    # Anna and Bertil are in both holders -> one release id each, spanning both holders
    assert sum(1 for hs in by_release.values() if hs == {"ndr", "region_uppsala"}) == 2
    assert not set(m1["release_person_id"].to_pylist()) & set(m2["release_person_id"].to_pylist())
    assert not set(m1["release_person_id"].to_pylist()) & set(m1["person_id"].to_pylist())
    # consent keys are release-independent and equal consent_key() of the identifier
    assert sorted(m1["consent_key"].to_pylist()) == sorted(m2["consent_key"].to_pylist())
    assert consent_key(ANNA, settings=s) in m1["consent_key"].to_pylist()
    assert consent_key(f"{BERTIL[2:8]}-{BERTIL[8:]}", settings=s) in m1["consent_key"].to_pylist()
    # stable: building the same release twice gives the same map
    again = release_person_map(holder_ids=("ndr", "region_uppsala"), release_domain="rel-00001", settings=s)
    assert sorted(again.to_pylist(), key=str) == sorted(rows, key=str)


def test_missing_holder_is_a_clear_error(hdp_home, kek_env):
    with pytest.raises(PersonLinkMissing, match="region_skane"):
        release_person_map(holder_ids=("region_skane",), release_domain="release:x", settings=hdp_home)


def test_release_policy_generalises(hdp_home, kek_env):
    pids = [f"p{i}" for i in range(12)]
    t = pa.table(
        {
            "person_id": pids + ["p0"],
            "birth_year": [1950 + i for i in range(12)] + [1950],
            "county": ["03"] * 6 + ["12"] * 5 + ["25"] + ["03"],
            "visit_date": [date(2024, 1, 1) + timedelta(days=i) for i in range(12)] + [date(2024, 3, 1)],
            "hba1c_mmol_mol": [50.0] * 13,
        }
    )
    out = apply_release_policy(
        t, table_name="register_visit", release_domain="release:rel-00001", settings=hdp_home
    )
    assert out.column_names == t.column_names
    assert out["person_id"].to_pylist() == t["person_id"].to_pylist()
    assert out["birth_year"].to_pylist()[:6] == [1950] * 5 + [1955]
    assert out["county"].to_pylist() == ["03"] * 6 + ["12"] * 5 + ["other"] + ["03"]
    shifted = out["visit_date"].to_pylist()
    deltas = [(a - b).days for a, b in zip(shifted, t["visit_date"].to_pylist(), strict=True)]
    assert all(-14 <= d <= 14 for d in deltas)
    assert deltas[0] == deltas[12]  # same person, same offset: intervals kept
    assert len(set(deltas)) > 1
    other = apply_release_policy(
        t, table_name="register_visit", release_domain="release:rel-00002", settings=hdp_home
    )
    assert other["visit_date"].to_pylist() != shifted  # another release, other offsets
    desc = describe_release_policy()
    assert desc["default_action"] == "keep" and any(r["variable"] == "*.birth_year" for r in desc["rules"])


def test_release_policy_on_fhir_strings(hdp_home, kek_env):
    t = pa.table(
        {
            "person_id": ["a", "a"],
            "encounter_id": ["x", "y"],
            "start_time": ["2024-01-02T10:00:00+01:00", "2024-01-05"],
            "postal_code": ["751 05", "99999"],
        }
    )

    out = apply_release_policy(
        t, table_name="encounter", release_domain="release:r", settings=hdp_home, policy=load_release_policy()
    )
    st_ = out["start_time"].to_pylist()
    first = datetime.fromisoformat(st_[0].replace("Z", "+00:00"))
    second = date.fromisoformat(st_[1])
    orig = datetime.fromisoformat("2024-01-02T10:00:00+01:00")
    assert (first - orig).total_seconds() % 86400 == 0
    assert (second - date(2024, 1, 5)).days == (first - orig).days
    assert out["postal_code"].to_pylist() == ["03", None]


@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=30, unique=True), st.integers(1, 60))
@settings(max_examples=50, deadline=None)
def test_shift_within_range_and_deterministic(pids, max_days):
    p = Pseudonymiser(b"r" * 32, key_id="k")
    a = shift_days(pa.array(pids), p, max_days).to_pylist()
    assert a == shift_days(pa.array(pids), p, max_days).to_pylist()
    assert all(-max_days <= d <= max_days for d in a)
