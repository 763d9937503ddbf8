"""pseudonymise_holder: research zone contract, quarantine, linkage, idempotence, no leaks."""

from __future__ import annotations

import base64
import logging
import os

import duckdb
import pytest

from hdp.settings import SettingsError
from pipelines.pseudonymise import PseudonymiseError, pseudonymise_holder
from pipelines.release_identity import release_person_map
from privacy.keys import KeyStore
from pseudonymise.raw_fixtures import ANNA, BAD_DATE, BAD_SUM, BERTIL, CESAR, build_ndr, build_region
from tests.zone_files import read_rows

RESEARCH = {
    "register_visit": [
        "person_id",
        "birth_year",
        "sex",
        "id_type",
        "county",
        "visit_date",
        "diabetes_type",
        "hba1c_mmol_mol",
        "bmi",
        "systolic_bp",
        "diastolic_bp",
        "smoking",
        "treatment",
    ],
    "prom_response": [
        "person_id",
        "birth_year",
        "sex",
        "id_type",
        "visit_date",
        "eq5d_mobility",
        "eq5d_self_care",
        "eq5d_usual_activities",
        "eq5d_pain_discomfort",
        "eq5d_anxiety_depression",
        "eq_vas",
        "prem_respect",
        "prem_involvement",
        "prem_information",
        "prem_accessibility",
        "prem_overall",
        "eq5d_profile",
        "eq5d_level_sum",
        "eq5d_index_se_5l_tto_2020",
        "eq5d_index_se_5l_vas_2020",
        "prem_respect_positive",
        "prem_involvement_positive",
        "prem_information_positive",
        "prem_accessibility_positive",
        "prem_overall_positive",
    ],
    "patient": ["person_id", "birth_year", "sex", "id_type", "county", "deceased_year"],
    "encounter": ["person_id", "encounter_id", "status", "class_code", "start_time", "end_time"],
    "condition": ["person_id", "encounter_id", "code_system", "code", "recorded_date"],
    "observation": ["person_id", "encounter_id", "code_system", "code", "value", "unit", "effective_time"],
}


def _columns(path):
    con = duckdb.connect(str(path), read_only=True)
    try:
        out = {}
        for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
            out[t] = [
                r[0]
                for r in con.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                    [t],
                ).fetchall()
            ]
        return out
    finally:
        con.close()


def test_ndr_research_zone_contract(hdp_home, kek_env):
    build_ndr(hdp_home)
    result = pseudonymise_holder("ndr", settings=hdp_home)
    assert result.rows_in == 9 and result.rows_out == 6
    assert result.quarantined == 3
    assert result.quarantined_by_reason == {
        "identifier.bad_checksum": 1,
        "identifier.impossible_date": 1,
        "identifier.unknown_format": 1,
    }
    assert result.persons == 3
    cols = _columns(hdp_home.research_db("ndr"))
    assert cols == {t: RESEARCH[t] for t in ("register_visit", "prom_response")}
    rows = read_rows(
        hdp_home.research_db("ndr"),
        "SELECT person_id, birth_year, sex, id_type, county FROM register_visit ORDER BY visit_date",
    )
    anna1, bertil, cesar, anna2 = rows
    assert anna1[0] == anna2[0] and anna1[0] != bertil[0]  # two forms of one identifier link
    assert len(anna1[0]) == 64 and all(c in "0123456789abcdef" for c in anna1[0])
    assert anna1[1:] == (1950, "F", "personnummer", "03")
    assert bertil[1:] == (1981, "M", "personnummer", "12")
    assert cesar[1:] == (1970, "M", "samordningsnummer", None)  # 99999: unknown county, not a guess
    prom = dict(read_rows(hdp_home.research_db("ndr"), "SELECT eq_vas, person_id FROM prom_response"))
    assert prom[80] == anna1[0] and prom[65] == bertil[0]  # linked across sources


def test_quarantine_keeps_originals_with_reason_and_position(hdp_home, kek_env):
    build_ndr(hdp_home)
    pseudonymise_holder("ndr", settings=hdp_home)
    q = read_rows(
        hdp_home.raw_db("ndr"),
        """SELECT stage, holder, source, source_file, line_no, reason_code, detail,
        CAST(original AS VARCHAR) FROM quarantine ORDER BY line_no""",
    )
    assert [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in q] == [
        ("pseudonymise", "ndr", "register", "register/ndr_visits.csv", 6, "identifier.bad_checksum"),
        ("pseudonymise", "ndr", "register", "register/ndr_visits.csv", 7, "identifier.impossible_date"),
        ("pseudonymise", "ndr", "register", "register/ndr_visits.csv", 8, "identifier.unknown_format"),
    ]
    assert BAD_SUM in q[0][7] and BAD_DATE in q[1][7]  # original kept for the operator
    for r in q:
        assert BAD_SUM not in r[6] and BAD_DATE not in r[6] and "12345" not in r[6]


