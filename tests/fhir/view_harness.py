"""A DuckDB connection as FHIR ingest has it at a flush, for tests that run the compiled view SQL
on chosen resources and compare it with the Python evaluator."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import duckdb

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
