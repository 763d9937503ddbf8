"""A DuckDB connection as FHIR ingest has it at a flush, for tests that run the compiled view SQL
on chosen resources and compare it with the Python evaluator."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import duckdb
import msgspec

from pipelines.fhir import ingest as ing
from pipelines.fhir.viewdef import CompiledView
from pipelines.fhir.viewsql import SQL_MACROS


def flat_source(
    views: Mapping[str, CompiledView], resources: Iterable[tuple[str, str, str]]
) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the views' tables, the SQL macros and the batch of fast-path
    resources (resource type, id, JSON text) under the name the compiled view SQL reads."""
    con = duckdb.connect()
    ing._create_tables(con, dict(views))
    for macro in SQL_MACROS:
        con.execute(macro)
    con.execute(
        f"CREATE TEMP TABLE {ing._FLAT_SOURCE} (resource_type VARCHAR, id VARCHAR, resource VARCHAR,"
        " _source_file VARCHAR, _line_no BIGINT)"
    )
    con.executemany(f"INSERT INTO {ing._FLAT_SOURCE} VALUES (?, ?, ?, 'f', 1)", list(resources))
    return con


def eq5d_view_rows(resources: list[dict[str, Any]]) -> tuple[list[tuple], list[tuple]]:
    """``fhir_eq5d_response`` rows of ``resources`` from the compiled SQL and from the Python
    evaluator, each sorted by response id (the two must agree)."""
    plan = ing.view_plan(ing.VIEWS_DIR)
    assert "fhir_eq5d_response" in plan.sql, plan.python_only  # the view still compiles to SQL
    view = plan.views["fhir_eq5d_response"]
    con = flat_source(
        {"fhir_eq5d_response": view}, [(r["resourceType"], r["id"], json.dumps(r)) for r in resources]
    )
    try:
        con.execute(plan.sql["fhir_eq5d_response"])
        sql_rows = con.execute(
            "SELECT * FROM fhir_eq5d_response ORDER BY questionnaire_response_id"
        ).fetchall()
    finally:
        con.close()
    py_rows = sorted(
        (tuple(row) for r in resources for row in view.rows(msgspec.json.decode(json.dumps(r)))),
        key=lambda row: row[0],
    )
    return sql_rows, py_rows
