"""The demo's two requests (record-level and aggregate-only) pass the governance rules and are
approved by exactly the stewards the demo lets decide; fast (no Airflow, no data)."""

from __future__ import annotations

from datetime import UTC, datetime

from edge import demo
from governance import service, store


def test_demo_files_one_request_per_tier_and_both_become_ready_for_release(hdp_home):
    url = hdp_home.governance_url
    store.upgrade(url)
    with store.session_scope(url) as session:
        demo.ensure_users(session)
    assert set(demo.TIERS) == {"record", "aggregate"}
    ids = {tier: demo.file_and_approve(url, fields) for tier, fields in demo.TIERS.items()}
    with store.session_scope(url) as session:
        ready = {r.request_id: r for r in service.requests_ready_for_release(session, at=datetime.now(UTC))}
        assert set(ready) == set(ids.values())
        for tier, request_id in ids.items():
            assert ready[request_id].output_tier == tier
            assert ready[request_id].users == frozenset({demo.RESEARCHER})
        assert ready[ids["aggregate"]].data_form == "anonymised"
        assert ready[ids["record"]].data_form == "pseudonymised"
        approvers = {(a["holder_id"], a["reviewer"]) for a in ready[ids["aggregate"]].approvals}
        assert approvers == {(h, n) for h in demo.AGGREGATE_REQUEST["holders"] for n in demo.STEWARDS[h]}
    # a second run on the same data home files a fresh pair (users are re-used, nothing clashes)
    with store.session_scope(url) as session:
        demo.ensure_users(session)
    again = {tier: demo.file_and_approve(url, fields) for tier, fields in demo.TIERS.items()}
    assert not set(again.values()) & set(ids.values())


def test_the_aggregate_query_is_a_plain_grouped_query():
    sql = demo.AGGREGATE_QUERY
    assert "GROUP BY sex" in sql and "count(DISTINCT person_id)" in sql
    assert "SELECT" in sql and sql.count("SELECT") == 1  # no subquery: inside the closed grammar
