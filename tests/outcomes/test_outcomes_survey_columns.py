"""The PREM positive-answer columns as catalogue variables (issue 17, item 3): every survey column
of the pseudonymisation policy is in the catalogue (classified), has a codebook entry in both
languages that names the configured positive answers, a release rule, and is a measure, key and
filter of the aggregate grammar like any other column (so the tier's disclosure rules apply)."""

from __future__ import annotations

import pytest

from access import sandbox
from access.codebook import load_data
from access.errors import Refusal
from access.grammar import parse
from governance.catalogue import load_catalogue, sensitivity_of
from pipelines.outcomes.survey import load_survey
from privacy.policy import load_pseudonymise_policy, load_release_policy

SURVEY_COLUMNS = [
    (rule.name, c) for rule in load_pseudonymise_policy().tables for c in rule.columns if c.action == "survey"
]


def test_the_policy_derives_one_column_per_prem_dimension():
    prem = load_survey("prem")
    assert sorted((t, c.dimension) for t, c in SURVEY_COLUMNS) == sorted(
        ("prom_response", d.name) for d in prem.dimensions
    )


@pytest.mark.parametrize("table, column", SURVEY_COLUMNS, ids=lambda x: getattr(x, "name", x))
def test_each_survey_column_is_a_requestable_classified_variable(table, column):
    entry = load_catalogue()[f"{table}.{column.name}"]
    # health, like the answer it is derived from; not a quasi-identifier: it says less than the
    # answer (already released as health data) and no column combines the dimensions
    assert entry["sensitivity"] == "health" == sensitivity_of(column.answer)
    assert load_release_policy().rule_for(table, column.name).action == "keep"


@pytest.mark.parametrize("table, column", SURVEY_COLUMNS, ids=lambda x: getattr(x, "name", x))
def test_the_codebook_says_which_answers_count_as_positive(table, column):
    config = load_survey(column.survey)
    positive = config.positive_of(config.dimension(column.dimension))
    entry = load_data().entry(table, column.name)
    assert entry["label"]["sv"].strip() and entry["label"]["en"].strip()
    assert set(entry["values"]) == {"1", "0"}
    assert entry["note"]["en"].startswith(f"Positive answers: {', '.join(sorted(positive))} ")
    assert entry["note"]["sv"].startswith(f"Positiva svar: {', '.join(sorted(positive))} ")


VIEWS = {
    "prom_response": [
        ("person_id", "VARCHAR"),
        ("visit_date", "DATE"),
        ("sex", "VARCHAR"),
        ("prem_respect", "VARCHAR"),
        *((c.name, "INTEGER") for _, c in SURVEY_COLUMNS),
    ]
}


def _parse(sql: str):
    checked = sandbox.validate(sql, tables={t: [c for c, _ in cols] for t, cols in VIEWS.items()})
    return parse(checked.tree, VIEWS)


@pytest.mark.parametrize(
    "sql",
    [
        # the share of positive answers, "not applicable" out of the denominator: a plain mean
        "SELECT sex, avg(prem_overall_positive) AS share_positive, count(prem_overall_positive) AS answered "
        "FROM prom_response GROUP BY sex",
        "SELECT year(visit_date) AS y, avg(prem_respect_positive), avg(prem_information_positive) "
        "FROM prom_response GROUP BY y",
        "SELECT prem_accessibility_positive, count(DISTINCT person_id) FROM prom_response "
        "GROUP BY prem_accessibility_positive",
        "SELECT count(*) FROM prom_response WHERE prem_involvement_positive = 1",
    ],
)
def test_survey_columns_are_measures_keys_and_filters_of_the_grammar(sql):
    assert _parse(sql).measures


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT prem_overall_positive FROM prom_response",  # no measure: row level
        "SELECT person_id, avg(prem_overall_positive) FROM prom_response GROUP BY person_id",
    ],
)
def test_row_level_use_of_survey_columns_is_refused(sql):
    with pytest.raises(Refusal):
        _parse(sql)
