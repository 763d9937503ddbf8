"""Code mapping tables (schemas/codes/mappings): loading, lookup, and filling a flattened column."""

from __future__ import annotations

import duckdb
import pytest

from pipelines.fhir import terminology as t


def test_shipped_mappings_load_and_map_into_the_shipped_target_lists():
    mappings = t.code_mappings()
    assert (t.RXNORM, t.ATC) in mappings
    lists = t.code_lists()
    for (_, target), pairs in mappings.items():
        if target in lists:
            assert set(pairs.values()) <= lists[target], target


def test_mapped_code_keeps_codes_of_the_target_system_and_maps_the_others():
    assert t.mapped_code(t.ATC, "A10BA02", t.ATC) == "A10BA02"
    assert t.mapped_code(t.RXNORM, "860975", t.ATC) == "A10BA02"  # metformin ER 500 mg
    assert t.mapped_code(t.RXNORM, "no-such-code", t.ATC) is None
    assert t.mapped_code(t.SNOMED_CT, "84489001", t.ATC) is None  # no mapping table
    assert t.mapped_code(None, "x", t.ATC) is None


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("rxnorm_atc.csv", "source_code,target_code\n", "named <from>_to_<to>"),
        ("cvx_to_atc.csv", "source_code,target_code\n", "named <from>_to_<to>"),
        ("rxnorm_to_atc.csv", "code,atc\n1,A\n", "header"),
        ("rxnorm_to_atc.csv", "source_code,target_code\n1,\n", "line 2"),
        ("rxnorm_to_atc.csv", "source_code,target_code\n1,A\n1,B\n", "mapped twice"),
    ],
)
def test_malformed_mapping_files_are_refused(tmp_path, name, text, message):
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(t.TerminologyError, match=message):
        t.code_mappings(tmp_path)


def test_fill_mapped_columns_fills_only_empty_cells_from_the_delivered_system():
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE fhir_medication_request (medication_request_id VARCHAR, code_system VARCHAR, "
        "code VARCHAR, atc_code VARCHAR)"
    )
    con.executemany(
        "INSERT INTO fhir_medication_request VALUES (?, ?, ?, ?)",
        [
            ("m1", t.RXNORM, "314076", None),  # mapped
            ("m2", t.RXNORM, "999999", None),  # no mapping row: stays empty
            ("m3", t.ATC, "C09AA03", "C09AA03"),  # delivered ATC: untouched
            ("m4", t.RXNORM, "314076", "C09AA05"),  # an ATC coding was delivered beside it: kept
            ("m5", "http://snomed.info/sct", "314076", None),  # same code, other system: not mapped
        ],
    )
    assert t.fill_mapped_columns(con) == {"fhir_medication_request.atc_code": 1}
    assert con.sql("SELECT * FROM fhir_medication_request ORDER BY 1").fetchall() == [
        ("m1", t.RXNORM, "314076", "C09AA03"),
        ("m2", t.RXNORM, "999999", None),
        ("m3", t.ATC, "C09AA03", "C09AA03"),
        ("m4", t.RXNORM, "314076", "C09AA05"),
        ("m5", "http://snomed.info/sct", "314076", None),
    ]
    assert t.fill_mapped_columns(con) == {"fhir_medication_request.atc_code": 0}  # idempotent


def test_fill_mapped_columns_skips_a_database_without_the_table():
    assert t.fill_mapped_columns(duckdb.connect()) == {}
