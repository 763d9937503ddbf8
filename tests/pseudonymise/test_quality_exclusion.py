"""Rows the raw-zone quality gate quarantined (stage 'quality') never reach the research zone."""

from __future__ import annotations

import duckdb

from pipelines.pseudonymise import pseudonymise_holder
from pipelines.quality.gate import run_gate
from pseudonymise.raw_fixtures import ANNA, BAD_SUM, BERTIL, CESAR, build_ndr, build_region
from tests.zone_files import read_rows

OUT_OF_RANGE_HBA1C = 900.0  # plausibility check register.hba1c_mmol_mol.range quarantines it


def _ndr_rows():
    return [
        (ANNA, "Anna", "Andersson", "75105", "2024-03-01", "typ2", 52.0, 27.1, 130, 80, "aldrig", "kost"),
        (
            BERTIL,
            "Bertil",
            "Berg",
            "21119",
            "2024-04-02",
            "typ1",
            OUT_OF_RANGE_HBA1C,
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
            "75105",
            "2024-05-03",
            "typ2",
            OUT_OF_RANGE_HBA1C,
            31.0,
            140,
            90,
            "tidigare",
            "glp1",
        ),
        (CESAR, "Cesar", "Carlsson", "75105", "2024-06-03", "typ2", 48.0, 31.0, 140, 90, "tidigare", "glp1"),
        (BAD_SUM, "X", "Y", "70210", "2024-06-04", "typ2", 50.0, 25.0, 125, 80, "aldrig", "kost"),
    ]


def test_quality_quarantined_rows_do_not_reach_research_zone(hdp_home, kek_env):
    build_ndr(hdp_home, register_rows=_ndr_rows())
    run_gate("raw", holder_id="ndr", run_id="test-raw", settings=hdp_home, render_docs=False)
    flagged = read_rows(
        hdp_home.raw_db("ndr"),
        """SELECT DISTINCT source_file, line_no FROM quarantine
        WHERE stage = 'quality' AND check_id = 'register.hba1c_mmol_mol.range' ORDER BY line_no""",
    )
    assert flagged == [("register/ndr_visits.csv", 3), ("register/ndr_visits.csv", 4)]

    result = pseudonymise_holder("ndr", settings=hdp_home)
    db = hdp_home.research_db("ndr")
    assert read_rows(
        db, f"SELECT count(*) FROM register_visit WHERE hba1c_mmol_mol = {OUT_OF_RANGE_HBA1C}"
    ) == [(0,)]
    assert sorted(read_rows(db, "SELECT visit_date::VARCHAR, hba1c_mmol_mol FROM register_visit")) == [
        ("2024-03-01", 52.0),
        ("2024-06-03", 48.0),
    ]
    # the invalid identifier (caught by the gate's identifier check too) still gets its own record
    assert result.quarantined_by_reason == {"identifier.bad_checksum": 1}
    assert result.excluded_by_quality == {"register_visit": 2, "prom_response": 0}
    assert result.tables == {"register_visit": 2, "prom_response": 2}
    assert result.rows_in == result.rows_out + result.quarantined + sum(result.excluded_by_quality.values())
    # person_link: only persons whose rows reach the research zone (Bertil's only register row
    # is excluded, but his PROM row is kept; Cesar keeps one register row)
    link = {p for (p,) in read_rows(hdp_home.raw_db("ndr"), "SELECT personnummer FROM person_link")}
    assert link == {ANNA, BERTIL, CESAR} and result.persons == 3


def test_person_only_in_excluded_rows_is_not_linked(hdp_home, kek_env):
    build_ndr(hdp_home, register_rows=_ndr_rows()[:2], prom_rows=[])
    run_gate("raw", holder_id="ndr", run_id="test-raw", settings=hdp_home, render_docs=False)
    result = pseudonymise_holder("ndr", settings=hdp_home)
    link = {p for (p,) in read_rows(hdp_home.raw_db("ndr"), "SELECT personnummer FROM person_link")}
    assert link == {ANNA} and result.persons == 1
    assert result.excluded_by_quality == {"register_visit": 1, "prom_response": 0}


def test_rerun_after_gate_is_identical(hdp_home, kek_env):
    build_ndr(hdp_home, register_rows=_ndr_rows())
    run_gate("raw", holder_id="ndr", run_id="test-raw", settings=hdp_home, render_docs=False)
    first = pseudonymise_holder("ndr", settings=hdp_home)
    rows1 = sorted(read_rows(hdp_home.research_db("ndr"), "SELECT * FROM register_visit"), key=str)
    second = pseudonymise_holder("ndr", settings=hdp_home)
    assert first == second
    assert sorted(read_rows(hdp_home.research_db("ndr"), "SELECT * FROM register_visit"), key=str) == rows1


def test_fhir_rows_quarantined_by_record_key_are_excluded(hdp_home, kek_env):
    build_region(hdp_home)
    con = duckdb.connect(str(hdp_home.raw_db("region_uppsala")))
    try:  # an encounter after the extract date: the gate quarantines Encounter/e2 by its key
        con.execute(
            "UPDATE fhir_encounter SET start_time = '2027-01-02T10:00:00+01:00' WHERE encounter_id = 'e2'"
        )
    finally:
        con.close()
    run_gate("raw", holder_id="region_uppsala", run_id="test-raw", settings=hdp_home, render_docs=False)
    keys = {
        k
        for (k,) in read_rows(
            hdp_home.raw_db("region_uppsala"), "SELECT record_key FROM quarantine WHERE stage = 'quality'"
        )
    }
    assert {"Encounter/e2", "Patient/p-bad"} <= keys
    result = pseudonymise_holder("region_uppsala", settings=hdp_home)
    assert result.tables["encounter"] == 1  # e1
    assert result.excluded_by_quality["encounter"] == 1  # e2, caught by the gate
    # e3 names no patient, e4's patient was quarantined: quarantined here, never written without a person
    assert result.unresolved_person_rows == 2
    db = hdp_home.research_db("region_uppsala")
    assert read_rows(db, "SELECT count(*) FROM encounter WHERE person_id IS NULL") == [(0,)]
    assert result.rows_in == result.rows_out + result.quarantined + sum(result.excluded_by_quality.values())
