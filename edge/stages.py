"""The pipeline's stages as plain functions, one per Airflow task.

Each returns a small dict of counts and ids: it travels as an XCom and into run metrics,
so it must never carry an identifier or a health value. The DAG file imports this module
inside its tasks, so that parsing the DAGs never imports DuckDB, pyarrow or SQLAlchemy work.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from edge import releases
from pipelines.fhir.ingest import ingest_fhir
from pipelines.ingest import ingest_delimited_source
from pipelines.pseudonymise import pseudonymise_holder
from pipelines.quality.gate import raise_for_blocking, run_gate


def ingest_source(holder_id: str, source: str) -> dict[str, Any]:
    """Load one source of one holder from its landing area into the raw zone."""
    if source == "fhir":
        result = ingest_fhir(holder_id)
        # Resources in and loaded, as the headline rows in/out of the run metrics (per type below).
        return asdict(result) | {
            "rows_in": sum(result.resources_read.values()),
            "rows_out": sum(result.resources_valid.values()),
        }
    return asdict(ingest_delimited_source(holder_id, source))


def pseudonymise(holder_id: str) -> dict[str, Any]:
    """Raw zone → research zone for one holder (its own key domain)."""
    return asdict(pseudonymise_holder(holder_id))


def validate(
    zone: str, *, run_id: str, holder_id: str | None = None, release_dir: str | None = None
) -> dict[str, Any]:
    """Run the quality gate; raises QualityGateFailed (check ids and counts only) when blocking."""
    result = run_gate(
        zone, holder_id=holder_id, release_dir=Path(release_dir) if release_dir else None, run_id=run_id
    )
    raise_for_blocking(result)
    # The rows this gate copied to quarantine, by check id: the run metrics keep them as reason
    # codes, so `hdp status` shows which check quarantined how many (not only a total).
    quarantined = {c.id: c.quarantined_rows for c in result.checks if c.quarantined_rows}
    return result.summary() | {"quarantined": quarantined}


def requests_ready_for_release() -> list[int]:
    """Ids of requests approved by every holder in scope that have no release yet."""
    return releases.requests_ready_for_release()


def build_release(request_id: int, *, run_id: str) -> dict[str, Any]:
    """Build, gate, publish and record the release of one approved request."""
    return asdict(releases.build_release(request_id, run_id=run_id))


def delete_ended_releases() -> dict[str, Any]:
    """Expire permits past their end and delete the releases of ended permits."""
    return releases.delete_ended_releases()
