"""EQ-5D scores in the research zone (issue 17): derived by pseudonymisation (policy action
``eq5d``), the same from the register PROM table and from FHIR QuestionnaireResponses, NULL (never
imputed) when a dimension is missing or not a level, and a bad policy refused before data moves."""

from __future__ import annotations

import json
import math

import duckdb
import pytest

from pipelines.outcomes.valuesets import load_value_set
from pipelines.pseudonymise import PseudonymiseError, pseudonymise_holder
from privacy.policy import PolicyError, load_pseudonymise_policy
from pseudonymise.raw_fixtures import ANNA, BERTIL, CESAR, build_ndr, build_region
from tests.fhir.view_harness import eq5d_view_rows
from tests.zone_files import read_rows

SCORES = ["eq5d_profile", "eq5d_level_sum", "eq5d_index_se_5l_tto_2020", "eq5d_index_se_5l_vas_2020"]
TTO, VAS = load_value_set("se_5l_tto_2020"), load_value_set("se_5l_vas_2020")

#: (date, five dimensions) per person: the same answers delivered by NDR (register PROM) and by
#: Region Uppsala (FHIR). Bertil left one dimension unanswered.
ANSWERS = {
    "anna": ("2024-03-01", (2, 1, 3, 4, 1)),
    "bertil": ("2024-04-02", (5, 5, None, 1, 2)),
}


def _prom_row(pnr, date, dims):
    return (pnr, date, *dims, 70, "5", "4", "5", "3", "4")


def _add_fhir_eq5d(settings, holder="region_uppsala"):
    con = duckdb.connect(str(settings.raw_db(holder)))
    try:
        con.execute("""CREATE TABLE fhir_eq5d_response (questionnaire_response_id VARCHAR, patient_id VARCHAR,
            encounter_id VARCHAR, authored VARCHAR, mobility INTEGER, self_care INTEGER, usual_activities INTEGER,
            pain_discomfort INTEGER, anxiety_depression INTEGER, eq_vas INTEGER)""")
        con.executemany(
            "INSERT INTO fhir_eq5d_response VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                ("qr1", "p-anna", "e1", ANSWERS["anna"][0] + "T10:00:00+01:00", *ANSWERS["anna"][1], 70),
                (
                    "qr2",
                    "p-bertil",
                    "e2",
                    ANSWERS["bertil"][0] + "T10:00:00+01:00",
                    *ANSWERS["bertil"][1],
                    70,
                ),
            ],
        )
    finally:
        con.close()


def test_register_and_fhir_give_the_same_scores_and_a_missing_dimension_gives_null(hdp_home, kek_env):
    build_ndr(
        hdp_home,
        prom_rows=[
            _prom_row(ANNA, *ANSWERS["anna"]),
            _prom_row(BERTIL, *ANSWERS["bertil"]),
            _prom_row(CESAR, "2024-05-03", (1, 1, 1, 7, 1)),  # 7 is not a level: NULL scores too
        ],
    )
    build_region(hdp_home)
    _add_fhir_eq5d(hdp_home)
    ndr = pseudonymise_holder("ndr", settings=hdp_home)
    region = pseudonymise_holder("region_uppsala", settings=hdp_home)
    assert ndr.tables["prom_response"] == 3  # every row written, scored or not
    assert region.tables["eq5d_response"] == 2

    cols = ", ".join(SCORES)
    prom = read_rows(
        hdp_home.research_db("ndr"),
        f"SELECT CAST(visit_date AS VARCHAR), {cols} FROM prom_response ORDER BY visit_date",
    )
    fhir = read_rows(
        hdp_home.research_db("region_uppsala"),
        f"SELECT left(authored, 10), {cols} FROM eq5d_response ORDER BY authored",
    )
    anna = ("2024-03-01", "21341", 11, TTO.value((2, 1, 3, 4, 1)), VAS.value((2, 1, 3, 4, 1)))
    nothing = (None, None, None, None)
    for rows in (prom[:2], fhir):
        assert rows[0][:3] == anna[:3]
        assert math.isclose(rows[0][3], anna[3], abs_tol=1e-9)
        assert math.isclose(rows[0][4], anna[4], abs_tol=1e-9)
        assert rows[1] == ("2024-04-02", *nothing)  # missing dimension: NULL, not imputed
    assert prom[:2] == fhir  # register and FHIR: the same scores for the same answers
    assert prom[2] == ("2024-05-03", *nothing)
    # the dimensions themselves are kept as delivered
    assert read_rows(
        hdp_home.research_db("ndr"), "SELECT count(*) FROM prom_response WHERE eq5d_mobility = 5"
    ) == [(1,)]
    types = dict(
        read_rows(
            hdp_home.research_db("region_uppsala"),
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'eq5d_response' AND column_name LIKE 'eq5d_%'",
        )
    )
    assert types == {
        "eq5d_profile": "VARCHAR",
        "eq5d_level_sum": "INTEGER",
        "eq5d_index_se_5l_tto_2020": "DOUBLE",
        "eq5d_index_se_5l_vas_2020": "DOUBLE",
    }