def test_person_link_and_rerun_is_identical(hdp_home, kek_env):
    build_ndr(hdp_home)
    first = pseudonymise_holder("ndr", settings=hdp_home)
    link1 = sorted(read_rows(hdp_home.raw_db("ndr"), "SELECT * FROM person_link"))
    data1 = sorted(read_rows(hdp_home.research_db("ndr"), "SELECT * FROM register_visit"), key=str)
    second = pseudonymise_holder("ndr", settings=hdp_home)
    assert first == second
    assert sorted(read_rows(hdp_home.raw_db("ndr"), "SELECT * FROM person_link")) == link1
    assert sorted(read_rows(hdp_home.research_db("ndr"), "SELECT * FROM register_visit"), key=str) == data1
    assert {p for _, p in link1} == {ANNA, BERTIL, CESAR}
    assert (
        read_rows(hdp_home.raw_db("ndr"), "SELECT count(*) FROM quarantine")[0][0] == 3
    )  # replaced, not doubled
    assert not list(hdp_home.research_db("ndr").parent.glob(".*tmp*"))


def test_region_fhir_tables(hdp_home, kek_env):
    build_region(hdp_home)
    result = pseudonymise_holder("region_uppsala", settings=hdp_home)
    db = hdp_home.research_db("region_uppsala")
    cols = _columns(db)
    assert cols == {t: RESEARCH[t] for t in ("patient", "encounter", "condition", "observation")}
    patients = read_rows(
        db, "SELECT birth_year, sex, id_type, county, deceased_year FROM patient ORDER BY birth_year"
    )
    assert patients == [(1950, "F", "personnummer", "03", None), (1981, "M", "personnummer", "03", 2025)]
    enc = read_rows(db, "SELECT person_id, encounter_id FROM encounter")
    assert len(enc) == 2  # the dangling one and the one of the quarantined patient are quarantined
    assert not [p for p, _ in enc if p is None]
    assert result.unresolved_person_rows == 2
    assert result.rows_in == result.rows_out + result.quarantined + sum(result.excluded_by_quality.values())
    assert all(len(e) == 64 for _, e in enc) and "e1" not in {e for _, e in enc}
    # condition/observation encounter ids join to encounter's pseudonyms
    joined = read_rows(
        db,
        """SELECT count(*) FROM condition c JOIN encounter e USING (encounter_id)
                          WHERE c.person_id = e.person_id""",
    )
    assert joined == [(1,)]
    assert read_rows(db, "SELECT count(*) FROM condition WHERE encounter_id IS NULL") == [(1,)]
    q = read_rows(
        hdp_home.raw_db("region_uppsala"),
        "SELECT source, record_key, reason_code, source_file, line_no FROM quarantine ORDER BY record_key",
    )
    assert q == [
        ("fhir", "Encounter/e3", "person.unresolved", None, None),
        ("fhir", "Encounter/e4", "person.patient_quarantined", None, None),
        ("fhir", "Patient/p-bad", "identifier.bad_checksum", "fhir/Patient.ndjson", 3),
    ]
    assert result.quarantined_by_reason == {
        "identifier.bad_checksum": 1,
        "person.patient_quarantined": 1,
        "person.unresolved": 1,
    }


def test_same_person_differs_between_holders(hdp_home, kek_env):
    build_ndr(hdp_home)
    build_region(hdp_home)
    pseudonymise_holder("ndr", settings=hdp_home)
    pseudonymise_holder("region_uppsala", settings=hdp_home)
    ndr = {p for (p,) in read_rows(hdp_home.research_db("ndr"), "SELECT person_id FROM register_visit")}
    reg = {p for (p,) in read_rows(hdp_home.research_db("region_uppsala"), "SELECT person_id FROM patient")}
    assert ndr and reg and not (ndr & reg)  # holder domains are separate


def test_no_identifier_or_name_outside_restricted(hdp_home, kek_env):
    build_ndr(hdp_home)
    build_region(hdp_home)
    pseudonymise_holder("ndr", settings=hdp_home)
    pseudonymise_holder("region_uppsala", settings=hdp_home)
    needles = [
        v.encode()
        for v in (
            ANNA,
            BERTIL,
            CESAR,
            ANNA[2:],
            BERTIL[2:],
            "Andersson",
            "Bertil",
            "75105",
            "1950-01-01",
            "p-anna",
            "p-bertil",
        )
    ]
    for path in hdp_home.home.rglob("*"):
        if path.is_file() and hdp_home.restricted not in path.parents:
            blob = path.read_bytes()
            assert not [n for n in needles if n in blob], path


