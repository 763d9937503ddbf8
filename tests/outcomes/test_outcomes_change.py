"""Change over time: baseline/follow-up pairing rules and the change in index and VAS."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.outcomes.change import YEAR_ON_YEAR, ChangeColumns, PairingRule, pair_changes

D0 = dt.date(2020, 1, 1)


def _t(rows: list[tuple], event: bool = False) -> pa.Table:
    """rows: (person, day offset, index, vas[, event])."""
    cols = {
        "person_id": pa.array([r[0] for r in rows], pa.string()),
        "visit_date": pa.array([D0 + dt.timedelta(days=r[1]) for r in rows], pa.date32()),
        "eq5d_index_se_5l_tto_2020": pa.array([r[2] for r in rows], pa.float64()),
        "eq5d_vas": pa.array([r[3] for r in rows], pa.int16()),
    }
    if event:
        cols["procedure"] = pa.array([r[4] for r in rows], pa.bool_())
    return pa.table(cols)


def _pairs(result) -> list[tuple]:
    p = result.pairs.to_pylist()
    return [(r["person_id"], (r["baseline_date"] - D0).days, r["days"]) for r in p]


WINDOW = PairingRule(min_days=30, max_days=60)


def test_window_edges_are_included_and_one_day_outside_is_not():
    rows = [
        ("a", 0, 0.5, 50), ("a", 30, 0.6, 60),  # exactly min_days
        ("b", 0, 0.5, 50), ("b", 60, 0.7, 70),  # exactly max_days
        ("c", 0, 0.5, 50), ("c", 29, 0.6, 60),  # one day early
        ("d", 0, 0.5, 50), ("d", 61, 0.6, 60),  # one day late
    ]  # fmt: skip
    r = pair_changes(_t(rows), WINDOW)
    assert [(p, d) for p, b, d in _pairs(r) if b == 0] == [("a", 30), ("b", 60)]


def test_several_follow_ups_first_last_nearest():
    rows = [("a", 0, 0.5, 50), ("a", 35, 0.6, 61), ("a", 44, 0.7, 62), ("a", 46, 0.8, 63), ("a", 59, 0.9, 64)]
    base = ChangeColumns(event="procedure")
    t = _t([(*r, i == 0) for i, r in enumerate(rows)], event=True)

    def days(rule):
        return [d for _, _, d in _pairs(pair_changes(t, rule, columns=base))]

    assert days(PairingRule(min_days=30, max_days=60, pick="first")) == [35]
    assert days(PairingRule(min_days=30, max_days=60, pick="last")) == [59]
    assert days(PairingRule(min_days=30, max_days=60, pick="nearest", target_days=45)) == [44]  # tie: earlier
    assert days(PairingRule(min_days=30, max_days=60, pick="nearest", target_days=47)) == [46]
    assert days(PairingRule(min_days=30, max_days=60, pick="nearest", target_days=30)) == [35]
    assert days(PairingRule(min_days=30, max_days=60, pick="nearest", target_days=60)) == [59]


def test_changes_are_follow_up_minus_baseline_and_null_stays_null():
    rows = [("a", 0, 0.5, 50), ("a", 40, 0.75, 70), ("b", 0, None, 50), ("b", 40, 0.9, None)]
    r = pair_changes(_t(rows), WINDOW)
    p = {x["person_id"]: x for x in r.pairs.to_pylist()}
    assert p["a"]["index_change"] == pytest.approx(0.25) and p["a"]["vas_change"] == 20
    assert p["b"]["index_change"] is None and p["b"]["vas_change"] is None  # nothing imputed
    assert p["b"]["follow_up_index"] == 0.9


def test_persons_without_a_follow_up_are_counted_and_kept_on_request():
    rows = [("a", 0, 0.5, 50), ("a", 40, 0.6, 60), ("b", 0, 0.5, 50), ("c", 0, 0.5, 50), ("c", 200, 0.5, 50)]
    r = pair_changes(_t(rows), WINDOW)
    assert r.persons == 3 and r.persons_paired == 1
    assert r.baselines == 5 and r.paired == 1 and r.unpaired == 4  # every row is a candidate baseline
    kept = pair_changes(_t(rows), WINDOW, keep_unpaired=True)
    assert kept.pairs.num_rows == 5
    assert kept.pairs.column("follow_up_date").null_count == 4


def test_event_marker_chooses_baselines_and_a_later_baseline_is_no_follow_up():
    rows = [
        ("a", 0, 0.4, 40, True), ("a", 40, 0.8, 80, True), ("a", 50, 0.7, 70, False),
        ("b", 0, 0.4, 40, False), ("b", 40, 0.8, 80, False),
    ]  # fmt: skip
    cols = ChangeColumns(event="procedure")
    r = pair_changes(_t(rows, event=True), WINDOW, columns=cols)
    assert _pairs(r) == [("a", 0, 50)]  # b has no baseline; a's second baseline is not its follow-up
    r2 = pair_changes(
        _t(rows, event=True),
        PairingRule(min_days=30, max_days=60, follow_up_may_be_baseline=True),
        columns=cols,
    )
    assert _pairs(r2) == [("a", 0, 40)]


def test_year_on_year_pairs_first_responses_of_consecutive_years():
    rows = [
        ("a", 0, 0.5, 50), ("a", 100, 0.9, 90),  # 2020: first is day 0
        ("a", 400, 0.6, 60),  # 2021
        ("a", 1200, 0.7, 70),  # 2023: 2022 missing, no pair across the gap
        ("b", 365, 0.5, 50),
    ]  # fmt: skip
    r = pair_changes(_t(rows), YEAR_ON_YEAR)
    assert _pairs(r) == [("a", 0, 400)]
    assert r.baselines == 4  # a: 2020, 2021, 2023; b: 2020 (day 365 of a leap year) -> 2020-12-31
    assert r.pairs.column("index_change").to_pylist() == [pytest.approx(0.1)]


def test_timestamps_and_rows_without_person_or_date():
    t = pa.table(
        {
            "person_id": ["a", "a", None, "a"],
            "visit_date": pa.array(
                [dt.datetime(2020, 1, 1, 8), dt.datetime(2020, 2, 15, 23), dt.datetime(2020, 2, 1), None],
                pa.timestamp("us"),
            ),
            "eq5d_index_se_5l_tto_2020": [0.5, 0.6, 0.1, 0.2],
            "eq5d_vas": [50, 60, 10, 20],
        }
    )
    r = pair_changes(t, WINDOW)
    assert r.paired == 1 and r.pairs.column("days").to_pylist() == [45]
    assert r.baselines == 2  # the rows without a person or a date take no part


def test_bad_rules_are_refused():
    for kwargs in (
        {"min_days": 0},
        {"min_days": 10, "max_days": 5},
        {"pick": "nearest"},
        {"pick": "nearest", "target_days": 1000},
        {"mode": "monthly"},
        {"pick": "median"},
    ):
        with pytest.raises(ValueError):
            PairingRule(**kwargs)
    with pytest.raises(ValueError, match="calendar_year"):
        pair_changes(
            _t([("a", 0, 0.5, 50, True)], event=True), YEAR_ON_YEAR, columns=ChangeColumns(event="procedure")
        )
    with pytest.raises(KeyError):
        pair_changes(pa.table({"x": [1]}))


visit = st.tuples(st.sampled_from("abc"), st.integers(0, 400), st.floats(0, 1), st.integers(0, 100))


@settings(max_examples=120, deadline=None)
@given(
    st.lists(visit, min_size=1, max_size=40),
    st.integers(1, 60),
    st.integers(0, 120),
    st.sampled_from(["first", "last"]),
)
def test_window_pairs_match_a_brute_force_reading_of_the_rule(rows, lo, width, pick):
    rule = PairingRule(min_days=lo, max_days=lo + width, pick=pick)
    r = pair_changes(_t(rows), rule)
    expected = []
    for p, d, *_ in sorted(rows, key=lambda x: (x[0], x[1])):
        window = sorted(d2 for p2, d2, *_ in rows if p2 == p and lo <= d2 - d <= lo + width)
        if window:
            expected.append((p, d, (window[0] if pick == "first" else window[-1]) - d))
    assert sorted(_pairs(r)) == sorted(expected)
    assert r.paired == len(expected)


def test_empty_input_and_a_single_response():
    empty = _t([("a", 0, 0.5, 50)]).slice(0, 0)
    for rule in (WINDOW, YEAR_ON_YEAR, PairingRule(min_days=1, max_days=9, pick="nearest", target_days=5)):
        r = pair_changes(empty, rule)
        assert (r.pairs.num_rows, r.baselines, r.paired, r.persons) == (0, 0, 0, 0)
        one = pair_changes(_t([("a", 0, 0.5, 50)]), rule, keep_unpaired=True)
        assert (one.baselines, one.paired, one.pairs.num_rows) == (1, 0, 1)


def test_paretian_classification_of_the_profiles():
    from pipelines.outcomes.change import paretian_classification

    before = pa.array(["11111", "21341", "12345", None, "33333", "55555"])
    after = pa.array(["11111", "11341", "12355", "11111", "23334", "55554"])
    assert paretian_classification(before, after).to_pylist() == [
        "no_change",
        "improve",
        "worsen",
        None,
        "mixed",
        "improve",
    ]
    three = paretian_classification(pa.array(["33333"]), pa.array(["33332"]), levels=3)
    assert three.to_pylist() == ["improve"]
    with pytest.raises(ValueError):
        paretian_classification(pa.array(["55555"]), pa.array(["11111"]), levels=3)


def test_pairs_carry_profiles_and_their_classification():
    t = _t([("a", 0, 0.5, 50), ("a", 40, 0.8, 80), ("b", 0, 0.9, 90), ("b", 45, 0.6, 60)])
    t = t.append_column("eq5d_profile", pa.array(["22222", "12222", "11111", "11121"]))
    r = pair_changes(t, WINDOW, columns=ChangeColumns(profile="eq5d_profile"))
    got = {
        p["person_id"]: (p["baseline_profile"], p["follow_up_profile"], p["pchc"])
        for p in r.pairs.to_pylist()
    }
    assert got == {"a": ("22222", "12222", "improve"), "b": ("11111", "11121", "worsen")}
