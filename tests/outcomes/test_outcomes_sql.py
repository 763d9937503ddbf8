"""EQ-5D scores compiled to DuckDB SQL agree with the Arrow scoring, row for row.

Property (Hypothesis): for random tables of dimension values - valid levels, NULLs, out of
range, non-integral floats and NaN, strings with blanks, leading zeros or junk - the SQL
expressions evaluated in DuckDB give the same profile, level sum and index (to 1e-9) as
:func:`score_eq5d`, for every shipped value set and both instruments. Plus: every state of each
value set, and the refusals (unknown value set, wrong instrument, wrong number of dimensions).
"""

from __future__ import annotations

import math
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.outcomes.scoring import LEVEL_SUM, PROFILE, EQ5DColumns, index_column, score_eq5d
from pipelines.outcomes.sql import (
    SQL_TYPES,
    TRIMMED_WHITESPACE,
    index_sql,
    level_sum_sql,
    profile_sql,
    score_sql,
)
from pipelines.outcomes.valuesets import ValueSetError, available_value_sets, load_value_set, state_levels

NAMES = ("mo", "sc", "ua", "pd", "ad")
COLUMNS = EQ5DColumns(*NAMES, vas=None)
SETS = {
    lv: [load_value_set(i) for i in available_value_sets() if load_value_set(i).levels == lv] for lv in (3, 5)
}
BLANKS = "".join(chr(c) for c in TRIMMED_WHITESPACE)


def _sql_scores(table: pa.Table, levels: int) -> list[dict[str, Any]]:
    dims = [f't."{n}"' for n in NAMES]
    select = [f"{profile_sql(dims, levels)} AS p", f"{level_sum_sql(dims, levels)} AS s"]
    select += [f"{index_sql(dims, vs)} AS i{k}" for k, vs in enumerate(SETS[levels])]
    con = duckdb.connect()
    try:
        con.register("src", table)
        return con.sql(f"SELECT {', '.join(select)} FROM src t").to_arrow_table().to_pylist()
    finally:
        con.close()


def _assert_same(table: pa.Table, levels: int) -> None:
    arrow = score_eq5d(table, SETS[levels], levels=levels, columns=COLUMNS).table.to_pylist()
    sql = _sql_scores(table, levels)
    assert len(arrow) == len(sql)
    for a, s in zip(arrow, sql, strict=True):
        assert s["p"] == a[PROFILE]
        assert s["s"] == a[LEVEL_SUM]
        for k, vs in enumerate(SETS[levels]):
            want, got = a[index_column(vs)], s[f"i{k}"]
            if want is None:
                assert got is None
            else:
                assert got is not None and math.isclose(got, want, rel_tol=0, abs_tol=1e-9)


def _table(rows: list[tuple[Any, ...]], typ: pa.DataType) -> pa.Table:
    return pa.table({n: pa.array([r[i] for r in rows], typ) for i, n in enumerate(NAMES)})


ints = st.one_of(
    st.integers(1, 5), st.integers(1, 5), st.none(), st.integers(-3, 9), st.integers(-(2**31), 2**31 - 1)
)
floats = st.one_of(
    st.integers(1, 5).map(float),
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.5, 2.0000001, 4.999999999, 6.0]),
)
blank = st.text(alphabet=BLANKS + "x", max_size=2)
strings = st.one_of(
    st.integers(1, 5).map(str),
    st.none(),
    st.builds(
        lambda a, z, d, b: a + "0" * z + str(d) + b, blank, st.integers(0, 10), st.integers(0, 9), blank
    ),
    st.sampled_from(["", "  ", "3.0", "+3", "-1", "1e0", "٣", "x", "1 2", "3\n", "\t4 "]),
    st.text(max_size=4),
)


@pytest.mark.parametrize("levels", [3, 5])
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_sql_scores_equal_arrow_scores(levels: int, data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["int", "float", "string", "int8", "decimal"]))
    cell = {"int": ints, "int8": st.one_of(st.none(), st.integers(-128, 127)), "float": floats}.get(kind)
    if kind == "string":
        cell = strings
    elif kind == "decimal":
        cell = st.one_of(st.none(), st.decimals(-9, 9, places=2, allow_nan=False, allow_infinity=False))
    assert cell is not None
    rows = data.draw(st.lists(st.tuples(cell, cell, cell, cell, cell), min_size=1, max_size=40))
    typ = {
        "int": pa.int64(),
        "int8": pa.int8(),
        "float": pa.float64(),
        "string": pa.string(),
        "decimal": pa.decimal128(5, 2),
    }[kind]
    _assert_same(_table(rows, typ), levels)


@pytest.mark.parametrize("levels", [3, 5])
def test_every_state_of_every_value_set(levels: int) -> None:
    grid = state_levels(levels)
    table = pa.table({n: pa.array(grid[:, i].astype("int32")) for i, n in enumerate(NAMES)})
    _assert_same(table, levels)


def test_mixed_column_types_and_undelivered_dimension() -> None:
    table = pa.table(
        {
            "mo": pa.array([1, 2, 3], pa.int16()),
            "sc": pa.array(["1", " 2", None]),
            "ua": pa.array([1.0, 3.0, 1.0]),
            "pd": pa.array([1, 5, 1], pa.uint8()),
            "ad": pa.array([2, 1, 1], pa.int64()),
        }
    )
    _assert_same(table, 5)
    con = duckdb.connect()
    con.register("src", table)
    dims = ['t."mo"', 't."sc"', "NULL", 't."pd"', 't."ad"']  # a dimension the holder did not deliver
    assert con.sql(f"SELECT {index_sql(dims, 'se_5l_tto_2020')} FROM src t").fetchall() == [(None,)] * 3
    with pytest.raises(duckdb.Error, match="must be integer, floating, decimal or string"):
        con.sql(f"SELECT {profile_sql(['TRUE'] * 5)} FROM src").fetchall()


def test_trimmed_whitespace_is_pyarrows() -> None:
    """The blanks the SQL ignores around a string level are exactly those pyarrow trims."""
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    trimmed = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(pa.array([chr(c) for c in cps]))), 0)
    assert tuple(c for c, t in zip(cps, trimmed.to_pylist(), strict=True) if t) == TRIMMED_WHITESPACE


def test_refusals() -> None:
    dims = list(NAMES)
    with pytest.raises(ValueSetError):
        index_sql(dims, "no_such_value_set")
    with pytest.raises(ValueError, match="is for EQ-5D-3L"):
        index_sql(dims, "se_3l_tto_2014", levels=5)
    with pytest.raises(ValueError, match="dimension expressions"):
        profile_sql(dims[:4])
    with pytest.raises(ValueError, match="unknown EQ-5D score"):
        score_sql("mean", dims)
    with pytest.raises(ValueError, match="needs a value set"):
        score_sql("index", dims)
    with pytest.raises(ValueError, match="takes no value set"):
        score_sql("profile", dims, value_set="se_5l_tto_2020")
    with pytest.raises(ValueError, match="levels must be"):
        level_sum_sql(dims, 4)
    assert set(SQL_TYPES) == {"profile", "level_sum", "index"}
    assert score_sql("index", dims, value_set="se_5l_vas_2020") == index_sql(dims, "se_5l_vas_2020")
