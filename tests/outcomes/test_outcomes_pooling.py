"""PROM key figures pooled across nodes (issue 17, "for the hub"): pooling the published tables of
holders with disjoint persons gives exactly the figures of their union (counts, shares, means and
t-based intervals), a part any node withheld stays withheld, and a node's document is read back
exactly or refused whole."""

from __future__ import annotations

import math
import random
from datetime import date

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.outcomes import Improvement, PairingRule, key_figures
from pipelines.outcomes.keyfigures import NO_DENOMINATOR, NO_VALUES, TOO_FEW_PERSONS
from pipelines.outcomes.pooling import (
    FEDERATION,
    PARTIAL,
    PERSONS_SUMMED,
    RULES_DIFFER,
    Part,
    key_figures_document,
    key_figures_from_document,
    pool_key_figures,
)


def _responses(prefix: str, n: int, seed: int, years=(2023, 2024)) -> pa.Table:
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        for year in years:
            if rnd.random() < 0.85:
                rows.append(
                    (
                        f"{prefix}{i}",
                        date(year, rnd.randint(1, 12), rnd.randint(1, 28)),
                        round(rnd.uniform(-0.2, 1.0), 3),
                        rnd.randint(0, 100),
                    )
                )
    p, d, x, v = zip(*rows, strict=True)
    return pa.table(
        {
            "person_id": pa.array(p, pa.string()),
            "visit_date": pa.array(d, pa.date32()),
            "eq5d_index_se_5l_tto_2020": pa.array(x, pa.float64()),
            "eq_vas": pa.array(v, pa.int64()),
            "eq5d_profile": pa.array(["11111"] * len(p), pa.string()),
        }
    )


def _denominator(table: pa.Table) -> pa.Table:
    return table.select(["person_id", "visit_date"])


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _same_figures(pooled, union) -> None:
    assert [r.period for r in pooled.rows] == [r.period for r in union.rows]
    for p_row, u_row in zip(pooled.rows, union.rows, strict=True):
        for name, p_fig in p_row.figures().items():
            u_fig = u_row.figures()[name]
            assert p_fig.shown == u_fig.shown, (p_row.period, name, p_fig, u_fig)
            assert p_fig.persons == u_fig.persons, (p_row.period, name)
            for attr in ("value", "low", "high"):
                assert _close(getattr(p_fig, attr), getattr(u_fig, attr)), (p_row.period, name, attr)


def test_pooling_disjoint_holders_equals_the_union():
    a, b = _responses("a", 60, 1), _responses("b", 45, 2)
    kf_a = key_figures(a, holder="ndr", threshold=5, denominator=_denominator(a))
    kf_b = key_figures(b, holder="region_skane", threshold=5, denominator=_denominator(b))
    union = pa.concat_tables([a, b])
    expected = key_figures(union, holder="all", threshold=5, denominator=_denominator(union))
    pooled = pool_key_figures([Part(kf_a), Part(kf_b)])
    assert pooled.holder == FEDERATION and PERSONS_SUMMED in pooled.notes
    _same_figures(pooled, expected)


@settings(max_examples=25, deadline=None)
@given(st.integers(12, 40), st.integers(12, 40), st.integers(0, 10_000))
def test_pooled_means_and_intervals_are_exact_for_any_split(n_a, n_b, seed):
    a, b = _responses("a", n_a, seed, years=(2024,)), _responses("b", n_b, seed + 1, years=(2024,))
    kf_a = key_figures(a, holder="x", threshold=3)
    kf_b = key_figures(b, holder="y", threshold=3)
    expected = key_figures(pa.concat_tables([a, b]), holder="all", threshold=3)
    pooled = pool_key_figures([Part(kf_a), Part(kf_b)])
    for name in ("mean_index", "mean_vas"):
        got, want = pooled.rows[0].figures()[name], expected.rows[0].figures()[name]
        assert got.persons == want.persons
        assert _close(got.value, want.value) and _close(got.low, want.low) and _close(got.high, want.high)


def test_a_cell_one_node_withheld_is_withheld_in_the_pool():
    big, small = _responses("a", 60, 3, years=(2024,)), _responses("b", 4, 4, years=(2024,))
    kf_big = key_figures(big, holder="ndr", threshold=5, denominator=_denominator(big))
    kf_small = key_figures(small, holder="region_orebro", threshold=5, denominator=_denominator(small))
    assert kf_small.rows[0].mean_index.withheld == TOO_FEW_PERSONS
    pooled = pool_key_figures([Part(kf_big), Part(kf_small)])
    row = pooled.rows[0]
    # big + small minus big's published value would give back small's withheld cell
    for name, fig in row.figures().items():
        assert not fig.shown
        # one year: nobody has a follow-up, so neither node has an improved share to hide
        assert fig.withheld == (NO_VALUES if name == "improved_share" else PARTIAL)
        assert fig.value is None and fig.persons is None


