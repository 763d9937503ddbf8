"""Federated aggregate queries at the hub: the plan each node runs, and the merge of the nodes'
published tables under disclosure control again.

The nodes here are simulated exactly: each node's data is a DuckDB table, the node's published
table is ``node_sql`` run on it (unperturbed, so the merge can be checked against the statistic
computed on all the data at once), and a node's own threshold withholds its small cells whole.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from fractions import Fraction

import duckdb
import pyarrow as pa
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from access import grammar, sandbox
from access.aggregate import width_bucket_free
from access.errors import QueryRefused
from hub.federated_query import (
    COMPANION_PREFIX,
    MERGE_RULES,
    NODES_IN_CELL,
    FederatedPlan,
    MergeSummary,
    merge_node_results,
    plan_federated_query,
)

VISIT = [
    ("person_id", "VARCHAR"),
    ("sex", "VARCHAR"),
    ("hba1c_mmol_mol", "DOUBLE"),
    ("bmi", "DOUBLE"),
    ("visit_date", "DATE"),
    ("county", "VARCHAR"),
    ("holder", "VARCHAR"),
]
PATIENT = [("person_id", "VARCHAR"), ("birth_year", "INTEGER"), ("sex", "VARCHAR")]
VIEWS = {"register_visit": VISIT, "patient": PATIENT}


# -- simulated nodes ----------------------------------------------------------------------------

Visit = tuple[str, str | None, float | None]  # (person, sex, hba1c)


def _visits_table(visits: Sequence[Visit]) -> pa.Table:
    persons, sexes, values = zip(*visits, strict=True) if visits else ((), (), ())
    return pa.table(
        {
            "person_id": pa.array(persons, pa.string()),
            "sex": pa.array(sexes, pa.string()),
            "hba1c_mmol_mol": pa.array(values, pa.float64()),
            "bmi": pa.array([None] * len(visits), pa.float64()),
            "visit_date": pa.array([None] * len(visits), pa.date32()),
            "county": pa.array([None] * len(visits), pa.string()),
            "holder": pa.array([None] * len(visits), pa.string()),
        }
    )


def _patients_table(patients: Sequence[tuple[str, int, str]]) -> pa.Table:
    ids, years, sexes = zip(*patients, strict=True) if patients else ((), (), ())
    return pa.table(
        {
            "person_id": pa.array(ids, pa.string()),
            "birth_year": pa.array(years, pa.int32()),
            "sex": pa.array(sexes, pa.string()),
        }
    )


def _run(sql: str, tables: Mapping[str, pa.Table]) -> pa.Table:
    con = duckdb.connect(":memory:")
    try:
        for name, table in tables.items():
            con.register(name, table)
        return con.sql(width_bucket_free(sql)).to_arrow_table()
    finally:
        con.close()


def published_at_node(plan: FederatedPlan, tables: Mapping[str, pa.Table], *, threshold: int = 0) -> pa.Table:
    """What a node publishes for ``plan.node_sql``, without perturbation: the cells whose size
    (persons or rows, else the companion count(*)) is below the node's threshold withheld whole."""
    raw = _run(plan.node_sql, tables)
    raw = raw.rename_columns(list(plan.node_outputs))
    columns = []
    for i in range(raw.num_columns):
        column = raw.column(i)
        typ = column.type
        if pa.types.is_decimal(typ) or pa.types.is_floating(typ):
            column = column.cast(pa.float64())
        elif pa.types.is_integer(typ) and i not in plan.key_positions:
            column = column.cast(pa.int64())
        columns.append(column)
    table = pa.Table.from_arrays(columns, names=list(plan.node_outputs))
    keep = [
        all(table.column(p)[r].as_py() >= threshold for p in plan.size_positions)
        for r in range(table.num_rows)
    ]
    return table.filter(pa.array(keep, pa.bool_()))


