"""Calendar-date columns (``*_date``) are DATE from the raw zone on: the ViewDefinition asks
for it with the SQL on FHIR ``ansi/type`` tag and the ingest converts after loading."""

from __future__ import annotations

import json

import duckdb
import fhir_factory as f
import pytest

from hdp.settings import SCHEMAS_DIR
from pipelines.fhir.ingest import ingest_fhir
from pipelines.fhir.viewdef import ViewDefinitionError, compile_view, load_views

HOLDER = "region_uppsala"


def _line(r) -> str:
    return json.dumps(r, ensure_ascii=False) + "\n"


def test_every_date_column_of_the_views_asks_for_date():
    views = load_views(SCHEMAS_DIR / "views")
    tagged = {f"{name}.{c.name}": c.sql_type for name, v in views.items() for c in v.columns}
    dates = {k: t for k, t in tagged.items() if k.endswith("_date")}
    # birth_date and deceased_date stay in the restricted raw zone (year only downstream),
    # where a partial date still gives its year
    assert {k: t for k, t in dates.items() if "patient." not in k} == {
        "fhir_condition.recorded_date": "DATE",
        "fhir_allergy_intolerance.recorded_date": "DATE",
        "fhir_procedure.performed_date": "DATE",
    }


def test_a_tag_outside_the_allowed_types_is_refused():
    view = {
        "resourceType": "ViewDefinition",
        "resource": "Condition",
        "name": "x",
        "select": [
            {
                "column": [
                    {"name": "d", "path": "recordedDate", "tag": [{"name": "ansi/type", "value": "BLOB"}]}
                ]
            }
        ],
    }
    with pytest.raises(ViewDefinitionError, match="ansi/type"):
        compile_view(view)


def test_recorded_date_is_a_date_whatever_form_was_delivered(hdp_home):
    landing = hdp_home.landing_dir(HOLDER) / "fhir"
    landing.mkdir(parents=True)
    conditions = [f.condition("c1"), f.condition("c2"), f.condition("c3")]
    conditions[1]["recordedDate"] = "2024-03-01T23:30:00-05:00"  # the date as written, no shift
    conditions[2]["recordedDate"] = "2024-03"  # partial: no day, so no date
    (landing / "Patient.ndjson").write_text(_line(f.patient("p1")), encoding="utf-8")
    (landing / "Encounter.ndjson").write_text(_line(f.encounter("e1")), encoding="utf-8")
    (landing / "Condition.ndjson").write_text("".join(_line(c) for c in conditions), encoding="utf-8")
    ingest_fhir(HOLDER, workers=0)
    con = duckdb.connect(str(hdp_home.raw_db(HOLDER)), read_only=True)
    try:
        types = dict(
            con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'fhir_condition'"
            ).fetchall()
        )
        rows = dict(
            con.execute("SELECT condition_id, CAST(recorded_date AS VARCHAR) FROM fhir_condition").fetchall()
        )
        delivered = con.execute(
            "SELECT json_extract_string(resource, '$.recordedDate') FROM fhir_resource WHERE id = 'c3'"
        ).fetchone()
    finally:
        con.close()
    assert types["recorded_date"] == "DATE"
    assert sorted(rows.values(), key=str) == sorted(["2024-03-01", "2024-03-01", None], key=str)
    assert delivered == ("2024-03",)  # the delivered text is kept with the resource
