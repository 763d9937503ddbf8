"""Validated queries are cached per engine (permit); the cache changes no answer or refusal."""

from __future__ import annotations

import pytest

from access.errors import QueryRefused


def _engine(world, release):
    (engine,) = [e for k, e in world.service.engines._engines.items() if k[0] == release]
    return engine


def test_identical_query_reuses_validation_and_gives_identical_result(world):
    alice = world.gov.users["alice"]
    sql = "SELECT sex, count(*) AS n FROM register_visit GROUP BY sex ORDER BY sex"
    first = world.service.query(alice, "r_rec", sql)
    engine = _engine(world, "r_rec")
    assert len(engine.prepared) == 1
    second = world.service.query(alice, "r_rec", sql)
    assert len(engine.prepared) == 1 and second.sha256 == first.sha256
    # The audit keeps the masked text for the cached query too.
    masked = [e["query_masked"] for e in world.service.audit.entries() if e.get("event") == "access.query"]
    assert masked[-1] == masked[-2] and masked[-1]


def test_refusals_are_not_cached_and_stay_refusals(world):
    alice = world.gov.users["alice"]
    for _ in range(2):
        with pytest.raises(QueryRefused) as err:
            world.service.query(alice, "r_rec", "SELECT * FROM read_csv('/etc/passwd')")
        assert err.value.reason == "sql.table_function"
    assert len(_engine(world, "r_rec").prepared) == 0


def test_aggregate_plan_cached_per_engine(world):
    alice = world.gov.users["alice"]
    sql = "SELECT county, sex, count(*) AS n FROM register_visit GROUP BY county, sex ORDER BY county, sex"
    a = world.service.query(alice, "r_agg", sql)
    b = world.service.query(alice, "r_agg", sql)
    assert a.sha256 == b.sha256 and a.summary == b.summary
    # The same text on the record-level release is a different engine with its own entry.
    world.service.query(alice, "r_rec", sql)
    assert len(_engine(world, "r_agg").prepared) == 1 and len(_engine(world, "r_rec").prepared) == 1