def _merge_visits(
    sql: str, parts: Mapping[str, Sequence[Visit]], thresholds: Mapping[str, int] | None = None
) -> tuple[pa.Table, MergeSummary, FederatedPlan]:
    plan = plan_federated_query(sql, VIEWS)
    thresholds = thresholds or {node: 0 for node in parts}
    results = {
        node: published_at_node(plan, {"register_visit": _visits_table(v)}, threshold=thresholds[node])
        for node, v in parts.items()
    }
    merged, summary = merge_node_results(plan, results, thresholds=thresholds)
    return merged, summary, plan


def _rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def _parsed(sql: str) -> grammar.AggregateQuery:
    checked = sandbox.validate(sql, tables={t: [c for c, _ in cols] for t, cols in VIEWS.items()})
    return grammar.parse(checked.tree, VIEWS)


# -- the plan -----------------------------------------------------------------------------------

MEASURE_SQL = {
    "persons": ("count(DISTINCT person_id)", ()),
    "rows": ("count(*)", ()),
    "count": ("count(hba1c_mmol_mol)", ("count",)),
    "sum": ("sum(hba1c_mmol_mol)", ("count",)),
    "mean": ("avg(hba1c_mmol_mol)", ("count",)),
    "variance": ("var_samp(hba1c_mmol_mol)", ("count", "mean")),
    "variance_pop": ("var_pop(hba1c_mmol_mol)", ("count", "mean")),
    "stddev": ("stddev_samp(hba1c_mmol_mol)", ("count", "mean")),
    "stddev_pop": ("stddev_pop(hba1c_mmol_mol)", ("count", "mean")),
}


def test_every_measure_of_the_grammar_has_a_merge_rule():
    assert set(grammar.MEASURES) == set(MERGE_RULES) == set(MEASURE_SQL)


@pytest.mark.parametrize("kind", sorted(MEASURE_SQL))
def test_plan_adds_the_companions_each_measure_needs(kind):
    measure, needs = MEASURE_SQL[kind]
    plan = plan_federated_query(f"SELECT sex, {measure} AS m FROM register_visit GROUP BY sex", VIEWS)
    node = _parsed(plan.node_sql)
    companions = {o.name: node.measure_of(o) for o in node.outputs if o.name.startswith(COMPANION_PREFIX)}
    expected = {f"{COMPANION_PREFIX}{need}_0": need for need in needs}
    if kind not in ("persons", "rows"):
        expected[f"{COMPANION_PREFIX}rows"] = "rows"  # the merged threshold needs a cell size
    assert {name: m.kind for name, m in companions.items()} == expected
    assert all(m.column is None or m.column.name == "hba1c_mmol_mol" for m in companions.values())
    assert plan.node_outputs[:2] == ("sex", "m")
    assert node.measures[0].kind == kind
    out = plan.outputs[1]
    assert (out.name, out.kind) == ("m", kind)
    assert (out.count_position is not None) == ("count" in needs)
    assert (out.mean_position is not None) == ("mean" in needs)
    assert plan.node_outputs[plan.size_positions[0]] == ("m" if kind in ("persons", "rows") else "__fed_rows")


def test_plan_moves_order_limit_and_round_to_the_hub_and_keeps_output_names():
    sql = (
        "SELECT sex, round(avg(hba1c_mmol_mol), 1), round(stddev_pop(hba1c_mmol_mol), 2) AS sd, count(*) "
        "FROM register_visit WHERE hba1c_mmol_mol > 20 GROUP BY 1 ORDER BY 2 DESC, sex LIMIT 3"
    )
    plan = plan_federated_query(sql, VIEWS)
    tree = sqlglot.parse_one(plan.node_sql, read="duckdb")
    assert tree.args.get("order") is None and tree.args.get("limit") is None
    assert not list(tree.find_all(sqlglot.exp.Round))
    node = _parsed(plan.node_sql)
    # unaliased outputs get readable names (access.sqlnames), at the node as at the hub
    assert plan.node_outputs[:4] == ("sex", "round_avg_hba1c_mmol_mol_1", "sd", "count")
    assert tuple(o.name for o in node.outputs) == plan.node_outputs
    assert all(m.digits is None for m in node.measures)
    assert [o.digits for o in plan.outputs] == [None, 1, 2, None]
    assert [(o.output, o.descending) for o in plan.query.order] == [(1, True), (0, False)]
    assert plan.query.limit == 3
    assert node.where == plan.query.where and node.keys == plan.query.keys


