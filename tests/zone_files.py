"""Reading the zones' DuckDB files from tests, as a user of the file would: read-only, closed after."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb


def read_rows(path: Path | str, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    """The rows ``sql`` gives on the DuckDB file ``path``, opened read-only for this one query."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql, list(params or [])).fetchall()
    finally:
        con.close()
