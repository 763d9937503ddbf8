"""PREM dimensions in the research zone (issue 17, item 3): pseudonymisation derives
``prem_<dimension>_positive`` (policy action ``survey``) from the delivered answers with the rule of
``schemas/surveys/prem.json``, the same rule ``survey_shares`` applies; a bad policy is refused and
an unknown survey or dimension stops the run before data moves."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from pipelines.outcomes.survey import PREM_DEFAULT, survey_shares
from pipelines.pseudonymise import PseudonymiseError, pseudonymise_holder
from privacy.policy import PolicyError, load_pseudonymise_policy
from pseudonymise.raw_fixtures import ANNA, BERTIL, CESAR, build_ndr
from tests.zone_files import read_rows

FLAGS = [f"{d.column}_positive" for d in PREM_DEFAULT.dimensions]
ANSWERS = [d.column for d in PREM_DEFAULT.dimensions]


def _policy_with(tmp_path, column: dict, table: str = "prom_response"):
    doc = json.loads(open(load_pseudonymise_policy().path, encoding="utf-8").read())
    doc["tables"][table]["columns"].append(column)
    path = tmp_path / "pseudonymise.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_the_research_zone_carries_one_flag_per_dimension_and_its_mean_is_the_share(hdp_home, kek_env):
    rows = [
        (ANNA, "2024-03-01", 1, 1, 2, 2, 1, 80, "5", "4", "5", "3", " 4 "),
        (BERTIL, "2024-04-02", 2, 1, 1, 3, 2, 65, "2", "ej aktuellt", None, "Ej Aktuellt", "4"),
        (CESAR, "2024-05-03", 1, 1, 1, 1, 1, 90, "", "7", "1", "5", "3"),
    ]
    build_ndr(hdp_home, prom_rows=rows)
    pseudonymise_holder("ndr", settings=hdp_home)
    db = hdp_home.research_db("ndr")
    got = read_rows(db, f"SELECT {', '.join(FLAGS)} FROM prom_response ORDER BY visit_date")
    assert got == [
        (1, 1, 1, 0, 1),
        (0, None, None, None, 1),  # "ej aktuellt" in any case, NULL: out of the denominator
        (None, None, 0, 1, 0),  # blank and "7": no answer, unknown answer
    ]
    types = dict(
        read_rows(
            db,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'prom_response' AND column_name LIKE 'prem_%_positive'",
        )
    )
    assert types == dict.fromkeys(FLAGS, "INTEGER")
    # the answers themselves are kept as delivered
    answers = read_rows(db, f"SELECT {', '.join(ANSWERS)} FROM prom_response ORDER BY visit_date")
    assert answers[1][1] == "ej aktuellt" and answers[2][1] == "7"
    # the mean of each flag over the research table is survey_shares' share of positive answers
    table = pa.table({c: pa.array([a[i] for a in answers], pa.string()) for i, c in enumerate(ANSWERS)})
    shares = {r["dimension"]: r["share_positive"] for r in survey_shares(table).to_pylist()}
    means = read_rows(db, f"SELECT {', '.join(f'avg({f})' for f in FLAGS)} FROM prom_response")[0]
    assert dict(zip([d.name for d in PREM_DEFAULT.dimensions], means, strict=True)) == shares


def test_an_answer_column_not_delivered_gives_integer_nulls(hdp_home, kek_env, tmp_path):
    build_ndr(hdp_home)
    doc = json.loads(open(load_pseudonymise_policy().path, encoding="utf-8").read())
    cols = doc["tables"]["prom_response"]["columns"]
    cols.append(
        {
            "name": "prem_extra_positive",
            "action": "survey",
            "survey": "prem",
            "dimension": "overall",
            "from": "absent",
        }
    )
    path = tmp_path / "pseudonymise.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    pseudonymise_holder("ndr", settings=hdp_home, policy=load_pseudonymise_policy(path))
    db = hdp_home.research_db("ndr")
    assert read_rows(db, "SELECT DISTINCT prem_extra_positive FROM prom_response") == [(None,)]
    assert read_rows(
        db,
        "SELECT data_type FROM information_schema.columns WHERE column_name = 'prem_extra_positive'",
    ) == [("INTEGER",)]


@pytest.mark.parametrize(
    "column, message",
    [
        ({"dimension": "respect", "from": "prem_respect"}, "'survey' must be the id"),
        ({"survey": "../x", "dimension": "respect", "from": "prem_respect"}, "'survey' must be the id"),
        ({"survey": "prem", "from": "prem_respect"}, "needs 'dimension'"),
        ({"survey": "prem", "dimension": "respect"}, "needs 'from'"),
        (
            {"survey": "prem", "dimension": "respect", "from": "prem_respect", "score": "index"},
            "belong to action eq5d",
        ),
    ],
)
def test_policy_refuses_a_malformed_survey_column(tmp_path, column, message):
    path = _policy_with(tmp_path, {"name": "x", "action": "survey", **column})
    with pytest.raises(PolicyError, match=message):
        load_pseudonymise_policy(path)


@pytest.mark.parametrize("action", ["keep", "eq5d"])
def test_survey_keys_on_another_action_are_refused(tmp_path, action):
    path = _policy_with(tmp_path, {"name": "x", "action": action, "survey": "prem"})
    with pytest.raises(PolicyError, match="belong to action survey"):
        load_pseudonymise_policy(path)


def test_the_answer_column_counts_as_used():
    rule = {r.name: r for r in load_pseudonymise_policy().tables}["prom_response"]
    by_name = {c.name: c for c in rule.columns}
    for dim in PREM_DEFAULT.dimensions:
        flag = by_name[f"{dim.column}_positive"]
        assert (flag.action, flag.survey, flag.dimension, flag.answer) == (
            "survey",
            "prem",
            dim.name,
            dim.column,
        )
    assert set(ANSWERS) <= rule.used_source_columns()


@pytest.mark.parametrize(
    "column",
    [
        {"survey": "prem", "dimension": "kindness", "from": "prem_respect"},  # unknown dimension
        {"survey": "nps", "dimension": "respect", "from": "prem_respect"},  # unknown survey
    ],
)
def test_an_unknown_survey_or_dimension_stops_the_run_before_data_moves(hdp_home, kek_env, tmp_path, column):
    build_ndr(hdp_home)
    policy = load_pseudonymise_policy(_policy_with(tmp_path, {"name": "x", "action": "survey", **column}))
    with pytest.raises(PseudonymiseError, match="prom_response, column x"):
        pseudonymise_holder("ndr", settings=hdp_home, policy=policy)
    assert not hdp_home.research_db("ndr").exists()
    tables = {t for (t,) in read_rows(hdp_home.raw_db("ndr"), "SELECT table_name FROM duckdb_tables()")}
    assert "quarantine" not in tables and "person_link" not in tables  # nothing was written
