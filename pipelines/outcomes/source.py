"""The PROM responses of a holder's research zone, as key figures read them.

``prom_response`` (register; the persons of ``register_visit`` are the response rate's
denominator) or else ``eq5d_response`` (FHIR; no denominator, so no response rate), opened
read-only. Used by the stewards' key-figure pages and by a node that publishes its key figures to
the hub. Errors are reported by their type only: a DuckDB message may quote data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipelines.outcomes.differencing import guard_key_figures
from pipelines.outcomes.keyfigures import (
    EQ5D_COLUMNS,
    PROM_COLUMNS,
    KeyFigureColumns,
    Period,
    key_figures_and_contributions,
)
from pipelines.outcomes.pooling import key_figures_document

log = logging.getLogger(__name__)

#: The one period kind a node publishes (see :func:`published_documents`).
PUBLISHED_PERIOD: Period = "year"


@dataclass(frozen=True)
class Source:
    table: str
    responses: pa.Table
    columns: KeyFigureColumns
    denominator_table: str | None = None
    denominator: pa.Table | None = None


def load_source(path: Path) -> Source | str:
    """The response table (and denominator) of a research zone, or why there is none."""
    import duckdb

    if not path.is_file():
        return "no_research_zone"
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        log.warning("research zone unreadable for the PROM page: %s", type(exc).__name__)
        return "unreadable"
    try:
        tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        for table, columns in (("prom_response", PROM_COLUMNS), ("eq5d_response", EQ5D_COLUMNS)):
            if table not in tables:
                continue
            have = {
                c
                for (c,) in con.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [table]
                ).fetchall()
            }
            wanted = [
                c for c in (columns.person, columns.date, columns.index, columns.vas, columns.profile) if c
            ]
            if not set(wanted) <= have:
                return "unscored"
            select = ", ".join(f'"{c}"' for c in wanted)
            responses = con.sql(f'SELECT {select} FROM "{table}"').to_arrow_table()
            if table == "prom_response" and "register_visit" in tables:
                denominator = con.sql(
                    'SELECT DISTINCT person_id, visit_date FROM "register_visit"'
                ).to_arrow_table()
                return Source(table, responses, columns, "register_visit", denominator)
            return Source(table, responses, columns)
        return "no_prom_table"
    except duckdb.Error as exc:
        log.warning("PROM tables unreadable: %s", type(exc).__name__)
        return "unreadable"
    finally:
        con.close()


def published_documents(path: Path, *, holder: str, threshold: int, guard_dir: Path) -> list[dict[str, Any]]:
    """The holder's key figures by year as the document a node publishes (every cell already under
    ``threshold``); empty when the research zone has no scored PROM table.

    By year only: published beside the yearly table, a quarterly one would give a withheld
    quarter back by subtraction (a year's responses are the sum of its quarters'). The holder's
    own stewards see both on their page; what leaves the node is one period kind.

    Through the node's differencing guard (:mod:`pipelines.outcomes.differencing`, its state in
    the node's private ``guard_dir``): a cell changes only when no combination with what the node
    published before isolates fewer than ``threshold`` persons, else the earlier cell is re-sent;
    a guard that cannot read its state withholds every cell. There is no unguarded path."""
    source = load_source(path)
    if isinstance(source, str):
        return []
    figures, contributions = key_figures_and_contributions(
        source.responses,
        holder=holder,
        threshold=threshold,
        columns=source.columns,
        period=PUBLISHED_PERIOD,
        denominator=source.denominator,
    )
    return [key_figures_document(guard_key_figures(figures, contributions, guard_dir))]