def test_plan_keeps_joins_and_group_by_expressions():
    sql = (
        "SELECT p.birth_year, floor(p.birth_year / 10) * 10 AS decade, var_samp(r.hba1c_mmol_mol) "
        "FROM patient p LEFT JOIN register_visit r USING (person_id) "
        "WHERE r.sex IN ('F', 'M') GROUP BY ALL ORDER BY decade LIMIT 5"
    )
    plan = plan_federated_query(sql, VIEWS)
    node = _parsed(plan.node_sql)
    assert node.sources == plan.query.sources
    assert [s.join for s in node.sources] == ["from", "left"]
    assert node.keys == plan.query.keys and len(node.keys) == 2
    assert plan.key_positions == (0, 1)
    count, mean = (node.measure_of(o) for o in node.outputs if o.name in ("__fed_count_0", "__fed_mean_0"))
    assert (count.kind, count.column.alias, count.column.table) == ("count", "r", "register_visit")
    assert (mean.kind, mean.column.alias) == ("mean", "r")


PLANNED = [
    "SELECT count(*) FROM register_visit",
    "SELECT sex, count(*) AS visits, count(DISTINCT person_id) AS persons FROM register_visit GROUP BY sex",
    "SELECT sex, round(avg(hba1c_mmol_mol), 1) AS mean_hba1c, stddev_samp(bmi) FROM register_visit GROUP BY 1",
    "SELECT year(visit_date) AS y, count(*) FROM register_visit GROUP BY y ORDER BY y",
    "SELECT date_trunc('year', visit_date) AS y, avg(bmi) FROM register_visit GROUP BY ALL LIMIT 2",
    "SELECT extract(year FROM visit_date) AS y, count(*) FROM register_visit GROUP BY 1",
    "SELECT width_bucket(hba1c_mmol_mol, 30, 100, 7) AS band, count(*) FROM register_visit GROUP BY band",
    "SELECT floor(birth_year / 10) * 10 AS decade, count(*) FROM patient GROUP BY decade ORDER BY 2 DESC",
    "SELECT CASE WHEN bmi < 25 THEN 'normal' WHEN bmi < 30 THEN 'overweight' ELSE 'obese' END AS band, "
    "count(*) FROM register_visit GROUP BY band",
    "SELECT county, sum(bmi), var_pop(bmi), stddev_pop(bmi), count(bmi) FROM register_visit "
    "WHERE visit_date >= DATE '2018-01-01' AND sex IN ('F', 'M') AND NOT (county = '01' OR bmi IS NULL) "
    "GROUP BY county",
    "SELECT p.sex, count(DISTINCT r.person_id) FROM register_visit r JOIN patient p ON p.person_id = r.person_id "
    "GROUP BY p.sex",
    "SELECT p.birth_year, avg(r.hba1c_mmol_mol) FROM patient p LEFT JOIN register_visit r USING (person_id) "
    "GROUP BY p.birth_year LIMIT 3",
    "SELECT sex, count(*) FROM register_visit WHERE county LIKE '0%' AND hba1c_mmol_mol BETWEEN 40 AND 80 "
    "GROUP BY sex",
    "SELECT sex, sex AS again, round(variance(hba1c_mmol_mol)) FROM register_visit GROUP BY sex ORDER BY 3",
    "SELECT r.sex, avg(r.bmi), avg(p.birth_year), var_samp(r.bmi) FROM register_visit r "
    "JOIN patient p ON p.person_id = r.person_id GROUP BY r.sex",
]