def _policy_with(tmp_path, table: str, column: dict) -> object:
    doc = json.loads(open(load_pseudonymise_policy().path, encoding="utf-8").read())
    doc["tables"][table]["columns"].append(column)
    path = tmp_path / "pseudonymise.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


DIMS = [
    "eq5d_mobility",
    "eq5d_self_care",
    "eq5d_usual_activities",
    "eq5d_pain_discomfort",
    "eq5d_anxiety_depression",
]


@pytest.mark.parametrize(
    "column, message",
    [
        ({"score": "mean", "dimensions": DIMS}, "unknown score"),
        ({"score": "profile", "dimensions": DIMS[:4]}, "must name 5 distinct"),
        ({"score": "profile", "dimensions": [*DIMS[:4], DIMS[0]]}, "must name 5 distinct"),
        ({"score": "index", "dimensions": DIMS}, "needs 'value_set'"),
        ({"score": "level_sum", "value_set": "se_5l_tto_2020", "dimensions": DIMS}, "takes no 'value_set'"),
        ({"score": "index", "value_set": "../etc/x", "dimensions": DIMS}, "needs 'value_set'"),
        ({"score": "profile", "levels": 4, "dimensions": DIMS}, "'levels' must be 3"),
        ({"score": "profile", "from": "eq5d_mobility", "dimensions": DIMS}, "not 'from'"),
    ],
)
def test_policy_refuses_a_malformed_eq5d_column(tmp_path, column, message):
    path = _policy_with(tmp_path, "prom_response", {"name": "x", "action": "eq5d", **column})
    with pytest.raises(PolicyError, match=message):
        load_pseudonymise_policy(path)


def test_eq5d_keys_on_another_action_are_refused(tmp_path):
    path = _policy_with(tmp_path, "prom_response", {"name": "x", "action": "keep", "score": "profile"})
    with pytest.raises(PolicyError, match="belong to action eq5d"):
        load_pseudonymise_policy(path)


def test_dimension_columns_count_as_used():
    rule = {r.name: r for r in load_pseudonymise_policy().tables}["eq5d_response"]
    assert {"mobility", "self_care", "usual_activities", "pain_discomfort", "anxiety_depression"} <= (
        rule.used_source_columns()
    )


@pytest.mark.parametrize(
    "column",
    [
        {"score": "index", "value_set": "se_9l_nowhere", "dimensions": DIMS},  # unknown value set
        {
            "score": "index",
            "value_set": "se_3l_tto_2014",
            "dimensions": DIMS,
            "levels": 5,
        },  # wrong instrument
    ],
)
def test_unknown_value_set_stops_the_run_before_data_moves(hdp_home, kek_env, tmp_path, column):
    build_ndr(hdp_home)
    policy = load_pseudonymise_policy(
        _policy_with(tmp_path, "prom_response", {"name": "x", "action": "eq5d", **column})
    )
    with pytest.raises(PseudonymiseError, match="prom_response, column x"):
        pseudonymise_holder("ndr", settings=hdp_home, policy=policy)
    assert not hdp_home.research_db("ndr").exists()
    tables = {t for (t,) in read_rows(hdp_home.raw_db("ndr"), "SELECT table_name FROM duckdb_tables()")}
    assert "quarantine" not in tables and "person_link" not in tables  # nothing was written


# --- Issue 17, task A: EQ-5D-5L answers from another implementer's questionnaire -------------

