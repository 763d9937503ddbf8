"""The quality gate: run the check library on one zone, record, render, decide.

Called by the DAGs after ingestion (raw), after pseudonymisation (research) and when a
release is built (release)::

    result = run_gate("raw", holder_id="ndr", run_id=run_id)
    raise_for_blocking(result)   # QualityGateFailed: check ids and counts, never values

Verdicts come from the check library (schemas/checks) evaluated by DuckDB pushdown
(pipelines.quality.engine); Great Expectations renders them as Data Docs. Every run is kept
under ``$HDP_HOME/quality/results/`` for ``hdp quality history``.

Cross-source checks that need to link persons across holders (a register visit with a
journal encounter nearby) run in the release zone only: each holder has its own pseudonym
domain, and only a release's project-domain person_id joins them. Within one holder (PROM
answers that belong to NDR visits) they run from the research zone on.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb

from hdp.settings import Settings, get_settings, holder
from pipelines.quality import catalog, docs, engine, store
from pipelines.quality.quarantine_rows import quarantine_failures
from pipelines.quality.results import GateResult, QualityGateFailed, raise_for_blocking
from pipelines.quality.sql import RunContext
from pipelines.warehouse import read_connection, write_connection
from privacy.identifiers import load_scheme

log = logging.getLogger(__name__)

__all__ = [
    "GateInputMissing",
    "GateResult",
    "QualityGateFailed",
    "raise_for_blocking",
    "run_gate",
    "evaluate_zone",
]


def _configure(con) -> None:
    # A memory cap (HDP_QUALITY_MEMORY_LIMIT, default 2GB; only a number and a unit get through the
    # setting's check): DuckDB's default is 80% of RAM, the gate shares the worker with other tasks,
    # and spilling to disk (uniqueness, references) is cheaper than an OOM kill.
    con.execute(f"SET memory_limit = '{get_settings().quality_memory_limit}'")
    con.execute("SET preserve_insertion_order = false")  # quarantine copies need no order; saves memory


class GateInputMissing(FileNotFoundError):
    """The database the gate should check does not exist (the upstream task did not produce it)."""


def delivered_extract_date(settings: Settings, holder_id: str) -> date | None:
    """The extract date the holder's delivery.json states; None when it states none."""
    path = settings.landing_dir(holder_id) / "delivery.json"
    try:
        return date.fromisoformat(json.loads(path.read_text(encoding="utf-8"))["extract_date"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def extract_date_of(settings: Settings, holder_id: str) -> date:
    """The holder's extract date from its delivery.json; today (UTC) when it is not known."""
    delivered = delivered_extract_date(settings, holder_id)
    if delivered is None:
        log.info("no extract date for %s in delivery.json; using today's date", holder_id)
        return datetime.now(UTC).date()
    return delivered


def _target(
    zone: str, holder_id: str | None, release_dir: Path | None, settings: Settings
) -> tuple[Path, str, tuple[str, ...] | None, date]:
    if zone in ("raw", "research"):
        if not holder_id or release_dir is not None:
            raise ValueError(f"the {zone} gate needs holder_id (and no release_dir)")
        h = holder(holder_id)
        db = settings.raw_db(h.id) if zone == "raw" else settings.research_db(h.id)
        return db, h.id, h.sources, extract_date_of(settings, h.id)
    if zone == "release":
        if release_dir is None or holder_id is not None:
            raise ValueError("the release gate needs release_dir (and no holder_id)")
        # the release builder gates its staging directory (.staging-<release_id>) before publishing
        scope = Path(release_dir).name.removeprefix(".staging-")
        return Path(release_dir) / "release.duckdb", scope, None, datetime.now(UTC).date()
    raise ValueError(f"zone must be one of {catalog.ZONES}, not {zone!r}")


@contextmanager
def _reader(zone: str, db: Path):
    """Read-only connection. A release is written once, before it is gated, by the same task; taking the
    warehouse lock would leave a ``release.duckdb.lock`` file inside the release (and its manifest)."""
    if zone == "release":
        con = duckdb.connect(str(db), read_only=True)
        try:
            yield con
        finally:
            con.close()
    else:
        with read_connection(db) as con:
            yield con


def evaluate_zone(
    zone: str,
    db: Path,
    *,
    sources: tuple[str, ...] | None,
    extract_date: date,
    checks: list[catalog.Check] | None = None,
) -> engine.Evaluation:
    """Evaluate the zone's checks on ``db`` read-only, with no side effects (used by the label)."""
    selected = checks if checks is not None else catalog.checks_for(zone, sources)
    with _reader(zone, db) as con:
        _configure(con)
        return engine.evaluate(
            con,
            selected,
            zone=zone,
            ctx=RunContext(extract_date),
            missing_is_error=zone != "release",
            column_unions=True,
        )


def run_gate(
    zone: str,
    *,
    holder_id: str | None = None,
    release_dir: Path | None = None,
    run_id: str,
    settings: Settings | None = None,
    render_docs: bool = True,
) -> GateResult:
    """Run the check library on one zone; store the results and Data Docs; return the verdict.

    Raw zone: rows failing a quarantinable check are also copied into the holder's
    quarantine with the check id. The result holds counts only. Raises GateInputMissing when
    the zone's database does not exist.
    """
    settings = settings or get_settings()
    if not run_id:
        raise ValueError("run_id is required (results and Data Docs are kept per run)")
    db, scope, sources, extract = _target(zone, holder_id, release_dir, settings)
    if not db.exists():
        raise GateInputMissing(f"{zone} gate for {scope}: {db} does not exist; run the upstream task first")
    checks = catalog.checks_for(zone, sources)
    ctx = RunContext(extract, holder_identifiers=zone == "raw")
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    quarantined: dict[str, int] = {}
    if zone == "raw":
        scheme = load_scheme(scope, accept_interim=settings.accept_interim_numbers)
        with write_connection(db) as con:
            _configure(con)
            engine.install_identifier_function(con, scheme, extract)
            evaluation = engine.evaluate(con, checks, zone=zone, ctx=ctx, missing_is_error=True)
            by_id = {r.id: r for r in evaluation.results}
            quarantined = quarantine_failures(
                con, checks, by_id, holder=scope, ctx=ctx, sources=[c.source for c in checks if c.quarantine]
            )
    else:
        with _reader(zone, db) as con:
            _configure(con)
            evaluation = engine.evaluate(con, checks, zone=zone, ctx=ctx, missing_is_error=zone != "release")
    results = tuple(replace(r, quarantined_rows=quarantined.get(r.id, 0)) for r in evaluation.results)
    passed = not any(r.blocks for r in results)
    result = GateResult(
        run_id=run_id,
        zone=zone,
        scope=scope,
        passed=passed,
        checks=results,
        started_at=started.isoformat(),
        duration_s=time.perf_counter() - t0,
        library_version=catalog.library_version(),
        quarantined_rows=sum(quarantined.values()),
    )
    quality_dir = settings.quality_dir
    store.write_result(quality_dir, result)
    if render_docs:
        index = docs.render(quality_dir, result, {c.id: c for c in checks})
        result = replace(result, docs_path=str(index))
    counts = result.counts()
    log.info(
        "quality gate %s/%s run %s: %s; pass=%d warn=%d fail=%d skipped=%d error=%d; quarantined %d rows",
        zone,
        scope,
        run_id,
        "passed" if passed else "BLOCKED",
        counts["pass"],
        counts["warn"],
        counts["fail"],
        counts["skipped"],
        counts["error"],
        result.quarantined_rows,
    )
    for r in results:
        if r.verdict in ("warn", "fail", "error"):
            log.warning("quality check %s", r.describe())
    return result