@pytest.mark.parametrize("sql", PLANNED)
def test_node_sql_reads_at_a_node_as_the_same_table_plus_companions(sql):
    plan = plan_federated_query(sql, VIEWS)
    node = _parsed(plan.node_sql)  # the sandbox and the grammar, as a node runs them
    assert tuple(o.name for o in node.outputs) == plan.node_outputs
    assert [o.name for o in node.outputs[: len(plan.outputs)]] == [o.name for o in plan.query.outputs]
    assert [m.kind for m in node.measures[: len(plan.query.measures)]] == [
        m.kind for m in plan.query.measures
    ]
    assert node.keys == plan.query.keys and node.where == plan.query.where
    assert not node.order and node.limit is None
    # it runs, and gives a node's table its columns
    empty = {"register_visit": _visits_table([]), "patient": _patients_table([])}
    assert _run(plan.node_sql, empty).num_columns == len(plan.node_outputs)


KEY_CHOICES = ["sex", "year(visit_date)", "county", "width_bucket(hba1c_mmol_mol, 30, 100, 7)", "upper(sex)"]
MEASURE_CHOICES = [sql for sql, _ in MEASURE_SQL.values()] + [
    "round(avg(bmi), 2)",
    "stddev_pop(bmi)",
    "round(sum(bmi))",
]
WHERE_CHOICES = [
    "",
    " WHERE sex = 'F'",
    " WHERE hba1c_mmol_mol > 40 AND NOT county IS NULL",
    " WHERE bmi < 30",
]


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.sampled_from(KEY_CHOICES), max_size=2, unique=True),
    measures=st.lists(st.sampled_from(MEASURE_CHOICES), min_size=1, max_size=4),
    where=st.sampled_from(WHERE_CHOICES),
    order=st.booleans(),
    limit=st.none() | st.integers(0, 20),
)
def test_node_sql_of_generated_queries_parses_in_the_grammar(keys, measures, where, order, limit):
    items = [f"{k} AS k{i}" for i, k in enumerate(keys)] + [f"{m} AS m{i}" for i, m in enumerate(measures)]
    sql = f"SELECT {', '.join(items)} FROM register_visit{where}"
    if keys:
        sql += " GROUP BY " + ", ".join(f"k{i}" for i in range(len(keys)))
    if order:
        sql += f" ORDER BY {len(items)} DESC"
    if limit is not None:
        sql += f" LIMIT {limit}"
    plan = plan_federated_query(sql, VIEWS)
    node = _parsed(plan.node_sql)
    assert tuple(o.name for o in node.outputs) == plan.node_outputs
    assert node.keys == plan.query.keys and not node.order and node.limit is None
    assert all(m.digits is None for m in node.measures)
    assert plan.query.limit == limit


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT sex, count(*) AS __fed_rows FROM register_visit GROUP BY sex", "federation.reserved_name"),
        ("SELECT sex, avg(bmi) AS __FED_x FROM register_visit GROUP BY sex", "federation.reserved_name"),
        (
            "SELECT sex, count(*) AS nodes_in_cell FROM register_visit GROUP BY sex",
            "federation.reserved_name",
        ),
        (
            "SELECT sex, max(hba1c_mmol_mol) FROM register_visit GROUP BY sex",
            "aggregate.aggregate_not_allowed",
        ),
        ("SELECT count(*) FROM register_visit ORDER BY hba1c_mmol_mol", "aggregate.order"),
        ("SELECT count(*) FROM secret_table", "sql.table_not_allowed"),
        ("SELECT count(*) FROM register_visit; SELECT 1", "sql.multiple_statements"),
    ],
)
def test_plan_refuses_with_a_dotted_reason(sql, reason):
    with pytest.raises(QueryRefused) as info:
        plan_federated_query(sql, VIEWS)
    assert info.value.reason == reason


# -- the merge: exactness -------------------------------------------------------------------------

SEXES = st.sampled_from(["F", "M", None])
VALUES = st.none() | st.integers(200, 1500).map(lambda v: v / 10)
VISITS = st.lists(st.tuples(st.integers(0, 12).map(lambda p: f"p{p}"), SEXES, VALUES), max_size=40)

