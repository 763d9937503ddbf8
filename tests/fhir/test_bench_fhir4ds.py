"""The pure parts of the fhir4ds side of the FHIR benchmark (bench/fhir4ds_child.py).

fhir4ds itself is not needed (nor a network): the comparison runs on plain DuckDB tables shaped
like fhir4ds's output.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from bench.fhir4ds_child import (
    bench_suffix,
    compare_view,
    key_column,
    short_error,
    summary,
    view_columns,
    view_line,
)

VIEWS = Path(__file__).resolve().parents[2] / "schemas" / "views"

VIEW = {
    "resourceType": "ViewDefinition",
    "name": "obs",
    "resource": "Observation",
    "select": [
        {
            "column": [
                {"name": "obs_id", "path": "getResourceKey()"},
                {"name": "patient_id", "path": "subject.getReferenceKey(Patient)"},
                {"name": "code", "path": "code.coding.first().code"},
                {"name": "value", "path": "value.ofType(Quantity).value"},
                {"name": "unit", "path": "value.ofType(Quantity).unit"},
            ]
        }
    ],
}


def test_short_error_masks_literals_and_truncates():
    e = ValueError(
        "Conversion Error: Could not convert string '19121212-1212' to INT64\nLINE 1: SELECT '1912'"
    )
    assert short_error(e) == "ValueError: Conversion Error: Could not convert string '…' to INT64"
    assert len(short_error(RuntimeError("x" * 500))) == 120
    assert short_error(KeyError()) == "KeyError"


def test_key_column_of_the_project_views():
    for p in sorted(VIEWS.glob("*.json")):
        vd = json.loads(p.read_text())
        key = key_column(vd)
        assert key is not None and key.endswith("_id"), p.name
        assert [c["name"] for c in view_columns(vd)][0] == key


def test_key_column_none_when_rows_per_resource_vary():
    assert key_column(VIEW) == "obs_id"
    nested = {
        "select": [
            {
                "column": [{"name": "id", "path": "getResourceKey()"}],
                "select": [{"forEach": "component", "column": [{"name": "c", "path": "code"}]}],
            }
        ]
    }
    assert [c["name"] for c in view_columns(nested)] == ["id", "c"]
    assert key_column(nested) is None
    assert key_column({"select": [{"column": [{"name": "s", "path": "status"}]}]}) is None


@pytest.fixture
def con():
    c = duckdb.connect()
    c.execute("ATTACH ':memory:' AS ours")
    c.execute("CREATE TABLE fhir_resources (id INTEGER, resource JSON)")
    c.executemany(
        "INSERT INTO fhir_resources (resource) VALUES (?)",
        [[json.dumps({"resourceType": "Observation", "id": f"o{i}"})] for i in range(1, 5)]
        + [[json.dumps({"resourceType": "Patient", "id": "o9"})]],
    )
    # ours: o1..o4 loaded by fhir4ds, o5 not (a sample run): o5 must not count as missing
    c.execute(
        "CREATE TABLE ours.main.obs (obs_id VARCHAR, patient_id VARCHAR, code VARCHAR, value DOUBLE, "
        "unit VARCHAR)"
    )
    c.execute(
        "INSERT INTO ours.main.obs VALUES ('o1','p1','a',62,'mmol/mol'), ('o2','p1','b',25.1,'kg'), "
        "('o3','p2','c',1.5,'g'), ('o4','p2','d',NULL,NULL), ('o5','p3','e',2,'g'), ('o9','p9','z',0,'g')"
    )
    # fhir4ds: Type/ prefixed keys, DECIMAL values, JSON code; o3 has a wrong code, o4 missing, x1 extra
    c.execute(
        "CREATE TABLE obs (obs_id VARCHAR, patient_id VARCHAR, code JSON, value DECIMAL(18,3), unit VARCHAR)"
    )
    c.execute("""INSERT INTO obs VALUES ('Observation/o1','Patient/p1','"a"',62.000,'mmol/mol'),
                 ('Observation/o2','Patient/p1','"b"',25.100,NULL), ('Observation/o3','Patient/p2','"x"',1.5,'g'),
                 ('Observation/x1','Patient/p4','"q"',3,'g')""")
    yield c
    c.close()


def test_compare_view_counts(con):
    r = compare_view(con, VIEW, "obs", "ours")
    assert r == {
        "ours_rows": 4,
        "keyed": True,
        "missing": 1,
        "extra": 1,
        "differs": {"code": 1, "unit": 1},
        "null": {"unit": 1},
        "absent": [],
    }


def test_compare_view_absent_column_and_unkeyed(con):
    con.execute("ALTER TABLE obs DROP COLUMN unit")
    assert compare_view(con, VIEW, "obs", "ours")["absent"] == ["unit"]
    unkeyed = {**VIEW, "select": [{"column": VIEW["select"][0]["column"][1:]}]}
    r = compare_view(con, unkeyed, "obs", "ours")
    assert r["keyed"] is False and r["ours_rows"] == 6


def test_report_lines_hold_counts_and_names_only(con):
    ok = {"rows": 4, "seconds": 0.5, "compare": compare_view(con, VIEW, "obs", "ours")}
    line = view_line("obs", ok)
    assert line == (
        "  obs: 4 rows in 0.50 s, ours 4 (same); 1 of our rows missing, 1 extra; "
        "rows whose value differs from ours: code 1, unit 1 all NULL"
    )
    for value in ("mmol/mol", "p1", "o1", "62"):
        assert value not in line
    failed = {"error": short_error(RuntimeError("Parser Error: near 'eq-vas'")), "seconds": 0.1}
    assert view_line("v2", failed) == "  v2: failed (RuntimeError: Parser Error: near '…')"
    same = {
        "rows": 2,
        "seconds": 1.0,
        "compare": {
            "ours_rows": 2,
            "keyed": True,
            "missing": 0,
            "extra": 0,
            "differs": {},
            "null": {},
            "absent": [],
        },
    }
    assert view_line("v3", same).endswith("ours 2 (same); every value the same as ours")
    assert view_line("v4", {"rows": 3, "seconds": 0.0, "compare_error": "E: x"}).endswith(
        "not compared (E: x)"
    )
    assert summary({"obs": ok, "v2": failed, "v3": same}) == "2 of 3 views ran, 1 identical to ours"


def test_bench_suffix():
    assert bench_suffix(None) == " fhir4ds_resources_per_s=na"
    assert bench_suffix(12456.7) == " fhir4ds_resources_per_s=12457"
