"""Disclosure pre-check: classification and the group-size query, checked against brute force."""

from __future__ import annotations

from collections import Counter, defaultdict

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from webtest_helpers import write_research_zone

from access.web import precheck
from access.web.precheck import group_size_sql


def test_classify_uses_the_catalogue():
    from governance.catalogue import load_catalogue

    out = {
        v.name: v.sensitivity
        for v in precheck.classify_variables(
            [
                "register_visit.person_id",
                "register_visit.birth_year",
                "register_visit.hba1c_mmol_mol",
                "encounter.status",
                "nope.nothing",
            ],
            load_catalogue(),
        )
    }
    assert out == {
        "register_visit.person_id": "pseudonym",
        "register_visit.birth_year": "quasi_identifier",
        "register_visit.hba1c_mmol_mol": "health",
        "encounter.status": "administrative",
        "nope.nothing": "unknown",
    }


def test_sql_refuses_non_identifiers():
    with pytest.raises(ValueError):
        group_size_sql("t; DROP TABLE x", ("sex",), 5)
    with pytest.raises(ValueError):
        group_size_sql("patient", ('sex" FROM x --',), 5)
    with pytest.raises(ValueError):
        group_size_sql("patient", ("sex",), 0)


rows_strategy = st.lists(
    st.tuples(st.integers(0, 15), st.sampled_from(["F", "M", None]), st.integers(1950, 1953)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=30, deadline=None)
@given(rows=rows_strategy, k=st.integers(1, 6))
def test_group_sizes_match_brute_force(rows, k):
    """For all tables: persons, groups, smallest group, groups/persons below k equal a Python count."""
    con = duckdb.connect()
    data = pa.table(
        {
            "person_id": [f"p{p}" for p, _, _ in rows],
            "sex": pa.array([s for _, s, _ in rows], pa.string()),
            "birth_year": [y for _, _, y in rows],
        }
    )
    con.register("data", data)
    con.execute("CREATE TABLE patient AS SELECT * FROM data")
    persons_per_group: dict[tuple, set] = defaultdict(set)
    for p, s, y in rows:
        persons_per_group[(s, y)].add(p)
    sizes = Counter({g: len(ps) for g, ps in persons_per_group.items()})
    got = con.execute(group_size_sql("patient", ("sex", "birth_year"), k)).fetchone()
    expected = (
        len({p for p, _, _ in rows}),
        len(sizes),
        min(sizes.values()),
        sum(1 for n in sizes.values() if n < k),
        # distinct persons in at least one small group (a person may sit in several groups)
        len({p for g, ps in persons_per_group.items() if sizes[g] < k for p in ps}),
    )
    assert tuple(got) == expected


def _thresholds(*ids):
    from hdp.settings import holders

    return tuple(
        precheck.HolderThresholds(h.id, h.name, h.min_cell_count, h.k_anonymity)
        for h in holders()
        if h.id in ids
    )


def test_group_sizes_over_research_zones(tmp_path):
    from governance.catalogue import load_catalogue, table_holders

    paths = {"ndr": tmp_path / "ndr.duckdb"}
    write_research_zone(paths["ndr"])
    variables = precheck.classify_variables(
        ["register_visit.sex", "register_visit.county", "register_visit.hba1c_mmol_mol", "patient.sex"],
        load_catalogue(),
    )
    out = precheck.group_sizes(
        variables=variables,
        thresholds=_thresholds("ndr", "region_skane"),
        table_holders=table_holders(),
        research_db=lambda h: paths.get(h, tmp_path / f"{h}.duckdb"),
    )
    by = {(g.holder_id, g.table): g for g in out}
    assert set(by) == {("ndr", "register_visit"), ("region_skane", "patient")}
    ndr = by[("ndr", "register_visit")]
    assert (ndr.status, ndr.persons, ndr.groups, ndr.smallest_group, ndr.groups_below_k) == (
        "at_risk",
        61,
        3,
        1,
        1,
    )
    assert by[("region_skane", "patient")].status == "no_data"  # no research zone yet


def test_locked_or_broken_research_zone_is_unavailable_not_an_error(tmp_path):
    from governance.catalogue import load_catalogue, table_holders

    bad = tmp_path / "ndr.duckdb"
    bad.write_bytes(b"not a duckdb file" * 100)
    variables = precheck.classify_variables(["register_visit.sex"], load_catalogue())
    [g] = precheck.group_sizes(
        variables=variables,
        thresholds=_thresholds("ndr"),
        table_holders=table_holders(),
        research_db=lambda h: bad,
    )
    assert g.status == "unavailable" and g.reason and " " not in g.reason  # an exception type only


def test_missing_column_is_reported_by_name(tmp_path):
    from governance.catalogue import load_catalogue, table_holders

    path = tmp_path / "ndr.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE register_visit (person_id VARCHAR, sex VARCHAR)")
    con.close()
    variables = precheck.classify_variables(["register_visit.sex", "register_visit.county"], load_catalogue())
    [g] = precheck.group_sizes(
        variables=variables,
        thresholds=_thresholds("ndr"),
        table_holders=table_holders(),
        research_db=lambda h: path,
    )
    assert g.status == "unavailable" and g.reason == "column(s) missing: county"


def test_group_sizes_are_cached_until_the_research_zone_changes(tmp_path, monkeypatch):
    from governance.catalogue import load_catalogue, table_holders

    precheck.clear_cache()
    path = tmp_path / "ndr.duckdb"
    write_research_zone(path, singleton=True)
    variables = precheck.classify_variables(
        ["register_visit.sex", "register_visit.birth_year"], load_catalogue()
    )
    args = dict(
        variables=variables,
        thresholds=_thresholds("ndr"),
        table_holders=table_holders(),
        research_db=lambda h: path,
    )
    [first] = precheck.group_sizes(**args)
    calls = []
    real = precheck._table_groups
    monkeypatch.setattr(precheck, "_table_groups", lambda *a: calls.append(a) or real(*a))
    assert precheck.group_sizes(**args) == (first,) and calls == []  # served from the cache
    path.unlink()
    write_research_zone(path, singleton=False)  # a new pseudonymise run rewrote the zone
    [second] = precheck.group_sizes(**args)
    assert len(calls) == 1 and first.smallest_group == 1 and second.smallest_group > 1