STATS_SQL = (
    "SELECT sex, count(*) AS n_rows, count(hba1c_mmol_mol) AS n, sum(hba1c_mmol_mol) AS total, "
    "avg(hba1c_mmol_mol) AS mean, var_samp(hba1c_mmol_mol) AS var, var_pop(hba1c_mmol_mol) AS var_pop, "
    "stddev_samp(hba1c_mmol_mol) AS sd, stddev_pop(hba1c_mmol_mol) AS sd_pop FROM register_visit GROUP BY sex"
)


def _close(merged: float | None, direct: Fraction | float | None) -> bool:
    if merged is None or direct is None:
        return merged is None and direct is None
    return math.isclose(merged, float(direct), rel_tol=1e-9, abs_tol=1e-9)


def _direct(values: list[float]) -> dict[str, Fraction | float | None]:
    """The statistics of the pooled raw values, computed exactly (statistics uses fractions)."""
    exact = [Fraction(v) for v in values]
    n = len(exact)
    return {
        "n": n,
        "total": sum(exact) if n else None,
        "mean": sum(exact) / n if n else None,
        "var": statistics.variance(exact) if n > 1 else None,
        "var_pop": statistics.pvariance(exact) if n else None,
        "sd": math.sqrt(statistics.variance(exact)) if n > 1 else None,
        "sd_pop": math.sqrt(statistics.pvariance(exact)) if n else None,
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(visits=VISITS, nodes=st.integers(1, 4), data=st.data())
def test_pooled_statistics_equal_the_statistics_of_all_the_data(visits, nodes, data):
    where = data.draw(st.lists(st.integers(0, nodes - 1), min_size=len(visits), max_size=len(visits)))
    parts = {f"node{i}": [v for v, at in zip(visits, where, strict=True) if at == i] for i in range(nodes)}
    merged, summary, _ = _merge_visits(STATS_SQL, parts)
    by_sex: dict[str | None, list[Visit]] = {}
    for v in visits:
        by_sex.setdefault(v[1], []).append(v)
    assert {r["sex"] for r in _rows(merged)} == set(by_sex)
    assert summary.cells == summary.published == len(by_sex) and summary.withheld_threshold == 0
    for row in _rows(merged):
        cell = by_sex[row["sex"]]
        direct = _direct([v for _, _, v in cell if v is not None])
        assert row["n_rows"] == len(cell)
        assert row["n"] == direct["n"]
        for name in ("total", "mean", "var", "var_pop", "sd", "sd_pop"):
            assert _close(row[name], direct[name]), (name, row[name], direct[name])
        assert row[NODES_IN_CELL] == sum(
            1 for part in parts.values() if any(v[1] == row["sex"] for v in part)
        )


def test_null_keys_are_one_cell_across_nodes():
    parts = {"a": [("p1", None, 50.0), ("p2", "F", 40.0)], "b": [("p3", None, 70.0)]}
    merged, summary, _ = _merge_visits(STATS_SQL, parts)
    rows = {r["sex"]: r for r in _rows(merged)}
    assert set(rows) == {None, "F"} and summary.cells == 2
    assert rows[None]["n_rows"] == 2 and rows[None]["mean"] == 60.0 and rows[None][NODES_IN_CELL] == 2
    assert rows["F"][NODES_IN_CELL] == 1 and summary.cells_missing_at_some_node == 1
    assert summary.nodes == ("a", "b")


def test_persons_partitioned_by_person_sum_to_the_distinct_persons_and_joins_merge():
    patients = [(f"p{i}", 1950 + i % 3, "F" if i % 2 else "M") for i in range(30)]
    visits = [(f"p{i % 30}", None, float(40 + i % 17)) for i in range(90)]
    home = {f"p{i}": f"node{i % 3}" for i in range(30)}  # each person at one holder
    sql = (
        "SELECT p.birth_year, count(DISTINCT r.person_id) AS persons, count(*) AS rows_, avg(r.hba1c_mmol_mol) "
        "AS mean FROM patient p JOIN register_visit r ON r.person_id = p.person_id GROUP BY p.birth_year"
    )
    plan = plan_federated_query(sql, VIEWS)
    results = {
        node: published_at_node(
            plan,
            {
                "patient": _patients_table([p for p in patients if home[p[0]] == node]),
                "register_visit": _visits_table([v for v in visits if home[v[0]] == node]),
            },
        )
        for node in ("node0", "node1", "node2")
    }
    merged, _ = merge_node_results(plan, results, thresholds=dict.fromkeys(results, 0))
    direct = _run(
        sql + " ORDER BY 1", {"patient": _patients_table(patients), "register_visit": _visits_table(visits)}
    )
    for row, expected in zip(_rows(merged), direct.to_pylist(), strict=True):
        assert row["birth_year"] == expected["birth_year"]
        assert row["persons"] == expected["persons"] and row["rows_"] == expected["rows_"]
        assert _close(row["mean"], expected["mean"])


def test_a_person_at_two_holders_is_counted_at_each():
    sql = "SELECT count(DISTINCT person_id) AS persons FROM register_visit"
    merged, _, _ = _merge_visits(sql, {"a": [("p1", "F", 1.0)], "b": [("p1", "F", 2.0)]})
    assert _rows(merged) == [{"persons": 2, NODES_IN_CELL: 2}]


# -- the merge: disclosure control ------------------------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    visits=VISITS,
    nodes=st.integers(1, 4),
    asks=st.sampled_from(["persons", "rows", "neither"]),
    data=st.data(),
)
def test_no_published_merged_cell_is_smaller_than_the_strictest_threshold(visits, nodes, asks, data):
    where = data.draw(st.lists(st.integers(0, nodes - 1), min_size=len(visits), max_size=len(visits)))
    thresholds = {f"node{i}": data.draw(st.integers(1, 6)) for i in range(nodes)}
    parts = {
        node: [v for v, at in zip(visits, where, strict=True) if f"node{at}" == node] for node in thresholds
    }
    measure = {
        "persons": "count(DISTINCT person_id) AS persons",
        "rows": "count(*) AS n_rows",
        "neither": "avg(hba1c_mmol_mol) AS mean",
    }[asks]
    merged, summary, _ = _merge_visits(
        f"SELECT sex, {measure} FROM register_visit GROUP BY sex", parts, thresholds
    )
    strictest = max(thresholds.values())
    assert summary.published == merged.num_rows == summary.cells - summary.withheld_threshold
    for row in _rows(merged):
        cell = [v for v in visits if v[1] == row["sex"]]
        # the figure published (or, for a mean, the cell's rows behind it) meets the strictest threshold
        assert len(cell) >= strictest
        if asks == "persons":
            assert row["persons"] >= strictest
        if asks == "rows":
            assert row["n_rows"] >= strictest
        if asks == "neither" and row["mean"] is not None:
            assert sum(1 for v in cell if v[2] is not None) >= strictest


