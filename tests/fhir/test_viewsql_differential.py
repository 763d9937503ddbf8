"""The SQL-compiled ViewDefinitions give exactly the Python evaluator's rows.

The Python evaluator (pipelines/fhir/viewdef.py) is the conformance reference (134/134 of the
SQL on FHIR v2 suite). Ingestion runs the compiled SQL only over resources the fast validator
accepted with ``sql_safe`` (no duplicate keys), so that is the population compared here:
generated resources, hand-made edge cases for every construct the views use, and random
mutants that still pass the fast path.
"""

from __future__ import annotations

import copy
import itertools
import json
import random
from collections import Counter
from typing import Any

import fhir_factory as f
import msgspec
import pytest
from test_validation_differential import mutate
from view_harness import flat_source

from pipelines.fhir import fastvalid
from pipelines.fhir import ingest as ing
from pipelines.fhir.viewsql import Unsupported, compile_view_sql
from synthetic_data.fhir import iter_fhir_resources
from synthetic_data.fhir_real import iter_real_resources

PLAN = ing.view_plan(ing.VIEWS_DIR)
SAM = "http://electronichealth.se/identifier/samordningsnummer"


def _line(r: dict[str, Any]) -> bytes:
    return json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode()


def sql_eligible(r: dict[str, Any]) -> bool:
    if r.get("resourceType") not in ing.RESOURCE_TYPES:
        return False
    line = _line(r)
    s = fastvalid.fast_decode(line, r["resourceType"])
    return s is not None and fastvalid.sql_safe(line, s)


def _norm(view, row) -> tuple:
    out = []
    for c, x in zip(view.columns, row, strict=True):
        if x is not None and ing._DUCK_TYPES.get(c.type or "") == "DOUBLE":
            x = float(x)
        out.append(x)
    return tuple(out)


def compare(resources: list[dict[str, Any]]) -> dict[str, int]:
    """Rows per view from SQL and from Python over the same resources; asserts equality."""
    # What ingest registers at each flush: the batch of fast-path resources (JSON as text).
    con = flat_source(PLAN.views, [(r["resourceType"], r["id"], _line(r).decode()) for r in resources])
    counts = {}
    for name, view in PLAN.views.items():
        con.execute(PLAN.sql[name])
        got = Counter(_norm(view, r) for r in con.sql(f'SELECT * FROM "{name}"').fetchall())
        want: Counter = Counter()
        for r in resources:
            for row in view.rows(msgspec.json.decode(_line(r))):
                want[_norm(view, row)] += 1
        assert got == want, name
        counts[name] = sum(got.values())
    return counts


def test_every_shipped_view_compiles_to_sql():
    assert PLAN.python_only == {}
    assert set(PLAN.sql) == set(PLAN.views)


def test_generated_resources_give_identical_rows():
    """Both generators: the platform's own shapes (EQ-5D responses, Swedish identifiers) and the
    real-shaped export (Immunization, AllergyIntolerance, DiagnosticReport, DocumentReference,
    Organization, Practitioner, conditional references), so every shipped view gets rows."""
    resources = list(itertools.islice(iter_fhir_resources(seed=5, persons=12, region="region_skane"), 2000))
    resources += iter_real_resources(5, 4, encounters=12, providers=3)
    assert all(sql_eligible(r) for r in resources)
    counts = compare(resources)
    assert all(counts[n] > 0 for n in PLAN.views), counts


