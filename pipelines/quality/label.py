"""Quality label: what a steward sees at approval and what a release's manifest records.

``quality_label(release_dir)`` evaluates the release-zone checks on ``release.duckdb`` (read
only, no side effects) and adds per-variable completeness and plausibility pass rates and
coverage per data holder and year. It is a pure function of the release's content (and the
check library version), so re-labelling the same release gives the same dict. All figures
are shares and row counts of whole tables or holder-years, never a value.

``approval_summary(holder_ids)`` gives the latest research-zone gate result per holder from
the results history, for the approval view (before a release exists).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from hdp.settings import Settings, get_settings
from pipelines.quality import catalog, store
from pipelines.quality.engine import Schema, install_macros
from pipelines.quality.gate import evaluate_zone
from pipelines.quality.results import ERROR, FAIL, PASS, SKIPPED, WARN
from pipelines.quality.sql import ident
from pipelines.warehouse import single_row

LABEL_SCHEMA = "hdp.quality_label/1"
STAGING_PREFIX = ".staging-"
#: The column that dates a row, per table, in order of preference: coverage periods.
DATE_COLUMNS = (
    "visit_date",
    "start_time",
    "recorded_date",
    "effective_time",
    "authored_on",
    "performed_date",
    "authored",
)
#: Columns that are keys, not variables.
KEY_COLUMNS = frozenset({"holder", "person_id", "encounter_id"})


def _rate(failed: int, total: int) -> float | None:
    return round(1.0 - failed / total, 6) if total else None


def quality_label(release_dir: Path) -> dict[str, Any]:
    """JSON-serialisable quality label of the release in ``release_dir`` (for manifest.json)."""
    release_dir = Path(release_dir)
    db = release_dir / "release.duckdb"
    if not db.exists():
        raise FileNotFoundError(f"no release.duckdb in {release_dir}")
    evaluation = evaluate_zone("release", db, sources=None, extract_date=datetime.now(UTC).date())
    results = evaluation.results
    with duckdb.connect(str(db), read_only=True) as con:  # no lock file inside the release (see gate._reader)
        schema = Schema.read(con)
        variables: dict[str, dict[str, Any]] = {}
        coverage: list[dict[str, Any]] = []
        for table in sorted(t for t in schema.tables if t not in ("quarantine",) and not t.startswith("_")):
            cols = schema.tables[table]
            counts = single_row(
                con, f"SELECT count(*), {', '.join(f'count({ident(c)})' for c in cols)} FROM {ident(table)}"
            )
            total = int(counts[0])
            for col, nonnull in zip(cols, counts[1:], strict=True):
                if col in KEY_COLUMNS:
                    continue
                checks = sorted(
                    r.id for r in results if r.table == table and r.column == col and r.verdict != SKIPPED
                )
                union_failed = evaluation.column_failures.get((table, col))
                variables[f"{table}.{col}"] = {
                    "rows": total,
                    "completeness": round(int(nonnull) / total, 6) if total else None,
                    "plausibility_pass_rate": _rate(union_failed, evaluation.column_totals[(table, col)])
                    if union_failed is not None
                    else None,
                    "checks": checks,
                }
            date_col = next((c for c in DATE_COLUMNS if c in cols), None)
            holder_expr = ident("holder") if "holder" in cols else "NULL"
            year_expr = f"year(hdp_date({ident(date_col)}))" if date_col else "NULL"
            install_macros(con)
            for h, year, n in con.execute(
                f"SELECT {holder_expr}, {year_expr} AS y, count(*) FROM {ident(table)} GROUP BY ALL ORDER BY 1, 2"
            ).fetchall():
                coverage.append(
                    {
                        "table": table,
                        "holder": h,
                        "period": str(year) if year is not None else None,
                        "rows": int(n),
                    }
                )
    by_verdict = {
        v: sorted(r.id for r in results if r.verdict == v) for v in (PASS, WARN, FAIL, SKIPPED, ERROR)
    }
    return {
        "schema": LABEL_SCHEMA,
        "release_id": release_dir.name.removeprefix(STAGING_PREFIX),
        "check_library_version": catalog.library_version(),
        "passed": not any(r.blocks for r in results),
        "checks": {
            "evaluated": len(results) - len(by_verdict[SKIPPED]),
            "passed": len(by_verdict[PASS]),
            "warned": len(by_verdict[WARN]),
            "failed": len(by_verdict[FAIL]),
            "errored": len(by_verdict[ERROR]),
            "skipped": len(by_verdict[SKIPPED]),
        },
        "failed": [_brief(r) for r in results if r.verdict == FAIL],
        "warned": [_brief(r) for r in results if r.verdict == WARN],
        "errored": [_brief(r) for r in results if r.verdict == ERROR],
        "variables": variables,
        "coverage": coverage,
    }


def _brief(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "severity": r.severity,
        "failed_rows": r.failed_rows,
        "total_rows": r.total_rows,
        "max_failed_share": r.max_failed_share,
    }


def approval_summary(
    holder_ids: list[str] | tuple[str, ...], *, settings: Settings | None = None
) -> dict[str, Any]:
    """Latest research-zone gate result per holder (for stewards deciding on a request)."""
    settings = settings or get_settings()
    out: dict[str, Any] = {}
    for h in holder_ids:
        rows = store.latest(settings.quality_dir, zone="research", scope=h)
        if not rows:
            out[h] = None
            continue
        blocks = [r for r in rows if r["severity"] == "blocking" and r["verdict"] in (FAIL, ERROR)]
        out[h] = {
            "run_id": rows[0]["run_id"],
            "started_at": rows[0]["started_at"],
            "passed": not blocks,
            "failed": [r["check_id"] for r in rows if r["verdict"] == FAIL],
            "warned": [r["check_id"] for r in rows if r["verdict"] == WARN],
            "completeness": {
                f"{r['table_name']}.{r['column_name']}": round(1 - r["failed_share"], 6)
                for r in rows
                if r["kind"] == "not_null" and r["total_rows"]
            },
        }
    return out