def test_a_cell_withheld_at_one_node_is_marked_partial():
    a = [(f"a{i}", "F", 50.0) for i in range(5)] + [(f"a{i}", "M", 60.0) for i in range(5, 10)]
    b = [(f"b{i}", "F", 70.0) for i in range(6)] + [("b9", "M", 80.0)]  # one M person: withheld at b
    sql = "SELECT sex, count(DISTINCT person_id) AS persons, avg(hba1c_mmol_mol) AS mean FROM register_visit GROUP BY sex"
    merged, summary, _ = _merge_visits(sql, {"a": a, "b": b}, {"a": 3, "b": 3})
    rows = {r["sex"]: r for r in _rows(merged)}
    assert rows["F"] == {"sex": "F", "persons": 11, "mean": pytest.approx(670 / 11), NODES_IN_CELL: 2}
    assert rows["M"]["persons"] == 5 and rows["M"][NODES_IN_CELL] == 1 < len(summary.nodes)
    assert summary.cells_missing_at_some_node == 1


def test_the_strictest_threshold_of_any_node_in_scope_applies_to_merged_cells():
    a = [(f"a{i}", "F", 50.0) for i in range(4)]
    b = [(f"b{i}", "F", 50.0) for i in range(4)]
    sql = "SELECT sex, count(*) AS n FROM register_visit GROUP BY sex"
    plan = plan_federated_query(sql, VIEWS)
    results = {
        n: published_at_node(plan, {"register_visit": _visits_table(v)}, threshold=3)
        for n, v in [("a", a), ("b", b)]
    }
    merged, summary = merge_node_results(plan, results, thresholds={"a": 3, "b": 3, "down": 10})
    assert merged.num_rows == 0 and summary.withheld_threshold == 1 and summary.cells == 1
    merged, _ = merge_node_results(plan, results, thresholds={"a": 3, "b": 3, "down": 8})
    assert _rows(merged) == [{"sex": "F", "n": 8, NODES_IN_CELL: 2}]
    assert merged.schema.names == ["sex", "n", NODES_IN_CELL]
    assert merged.schema.field(NODES_IN_CELL).type == pa.int64()


