"""Raw-zone fixtures following docs/ARCHITECTURE.md 'Raw zone' (built directly, independent of ingestion)."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import date

import duckdb
import pytest

from privacy.personnummer import luhn_digit

EXTRACT_DATE = date(2026, 1, 15)


def pnr(birth: str, serial: str = "123") -> str:
    """12-digit identifier from YYYYMMDD and a three-digit serial."""
    nine = birth[2:] + serial
    return birth[:2] + nine + luhn_digit(nine)


ANNA = pnr("19500101", "242")  # F
BERTIL = pnr("19811218", "987")  # M
CESAR = pnr("19700163", "239")  # samordningsnummer (day 03 + 60), M
BAD_SUM = BERTIL[:-1] + str((int(BERTIL[-1]) + 1) % 10)
BAD_DATE = "19811318" + BERTIL[8:]


@pytest.fixture
def kek_env(monkeypatch):
    monkeypatch.setenv("HDP_KEK", base64.b64encode(secrets.token_bytes(32)).decode())
    monkeypatch.delenv("HDP_KEK_FILE", raising=False)


def write_delivery(settings, holder: str) -> None:
    landing = settings.landing_dir(holder)
    landing.mkdir(parents=True, exist_ok=True)
    (landing / "delivery.json").write_text(
        json.dumps({"holder": holder, "extract_date": str(EXTRACT_DATE), "files": []})
    )


def build_ndr(settings, *, register_rows=None, prom_rows=None) -> None:
    """raw.duckdb for ndr with register_visit and prom_response."""
    write_delivery(settings, "ndr")
    path = settings.raw_db("ndr")
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute("""CREATE OR REPLACE TABLE register_visit (personnummer VARCHAR, first_name VARCHAR,
        family_name VARCHAR, postal_code VARCHAR, visit_date DATE, diabetes_type VARCHAR, hba1c_mmol_mol DOUBLE,
        bmi DOUBLE, systolic_bp INTEGER, diastolic_bp INTEGER, smoking VARCHAR, treatment VARCHAR,
        _source_file VARCHAR, _line_no BIGINT)""")
    rows = (
        register_rows
        if register_rows is not None
        else [
            (ANNA, "Anna", "Andersson", "75105", "2024-03-01", "typ2", 52.0, 27.1, 130, 80, "aldrig", "kost"),
            (
                f"{ANNA[2:8]}-{ANNA[8:]}",
                "Anna",
                "Andersson",
                "751 05",
                "2024-09-01",
                "typ2",
                55.0,
                27.5,
                128,
                82,
                "aldrig",
                "tabletter",
            ),
            (
                f"{BERTIL[:8]}-{BERTIL[8:]}",
                "Bertil",
                "Berg",
                "21119",
                "2024-04-02",
                "typ1",
                61.0,
                23.0,
                120,
                75,
                "daglig",
                "insulin",
            ),
            (
                CESAR,
                "Cesar",
                "Carlsson",
                "99999",
                "2024-05-03",
                "typ2",
                48.0,
                31.0,
                140,
                90,
                "tidigare",
                "glp1",
            ),
            (BAD_SUM, "X", "Y", "70210", "2024-06-04", "typ2", 50.0, 25.0, 125, 80, "aldrig", "kost"),
            (BAD_DATE, "X", "Y", "70210", "2024-06-05", "typ2", 50.0, 25.0, 125, 80, "aldrig", "kost"),
            ("12345", "X", "Y", None, "2024-06-06", "typ2", 50.0, 25.0, 125, 80, "aldrig", "kost"),
        ]
    )
    con.executemany(
        "INSERT INTO register_visit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'register/ndr_visits.csv', ?)",
        [(*r, i + 2) for i, r in enumerate(rows)],
    )
    con.execute("""CREATE OR REPLACE TABLE prom_response (personnummer VARCHAR, visit_date DATE,
        eq5d_mobility INTEGER, eq5d_self_care INTEGER, eq5d_usual_activities INTEGER, eq5d_pain_discomfort INTEGER,
        eq5d_anxiety_depression INTEGER, eq_vas INTEGER, prem_respect VARCHAR, prem_involvement VARCHAR,
        prem_information VARCHAR, prem_accessibility VARCHAR, prem_overall VARCHAR,
        _source_file VARCHAR, _line_no BIGINT)""")
    prows = (
        prom_rows
        if prom_rows is not None
        else [
            (ANNA, "2024-03-01", 1, 1, 2, 2, 1, 80, "5", "4", "5", "3", "4"),
            (BERTIL[2:], "2024-04-02", 2, 1, 1, 3, 2, 65, "4", "ej aktuellt", "4", "4", "4"),
        ]
    )
    if prows:
        con.executemany(
            "INSERT INTO prom_response VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'prom/prom_visits.csv', ?)",
            [(*r, i + 2) for i, r in enumerate(prows)],
        )
    con.close()


def build_region(settings, holder: str = "region_uppsala") -> None:
    """raw.duckdb for a region: FHIR flattened tables, one dangling reference, one bad identifier."""
    write_delivery(settings, holder)
    path = settings.raw_db(holder)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute("""CREATE TABLE fhir_resource (resource_type VARCHAR, id VARCHAR, resource JSON,
        _source_file VARCHAR, _line_no BIGINT)""")
    con.execute("""CREATE TABLE fhir_patient (patient_id VARCHAR, identifier_system VARCHAR, personnummer VARCHAR,
        family_name VARCHAR, given_name VARCHAR, gender VARCHAR, birth_date VARCHAR, postal_code VARCHAR,
        deceased_date VARCHAR)""")
    sys_p = "http://electronichealth.se/identifier/personnummer"
    patients = [
        ("p-anna", sys_p, ANNA, "Andersson", "Anna", "female", "1950-01-01", "75237", None),
        ("p-bertil", sys_p, BERTIL, "Berg", "Bertil", "male", "1981-12-18", "74141", "2025-02-03"),
        ("p-bad", sys_p, BAD_SUM, "Fel", "Fel", "male", "1981-12-18", "75237", None),
    ]
    con.executemany("INSERT INTO fhir_patient VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", patients)
    for i, p in enumerate(patients):
        con.execute(
            "INSERT INTO fhir_resource VALUES ('Patient', ?, ?, 'fhir/Patient.ndjson', ?)",
            [p[0], json.dumps({"resourceType": "Patient", "id": p[0]}), i + 1],
        )
    con.execute("""CREATE TABLE fhir_encounter (encounter_id VARCHAR, patient_id VARCHAR, status VARCHAR,
        class_code VARCHAR, start_time VARCHAR, end_time VARCHAR)""")
    con.executemany(
        "INSERT INTO fhir_encounter VALUES (?, ?, ?, ?, ?, ?)",
        [
            ("e1", "p-anna", "finished", "AMB", "2024-01-02T10:00:00+01:00", "2024-01-02T10:30:00+01:00"),
            ("e2", "p-bertil", "finished", "IMP", "2024-02-02T10:00:00+01:00", "2024-02-05T10:00:00+01:00"),
            ("e3", "p-missing", "finished", "AMB", "2024-03-02T10:00:00+01:00", None),  # dangling
            ("e4", "p-bad", "finished", "AMB", "2024-03-03T10:00:00+01:00", None),  # invalid identifier
        ],
    )
    con.execute("""CREATE TABLE fhir_condition (condition_id VARCHAR, patient_id VARCHAR, encounter_id VARCHAR,
        code_system VARCHAR, code VARCHAR, recorded_date VARCHAR)""")
    con.executemany(
        "INSERT INTO fhir_condition VALUES (?, ?, ?, ?, ?, ?)",
        [
            ("c1", "p-anna", "e1", "http://hl7.org/fhir/sid/icd-10-se", "E11.9", "2024-01-02"),
            ("c2", "p-bertil", None, "http://hl7.org/fhir/sid/icd-10-se", "E10.9", "2024-02-02"),
        ],
    )
    con.execute("""CREATE TABLE fhir_observation (observation_id VARCHAR, patient_id VARCHAR, encounter_id VARCHAR,
        code_system VARCHAR, code VARCHAR, value DOUBLE, unit VARCHAR, effective_time VARCHAR)""")
    con.executemany(
        "INSERT INTO fhir_observation VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                "o1",
                "p-anna",
                "e1",
                "http://loinc.org",
                "59261-8",
                53.0,
                "mmol/mol",
                "2024-01-02T10:10:00+01:00",
            ),
        ],
    )
    con.close()
