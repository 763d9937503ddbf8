"""Results history: one Parquet file per gate run under ``$HDP_HOME/quality/results/``.

One file per (run, zone, scope) rather than one shared database, so that gates of several
holders running at the same time never wait for each other's write lock. ``history`` reads
them all back (DuckDB over a glob) so an operator can follow a metric across runs.
Everything stored is counts and ids (results.CheckResult), never a value.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.quality.results import GateResult

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")

COLUMNS = (
    "run_id",
    "zone",
    "scope",
    "started_at",
    "library_version",
    "check_id",
    "table_name",
    "column_name",
    "kind",
    "category",
    "subcategory",
    "severity",
    "failed_rows",
    "total_rows",
    "failed_share",
    "max_failed_share",
    "max_failed_count",
    "verdict",
    "reason",
    "quarantined_rows",
)


def safe_name(text: str) -> str:
    """A file-name-safe form of a run id (Airflow run ids contain ':' and '+')."""
    cleaned = _SAFE.sub("_", text).strip("._")
    if not cleaned:
        raise ValueError("run id has no usable characters")
    return cleaned[:150]


def results_dir(quality_dir: Path) -> Path:
    return quality_dir / "results"


def write_result(quality_dir: Path, result: GateResult) -> Path:
    rows: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    for c in result.checks:
        values = (
            result.run_id,
            result.zone,
            result.scope,
            result.started_at,
            result.library_version,
            c.id,
            c.table,
            c.column,
            c.kind,
            c.category,
            c.subcategory,
            c.severity,
            c.failed_rows,
            c.total_rows,
            c.failed_share,
            c.max_failed_share,
            c.max_failed_count,
            c.verdict,
            c.reason,
            c.quarantined_rows,
        )
        for name, value in zip(COLUMNS, values, strict=True):
            rows[name].append(value)
    schema = pa.schema(
        [
            (
                n,
                pa.int64()
                if n in ("failed_rows", "total_rows", "max_failed_count", "quarantined_rows")
                else pa.float64()
                if n in ("failed_share", "max_failed_share")
                else pa.string(),
            )
            for n in COLUMNS
        ]
    )
    path = (
        results_dir(quality_dir)
        / safe_name(result.run_id)
        / f"{result.zone}__{safe_name(result.scope)}.parquet"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.table(rows, schema=schema), tmp)
    tmp.replace(path)  # readers never see a half-written file
    return path


def history(
    quality_dir: Path,
    *,
    check_id: str | None = None,
    scope: str | None = None,
    zone: str | None = None,
    run_id: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Stored results, oldest first, filtered; each row a dict with COLUMNS."""
    base = results_dir(quality_dir)
    if not any(base.glob("*/*.parquet")):
        return []
    where, params = [], []
    for col, val in (("check_id", check_id), ("scope", scope), ("zone", zone), ("run_id", run_id)):
        if val is not None:
            where.append(f"{col} = ?")
            params.append(val)
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    pattern = str(base / "*" / "*.parquet").replace("'", "''")
    query = (
        f"SELECT * FROM read_parquet('{pattern}', union_by_name = true) {clause} "
        "ORDER BY started_at, run_id, zone, scope, check_id"
    )
    con = duckdb.connect()
    try:
        cur = con.execute(query, params)
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()
    return rows[-limit:] if limit else rows


def latest(quality_dir: Path, *, zone: str, scope: str) -> list[dict[str, Any]]:
    """Rows of the most recent stored run for (zone, scope)."""
    rows = history(quality_dir, zone=zone, scope=scope)
    if not rows:
        return []
    last = max((r["started_at"], r["run_id"]) for r in rows)
    return [r for r in rows if (r["started_at"], r["run_id"]) == last]