def _published(
    node_outputs: Sequence[str], rows: Sequence[Sequence[object]], types: Sequence[pa.DataType]
) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(node_outputs)
    return pa.Table.from_arrays(
        [pa.array(list(c), t) for c, t in zip(columns, types, strict=True)], names=list(node_outputs)
    )


def test_a_measure_one_node_withheld_is_withheld_in_the_merge():
    plan = plan_federated_query(
        "SELECT sex, count(*) AS n, avg(hba1c_mmol_mol) AS mean, sum(hba1c_mmol_mol) AS total "
        "FROM register_visit GROUP BY sex",
        VIEWS,
    )
    assert plan.node_outputs == ("sex", "n", "mean", "total", "__fed_count_0")
    types = [pa.string(), pa.int64(), pa.float64(), pa.float64(), pa.int64()]
    a = _published(plan.node_outputs, [("F", 20, 50.0, 1000.0, 20), ("M", 20, 60.0, 1200.0, 20)], types)
    # b withheld the F values (from too few persons): mean, sum and count are NULL there
    b = _published(plan.node_outputs, [("F", 15, None, None, None), ("M", 10, 30.0, 300.0, 10)], types)
    merged, summary = merge_node_results(plan, {"a": a, "b": b}, thresholds={"a": 5, "b": 5})
    rows = {r["sex"]: r for r in _rows(merged)}
    assert rows["F"] == {"sex": "F", "n": 35, "mean": None, "total": None, NODES_IN_CELL: 2}
    assert rows["M"] == {"sex": "M", "n": 30, "mean": 50.0, "total": 1500.0, NODES_IN_CELL: 2}
    assert summary.measures_withheld == 2


def test_a_measure_over_too_few_merged_values_is_withheld_on_its_own():
    parts = {
        "a": [(f"a{i}", "F", 50.0 if i < 2 else None) for i in range(6)],
        "b": [(f"b{i}", "F", None) for i in range(6)],
    }
    sql = "SELECT sex, count(*) AS n, avg(hba1c_mmol_mol) AS mean FROM register_visit GROUP BY sex"
    merged, summary, _ = _merge_visits(sql, parts, {"a": 3, "b": 3})
    assert _rows(merged) == [{"sex": "F", "n": 12, "mean": None, NODES_IN_CELL: 2}]
    assert summary.measures_withheld == 1


# -- the merge: ORDER BY, LIMIT and round after the merge -------------------------------------------


