"""A node's dataset summary: counts, months and column metadata of its research zone only,
disclosure-safe, and readable by the hub's catalogue."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date

import duckdb
import pytest

from federation.catalogue import DatasetSummary, safe_count
from pipelines.dataset_summary import publishable_count, summarise_holder

PUBLISHED_AT = "2025-03-01T12:00:00Z"


def _pseudonym(i: int) -> str:
    return hashlib.sha256(f"person-{i}".encode()).hexdigest()


def _visits() -> list[tuple]:
    """57 visits of 23 persons: one person alone in 2023-01 and two in 2024-12 (months too thin
    to publish), twenty persons with visits from 2023-02 to 2024-11."""
    rows = [(_pseudonym(0), 1950, "F", date(2023, 1, 15), 51.0)]
    rows += [
        (_pseudonym(21), 1961, "M", date(2024, 12, 3), 60.0),
        (_pseudonym(22), 1962, "F", date(2024, 12, 9), 61.0),
    ]
    for i in range(1, 21):
        rows.append((_pseudonym(i), 1950 + i, "M", date(2023, 2, i), 50.0 + i))
        rows.append((_pseudonym(i), 1950 + i, "M", date(2024, 11, i), 55.0 + i))
    rows += [(_pseudonym(i), 1950 + i, "M", date(2024, 3, i), 52.0 + i) for i in range(1, 15)]
    return rows  # 1 + 2 + 40 + 14 = 57 rows, 23 persons


@pytest.fixture
def research_zone(hdp_home):
    path = hdp_home.research_db("ndr")
    path.parent.mkdir(parents=True)
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE register_visit (person_id VARCHAR, birth_year INTEGER, sex VARCHAR, visit_date DATE, "
        "hba1c_mmol_mol DOUBLE)"
    )
    con.executemany("INSERT INTO register_visit VALUES (?, ?, ?, ?, ?)", _visits())
    # three persons only: every count suppressed, no period
    con.execute("CREATE TABLE prom_response (person_id VARCHAR, visit_date VARCHAR, eq_vas INTEGER)")
    con.executemany(
        "INSERT INTO prom_response VALUES (?, ?, ?)",
        [(_pseudonym(i), f"2024-0{i}-01T10:00:00+01:00", 70 + i) for i in range(1, 4)],
    )
    # not a catalogued research table: never published
    con.execute("CREATE TABLE scratch_notes (person_id VARCHAR, note VARCHAR)")
    con.execute("INSERT INTO scratch_notes VALUES (?, 'x')", [_pseudonym(99)])
    con.close()
    return hdp_home


def test_summary_counts_rounded_and_periods_from_months_with_enough_persons(research_zone):
    summary = summarise_holder("ndr", node_id="node:ndr", settings=research_zone, published_at=PUBLISHED_AT)
    assert summary["holder_id"] == "ndr"
    assert summary["holder_kind"] == "quality_register"
    assert summary["node_id"] == "node:ndr"
    assert (summary["min_cell_count"], summary["rounding_base"]) == (5, 5)
    tables = {t["table"]: t for t in summary["tables"]}
    assert set(tables) == {"register_visit", "prom_response"}  # scratch_notes is not catalogued

    visits = tables["register_visit"]
    assert visits["rows"] == 55  # 57 rounded to 5
    assert visits["persons"] == 25  # 23 rounded to 5
    # 2023-01 (one person) and 2024-12 (two persons) are too thin to be the period's edges
    assert (visits["period_start"], visits["period_end"]) == ("2023-02", "2024-11")

    proms = tables["prom_response"]
    assert (proms["rows"], proms["persons"]) == (0, 0)
    assert (proms["period_start"], proms["period_end"]) == (None, None)

    assert summary["persons"] == 25  # 23 distinct persons across the catalogued tables


def test_variables_carry_labels_datatypes_and_catalogue_sensitivity(research_zone):
    summary = summarise_holder("ndr", node_id="node:ndr", settings=research_zone, published_at=PUBLISHED_AT)
    visits = next(t for t in summary["tables"] if t["table"] == "register_visit")
    variables = {v["name"]: v for v in visits["variables"]}
    assert list(variables) == ["person_id", "birth_year", "sex", "visit_date", "hba1c_mmol_mol"]
    assert variables["person_id"] == {
        "name": "person_id",
        "label": "Person (holder pseudonym)",
        "datatype": "string",
        "sensitivity": "pseudonym",
    }
    assert variables["visit_date"]["datatype"] == "date"
    assert variables["visit_date"]["sensitivity"] == "quasi_identifier"
    assert variables["birth_year"]["datatype"] == "integer"
    assert variables["hba1c_mmol_mol"] == {
        "name": "hba1c_mmol_mol",
        "label": "HbA1c (mmol/mol)",
        "datatype": "double",
        "sensitivity": "health",
    }
    assert visits["title"] == "Register visit"


def test_summary_is_a_valid_catalogue_summary_without_identifier_like_values(research_zone):
    summary = summarise_holder("ndr", node_id="node:ndr", settings=research_zone, published_at=PUBLISHED_AT)
    parsed = DatasetSummary.from_json(summary)  # the hub's check: types, keys, safe counts
    assert parsed.to_json() == summary
    text = json.dumps(summary)
    for i in range(100):
        assert _pseudonym(i) not in text
    assert not re.search(r"[0-9a-f]{16,}", text)  # no pseudonym-like hex
    assert re.findall(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text) == ["2025-03-01"]  # only published_at
    assert "51.0" not in text and "1950" not in text  # no row value


def test_summary_reads_only_the_research_zone(research_zone):
    summarise_holder("ndr", node_id="node:ndr", settings=research_zone, published_at=PUBLISHED_AT)
    assert not (research_zone.home / "restricted").exists()


def test_a_holder_without_a_research_zone_publishes_no_tables(hdp_home):
    summary = summarise_holder("region_skane", node_id="node:region_skane", settings=hdp_home)
    assert summary["tables"] == [] and summary["persons"] == 0
    assert (summary["min_cell_count"], summary["rounding_base"]) == (10, 10)
    assert DatasetSummary.from_json(summary).holder_name == "Region Skåne"
    assert not hdp_home.research_db("region_skane").exists()


def test_pipelines_rounding_is_the_catalogues_rule():
    for base in range(1, 12):
        for threshold in range(1, 12):
            for n in range(0, 80):
                assert publishable_count(n, rounding_base=base, min_cell_count=threshold) == safe_count(
                    n, rounding_base=base, min_cell_count=threshold
                )


def test_fhir_timestamps_as_text_give_months(hdp_home):
    path = hdp_home.research_db("region_uppsala")
    path.parent.mkdir(parents=True)
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE encounter (person_id VARCHAR, encounter_id VARCHAR, start_time VARCHAR)")
    con.executemany(
        "INSERT INTO encounter VALUES (?, ?, ?)",
        [(_pseudonym(i), _pseudonym(100 + i), f"2024-05-0{i}T10:00:00+02:00") for i in range(1, 7)],
    )
    con.close()
    summary = summarise_holder("region_uppsala", node_id="node:region_uppsala", settings=hdp_home)
    (encounters,) = summary["tables"]
    assert (encounters["rows"], encounters["persons"]) == (5, 5)  # 6 rounded to 5
    assert (encounters["period_start"], encounters["period_end"]) == ("2024-05", "2024-05")
    assert [v["name"] for v in encounters["variables"]] == ["person_id", "encounter_id", "start_time"]
    assert encounters["variables"][2]["sensitivity"] == "quasi_identifier"
    DatasetSummary.from_json(summary)
