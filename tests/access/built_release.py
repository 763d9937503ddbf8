"""The demo's record-level release, built in this process (no Airflow): generate the deliveries,
ingest, gate and pseudonymise each holder in scope, file and approve the demo request, build,
gate and publish the release. About 15 s for 150 persons; tests that use it are marked slow."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class BuiltRelease:
    home: Path
    release_id: str
    request_id: int
    tokens: dict[str, str]


@contextmanager
def demo_release(base: Path, *, persons: int = 150, seed: int = 7) -> Iterator[BuiltRelease]:
    """Build the demo request's release under ``base``; the data home stays set while in the block."""
    with pytest.MonkeyPatch.context() as mp:
        home = base / "hdp_home"
        home.mkdir(parents=True)
        mp.setenv("HDP_HOME", str(home))
        mp.setenv("HDP_KEK_DIR", str(base / "kek"))
        from hdp.settings import get_settings, holders

        get_settings.cache_clear()
        try:
            from edge import stages
            from edge.demo import DEMO_REQUEST, ensure_users, file_and_approve
            from governance import store
            from synthetic_data.generate import generate

            settings = get_settings()
            generate(settings, seed=seed, persons=persons, defect_rate=0.0)
            for h in holders():
                if h.id not in DEMO_REQUEST["holders"]:
                    continue
                for source in h.sources:
                    stages.ingest_source(h.id, source)
                stages.validate("raw", run_id="test-raw", holder_id=h.id)
                stages.pseudonymise(h.id)
                stages.validate("research", run_id="test-research", holder_id=h.id)
            store.upgrade(settings.governance_url)
            with store.session_scope(settings.governance_url) as session:
                tokens = ensure_users(session)
            request_id = file_and_approve(settings.governance_url, DEMO_REQUEST)
            built = stages.build_release(request_id, run_id="test-release")
            yield BuiltRelease(home, str(built["release_id"]), request_id, tokens)
        finally:
            get_settings.cache_clear()
