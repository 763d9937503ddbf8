"""EQ-5D scoring: properties of every shipped value set, and the row-level rules.

Properties (exhaustive over all states where the state space is small, Hypothesis over tables):
full health has the highest index; a worse level in any one dimension never raises the index;
the profile round-trips to the dimensions; the level sum stays within 5..5L; a missing or
invalid dimension gives NULL (never imputed) and the row is counted under one reason.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.outcomes.scoring import (
    DIMENSION_INVALID,
    DIMENSION_MISSING,
    EQ5D_RESPONSE,
    LEVEL_SUM,
    PROFILE,
    PROM_RESPONSE,
    VAS,
    VAS_INVALID,
    VAS_MISSING,
    EQ5DColumns,
    index_column,
    profile_levels,
    score_eq5d,
    split_profiles,
)
from pipelines.outcomes.valuesets import available_value_sets, load_value_set, state_code, state_levels

DIMS = PROM_RESPONSE.dimensions
ALL_SETS = [load_value_set(i) for i in available_value_sets()]


INT32 = pa.int32()


def _table(rows: list[tuple], vas: list | None = None, type_: pa.DataType = INT32) -> pa.Table:
    cols = {name: pa.array([r[i] for r in rows], type_) for i, name in enumerate(DIMS)}
    cols["eq_vas"] = pa.array(vas if vas is not None else [50] * len(rows), pa.int32())
    return pa.table(cols)


# -- properties of the value sets (exhaustive) ---------------------------------------------------


@pytest.mark.parametrize("vs", ALL_SETS, ids=lambda v: v.id)
def test_full_health_has_the_highest_index(vs):
    values = vs.state_values()
    assert values[0] == values.max()
    assert np.count_nonzero(values == values[0]) == 1  # and no other state reaches it
    assert state_levels(vs.levels)[0].tolist() == [1, 1, 1, 1, 1]


@pytest.mark.parametrize("vs", ALL_SETS, ids=lambda v: v.id)
def test_a_worse_level_in_one_dimension_never_raises_the_index(vs):
    grid = state_levels(vs.levels).astype(np.int64)
    values = vs.state_values()
    for d in range(5):
        can_worsen = grid[:, d] < vs.levels
        worse = grid[can_worsen].copy()
        worse[:, d] += 1
        worse_codes = (worse - 1) @ (vs.levels ** np.arange(4, -1, -1))
        assert (values[worse_codes] <= values[can_worsen]).all(), f"dimension {d}"


@pytest.mark.parametrize("vs", ALL_SETS, ids=lambda v: v.id)
def test_table_and_scalar_forms_agree_on_every_state(vs):
    values = vs.state_values()
    for code, levels in enumerate(state_levels(vs.levels).tolist()):
        assert state_code(levels, vs.levels) == code
        assert math.isclose(values[code], vs.value(levels), abs_tol=1e-12)


# -- properties of scoring (Hypothesis) ----------------------------------------------------------

level5 = st.integers(1, 5)
cell = st.one_of(level5, level5, level5, st.none(), st.sampled_from([0, 6, 9, -1, 1000]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(cell, cell, cell, cell, cell), min_size=1, max_size=60), st.integers(0, 40))
def test_scoring_properties(rows, cut):
    table = _table(rows)
    table = table.slice(min(cut, len(rows) - 1))  # offsets that are not a multiple of 8, too
    rows = rows[min(cut, len(rows) - 1) :]
    result = score_eq5d(table, ["se_5l_tto_2020", "se_5l_vas_2020"])
    out = result.table
    tto = load_value_set("se_5l_tto_2020")
    missing = invalid = 0
    for row, profile, level_sum, index in zip(
        rows,
        out.column(PROFILE).to_pylist(),
        out.column(LEVEL_SUM).to_pylist(),
        out.column(index_column(tto)).to_pylist(),
        strict=True,
    ):
        has_missing = any(v is None for v in row)
        has_invalid = not has_missing and any(not 1 <= v <= 5 for v in row)  # one reason per row
        missing += has_missing
        invalid += has_invalid
        if has_missing or has_invalid:
            assert profile is None and level_sum is None and index is None  # never imputed
            continue
        assert profile_levels(profile) == row  # the profile round-trips to the dimensions
        assert 5 <= level_sum <= 25 and level_sum == sum(row)
        assert index == pytest.approx(tto.value(list(row)), abs=1e-12)
    assert result.counts[DIMENSION_MISSING] == missing
    assert result.counts[DIMENSION_INVALID] == invalid
    assert result.scored == sum(1 for r in rows if all(v is not None and 1 <= v <= 5 for v in r))
    assert result.scored + missing + invalid == len(rows)
    assert result.rows == len(rows) == out.num_rows


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(level5, level5, level5, level5, level5), min_size=1, max_size=40))
def test_split_profiles_inverts_the_profile(rows):
    out = score_eq5d(_table(rows)).table
    back = split_profiles(out.column(PROFILE))
    assert list(zip(*(back.column(i).to_pylist() for i in range(5)), strict=True)) == rows
    # the plain-string form too
    back2 = split_profiles(out.column(PROFILE).cast(pa.string()))
    assert back2.equals(back)


def test_three_level_data_level_sum_bounds_and_3l_set():
    rows = [(1, 1, 1, 1, 1), (3, 3, 3, 3, 3), (1, 2, 2, 3, 3), (4, 1, 1, 1, 1)]
    result = score_eq5d(_table(rows), ["se_3l_tto_2014"], levels=3)
    out = result.table
    assert out.column(LEVEL_SUM).to_pylist() == [5, 15, 11, None]
    assert out.column(PROFILE).to_pylist() == ["11111", "33333", "12233", None]
    assert result.counts[DIMENSION_INVALID] == 1  # level 4 does not exist in EQ-5D-3L
    # RCSTAT tests/testthat/test-eq5d.R: eq5d_3l_index_tto(1,2,2,3,3) == 0.4992
    assert out.column("eq5d_index_se_3l_tto_2014").to_pylist()[2] == pytest.approx(0.4992, abs=5e-5)


def test_a_value_set_for_another_instrument_is_refused():
    with pytest.raises(ValueError, match="EQ-5D-3L"):
        score_eq5d(_table([(1, 1, 1, 1, 1)]), ["se_3l_tto_2014"], levels=5)
    with pytest.raises(ValueError, match="twice"):
        score_eq5d(_table([(1, 1, 1, 1, 1)]), ["se_5l_tto_2020", "se_5l_tto_2020"])
    with pytest.raises(KeyError, match="eq5d_mobility"):
        score_eq5d(pa.table({"x": [1]}))


# -- row-level rules -----------------------------------------------------------------------------


def test_missing_and_invalid_dimensions_give_null_and_are_counted():
    rows = [(2, 1, 3, 4, 1), (None, 1, 1, 1, 1), (6, 1, 1, 1, 1), (None, 0, 1, 1, 1), (1, 1, 1, 1, 1)]
    result = score_eq5d(_table(rows), ["se_5l_tto_2020"])
    assert result.table.column(PROFILE).to_pylist() == ["21341", None, None, None, "11111"]
    assert result.table.column("eq5d_index_se_5l_tto_2020").null_count == 3
    # one reason per row: a row with a missing and an invalid dimension counts as missing
    assert result.counts == {DIMENSION_MISSING: 2, DIMENSION_INVALID: 1, VAS_MISSING: 0, VAS_INVALID: 0}
    assert result.scored + result.counts[DIMENSION_MISSING] + result.counts[DIMENSION_INVALID] == 5


def test_non_integers_and_text():
    floats = pa.table(
        {n: pa.array([2.0, 2.5, float("nan"), None, 1.0], pa.float64()) for n in DIMS}
        | {"eq_vas": [1, 2, 3, 4, 5]}
    )
    r = score_eq5d(floats)
    assert r.table.column(PROFILE).to_pylist() == ["22222", None, None, None, "11111"]
    assert (r.counts[DIMENSION_INVALID], r.counts[DIMENSION_MISSING]) == (2, 1)
    text = pa.table(
        {n: pa.array(["2", " 3 ", "x", "", None, "2.0"], pa.string()) for n in DIMS} | {"eq_vas": ["1"] * 6}
    )
    r = score_eq5d(text)
    assert r.table.column(PROFILE).to_pylist() == ["22222", "33333", None, None, None, None]
    assert (r.counts[DIMENSION_INVALID], r.counts[DIMENSION_MISSING]) == (2, 2)  # "" is no answer
    for type_ in (pa.int8(), pa.uint8(), pa.int16(), pa.int64(), pa.uint64()):
        r = score_eq5d(_table([(1, 2, 3, 4, 5), (5, 4, 3, 2, 1)], type_=type_))
        assert r.table.column(PROFILE).to_pylist() == ["12345", "54321"]


def test_vas_as_given_with_missing_and_invalid_counted():
    rows = [(1, 1, 1, 1, 1)] * 6
    r = score_eq5d(_table(rows, vas=[0, 100, 101, -1, None, 73]))
    assert r.table.column(VAS).to_pylist() == [0, 100, None, None, None, 73]
    assert (r.counts[VAS_INVALID], r.counts[VAS_MISSING]) == (2, 1)
    assert r.scored == 6  # EQ VAS does not decide the profile or the index
    no_vas = score_eq5d(_table(rows).drop_columns(["eq_vas"]), columns=EQ5DColumns(*DIMS, vas=None))
    assert VAS not in no_vas.table.column_names


def test_the_fhir_view_columns_score_like_the_register_columns():
    rows = [(2, 1, 3, 4, 1), (1, 1, 1, 1, 2), (None, 1, 1, 1, 1)]
    register = _table(rows, vas=[70, 80, 90])
    fhir = register.rename_columns([*EQ5D_RESPONSE.dimensions, "eq_vas"])
    a = score_eq5d(register, ["se_5l_tto_2020"])
    b = score_eq5d(fhir, ["se_5l_tto_2020"], columns=EQ5D_RESPONSE)
    assert a.table.equals(b.table) and a.counts == b.counts


def test_chunked_input_and_many_batches_keep_row_order():
    rng = np.random.default_rng(17)
    n = 200_000
    levels = [rng.integers(0, 7, size=n) for _ in range(5)]
    table = pa.table(
        {name: pa.chunked_array([lv[: n // 3], lv[n // 3 :]]) for name, lv in zip(DIMS, levels, strict=True)}
    )
    table = table.append_column("eq_vas", pa.array(rng.integers(-5, 105, size=n)))
    r = score_eq5d(table, ["se_5l_tto_2020"], threads=2)
    grid = np.stack(levels, axis=1)
    ok = ((grid >= 1) & (grid <= 5)).all(axis=1)
    vs = load_value_set("se_5l_tto_2020")
    expected = np.full(n, np.nan)
    codes = ((grid[ok] - 1) * (5 ** np.arange(4, -1, -1))).sum(axis=1)
    expected[ok] = vs.state_values()[codes]
    got = r.table.column("eq5d_index_se_5l_tto_2020").to_numpy(zero_copy_only=False)
    assert np.array_equal(np.isnan(got), ~ok)
    assert np.allclose(got[ok], expected[ok], atol=1e-12)
    assert r.counts[DIMENSION_INVALID] == int((~ok).sum())
    assert r.scored == int(ok.sum())


def test_empty_and_all_null_input():
    empty = _table([])
    r = score_eq5d(empty, ["se_5l_tto_2020"])
    assert r.table.num_rows == 0 and r.scored == 0 and set(r.counts.values()) == {0}
    nulls = pa.table({name: pa.nulls(3) for name in [*DIMS, "eq_vas"]})
    r = score_eq5d(nulls, ["se_5l_tto_2020"])
    assert r.table.column(PROFILE).null_count == 3
    assert (r.counts[DIMENSION_MISSING], r.counts[VAS_MISSING], r.scored) == (3, 3, 0)
