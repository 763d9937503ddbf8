"""What a node publishes to the hub's catalogue about its holder's research zone.

:func:`summarise_holder` reads only ``research/<holder>.duckdb`` (read-only; never the raw zone
or anything under ``restricted/``) and returns the holder's dataset summary in its JSON form,
the body of the node's ``catalogue`` message: per research table its catalogued variables
(label, datatype, sensitivity class from :mod:`governance.catalogue`), its row and person
counts, and the months its events span. No value of any row leaves: only counts, months and
column metadata.

Counts are made publishable here, under the holder's own thresholds (``min_cell_count`` and
its perturbation's ``rounding_base``, 1 where the holder sets none): below the threshold 0,
otherwise rounded half up to the base and never below the threshold, the rule of
``federation.catalogue.safe_count``, which re-checks every count when the summary is read. A
period is the first and last month in which at least ``min_cell_count`` persons have an event,
so no published month rests on a single person's visit.

The summary is returned as JSON and not as ``federation.catalogue.DatasetSummary`` because
``pipelines`` sits below ``federation`` in the layers: the node reads it with
``DatasetSummary.from_json(summarise_holder(...))``, which validates it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import duckdb

from governance.catalogue import load_catalogue
from hdp.settings import Settings, get_settings, holder
from pipelines.release import EVENT_DATE_COLUMN
from pipelines.warehouse import read_connection, single_row

#: Words a column or table name is made of, as a label spells them.
_WORDS: Mapping[str, str] = {
    "hba1c": "HbA1c",
    "bmi": "BMI",
    "bp": "blood pressure",
    "eq5d": "EQ-5D",
    "eq": "EQ",
    "vas": "VAS",
    "prem": "PREM",
    "prom": "PROM",
    "atc": "ATC",
    "id": "ID",
}
#: Labels that words alone would get wrong.
_LABELS: Mapping[str, str] = {
    "person_id": "Person (holder pseudonym)",
    "encounter_id": "Encounter (pseudonym)",
    "hba1c_mmol_mol": "HbA1c (mmol/mol)",
}
#: DuckDB column types (their first word) -> CSVW built-in datatype names.
_DATATYPES: Mapping[str, str] = {
    "VARCHAR": "string",
    "TINYINT": "integer",
    "SMALLINT": "integer",
    "INTEGER": "integer",
    "BIGINT": "integer",
    "HUGEINT": "integer",
    "UTINYINT": "integer",
    "USMALLINT": "integer",
    "UINTEGER": "integer",
    "UBIGINT": "integer",
    "DECIMAL": "decimal",
    "FLOAT": "double",
    "DOUBLE": "double",
    "BOOLEAN": "boolean",
    "DATE": "date",
    "TIMESTAMP": "datetime",
    "TIMESTAMP_S": "datetime",
    "TIMESTAMP_MS": "datetime",
    "TIMESTAMP_NS": "datetime",
    "TIME": "time",
}
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def summarise_holder(
    holder_id: str, *, node_id: str, settings: Settings | None = None, published_at: str | None = None
) -> dict[str, Any]:
    """The dataset summary of ``holder_id``'s research zone, as JSON (see the module docstring).

    A holder whose research zone does not exist yet publishes a summary with no tables.
    ``published_at`` ('YYYY-MM-DDTHH:MM:SSZ') defaults to now.
    """
    settings = settings or get_settings()
    facts = holder(holder_id)
    base = int(dict(facts.perturbation).get("rounding_base", 1))
    threshold = facts.min_cell_count
    path = settings.research_db(holder_id)
    tables: list[dict[str, Any]] = []
    persons = 0
    if path.exists():
        with read_connection(path) as con:
            tables, persons = _summarise_tables(con, min_persons=threshold, rounding_base=base)
    return {
        "holder_id": facts.id,
        "holder_name": facts.name,
        "holder_kind": facts.kind,
        "node_id": node_id,
        "tables": tables,
        "persons": persons,
        "published_at": published_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "min_cell_count": threshold,
        "rounding_base": base,
    }


def publishable_count(n: int, *, rounding_base: int, min_cell_count: int) -> int:
    """0 below ``min_cell_count``, else ``n`` rounded half up to ``rounding_base``, at least the
    first multiple of the base at or above the threshold (``federation.catalogue.safe_count``'s
    rule; a test keeps the two equal)."""
    if n < min_cell_count:
        return 0
    rounded = (n + rounding_base // 2) // rounding_base * rounding_base
    return max(rounded, -(-min_cell_count // rounding_base) * rounding_base)


def _summarise_tables(
    con: duckdb.DuckDBPyConnection, *, min_persons: int, rounding_base: int
) -> tuple[list[dict[str, Any]], int]:
    """Each catalogued research table present in ``con``, in catalogue order; and the distinct
    persons across them (both publishable)."""
    columns = _columns(con)
    catalogue = load_catalogue()
    by_table: dict[str, list[dict[str, str]]] = {}
    for entry in catalogue.values():
        by_table.setdefault(entry["table"], []).append(entry)

    def publish(n: int) -> int:
        return publishable_count(n, rounding_base=rounding_base, min_cell_count=min_persons)

    tables = []
    with_persons = []
    for table, entries in by_table.items():
        present = columns.get(table)
        if present is None or not _NAME.fullmatch(table):
            continue
        variables = [
            {
                "name": e["column"],
                "label": _label(e["column"]),
                "datatype": _datatype(present[e["column"]]),
                "sensitivity": e["sensitivity"],
            }
            for e in entries
            if e["column"] in present and _NAME.fullmatch(e["column"])
        ]
        has_person = "person_id" in present
        rows, persons = single_row(
            con,
            f'SELECT COUNT(*), {"COUNT(DISTINCT person_id)" if has_person else "0"} FROM "{table}"',
        )
        start, end = _period(con, table, present, min_persons) if has_person else (None, None)
        if has_person:
            with_persons.append(table)
        tables.append(
            {
                "table": table,
                "title": _label(table),
                "variables": variables,
                "rows": publish(int(rows)),
                "persons": publish(int(persons)),
                "period_start": start,
                "period_end": end,
            }
        )
    persons = 0
    if with_persons:
        union = " UNION ".join(f'SELECT person_id FROM "{t}"' for t in with_persons)
        (persons,) = single_row(con, f"SELECT COUNT(DISTINCT person_id) FROM ({union})")
    return tables, publish(int(persons))


def _columns(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
    """Table -> column -> DuckDB type, for the base tables of the research database."""
    rows = con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
    ).fetchall()
    tables: dict[str, dict[str, str]] = {}
    for table, column, data_type in rows:
        tables.setdefault(table, {})[column] = data_type
    return tables


def _period(
    con: duckdb.DuckDBPyConnection, table: str, present: Mapping[str, str], min_persons: int
) -> tuple[str | None, str | None]:
    """The first and last month ('YYYY-MM') of ``table``'s events in which at least
    ``min_persons`` persons have an event; (None, None) if no month has that many."""
    column = EVENT_DATE_COLUMN.get(table)
    if column is None or column not in present or not _NAME.fullmatch(column):
        return None, None
    start, end = single_row(
        con,
        f"SELECT MIN(month), MAX(month) FROM ("
        f'  SELECT strftime(TRY_CAST("{column}" AS DATE), \'%Y-%m\') AS month FROM "{table}"'
        f"  WHERE person_id IS NOT NULL"
        f"  GROUP BY month HAVING month IS NOT NULL AND COUNT(DISTINCT person_id) >= ?)",
        [min_persons],
    )
    return start, end


def _label(name: str) -> str:
    if name in _LABELS:
        return _LABELS[name]
    text = " ".join(_WORDS.get(word, word) for word in name.split("_"))
    return text[:1].upper() + text[1:]


def _datatype(duckdb_type: str) -> str:
    return _DATATYPES.get(re.split(r"[ (]", duckdb_type.upper(), maxsplit=1)[0], "string")