#: The Medizininformatik-Initiative PRO module's EQ-5D-5L "minimal" questionnaire (canonical and
#: linkIds as published in github.com/medizininformatik-initiative/kerndatensatzmodul-proms,
#: input/fsh/definitions/eq-5d/mii-qst-pro-eq-5d-5l-minimal.fsh); answers are codes "1".."5".
MII = "https://www.medizininformatik-initiative.de/fhir/ext/modul-pro/Questionnaire/mii-qst-pro-euroqol-eq5d5l-minimal"
OWN = "http://euroqol.org/fhir/Questionnaire/eq-5d-5l-sv"
OWN_LINKS = ("mobility", "self-care", "usual-activities", "pain-discomfort", "anxiety-depression", "eq-vas")
MII_LINKS = tuple(
    f"euroqol-eq5d5l-{q}" for q in ("q01-MO", "q02-SC", "q03-UA", "q04-PD", "q05-AD", "q06-vas")
)


def _qr(qid: str, canonical: str, links: tuple[str, ...], levels, vas: int, system: str | None) -> dict:
    def coding(level):
        return {"code": str(level)} if system is None else {"system": system, "code": str(level)}

    items = [
        {"linkId": link, "answer": [{"valueCoding": coding(level)}]}
        for link, level in zip(links[:5], levels, strict=True)
        if level is not None
    ]
    items.append({"linkId": links[5], "answer": [{"valueInteger": vas}]})
    return {
        "resourceType": "QuestionnaireResponse",
        "id": qid,
        "questionnaire": canonical,
        "status": "completed",
        "subject": {"reference": "Patient/p-anna"},
        "encounter": {"reference": "Encounter/e1"},
        "authored": "2024-03-01T10:00:00+01:00",
        "item": items,
    }


def test_mii_coded_response_gives_the_same_row_as_the_own_questionnaire():
    levels, system = (2, 1, 3, 4, 1), "http://euroqol.org/fhir/CodeSystem/eq-5d-5l-level"
    own = _qr("qr-own", OWN, OWN_LINKS, levels, 70, system)
    mii = _qr("qr-mii", MII, MII_LINKS, levels, 70, None)
    partial = _qr("qr-mii-partial", MII, MII_LINKS, (5, 5, None, 1, 2), 55, None)
    other = _qr("qr-other", "http://example.org/Questionnaire/not-eq5d", MII_LINKS, levels, 70, None)
    mixed = _qr("qr-mixed", OWN, MII_LINKS, levels, 70, None)  # MII linkIds under our canonical
    sql_rows, py_rows = eq5d_view_rows([own, mii, partial, other, mixed])
    assert sql_rows == py_rows
    by_id = {r[0]: r[1:] for r in sql_rows}
    assert set(by_id) == {"qr-own", "qr-mii", "qr-mii-partial", "qr-mixed"}  # other questionnaire: no row
    assert by_id["qr-mii"] == by_id["qr-own"] == ("p-anna", "e1", "2024-03-01T10:00:00+01:00", *levels, 70)
    assert by_id["qr-mii-partial"][3:] == (5, 5, None, 1, 2, 55)


def test_mii_coded_response_gives_the_same_scores_after_pseudonymisation(hdp_home, kek_env):
    levels = (2, 1, 3, 4, 1)
    own = _qr("qr-own", OWN, OWN_LINKS, levels, 70, "http://euroqol.org/fhir/CodeSystem/eq-5d-5l-level")
    mii = _qr("qr-mii", MII, MII_LINKS, levels, 70, None)
    mii["authored"] = "2024-03-02T10:00:00+01:00"
    rows, _ = eq5d_view_rows([own, mii])
    build_region(hdp_home)
    con = duckdb.connect(str(hdp_home.raw_db("region_uppsala")))
    try:
        con.execute("""CREATE TABLE fhir_eq5d_response (questionnaire_response_id VARCHAR, patient_id VARCHAR,
            encounter_id VARCHAR, authored VARCHAR, mobility INTEGER, self_care INTEGER, usual_activities INTEGER,
            pain_discomfort INTEGER, anxiety_depression INTEGER, eq_vas INTEGER)""")
        con.executemany("INSERT INTO fhir_eq5d_response VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    finally:
        con.close()
    pseudonymise_holder("region_uppsala", settings=hdp_home)
    got = read_rows(
        hdp_home.research_db("region_uppsala"),
        f"SELECT {', '.join(SCORES)} FROM eq5d_response ORDER BY authored",
    )
    assert len(got) == 2 and got[0] == got[1]
    assert got[0][:2] == ("21341", 11)
    assert math.isclose(got[0][2], TTO.value(levels), abs_tol=1e-9)
    assert math.isclose(got[0][3], VAS.value(levels), abs_tol=1e-9)
