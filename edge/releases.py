"""Releases between governance and the release builder.

The builder (:mod:`pipelines.release`) takes an approved request, the consent keys excluded at
build time and the settings, and returns what it built. This edge reads those inputs from the
governance store, and records what was published: the release bound to its permit, and the
audit entry. It also ends releases: permits past their end expire and the files of every
release whose permit ended are deleted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session

from governance import service, store
from governance.values import ApprovedRequest
from hdp.audit import AuditLog
from hdp.settings import Settings, get_settings
from pipelines import release
from pipelines.release import ReleaseError, ReleaseResult


def requests_ready_for_release(*, settings: Settings | None = None) -> list[int]:
    """Ids of requests approved by every holder in scope that have no release yet.

    None at a node: its part of a federated release is built by the node agent once the project
    key the nodes in scope share has arrived (``node.agent``), never by the release DAG, which
    would otherwise draw a key of its own."""
    settings = settings or get_settings()
    if settings.federation_role == "node":
        return []
    store.upgrade(settings.governance_url)
    with store.session_scope(settings.governance_url) as session:
        return [r.request_id for r in service.requests_ready_for_release(session)]


def build_release(request_id: int, *, run_id: str, settings: Settings | None = None) -> ReleaseResult:
    """Build the release of an approved request, gate it, publish it atomically, record it."""
    settings = settings or get_settings()
    with store.session_scope(settings.governance_url) as session:
        ready = {r.request_id: r for r in service.requests_ready_for_release(session)}
        if request_id not in ready:
            return _already_published(session, request_id, settings)
        request = ready[request_id]
        excluded = _excluded_consent_keys(session, request)
    published = release.build_and_publish(
        request, excluded_consent_keys=excluded, run_id=run_id, settings=settings
    )
    built = published.result
    with store.session_scope(settings.governance_url) as session:
        service.record_release(
            session,
            request_id=request_id,
            release_id=built.release_id,
            manifest_sha256=published.manifest_sha256,
        )
    AuditLog(settings.audit_dir / "audit.jsonl").append(
        {
            "kind": "release.published",
            "release_id": built.release_id,
            "request_id": request_id,
            "run_id": run_id,
            "manifest_sha256": published.manifest_sha256,
            "rows": built.rows,
        }
    )
    return built


def _already_published(session: Session, request_id: int, settings: Settings) -> ReleaseResult:
    """The published release of a request that is no longer ready, if this very task published it.

    A retry after the release was published and recorded (the worker died before reporting
    success) finds the work done and reports it instead of failing the run.
    """
    release_id = release.release_id_for(request_id)
    permit = service.permit_for_request(session, request_id=request_id)
    if permit is not None and permit.release_id == release_id:
        published = release.published_release(release_id, request_id=request_id, settings=settings)
        if published is not None:
            return published
    raise ReleaseError(f"request {request_id} is not approved by every holder in scope, or already released")


def rebuild_for_comparison(
    request_id: int, destination: Path, *, settings: Settings | None = None
) -> dict[str, int]:
    """Rebuild an already released request into ``destination`` (not published, not recorded).

    See :func:`pipelines.release.rebuild_for_comparison`: the Parquet files must be
    byte-identical to the published ones.
    """
    settings = settings or get_settings()
    with store.session_scope(settings.governance_url) as session:
        request = service.approved_request(session, request_id=request_id)
        excluded = _excluded_consent_keys(session, request)
    return release.rebuild_for_comparison(
        request, excluded_consent_keys=excluded, destination=destination, settings=settings
    )


def _excluded_consent_keys(session: Session, request: ApprovedRequest) -> frozenset[str]:
    """Consent keys of the persons who may not be in a release for the request's purpose, now."""
    return service.excluded_consent_keys(session, purpose=request.purpose, at=datetime.now(UTC))


def delete_ended_releases(*, settings: Settings | None = None) -> dict[str, int]:
    """Expire permits past their end, then delete the files of every release whose permit ended.

    Access already stops at the moment a permit expires or is revoked (the access layer checks
    the permit at every query); this removes the data itself, as the permit promised.
    """
    settings = settings or get_settings()
    now = datetime.now(UTC)
    with store.session_scope(settings.governance_url) as session:
        expired = service.expire_permits(session, at=now)
        due = [p.release_id for p in service.releases_due_for_deletion(session, at=now) if p.release_id]
    deleted = 0
    for release_id in due:
        deleted += release.delete_release_files(release_id, settings=settings)
        with store.session_scope(settings.governance_url) as session:
            service.mark_release_deleted(session, release_id=release_id, now=now)
    return {"permits_expired": len(expired), "releases_deleted": deleted, "releases_marked_deleted": len(due)}