def test_a_node_without_a_denominator_withholds_the_pooled_response_rate():
    a, b = _responses("a", 40, 5), _responses("b", 40, 6)
    kf_a = key_figures(a, holder="ndr", threshold=5, denominator=_denominator(a))
    kf_b = key_figures(b, holder="region_skane", threshold=5)  # no denominator
    assert kf_b.rows[0].response_rate.withheld == NO_DENOMINATOR
    pooled = pool_key_figures([Part(kf_a), Part(kf_b)])
    assert all(r.response_rate.withheld == PARTIAL for r in pooled.rows)
    assert all(r.mean_index.shown for r in pooled.rows)


def test_improved_shares_pool_only_under_one_rule():
    a, b = _responses("a", 40, 7), _responses("b", 40, 8)
    kf_a = key_figures(a, holder="ndr", threshold=5)
    kf_b = key_figures(b, holder="region_skane", threshold=5, improvement=Improvement(min_change=0.05))
    pooled = pool_key_figures([Part(kf_a), Part(kf_b)])
    assert {r.improved_share.withheld for r in pooled.rows} == {RULES_DIFFER}
    kf_c = key_figures(b, holder="region_skane", threshold=5, rule=PairingRule(max_days=400))
    assert {r.improved_share.withheld for r in pool_key_figures([Part(kf_a), Part(kf_c)]).rows} == {
        RULES_DIFFER
    }


def test_the_document_round_trips_exactly():
    a = _responses("a", 50, 9)
    kf = key_figures(a, holder="ndr", threshold=5, denominator=_denominator(a), period="quarter")
    back, confidence = key_figures_from_document(key_figures_document(kf))
    assert back == kf and confidence == 0.95


def test_the_pooled_document_round_trips_too():
    a, b = _responses("a", 40, 11), _responses("b", 3, 12)
    kf_b = key_figures(b, holder="region_orebro", threshold=5, improvement=Improvement(min_change=0.1))
    pooled = pool_key_figures([Part(key_figures(a, holder="ndr", threshold=5)), Part(kf_b)])
    reasons = {f.withheld for r in pooled.rows for f in r.figures().values()}
    assert {PARTIAL, RULES_DIFFER} <= reasons
    back, _ = key_figures_from_document(key_figures_document(pooled))
    assert back == pooled


def _doc():
    a = _responses("a", 30, 10, years=(2024,))
    return key_figures_document(key_figures(a, holder="ndr", threshold=5))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(format="other/1"),
        lambda d: d.update(threshold=0),
        lambda d: d.update(threshold=True),
        lambda d: d.update(period="month"),
        lambda d: d.update(confidence=1.5),
        lambda d: d.update(notes=["free text"]),
        lambda d: d["rows"][0].update(period="2024-Q5"),
        lambda d: d["rows"][0].update(period="24"),
        lambda d: d["rows"][0].update(extra=1),
        lambda d: d["rows"].append(dict(d["rows"][0])),
        lambda d: d["rows"][0].update(persons={"withheld": "because"}),
        lambda d: d["rows"][0].update(persons={"withheld": TOO_FEW_PERSONS, "value": 3}),
        lambda d: d["rows"][0]["mean_index"].update(persons=2),  # shown below the node's threshold
        lambda d: d["rows"][0]["mean_index"].update(value=float("nan")),
        lambda d: d["rows"][0]["mean_index"].update(low=None),
        lambda d: d["rows"][0]["mean_index"].update(value=9.0),  # outside its interval
        lambda d: d["rule"].update(mode="whenever"),
        lambda d: d["improvement"].update(bogus=1),
    ],
)
def test_a_malformed_document_is_refused_whole(mutate):
    doc = _doc()
    mutate(doc)
    with pytest.raises(ValueError):
        key_figures_from_document(doc)


def test_a_node_publishes_one_period_kind_only(tmp_path):
    """Year and quarter tables published together would give a withheld quarter back by
    subtraction (a year's responses are its quarters' sum): what leaves a node is by year."""
    import duckdb

    from pipelines.outcomes.source import published_documents

    path = tmp_path / "research.duckdb"
    con = duckdb.connect(str(path))
    con.register("responses", _responses("a", 40, 13))
    con.execute("CREATE TABLE prom_response AS SELECT * FROM responses")
    con.close()
    guard = tmp_path / "guard"
    guard.mkdir()
    documents = published_documents(path, holder="ndr", threshold=5, guard_dir=guard)
    assert [d["period"] for d in documents] == ["year"]
    assert published_documents(tmp_path / "absent.duckdb", holder="ndr", threshold=5, guard_dir=guard) == []
