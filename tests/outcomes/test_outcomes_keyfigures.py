"""PROM key figures (issue 17): t-based intervals against a hand computation, small cells
withheld with a reason and without any value, the improved share by a pairing rule, response
rate only with a denominator."""

from __future__ import annotations

import math
import statistics
from datetime import date

import pyarrow as pa
import pytest
from scipy import stats

from pipelines.outcomes import (
    EQ5D_COLUMNS,
    Improvement,
    PairingRule,
    key_figures,
    mean_ci,
    threshold_for,
)
from pipelines.outcomes.keyfigures import (
    DEFAULT_THRESHOLD,
    NO_DENOMINATOR,
    NO_VALUES,
    SMALL_COMPLEMENT,
    TOO_FEW_PERSONS,
)


def _table(rows):
    """rows: (person, date, index, vas, profile)"""
    p, d, i, v, pr = zip(*rows, strict=True) if rows else ([], [], [], [], [])
    return pa.table(
        {
            "person_id": pa.array(p, pa.string()),
            "visit_date": pa.array(d, pa.date32()),
            "eq5d_index_se_5l_tto_2020": pa.array(i, pa.float64()),
            "eq_vas": pa.array(v, pa.int64()),
            "eq5d_profile": pa.array(pr, pa.string()),
        }
    )


INDEX_2024 = [0.91, 0.85, 0.77, 0.95, 0.62, 0.88, 0.71, 0.99, 0.80, 0.83, 0.69, 0.93]
VAS_2024 = [80, 75, 60, 90, 55, 85, 70, 95, 78, 82, 65, 88]


def _year_2024(extra=()):
    rows = [
        (f"p{i}", date(2024, 1 + i % 12, 10), x, v, "11111")
        for i, (x, v) in enumerate(zip(INDEX_2024, VAS_2024, strict=True))
    ]
    return [*rows, *extra]


def test_mean_and_interval_equal_a_hand_computation():
    kf = key_figures(_table(_year_2024()), holder="ndr", threshold=5)
    (row,) = kf.rows
    assert row.period == "2024"
    n = len(INDEX_2024)
    for fig, values in ((row.mean_index, INDEX_2024), (row.mean_vas, VAS_2024)):
        m = statistics.mean(values)
        half = stats.t.ppf(0.975, n - 1) * statistics.stdev(values) / math.sqrt(n)
        assert fig.shown and fig.persons == n
        assert math.isclose(fig.value, m, rel_tol=1e-12)
        assert math.isclose(fig.low, m - half, rel_tol=1e-12)
        assert math.isclose(fig.high, m + half, rel_tol=1e-12)
    assert row.responses.value == n and row.persons.value == n


def test_a_person_counts_once_per_period_in_the_means():
    # p0 answers again later in 2024 with a very different value: the responses count it,
    # the mean uses p0's first response of the period only.
    kf = key_figures(
        _table(_year_2024([("p0", date(2024, 12, 30), -0.5, 5, "55555")])), holder="ndr", threshold=5
    )
    (row,) = kf.rows
    assert row.responses.value == 13 and row.persons.value == 12
    assert math.isclose(row.mean_index.value, statistics.mean(INDEX_2024))


def test_mean_ci_needs_two_values():
    assert mean_ci([0.5]) == (0.5, None, None)
    with pytest.raises(ValueError):
        mean_ci([])


def test_small_periods_are_withheld_with_a_reason_and_no_value():
    rows = _year_2024([(f"q{i}", date(2023, 5, 1), 0.5, 50, "22222") for i in range(4)])
    kf = key_figures(_table(rows), holder="ndr", threshold=5)
    small = next(r for r in kf.rows if r.period == "2023")
    for name, fig in small.figures().items():
        assert not fig.shown, name
        assert (fig.value, fig.low, fig.high, fig.persons) == (None, None, None, None), name
    assert small.responses.withheld == TOO_FEW_PERSONS
    assert small.mean_index.withheld == TOO_FEW_PERSONS
    assert small.response_rate.withheld == NO_DENOMINATOR
    assert NO_DENOMINATOR in kf.notes
    big = next(r for r in kf.rows if r.period == "2024")
    assert big.mean_index.shown
    # exactly the threshold is enough
    exact = key_figures(_table(_year_2024()[:5]), holder="ndr", threshold=5)
    assert exact.rows[0].mean_index.shown and exact.rows[0].persons.value == 5
    below = key_figures(_table(_year_2024()[:4]), holder="ndr", threshold=5)
    assert not below.rows[0].mean_index.shown and not below.rows[0].persons.shown


def _pairs(improved: int, worse: int, same: int = 0):
    rows = []
    for i in range(improved + worse + same):
        before = 0.70
        after = 0.80 if i < improved else (0.60 if i < improved + worse else 0.70)
        rows.append((f"p{i}", date(2023, 3, 1), before, 60, "22222"))
        rows.append((f"p{i}", date(2024, 3, 1), after, 60, "11111" if i < improved else "22222"))
    return rows