def test_order_by_and_limit_apply_to_the_merged_cells():
    a = [(f"a{i}", "X", 1.0) for i in range(10)] + [(f"a{i}", "Y", 1.0) for i in range(10, 19)]
    b = [(f"b{i}", "X", 1.0) for i in range(1)] + [(f"b{i}", "Y", 1.0) for i in range(1, 6)]
    sql = "SELECT sex, count(*) AS n FROM register_visit GROUP BY sex ORDER BY n DESC LIMIT 1"
    # at each node alone the top cell is a different one; only the merge knows Y is larger
    merged, summary, plan = _merge_visits(sql, {"a": a, "b": b})
    assert _rows(merged) == [{"sex": "Y", "n": 14, NODES_IN_CELL: 2}]
    assert summary.published == 2  # LIMIT shortens the table, not the count of publishable cells
    alone = _run(sql, {"register_visit": _visits_table(a)})
    assert alone.column(0).to_pylist() == ["X"]
    ascending, _, _ = _merge_visits(sql.replace(" DESC LIMIT 1", ""), {"a": a, "b": b})
    assert ascending.column("sex").to_pylist() == ["X", "Y"]


def test_cells_come_out_in_key_order_with_nulls_last_when_no_order_is_asked():
    parts = {"b": [("p1", "M", 1.0), ("p2", None, 1.0)], "a": [("p3", "F", 1.0)]}
    merged, _, _ = _merge_visits("SELECT sex, count(*) FROM register_visit GROUP BY sex", parts)
    assert merged.column("sex").to_pylist() == ["F", "M", None]


def test_round_applies_to_the_pooled_value():
    parts = {"a": [("p1", "F", 50.04), ("p2", "F", 50.04)], "b": [("p3", "F", 50.02)]}
    sql = (
        "SELECT sex, round(avg(hba1c_mmol_mol), 2) AS mean, round(var_pop(hba1c_mmol_mol), 6), "
        "round(count(*), 1) AS n FROM register_visit GROUP BY sex"
    )
    merged, _, plan = _merge_visits(sql, parts)
    row = _rows(merged)[0]
    # rounding at the nodes first would give round((2 * 50.04 + 50.02) / 3, 2) from 50.04 and 50.02 alike;
    # the pooled mean 50.0333... rounds to 50.03
    assert row["mean"] == 50.03
    assert row["round_var_pop_hba1c_mmol_mol_6"] == round(statistics.pvariance([50.04, 50.04, 50.02]), 6)
    assert row["n"] == 3 and isinstance(row["n"], int)
    assert merged.schema.names == ["sex", "mean", "round_var_pop_hba1c_mmol_mol_6", "n", NODES_IN_CELL]


def test_a_query_without_keys_merges_to_one_total():
    parts = {"a": [("p1", "F", 10.0), ("p2", "M", 20.0)], "b": [("p3", "F", 30.0)], "c": []}
    merged, summary, _ = _merge_visits(
        "SELECT count(*) AS n, avg(hba1c_mmol_mol) AS mean FROM register_visit", parts
    )
    assert _rows(merged) == [{"n": 3, "mean": 20.0, NODES_IN_CELL: 3}]
    assert summary.nodes == ("a", "b", "c")


# -- the merge: what it refuses -----------------------------------------------------------------------


def test_merge_refuses_results_that_do_not_fit_the_plan():
    plan = plan_federated_query("SELECT sex, count(*) AS n FROM register_visit GROUP BY sex", VIEWS)
    good = _published(plan.node_outputs, [("F", 20)], [pa.string(), pa.int64()])
    renamed = good.rename_columns(["sex", "count"])
    twice = _published(plan.node_outputs, [("F", 20), ("F", 30)], [pa.string(), pa.int64()])
    text = _published(plan.node_outputs, [("F", "20")], [pa.string(), pa.string()])
    for results, thresholds, reason in [
        ({"a": renamed}, {"a": 5}, "federation.node_result"),
        ({"a": twice}, {"a": 5}, "federation.node_result"),
        ({"a": text}, {"a": 5}, "federation.node_result"),
        ({"a": good}, {"b": 5}, "federation.threshold_missing"),
        ({}, {"a": 5}, "federation.no_results"),
    ]:
        with pytest.raises(QueryRefused) as info:
            merge_node_results(plan, results, thresholds=thresholds)
        assert info.value.reason == reason
