"""Releases: an EQ-5D health profile is a quasi-identifier (issue 17). A profile held by fewer
persons than the holders' k is top-coded to the policy's label, and so is everything that spells
it out again (the five dimensions, the level sum, the indices: the policy's combination); common
profiles and the scores derived from them are released as they are."""

from __future__ import annotations

import pyarrow as pa
import pytest

from governance.catalogue import TABLE_SOURCE, load_catalogue
from hdp.settings import holders
from pipelines.release_identity import apply_release_policy
from privacy.policy import load_release_policy

TABLES = ("prom_response", "eq5d_response")


@pytest.mark.parametrize("table", TABLES)
def test_rare_profile_becomes_the_label(table):
    rule = load_release_policy().rule_for(table, "eq5d_profile")
    assert rule.action == "top_code"
    k = int(rule.param("min_count"))
    label = rule.param("label")
    # k persons share 11111 (one of them twice); one person alone holds 55555; one row unscored
    persons = [f"p{i}" for i in range(k)]
    rows = [(p, "11111", 0.9755) for p in persons] + [(persons[0], "11111", 0.9755)]
    rows += [("rare", "55555", 0.243), ("p1", None, None)]
    src = pa.table(
        {
            "person_id": [r[0] for r in rows],
            "eq5d_profile": [r[1] for r in rows],
            "eq5d_index_se_5l_tto_2020": pa.array([r[2] for r in rows], pa.float64()),
        }
    )
    out = apply_release_policy(src, table_name=table, release_domain="release:test")
    profiles = out["eq5d_profile"].to_pylist()
    assert profiles == ["11111"] * (k + 1) + [label, None]
    # the rare person's index would name the profile again (0.243 is 55555's): it goes too
    assert out["eq5d_index_se_5l_tto_2020"].to_pylist() == [0.9755] * (k + 1) + [None, None]
    assert out["person_id"].to_pylist() == src["person_id"].to_pylist()


DIMENSIONS = {
    "prom_response": [
        "eq5d_mobility",
        "eq5d_self_care",
        "eq5d_usual_activities",
        "eq5d_pain_discomfort",
        "eq5d_anxiety_depression",
    ],
    "eq5d_response": ["mobility", "self_care", "usual_activities", "pain_discomfort", "anxiety_depression"],
}


def _state_rows(k: int) -> list[tuple[str, str | None]]:
    """k persons in state 11111 (one twice), k-1 persons in 21111 (under k), one alone in 55555,
    one person with no answers."""
    rows = [(f"p{i}", "11111") for i in range(k)] + [("p0", "11111")]
    rows += [(f"q{i}", "21111") for i in range(k - 1)] + [("rare", "55555"), ("blank", None)]
    return rows


def _min_count(table: str) -> int:
    (combo,) = load_release_policy().combinations_for(table)
    return combo.min_count


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("carried", ["dimensions", "index", "level_sum", "dimensions_and_profile"])
def test_whatever_spells_out_a_rare_profile_is_suppressed_with_it(table, carried):
    """Released without the profile (or beside it), the dimensions, an index or the level sum of a
    rare state would give it away: they are suppressed in exactly the rows whose state is rare."""
    k = _min_count(table)
    rows = _state_rows(k)
    states = [s for _, s in rows]
    columns: dict[str, pa.Array] = {"person_id": pa.array([p for p, _ in rows])}
    if carried.startswith("dimensions"):
        for n, dim in enumerate(DIMENSIONS[table]):
            columns[dim] = pa.array([None if s is None else int(s[n]) for s in states], pa.int32())
    if carried.endswith("profile"):
        columns["eq5d_profile"] = pa.array(states)
    if carried == "index":  # distinct per state, as the value sets' indices are
        by_state = {"11111": 0.9755, "21111": 0.93, "55555": 0.243}
        columns["eq5d_index_se_5l_tto_2020"] = pa.array([by_state.get(s) for s in states], pa.float64())
    if carried == "level_sum":
        columns["eq5d_level_sum"] = pa.array(
            [None if s is None else sum(map(int, s)) for s in states], pa.int32()
        )
    out = apply_release_policy(pa.table(columns), table_name=table, release_domain="release:test")
    kept = [s == "11111" for s in states]  # only 11111 is held by k persons or more
    for name in columns:
        if name == "person_id":
            assert out[name].to_pylist() == columns[name].to_pylist()
            continue
        released = out[name].to_pylist()
        for i, value in enumerate(columns[name].to_pylist()):
            if kept[i] or value is None:
                assert released[i] == value, (name, i)
            elif name == "eq5d_profile":
                assert released[i] == load_release_policy().rule_for(table, name).param("label")
            else:
                assert released[i] is None, (name, i, released[i])


@pytest.mark.parametrize("table", TABLES)
def test_the_combination_holds_every_column_that_spells_out_the_state(table):
    """The combination names the dimensions, the profile and every score derived from them (the
    pseudonymisation policy's eq5d columns), and its threshold is the profile's."""
    from privacy.policy import load_pseudonymise_policy

    policy = load_release_policy()
    (combo,) = policy.combinations_for(table)
    (rule,) = [t for t in load_pseudonymise_policy().tables if t.name == table]
    derived = {c.name for c in rule.columns if c.action == "eq5d"}
    assert derived | set(DIMENSIONS[table]) == set(combo.columns)
    assert combo.min_count == int(policy.rule_for(table, "eq5d_profile").param("min_count"))


@pytest.mark.parametrize("table", TABLES)
def test_profile_threshold_is_at_least_every_delivering_holders_k(table):
    """min_count is at least the k-anonymity of every holder that delivers the table."""
    k = max(h.k_anonymity for h in holders() if TABLE_SOURCE[table] in h.sources)
    assert int(load_release_policy().rule_for(table, "eq5d_profile").param("min_count")) >= k


@pytest.mark.parametrize("table", TABLES)
def test_catalogue_classifies_the_scores(table):
    catalogue = load_catalogue()
    assert catalogue[f"{table}.eq5d_profile"]["sensitivity"] == "quasi_identifier"
    for col in ("eq5d_level_sum", "eq5d_index_se_5l_tto_2020", "eq5d_index_se_5l_vas_2020"):
        assert catalogue[f"{table}.{col}"]["sensitivity"] == "health"