def test_improved_share_year_on_year():
    kf = key_figures(_table(_pairs(7, 5)), holder="ndr", threshold=5)
    by = {r.period: r for r in kf.rows}
    assert by["2024"].improved_share.shown
    assert math.isclose(by["2024"].improved_share.value, 7 / 12)
    assert by["2024"].improved_share.persons == 12
    assert by["2023"].improved_share.withheld == NO_VALUES  # no follow-up falls in 2023
    # 8 of 12 improved: the 4 who did not are a small cell by subtraction
    kf = key_figures(_table(_pairs(8, 4)), holder="ndr", threshold=5)
    assert {r.period: r for r in kf.rows}["2024"].improved_share.withheld == SMALL_COMPLEMENT
    # 4 of 12 improved: too few persons behind the share's count
    kf = key_figures(_table(_pairs(4, 8)), holder="ndr", threshold=5)
    assert {r.period: r for r in kf.rows}["2024"].improved_share.withheld == TOO_FEW_PERSONS


def test_improvement_rule_is_configurable():
    rows = _pairs(6, 0, same=6)  # 6 better by 0.10, 6 unchanged
    share = {r.period: r for r in key_figures(_table(rows), holder="ndr", threshold=5).rows}["2024"]
    assert math.isclose(share.improved_share.value, 0.5)
    # a minimal important difference above 0.10: nobody improved -> a small cell (0 < 5)
    strict = key_figures(_table(rows), holder="ndr", threshold=5, improvement=Improvement(min_change=0.2))
    assert strict.rows[-1].improved_share.withheld == TOO_FEW_PERSONS
    # Paretian classification: the 6 whose profile went 22222 -> 11111 improved
    pchc = key_figures(_table(rows), holder="ndr", threshold=5, improvement=Improvement(measure="pchc"))
    assert math.isclose(pchc.rows[-1].improved_share.value, 0.5)
    # a window rule instead of calendar years (300-450 days, nearest 365)
    window = key_figures(
        _table(rows),
        holder="ndr",
        threshold=5,
        rule=PairingRule(mode="window", min_days=300, max_days=450, pick="nearest", target_days=365),
    )
    assert math.isclose(window.rows[-1].improved_share.value, 0.5)
    with pytest.raises(ValueError):
        Improvement(measure="hba1c")  # type: ignore[arg-type]


def test_response_rate_with_a_denominator():
    responders = _year_2024()  # 12 persons in 2024
    visits = pa.table(
        {
            "person_id": [f"p{i}" for i in range(20)] + ["p0"],
            "visit_date": pa.array([date(2024, 6, 1)] * 20 + [date(2024, 7, 1)], pa.date32()),
        }
    )
    kf = key_figures(_table(responders), holder="ndr", threshold=5, denominator=visits)
    assert kf.notes == ()
    (row,) = kf.rows
    assert math.isclose(row.response_rate.value, 12 / 20) and row.response_rate.persons == 20
    # 17 of 20 responded: the 3 who did not are withheld by subtraction
    more = _year_2024([(f"p{i}", date(2024, 2, 2), 0.9, 90, "11111") for i in range(12, 17)])
    kf = key_figures(_table(more), holder="ndr", threshold=5, denominator=visits)
    assert kf.rows[0].response_rate.withheld == SMALL_COMPLEMENT


def test_quarters_and_fhir_authored_text():
    rows = _year_2024()
    table = pa.table(
        {
            "person_id": [r[0] for r in rows],
            "authored": [f"{r[1].isoformat()}T09:00:00+01:00" for r in rows],
            "eq5d_index_se_5l_tto_2020": [r[2] for r in rows],
            "eq_vas": [r[3] for r in rows],
            "eq5d_profile": [r[4] for r in rows],
        }
    )
    kf = key_figures(table, holder="region_uppsala", columns=EQ5D_COLUMNS, period="quarter", threshold=3)
    assert [r.period for r in kf.rows] == ["2024-Q1", "2024-Q2", "2024-Q3", "2024-Q4"]
    assert all(r.persons.value == 3 for r in kf.rows)
    q1 = INDEX_2024[0:3]
    assert math.isclose(kf.rows[0].mean_index.value, statistics.mean(q1))


def test_threshold_comes_from_the_holder_and_fails_closed():
    assert threshold_for("ndr") == 5  # schemas/holders.json
    assert threshold_for("no_such_holder") == DEFAULT_THRESHOLD
    assert threshold_for("x", {"x": 7}) == 7
    kf = key_figures(_table(_year_2024()[:6]), holder="no_such_holder")
    assert kf.threshold == DEFAULT_THRESHOLD and not kf.rows[0].mean_index.shown
    assert key_figures(_table(_year_2024()[:6]), holder="ndr").rows[0].mean_index.shown


def test_missing_columns_and_empty_input():
    with pytest.raises(KeyError):
        key_figures(pa.table({"person_id": ["a"]}), holder="ndr")
    assert key_figures(_table([]), holder="ndr").rows == ()
