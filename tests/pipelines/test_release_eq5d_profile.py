"""Releases: an EQ-5D health profile is a quasi-identifier (issue 17). A profile held by fewer
persons than the holders' k is top-coded to the policy's label; common profiles and the scores
derived from them are released as they are."""

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
    assert out["eq5d_index_se_5l_tto_2020"].to_pylist() == src["eq5d_index_se_5l_tto_2020"].to_pylist()
    assert out["person_id"].to_pylist() == src["person_id"].to_pylist()


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
