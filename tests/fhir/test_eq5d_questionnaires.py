"""EQ-5D-5L QuestionnaireResponses of every recognised questionnaire (issue 17, item 5).

The recognised questionnaires are data (``schemas/questionnaires/eq5d_5l.json``) compiled into the
``fhir_eq5d_response`` ViewDefinition. These tests hold that the committed view is that compilation;
that one person's answers give the same row through every questionnaire, in its bare and versioned
canonical forms, from the compiled SQL and from the Python evaluator alike; that the answer mapping
is strict; that the MII module's own examples give the levels they state; that the fast and the
reference validators agree on all these resources; and that after pseudonymisation the scores equal
those of the same answers delivered as a register CSV row.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import duckdb
import pytest
from pseudonymise.raw_fixtures import ANNA, build_ndr, build_region, kek_env  # noqa: F401  (fixture)
from test_validation_differential import _reference_valid
from view_harness import eq5d_view_rows

from pipelines.fhir import fastvalid
from pipelines.fhir.questionnaire_views import (
    QUESTIONNAIRES,
    VIEW,
    QuestionnaireSpecError,
    build_view,
    load_spec,
    render,
)
from pipelines.fhir.viewdef import compile_view
from pipelines.fhir.viewsql import Unsupported, compile_view_sql
from pipelines.outcomes.valuesets import load_value_set
from pipelines.pseudonymise import pseudonymise_holder
from tests.zone_files import read_rows

EXAMPLES = Path(__file__).parent / "eq5d_examples"
SPEC = load_spec()
BY_NAME = {q["name"]: q for q in SPEC["questionnaires"]}
DIMS = SPEC["dimensions"]
LEVELS, VAS = (2, 1, 3, 4, 1), 70


def _answer_coding(q: dict[str, Any], dim: str, level: int) -> dict[str, str]:
    """The coding questionnaire ``q`` uses for ``level`` of ``dim`` (from its own table)."""
    ans = q["answers"]
    if ans["kind"] == "level_code":
        code = str(level)
    else:
        table = ans["codes"] if "codes" in ans else ans["codes_by_dimension"][dim]
        code = next(c for c, lv in table.items() if lv == level)
    system = ans["systems"][-1]  # the MII collectable: the system its example responses send
    return {"code": code} if system is None else {"system": system, "code": code}


def response(
    name: str, rid: str, levels=LEVELS, vas: int | None = VAS, *, version: str | None = None
) -> dict[str, Any]:
    q = BY_NAME[name]
    items = [
        {"linkId": q["link_ids"][dim], "answer": [{"valueCoding": _answer_coding(q, dim, level)}]}
        for dim, level in zip(DIMS, levels, strict=True)
        if level is not None
    ]
    if vas is not None:
        items.append({"linkId": q["link_ids"][SPEC["vas"]], "answer": [{"valueInteger": vas}]})
    return {
        "resourceType": "QuestionnaireResponse",
        "id": rid.replace("_", "-"),  # a FHIR id has no '_'
        "questionnaire": q["canonical"] + (f"|{version}" if version else ""),
        "status": "completed",
        "subject": {"reference": "Patient/p-anna"},
        "encounter": {"reference": "Encounter/e1"},
        "authored": "2024-03-01T10:00:00+01:00",
        "item": items,
    }


def view_rows(resources: list[dict[str, Any]]) -> dict[str, tuple]:
    """Rows by response id; the compiled SQL and the Python evaluator must give the same."""
    sql_rows, py_rows = eq5d_view_rows(resources)
    assert sql_rows == py_rows
    return {row[0]: row[4:] for row in sql_rows}


def test_committed_view_is_the_compiled_data_file():
    assert VIEW.read_text(encoding="utf-8") == render(build_view(load_spec())), (
        "run: python -m pipelines.fhir.questionnaire_views"
    )


def test_every_questionnaire_bare_and_versioned_gives_the_same_row():
    resources = []
    for name in BY_NAME:
        resources.append(response(name, f"{name}-bare"))
        resources.append(response(name, f"{name}-v", version="2026.2.0"))
    rows = view_rows(resources)
    assert set(rows) == {r["id"] for r in resources}
    assert set(rows.values()) == {(*LEVELS, VAS)}


def test_every_level_of_every_dimension_maps_to_itself():
    resources = [
        response(name, f"{name}-{level}", levels=(level,) * 5, vas=level)
        for name in BY_NAME
        for level in range(1, 6)
    ]
    rows = view_rows(resources)
    assert all(
        rows[f"{name}-{level}".replace("_", "-")] == (level,) * 6 for name in BY_NAME for level in range(1, 6)
    )


def _with_answer(res: dict[str, Any], index: int, coding: dict[str, str]) -> dict[str, Any]:
    out = copy.deepcopy(res)
    out["item"][index]["answer"] = [{"valueCoding": coding}]
    return out


MII_CS = (
    "https://www.medizininformatik-initiative.de/fhir/ext/modul-pro/CodeSystem/mii-cs-pro-eq-5d-value-set"
)


@pytest.mark.parametrize(
    "name, coding, level",
    [
        # code tables are strict: anything not in the table is no level
        ("eq5d_mii_coded", {"system": MII_CS, "code": "SC-3"}, None),  # another dimension's code
        ("eq5d_mii_coded", {"system": MII_CS, "code": "MO-6"}, None),
        ("eq5d_mii_coded", {"code": "MO-3"}, None),  # no system: not the questionnaire's coding
        ("eq5d_mii_coded", {"system": "http://loinc.org", "code": "MO-3"}, None),
        ("eq5d_mii_collectable", {"code": "9"}, None),  # 'Fehlender Wert' (missing value)
        ("eq5d_mii_collectable", {"system": MII_CS, "code": "3"}, 3),
        ("eq5d_mii_collectable", {"code": "3"}, 3),
        ("eq5d_mii_collectable", {"system": "http://example.org/other", "code": "3"}, None),
        # level codes: a number in the right system is kept as delivered, so the plausibility range
        # check and the scorer see an out-of-range 7 exactly as in a register CSV row ...
        ("eq5d", {"system": "http://euroqol.org/fhir/CodeSystem/eq-5d-5l-level", "code": "7"}, 7),
        # ... and anything else is no level
        ("eq5d", {"system": "http://euroqol.org/fhir/CodeSystem/eq-5d-5l-level", "code": "two"}, None),
        ("eq5d", {"system": "http://example.org/other", "code": "3"}, None),
        ("eq5d", {"code": "3"}, None),
        ("eq5d_mii", {"system": MII_CS, "code": "3"}, None),  # the minimal one's codes have no system
        (
            "eq5d_gravitate",
            {"system": "http://hl7.eu/fhir/ig/gravitate-health-ips/CodeSystem/eq5d-levels-cs", "code": "5"},
            5,
        ),
    ],
)
def test_answer_mapping_is_strict(name, coding, level):
    res = _with_answer(response(name, "qr"), 0, coding)
    assert view_rows([res])["qr"] == (level, *LEVELS[1:], VAS)


def test_only_recognised_questionnaires_and_only_their_own_link_ids_count():
    own, mii = BY_NAME["eq5d"], BY_NAME["eq5d_mii"]
    other = response("eq5d", "other")
    other["questionnaire"] = "http://example.org/Questionnaire/not-eq5d"
    prefix = response("eq5d", "prefix")
    prefix["questionnaire"] = own["canonical"] + "-v2"  # a longer URL is another questionnaire
    mixed = response("eq5d_mii", "mixed")
    mixed["questionnaire"] = own["canonical"]  # MII linkIds under the project's canonical
    partial = response("eq5d_mii", "partial", levels=(5, 5, None, 1, 2), vas=None)
    absent = response("eq5d", "absent")
    del absent["questionnaire"]
    rows = view_rows([other, prefix, mixed, partial, absent])
    assert set(rows) == {"mixed", "partial"}
    assert rows["mixed"] == (None,) * 6
    assert rows["partial"] == (5, 5, None, 1, 2, None)
    assert mii["link_ids"]["mobility"] != own["link_ids"]["mobility"]


@pytest.mark.parametrize(
    "file, levels, vas",
    [
        # the example's own comment: "Health State Profile (concatenated: 3-2-4-3-1)", VAS 55
        ("mii-exa-pro-euroqol-eq5d5l-coded-response.json", (3, 2, 4, 3, 1), 55),
        # the example's own score-profile item: 21234, VAS 75
        ("mii-exa-pro-euroqol-eq5d5l-response.json", (2, 1, 2, 3, 4), 75),
    ],
)
def test_the_mii_modules_own_examples_give_their_stated_levels(file, levels, vas):
    res = json.loads((EXAMPLES / file).read_text(encoding="utf-8"))
    rows = view_rows([res])
    assert rows[res["id"]] == (*levels, vas)


def _all_examples() -> list[dict[str, Any]]:
    out = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(EXAMPLES.glob("*.json"))]
    for name in BY_NAME:
        out.append(response(name, f"{name}-bare"))
        out.append(response(name, f"{name}-v", version="1.0"))
        out.append(response(name, f"{name}-partial", levels=(1, None, 2, None, 3), vas=None))
    return out


def test_fast_and_reference_validators_agree_and_accept_every_example():
    for res in _all_examples():
        compact = json.dumps(res, ensure_ascii=False, separators=(",", ":")).encode()
        spaced = json.dumps(res, ensure_ascii=False).encode()
        fast = fastvalid.fast_decode(compact, "QuestionnaireResponse") is not None
        assert fast == (fastvalid.fast_decode(spaced, "QuestionnaireResponse") is not None)
        assert fast and _reference_valid(res), res["id"]


@pytest.mark.parametrize(
    "path",
    [
        "iif(gender = 'male', birthDate)",  # a result that is not an integer
        "iif(name.exists(), 1, name.family)",  # a result that may hold more than one value
        "iif(gender, 1)",  # a criterion that is not a boolean
        "iif(name.family = 'x', 1)",  # a comparison of a collection
        "iif(gender.startsWith(birthDate), 1)",  # startsWith() of something other than a literal
    ],
)
def test_compiler_refuses_an_iif_it_cannot_prove(path):
    view = {"resource": "Patient", "name": "t", "select": [{"column": [{"name": "c", "path": path}]}]}
    with pytest.raises(Unsupported):
        compile_view_sql(view, compile_view(view))


def test_the_data_file_is_checked():
    bad = json.loads(QUESTIONNAIRES.read_text(encoding="utf-8"))
    bad["questionnaires"][3]["answers"]["codes_by_dimension"]["mobility"]["MO-6"] = 6
    with pytest.raises(QuestionnaireSpecError, match="eq5d_mii_coded: codes of mobility"):
        build_view(bad)
    bad = json.loads(QUESTIONNAIRES.read_text(encoding="utf-8"))
    bad["questionnaires"][0]["canonical"] += "|1.0"
    with pytest.raises(QuestionnaireSpecError, match="unversioned"):
        build_view(bad)
    bad = json.loads(QUESTIONNAIRES.read_text(encoding="utf-8"))
    del bad["questionnaires"][1]["link_ids"]["eq_vas"]
    with pytest.raises(QuestionnaireSpecError, match="'link_ids'"):
        build_view(bad)


# --- the same scores as a register CSV row, after pseudonymisation ------------------------------

SCORES = ["eq5d_profile", "eq5d_level_sum", "eq5d_index_se_5l_tto_2020", "eq5d_index_se_5l_vas_2020"]


def test_every_fhir_variant_scores_like_the_register_csv_row(hdp_home, kek_env):  # noqa: F811
    # The register path: one PROM CSV row (NDR) with the same answers.
    build_ndr(hdp_home, prom_rows=[(ANNA, "2024-03-01", *LEVELS, VAS, "5", "4", "5", "3", "4")])
    ndr = pseudonymise_holder("ndr", settings=hdp_home)
    assert ndr.tables["prom_response"] == 1
    register = read_rows(
        hdp_home.research_db("ndr"), f"SELECT {', '.join(SCORES)}, eq_vas FROM prom_response"
    )
    assert len(register) == 1

    # The FHIR path: one response per questionnaire (versioned canonicals among them), flattened
    # by the view and written to the raw table that ingest fills.
    resources = [
        response(name, f"qr-{i}", version="1.0" if i % 2 else None) for i, name in enumerate(BY_NAME)
    ]
    rows = view_rows(resources)
    build_region(hdp_home)
    con = duckdb.connect(str(hdp_home.raw_db("region_uppsala")))
    try:
        con.execute("""CREATE TABLE fhir_eq5d_response (questionnaire_response_id VARCHAR, patient_id VARCHAR,
            encounter_id VARCHAR, authored VARCHAR, mobility INTEGER, self_care INTEGER, usual_activities INTEGER,
            pain_discomfort INTEGER, anxiety_depression INTEGER, eq_vas INTEGER)""")
        con.executemany(
            "INSERT INTO fhir_eq5d_response VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (rid, "p-anna", "e1", f"2024-03-{i + 1:02d}T10:00:00+01:00", *vals)
                for i, (rid, vals) in enumerate(rows.items())
            ],
        )
    finally:
        con.close()
    region = pseudonymise_holder("region_uppsala", settings=hdp_home)
    assert region.tables["eq5d_response"] == len(BY_NAME)
    fhir = read_rows(
        hdp_home.research_db("region_uppsala"), f"SELECT {', '.join(SCORES)}, eq_vas FROM eq5d_response"
    )

    tto, vas_set = load_value_set("se_5l_tto_2020"), load_value_set("se_5l_vas_2020")
    profile, level_sum, i_tto, i_vas, vas = register[0]
    assert (profile, level_sum, vas) == ("21341", 11, VAS)
    assert math.isclose(i_tto, tto.value(LEVELS), abs_tol=1e-12)
    assert math.isclose(i_vas, vas_set.value(LEVELS), abs_tol=1e-12)
    assert fhir == register * len(BY_NAME)  # every variant: the very same profile, sum, indices, VAS