def test_missing_raw_zone_is_clear_error(hdp_home, kek_env):
    with pytest.raises(PseudonymiseError, match="no raw zone"):
        pseudonymise_holder("ndr", settings=hdp_home)


def test_missing_identifier_is_quarantined(hdp_home, kek_env):
    build_ndr(
        hdp_home,
        register_rows=[
            (None, "A", "B", "75105", "2024-01-01", "typ2", 50.0, 25.0, 120, 80, "aldrig", "kost"),
            ("  ", "A", "B", "75105", "2024-01-02", "typ2", 50.0, 25.0, 120, 80, "aldrig", "kost"),
        ],
        prom_rows=[],
    )
    result = pseudonymise_holder("ndr", settings=hdp_home)
    assert result.quarantined_by_reason == {"identifier.missing": 2}
    assert result.tables == {"register_visit": 0, "prom_response": 0}


def test_no_key_material_in_any_file_or_log(hdp_home, kek_env, caplog):
    with caplog.at_level(logging.DEBUG):
        build_ndr(hdp_home)
        build_region(hdp_home)
        pseudonymise_holder("ndr", settings=hdp_home)
        pseudonymise_holder("region_uppsala", settings=hdp_home)
        release_person_map(
            holder_ids=("ndr", "region_uppsala"), release_domain="release:rel-1", settings=hdp_home
        )
    store = KeyStore(hdp_home)
    secrets_ = [store.key(k.key_id).secret for k in store.list()]
    assert len(secrets_) == 4  # two holders, the release, consent
    secrets_.append(base64.b64decode(os.environ["HDP_KEK"]))
    needles = [n for k in secrets_ for n in (k, k.hex().encode(), base64.b64encode(k))]
    for path in hdp_home.home.rglob("*"):
        if path.is_file() and path != store.path:
            blob = path.read_bytes()
            assert not [n for n in needles if n in blob], path
    assert not [n for n in needles if n.decode("latin-1") in caplog.text]


def test_stale_temporary_research_files_are_removed(hdp_home, kek_env):
    build_ndr(hdp_home)
    stale = hdp_home.research_db("ndr").with_name(".ndr.duckdb.999999.tmp")
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"left over from a killed run")
    pseudonymise_holder("ndr", settings=hdp_home)
    assert not stale.exists()


def test_null_identifier_among_valid_ones_is_quarantined(hdp_home, kek_env):
    """Every distinct value is valid, one row has none: that row is still found and quarantined."""
    build_ndr(
        hdp_home,
        register_rows=[
            (ANNA, "A", "B", "75105", "2024-01-01", "typ2", 50.0, 25.0, 120, 80, "aldrig", "kost"),
            (None, "A", "B", "75105", "2024-01-02", "typ2", 50.0, 25.0, 120, 80, "aldrig", "kost"),
        ],
        prom_rows=[],
    )
    result = pseudonymise_holder("ndr", settings=hdp_home)
    assert result.quarantined_by_reason == {"identifier.missing": 1}
    assert result.tables == {"register_visit": 1, "prom_response": 0}
    assert read_rows(hdp_home.raw_db("ndr"), "SELECT line_no FROM quarantine") == [(3,)]


def test_all_valid_identifiers_quarantine_nothing(hdp_home, kek_env):
    build_ndr(
        hdp_home,
        register_rows=[
            (ANNA, "A", "B", "75105", "2024-01-01", "typ2", 50.0, 25.0, 120, 80, "aldrig", "kost")
        ],
    )
    result = pseudonymise_holder("ndr", settings=hdp_home)
    assert result.quarantined == 0 and result.rows_out == result.rows_in == 3


def test_memory_limit_setting_is_validated(hdp_home, kek_env, monkeypatch):
    build_ndr(hdp_home)
    monkeypatch.setenv("HDP_PSEUDONYMISE_MEMORY_LIMIT", "1GB'; DROP TABLE person_link; --")
    with pytest.raises(SettingsError, match="HDP_PSEUDONYMISE_MEMORY_LIMIT"):
        pseudonymise_holder("ndr", settings=hdp_home)
    monkeypatch.setenv("HDP_PSEUDONYMISE_MEMORY_LIMIT", "512MB")
    assert pseudonymise_holder("ndr", settings=hdp_home).rows_out == 6