def _edge_cases() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    n = itertools.count()

    def add(r: dict[str, Any], **changes: Any) -> None:
        r = copy.deepcopy(r)
        for k, v in changes.items():
            if v is None:
                r.pop(k, None)
            else:
                r[k] = v
        r["id"] = f"x{next(n)}"
        out.append(r)

    p = f.patient()
    add(p, name=[{"use": "usual", "family": "U", "given": ["G1"]}, {"use": "official", "family": "O"}])
    add(p, name=[{"family": "A", "given": ["B", "C"]}, {"family": "D"}])
    add(p, name=None, address=None, identifier=None)
    add(
        p,
        identifier=[
            {"system": "http://other", "value": "1"},
            {"system": SAM, "value": "2"},
            {"system": f.PNR, "value": "3"},
        ],
    )
    add(p, identifier=[{"system": f.PNR}, {"system": SAM, "value": "2"}])
    add(p, address=[{"use": "work", "postalCode": "1"}, {"use": "home", "postalCode": "2"}])
    add(p, address=[{"use": "home", "city": "X"}, {"postalCode": "3"}])
    add(p, deceasedBoolean=True)
    add(p, deceasedDateTime="2020-01-01T10:00:00+01:00", gender=None, birthDate="1950")
    e = f.encounter()
    add(e, period=None)
    add(e, period={"start": "2024-01-01"})
    add(e, **{"class": {"system": "http://x"}})
    add(e, subject={"reference": "Group/g1"})
    add(e, subject={"display": "no reference"})
    o = f.observation()
    add(o, valueQuantity=None, valueString="x")
    add(o, valueQuantity=None, valueCodeableConcept={"text": "t"})
    add(o, valueQuantity={"value": 1.25, "code": "mmol/L"})
    add(o, valueQuantity={"value": 7})
    add(o, valueQuantity={"unit": "u", "code": "c"})
    add(o, effectiveDateTime=None, effectivePeriod={"start": "2024-01-01T10:00:00Z", "end": "2024-01-02"})
    add(o, effectiveDateTime=None, effectiveInstant="2024-01-01T10:00:00.5+01:00")
    add(o, effectiveDateTime=None, effectivePeriod={"end": "2024-01-02"})
    add(o, effectiveDateTime=None, encounter=None)
    add(o, code={"coding": [{"code": "no-system"}, {"system": "http://loinc.org", "code": "1-8"}]})
    add(o, code={"text": "text only"})
    c = f.condition()
    add(c, recordedDate=None, encounter=None)
    add(c, subject={"reference": "Patient/p1/_history/2"})
    add(c, subject={"reference": "Patient/a.b-c"})
    m = f.medication_request()
    add(m, medicationCodeableConcept=None, medicationReference={"reference": "Medication/m1"})
    add(m, medicationCodeableConcept={"coding": [{"system": "http://www.whocc.no/atc"}]})
    pr = f.procedure()
    add(pr, performedDateTime=None, performedPeriod={"start": "2024-05"})
    add(pr, performedDateTime=None, performedString="yesterday")
    add(pr, performedDateTime=None)
    q = f.eq5d()
    for codes in (("+3", "03", "-1", "3.0", "x"), ("99999999999999999999", "0", "1", "2", "1 2")):
        r = copy.deepcopy(q)
        for item, code in zip(r["item"], codes, strict=False):
            item["answer"][0]["valueCoding"]["code"] = code
        add(r)
    r = copy.deepcopy(q)
    r["item"][0]["answer"].insert(0, {"valueString": "first"})
    r["item"][1]["answer"].append({"valueCoding": {"code": "5"}})
    r["item"].append({"linkId": "mobility", "answer": [{"valueCoding": {"code": "4"}}]})
    r["item"][2]["item"] = [{"linkId": "mobility", "answer": [{"valueCoding": {"code": "2"}}]}]
    r["item"][5]["answer"] = [{"valueCoding": {"code": "70"}}, {"valueInteger": 55}]
    add(r)
    add(q, item=None)
    add(q, questionnaire="http://other.org/Questionnaire/x")
    add(q, questionnaire=None)
    return out


def test_edge_cases_give_identical_rows():
    cases = _edge_cases()
    eligible = [r for r in cases if sql_eligible(r)]
    assert len(eligible) >= len(cases) - 3, [r["id"] for r in cases if r not in eligible]
    compare(eligible)


def test_random_mutants_that_pass_the_fast_path_give_identical_rows():
    rng = random.Random(77)
    base = list(itertools.islice(iter_fhir_resources(seed=9, persons=3, region="region_orebro"), 200))
    base += _edge_cases() + f.rich_samples()
    mutants = []
    seen = set()
    for i in range(3000):
        r = mutate(rng.choice(base), rng)
        if isinstance(r.get("id"), str) and sql_eligible(r):
            r["id"] = f"{r['id'][:40]}-{i}"
            if r["id"] not in seen:
                seen.add(r["id"])
                mutants.append(r)
    assert len(mutants) > 300
    compare(mutants)


def test_unsupported_views_are_reported_and_fall_back(tmp_path):
    view = json.loads((ing.VIEWS_DIR / "fhir_patient.json").read_text())
    view["name"] = "fhir_patient_names"
    view["select"] = [
        {"column": [{"name": "patient_id", "path": "getResourceKey()"}]},
        {"forEach": "name", "column": [{"name": "family", "path": "family"}]},
    ]
    with pytest.raises(Unsupported):
        compile_view_sql(
            view, __import__("pipelines.fhir.viewdef", fromlist=["compile_view"]).compile_view(view)
        )
    (tmp_path / "fhir_patient_names.json").write_text(json.dumps(view))
    plan = ing.view_plan(tmp_path)
    assert "fhir_patient_names" in plan.python_only and plan.sql == {}


@pytest.mark.parametrize(
    "path",
    [
        "name.family",  # more than one value possible
        "name.where(family.exists()).given",  # unsupported function in where
        "identifier.value | name.family",  # union that may hold two values
        "telecom.count()",
    ],
)
def test_compiler_refuses_what_it_cannot_prove(path):
    from pipelines.fhir.viewdef import compile_view

    view = {"resource": "Patient", "name": "t", "select": [{"column": [{"name": "c", "path": path}]}]}
    with pytest.raises(Unsupported):
        compile_view_sql(view, compile_view(view))
