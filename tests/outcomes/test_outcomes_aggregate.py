"""The scored PROM variables in the aggregate tier (issue 17, item 3): the grammar takes them like
any other column (means and sums of the index and level sum, grouping by their bands or by the
profile), so the tier's disclosure rules apply to them unchanged; free-text-like use stays refused."""

from __future__ import annotations

import pytest

from access import sandbox
from access.errors import Refusal
from access.grammar import parse

VIEWS = {
    "prom_response": [
        ("person_id", "VARCHAR"),
        ("visit_date", "DATE"),
        ("sex", "VARCHAR"),
        ("eq5d_profile", "VARCHAR"),
        ("eq5d_level_sum", "INTEGER"),
        ("eq5d_index_se_5l_tto_2020", "DOUBLE"),
        ("eq5d_index_se_5l_vas_2020", "DOUBLE"),
        ("eq_vas", "INTEGER"),
    ]
}


def _parse(sql: str):
    checked = sandbox.validate(sql, tables={t: [c for c, _ in cols] for t, cols in VIEWS.items()})
    return parse(checked.tree, VIEWS)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT sex, avg(eq5d_index_se_5l_tto_2020) AS mean_index, count(DISTINCT person_id) AS persons "
        "FROM prom_response GROUP BY sex",
        "SELECT year(visit_date) AS y, avg(eq5d_index_se_5l_vas_2020), stddev_samp(eq_vas) "
        "FROM prom_response GROUP BY y",
        "SELECT width_bucket(eq5d_level_sum, 5, 25, 4) AS band, count(*) FROM prom_response GROUP BY band",
        "SELECT eq5d_profile, count(DISTINCT person_id) FROM prom_response GROUP BY eq5d_profile",
        "SELECT count(*) FROM prom_response WHERE eq5d_index_se_5l_tto_2020 < 0.5",
    ],
)
def test_scored_columns_are_measures_keys_and_filters_of_the_grammar(sql):
    query = _parse(sql)
    assert query.measures


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT eq5d_profile FROM prom_response",  # no measure: row level
        "SELECT person_id, avg(eq5d_index_se_5l_tto_2020) FROM prom_response GROUP BY person_id",
    ],
)
def test_row_level_use_of_scored_columns_is_refused(sql):
    with pytest.raises(Refusal):
        _parse(sql)
