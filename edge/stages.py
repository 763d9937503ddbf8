"""The pipeline's stages as plain functions, one per Airflow task.

Each returns a small dict of counts and ids: it travels as an XCom and into run metrics,
so it must never carry an identifier or a health value. Heavy imports (DuckDB work, Great
Expectations) happen inside the functions so that DAG parsing stays fast.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from hdp.settings import get_settings


def ingest_source(holder_id: str, source: str) -> dict[str, Any]:
    """Load one source of one holder from its landing area into the raw zone."""
    if source == "fhir":
        from pipelines.fhir.ingest import ingest_fhir

        return asdict(ingest_fhir(holder_id))
    from pipelines.ingest import ingest_delimited_source

    return asdict(ingest_delimited_source(holder_id, source))


def pseudonymise(holder_id: str) -> dict[str, Any]:
    """Raw zone → research zone for one holder (its own key domain)."""
    from pipelines.pseudonymise import pseudonymise_holder

    return asdict(pseudonymise_holder(holder_id))


def validate(
    zone: str, *, run_id: str, holder_id: str | None = None, release_dir: str | None = None
) -> dict[str, Any]:
    """Run the quality gate; raises QualityGateFailed (check ids and counts only) when blocking."""
    from pipelines.quality.gate import raise_for_blocking, run_gate

    result = run_gate(
        zone, holder_id=holder_id, release_dir=Path(release_dir) if release_dir else None, run_id=run_id
    )
    raise_for_blocking(result)
    return result.summary()


def requests_ready_for_release() -> list[int]:
    """Ids of requests approved by every holder in scope that have no release yet."""
    from governance import service, store

    settings = get_settings()
    store.upgrade(settings.governance_url)
    with store.session_scope(settings.governance_url) as session:
        return [r.request_id for r in service.requests_ready_for_release(session)]


def build_release(request_id: int, *, run_id: str) -> dict[str, Any]:
    """Build, gate and publish the release of one approved request."""
    from pipelines.release import build_and_publish

    return asdict(build_and_publish(request_id, run_id=run_id))


def delete_ended_releases() -> dict[str, Any]:
    """Expire permits past their end and delete the releases of ended permits."""
    from pipelines.release import delete_ended_releases as delete

    return delete()
