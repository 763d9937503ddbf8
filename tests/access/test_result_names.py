"""Readable result column names and one-line, placed SQL errors (access.sqlnames, access.engine).

Law (Hypothesis): whatever the query form (plain, grouped, windowed, CTE, subquery, set
operation) and whatever the projections, no result column name contains a parenthesis or a
space, in the record tier and in the aggregate tier.
"""

from __future__ import annotations

import io

import pyarrow.ipc as ipc
import pytest
import sqlglot
from access_support import World
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from access import sqlnames
from access.engine import Limits
from access.errors import QueryCutOff, QueryRefused
from access.sandbox import validate


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("names_home"), persons=200, visits=800)
    yield w
    w.service.close()


def _names(world: World, sql: str, release: str = "r_rec") -> list[str]:
    user = world.service.authenticate(world.alice)
    result = world.service.query(user, release, sql, "arrow")
    return ipc.open_stream(io.BytesIO(result.body)).read_all().schema.names  # type: ignore[union-attr]


def test_unaliased_aggregates_get_readable_names(world):
    names = _names(
        world,
        "SELECT sex, count(*), sum(bmi), avg(hba1c_mmol_mol), count(DISTINCT person_id), "
        "year(visit_date), max(bmi) AS top FROM register_visit GROUP BY sex, year(visit_date)",
    )
    assert names == [
        "sex",
        "count",
        "sum_bmi",
        "avg_hba1c_mmol_mol",
        "count_distinct_person_id",
        "year_visit_date",
        "top",
    ]


def test_aggregate_tier_uses_the_same_names(world):
    names = _names(
        world, "SELECT sex, count(*), avg(hba1c_mmol_mol) FROM register_visit GROUP BY sex", "r_agg"
    )
    assert names[:3] == ["sex", "count", "avg_hba1c_mmol_mol"]


def test_names_never_carry_a_string_literal_or_clash():
    tree = validate(
        "SELECT count(*), count(*), CASE WHEN sex = '19121212-1212' THEN 1 ELSE 0 END, bmi + 1 FROM t",
        tables={"t": ["sex", "bmi", "count"]},
    ).tree
    names = [e.alias_or_name for e in tree.expressions]
    # 'count' is a column of the release: an alias may not shadow it
    assert names == ["count_2", "count_3", "case_sex", "bmi_plus_1"]
    assert "1212" not in " ".join(names)


def test_functions_are_named_as_duckdb_spells_them():
    """sqlglot's class names (timestamp_trunc, time_to_str, time_to_unix, percentile_cont) are
    not what the researcher wrote or can look up in DuckDB's documentation."""
    tree = validate(
        "SELECT date_trunc('month', visit_date), strftime(visit_date, '%Y'), epoch(visit_date), "
        "quantile_cont(bmi, 0.5), approx_count_distinct(bmi), [bmi, bmi] FROM t",
        tables={"t": ["visit_date", "bmi"]},
    ).tree
    assert [e.alias_or_name for e in tree.expressions] == [
        "date_trunc_visit_date",
        "strftime_visit_date",
        "epoch_visit_date",
        "quantile_cont_bmi_0_5",
        "approx_count_distinct_bmi",
        "array_bmi_bmi",  # DuckDB writes a list as [..]: no name of its own
    ]


_COLUMN = st.sampled_from(["bmi", "hba1c_mmol_mol", "birth_year"])
_EXPR = st.one_of(
    st.just("count(*)"),
    _COLUMN.map(lambda c: f"sum({c})"),
    _COLUMN.map(lambda c: f"avg({c})"),
    _COLUMN.map(lambda c: f"round(avg({c}), 2)"),
    _COLUMN.map(lambda c: f"count(DISTINCT {c})"),
    _COLUMN.map(lambda c: f"max({c}) - min({c})"),
    _COLUMN.map(lambda c: f"stddev_samp({c}) / 2"),
    _COLUMN.map(lambda c: f"CAST(sum({c}) AS INTEGER)"),
    _COLUMN.map(lambda c: f"sum(CASE WHEN sex = 'F' THEN {c} ELSE 0 END)"),
    st.just("count(*) FILTER (WHERE bmi > 25)"),
)
_FORMS = [
    "SELECT sex, {items} FROM register_visit GROUP BY sex",
    "SELECT {items} FROM register_visit",
    "SELECT * FROM (SELECT sex, {items} FROM register_visit GROUP BY sex)",
    "WITH c AS (SELECT sex, {items} FROM register_visit GROUP BY ALL) SELECT * FROM c",
    "SELECT {items} FROM register_visit UNION ALL SELECT {items} FROM register_visit",
    "SELECT sex, {items}, row_number() OVER (ORDER BY sex) FROM register_visit GROUP BY sex",
]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(_EXPR, min_size=1, max_size=4), form=st.sampled_from(_FORMS))
def test_no_result_column_name_has_parentheses_or_spaces(world, items, form):
    names = _names(world, form.format(items=", ".join(items)))
    assert all(not set(n) & set("() ") for n in names), names
    assert len(names) == len(set(names))


