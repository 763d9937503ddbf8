"""Patient-survey dimensions: share of positive answers, "not applicable" out of the denominator."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.outcomes.survey import PREM_DEFAULT, SurveyConfig, survey_shares

PREM = [d.column for d in PREM_DEFAULT.dimensions]


def _table(answers: dict[str, list], **extra) -> pa.Table:
    n = len(next(iter(answers.values())))
    cols = {c: answers.get(c, [None] * n) for c in PREM}
    return pa.table({**{c: pa.array(v, pa.string()) for c, v in cols.items()}, **extra})


def _row(result: pa.Table, dimension: str, **group) -> dict:
    rows = [
        r
        for r in result.to_pylist()
        if r["dimension"] == dimension and all(r[k] == v for k, v in group.items())
    ]
    assert len(rows) == 1
    return rows[0]


def test_not_applicable_is_left_out_of_the_denominator():
    t = _table({"prem_respect": ["5", "4", "2", "ej aktuellt", "Ej aktuellt ", None, "", "7"]})
    r = _row(survey_shares(t), "respect")
    assert r["n_positive"] == 2
    assert r["n_denominator"] == 3  # 5, 4, 2
    assert r["n_not_applicable"] == 2  # case and blanks do not matter
    assert r["n_missing"] == 2  # NULL and empty
    assert r["n_invalid"] == 1  # "7" is not an answer: out, and counted
    assert r["share_positive"] == pytest.approx(2 / 3)


def test_every_default_dimension_is_reported_and_an_empty_one_has_no_share():
    t = _table({"prem_overall": ["5", "1"]})
    result = survey_shares(t)
    assert result.column("dimension").to_pylist() == [d.name for d in PREM_DEFAULT.dimensions]
    assert _row(result, "respect")["share_positive"] is None
    assert _row(result, "respect")["n_denominator"] == 0
    assert _row(result, "overall")["share_positive"] == 0.5


def test_grouped_shares():
    t = _table(
        {"prem_information": ["5", "1", "ej aktuellt", "4", "4"]}, holder=pa.array(["a", "a", "a", "b", "b"])
    )
    result = survey_shares(t, by=["holder"])
    assert _row(result, "information", holder="a")["share_positive"] == 0.5
    assert _row(result, "information", holder="a")["n_not_applicable"] == 1
    assert _row(result, "information", holder="b")["share_positive"] == 1.0


def test_positive_answers_are_configuration():
    config = SurveyConfig.from_mapping(
        {
            "answers": [1, 2, 3, 4, 5],
            "positive": ["5"],
            "not_applicable": ["Vet ej", "ej aktuellt"],
            "dimensions": [
                {"name": "respect", "column": "prem_respect"},
                {"name": "overall", "column": "prem_overall", "positive": ["4", "5"]},
            ],
        }
    )
    t = _table({"prem_respect": ["5", "4", "vet ej"], "prem_overall": ["5", "4", "1"]})
    result = survey_shares(t, config)
    assert _row(result, "respect")["share_positive"] == 0.5  # only 5 is positive; "vet ej" is N/A
    assert _row(result, "overall")["share_positive"] == pytest.approx(2 / 3)  # per-dimension override
    # integer-coded answers read as their text
    ints = pa.table({"prem_respect": pa.array([5, 4, None], pa.int8()), "prem_overall": pa.array([1, 1, 1])})
    assert _row(survey_shares(ints, config), "respect")["share_positive"] == 0.5


@pytest.mark.parametrize(
    "raw",
    [
        {"answers": ["1"], "positive": ["2"], "dimensions": [{"name": "x", "column": "x"}]},
        {
            "answers": ["1", "x"],
            "positive": ["1"],
            "not_applicable": ["x"],
            "dimensions": [{"name": "x", "column": "x"}],
        },
        {"answers": ["1"], "positive": ["1"], "dimensions": []},
        {"answers": ["1"], "positive": ["1"], "dimensions": [{"name": "x", "column": "x"}], "weights": {}},
        {"answers": "12345", "positive": ["1"], "dimensions": [{"name": "x", "column": "x"}]},
    ],
)
def test_a_bad_configuration_is_refused(raw):
    with pytest.raises(ValueError):
        SurveyConfig.from_mapping(raw)


def test_missing_columns_are_named():
    with pytest.raises(KeyError, match="prem_respect"):
        survey_shares(pa.table({"x": [1]}))


answer = st.sampled_from(["1", "2", "3", "4", "5", "ej aktuellt", None, "", "?"])


@settings(max_examples=100, deadline=None)
@given(st.lists(answer, min_size=1, max_size=50))
def test_counts_partition_the_rows_and_the_share_is_positive_over_applicable(answers):
    r = _row(survey_shares(_table({"prem_respect": answers})), "respect")
    assert r["n_denominator"] + r["n_not_applicable"] + r["n_missing"] + r["n_invalid"] == len(answers)
    positive = sum(a in ("4", "5") for a in answers)
    applicable = sum(a in ("1", "2", "3", "4", "5") for a in answers)
    assert r["n_positive"] == positive
    assert r["share_positive"] == (positive / applicable if applicable else None)
