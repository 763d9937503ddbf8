"""The secure processing environment's release assembly: the nodes' sealed parts become one release.

A record-level permit's release is built at the nodes, each over its own data (cohort, policy,
consent, k-anonymity, gate) with the project pseudonyms they share, and delivered sealed for the
hub (``federation.sealing``). Once every node still in the permit has delivered, the parts are
opened in the hub's private zone, assembled (``pipelines.release.assemble_parts``: k-anonymity
again over the union), gated, published by renaming a complete directory, and recorded in the
hub's governance store. Until then nothing is published: a node that is down or failed leaves
the release waiting, with the reason in the permit's status, and its delivery completes it.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from federation.identity import holder_of, node_party
from federation.sealing import SealError, open_sealed
from governance import service, store
from governance.values import ApprovedRequest
from hub.coordinator import Hub
from pipelines import release

log = logging.getLogger(__name__)

#: What a part may hold: one Parquet file per research table, and the node's manifest.
PART_MEMBER = re.compile(r"^([a-z_]+\.parquet|manifest\.json)$")


class PartInvalid(Exception):
    reason = "part.invalid"


def unpack_part(sealed: bytes, environment: Hub, destination: Path) -> dict[str, Path]:
    """Open a sealed part into ``destination``; returns table -> Parquet path. Only plain files with
    expected names are written (no links, no paths), whatever the archive holds."""
    try:
        archive = open_sealed(sealed, environment.keys.opening)
    except SealError:
        raise PartInvalid("the part does not open with the environment's key") from None
    tables: dict[str, Path] = {}
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        for member in tar.getmembers():
            if not member.isfile() or not PART_MEMBER.match(member.name):
                raise PartInvalid("a part holds only <table>.parquet files and manifest.json")
            source = tar.extractfile(member)
            assert source is not None
            target = destination / member.name
            with open(target, "wb") as out:
                shutil.copyfileobj(source, out)
            if member.name.endswith(".parquet"):
                tables[member.name.removesuffix(".parquet")] = target
    return tables


class SecureEnvironment:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.settings = hub.settings

    def follow_withdrawals(self) -> list[str]:
        """Re-assemble each published record-level release one of whose nodes has withdrawn since,
        from the parts of the nodes still in it (kept sealed in the private zone), so that the
        withdrawn node's rows leave at the next query; returns the re-assembled release ids. A
        release left with no node is deleted."""
        with store.session_scope(self.settings.governance_url) as session:
            released = [
                service.approved_request(session, request_id=v.id)
                for v in service.list_requests(session, status="released")
            ]
        done = []
        for request in (r for r in released if r.output_tier == "record"):
            withdrawn = self.hub.state.withdrawn(request.request_id)
            release_id = release.release_id_for(request.request_id)
            manifest = self.settings.releases_dir / release_id / release.MANIFEST
            if not withdrawn or not manifest.exists():
                continue
            assembled_from = set(json.loads(manifest.read_text(encoding="utf-8"))["request"]["holders"])
            remaining = [node_party(h) for h in sorted(assembled_from) if node_party(h) not in withdrawn]
            if len(remaining) == len(assembled_from):
                continue
            if not remaining:
                release.delete_release_files(release_id, settings=self.settings)
            else:
                self._assemble(request, remaining, self.hub.state.parts(request.request_id), record=False)
            self.hub.audit.append(
                {"kind": "federation.release_reassembled", "permit": request.request_id, "nodes": remaining}
            )
            done.append(release_id)
        return done

    def assemble_ready(self) -> list[str]:
        """Assemble every record-level release whose parts have all arrived; returns their ids."""
        with store.session_scope(self.settings.governance_url) as session:
            ready = [r for r in service.requests_ready_for_release(session) if r.output_tier == "record"]
        published = []
        for request in ready:
            withdrawn = self.hub.state.withdrawn(request.request_id)
            scope = [node_party(h) for h in request.holders if node_party(h) not in withdrawn]
            parts = self.hub.state.parts(request.request_id)
            if not scope or any((parts.get(p) or {}).get("status") != "delivered" for p in scope):
                continue  # waiting: the permit's status names the nodes it waits for
            try:
                published.append(self._assemble(request, scope, parts))
            except (PartInvalid, release.ReleaseError) as exc:
                log.warning("federated release %s not assembled: %s", request.request_id, type(exc).__name__)
                self.hub.audit.append(
                    {
                        "kind": "federation.release_failed",
                        "permit": request.request_id,
                        "reason": type(exc).__name__,
                    }
                )
        return published

    def _assemble(
        self, request: ApprovedRequest, scope: list[str], parts: dict[str, Any], *, record: bool = True
    ) -> str:
        release_id = release.release_id_for(request.request_id)
        work = self.settings.ensure_restricted(self.settings.scratch_dir / f"parts-{release_id}")
        try:
            opened = {
                holder_of(p): unpack_part(Path(parts[p]["path"]).read_bytes(), self.hub, work / holder_of(p))
                for p in scope
            }
            request = replace(request, holders=tuple(sorted(opened)))
            staging = self.settings.releases_dir / f".staging-{release_id}"
            self.settings.releases_dir.mkdir(parents=True, exist_ok=True)
            result = release.assemble_parts(request, opened, staging=staging, settings=self.settings)
            published = release.gate_and_publish(
                request,
                result,
                staging=staging,
                run_id=f"federation-{request.request_id}",
                settings=self.settings,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if record:  # a re-assembly after a withdrawal keeps the permit's recorded release
            with store.session_scope(self.settings.governance_url) as session:
                service.record_release(
                    session,
                    request_id=request.request_id,
                    release_id=release_id,
                    manifest_sha256=published.manifest_sha256,
                )

        self.hub.audit.append(
            {
                "kind": "federation.release_published",
                "permit": request.request_id,
                "release_id": release_id,
                "nodes": scope,
                "rows": published.result.rows,
                "manifest_sha256": published.manifest_sha256,
            }
        )
        return release_id