_MEASURE = st.one_of(
    st.just("count(*)"),
    st.just("count(DISTINCT person_id)"),
    _COLUMN.map(lambda c: f"sum({c})"),
    _COLUMN.map(lambda c: f"avg({c})"),
    _COLUMN.map(lambda c: f"round(avg({c}), 1)"),
    _COLUMN.map(lambda c: f"stddev_samp({c})"),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(_MEASURE, min_size=1, max_size=3))
def test_no_aggregate_tier_name_has_parentheses_or_spaces(world, items):
    names = _names(world, f"SELECT sex, {', '.join(items)} FROM register_visit GROUP BY sex", "r_agg")
    assert all(not set(n) & set("() ") for n in names), names


# -- errors: one line, placed in the researcher's text, with the closest names ---------------


def _refusal(world: World, sql: str) -> QueryRefused:
    user = world.service.authenticate(world.alice)
    with pytest.raises(QueryRefused) as err:
        world.service.query(user, "r_rec", sql, "json")
    return err.value


def test_unknown_column_names_its_place_and_the_closest_permitted_name(world):
    r = _refusal(world, "SELECT hba1x FROM register_visit")
    assert r.reason == "sql.invalid"
    assert r.message == "unknown column 'hba1x' at line 1, col 8; did you mean hba1c_mmol_mol?"
    r = _refusal(world, "SELECT sex,\n       count(*)\nFROM register_visit\nWHERE bmii > 30 GROUP BY sex")
    assert r.message == "unknown column 'bmii' at line 4, col 7; did you mean bmi?"
    assert "\n" not in r.message


def test_unknown_column_in_the_aggregate_tier_is_placed_too(world):
    user = world.service.authenticate(world.alice)
    with pytest.raises(QueryRefused) as err:
        world.service.query(
            user, "r_agg", "SELECT sex,\n count(*) FROM register_visit WHERE hba1x > 3 GROUP BY sex"
        )
    assert "unknown column 'hba1x' at line 2, col 37" in err.value.message
    assert "did you mean hba1c_mmol_mol?" in err.value.message


def test_locate_counts_quoted_names_and_lines():
    assert sqlnames.locate('SELECT a,\n  "Hba1X" FROM t', "hba1x") == (2, 3)
    assert sqlnames.locate("SELECT a FROM t", "zz") is None


def test_limits_say_their_size(world):
    user = world.service.authenticate(world.alice)
    with pytest.raises(QueryCutOff) as err:
        world.service.query(user, "r_rec", "SELECT * FROM register_visit, register_visit b", "json")
    assert err.value.reason == "limit.rows" and "100000 rows" in err.value.message
    engine = next(iter(world.service.engines._engines.values()))
    cross = "SELECT count(*) FROM register_visit x, register_visit y, register_visit z, register_visit w"
    with pytest.raises(QueryCutOff) as err:
        engine.run([cross], limits=Limits(timeout_s=0.2, max_rows=10))
    assert err.value.reason == "limit.time" and "time limit of 0.2 s" in err.value.message


def test_regenerated_sql_is_what_runs_and_the_audit_keeps_what_was_written():
    checked = validate("SELECT count(*) FROM t", tables={"t": ["x"]})
    assert checked.sql == "SELECT COUNT(*) AS count FROM t"
    assert sqlglot.parse_one(checked.sql, read="duckdb").expressions[0].alias == "count"
    assert checked.masked == "SELECT COUNT(*) FROM t"


def test_unknown_table_names_its_place_and_the_closest_permitted_table(world):
    r = _refusal(world, "SELECT count(*)\nFROM register_visits")
    assert r.reason == "sql.table_not_allowed"
    assert r.message == (
        "table 'register_visits' at line 2, col 6 is not part of your permit for this release; "
        "did you mean register_visit?"
    )


def test_a_column_outside_group_by_is_placed(world):
    r = _refusal(world, "SELECT sex,\n  count(*), bmi FROM register_visit GROUP BY sex")
    assert r.reason == "sql.invalid"
    assert r.message.startswith('Binder Error: column "bmi" must appear in the GROUP BY clause')
    assert r.message.endswith("(at line 2, col 13)")


def test_a_mistyped_function_is_placed_and_a_close_allowed_one_offered():
    with pytest.raises(QueryRefused) as err:
        validate("SELECT\n medain(x) FROM t", tables={"t": ["x"]})
    assert (
        err.value.message == "function 'medain' at line 2, col 2 is not allowed; did you mean median or mean?"
    )
    with pytest.raises(QueryRefused) as err:
        validate("SELECT getenv('HOME')", tables={"t": ["x"]})
    assert err.value.message == "function 'getenv' at line 1, col 8 is not allowed"  # nothing near it
