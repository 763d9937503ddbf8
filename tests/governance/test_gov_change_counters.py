"""Change counters: every committed write to a scope's tables bumps its version (both backends).

The access layer serves cached tokens, permits and exclusion sets only while these versions
are unchanged, so a write that did not bump its scope would let a revoked permit or a
withdrawn person through. Raw SQL is used for the writes on purpose: the triggers, not the
service code, must catch them.
"""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime

from sqlalchemy import text

from governance import service
from governance.models import CHANGE_SCOPES
from governance.store import MIGRATIONS_DIR, session_scope


def _versions(url: str) -> dict[str, int]:
    with session_scope(url, readonly=True) as s:
        return service.change_versions(s)


def test_migration_and_models_name_the_same_scopes():
    spec = importlib.util.spec_from_file_location(
        "m0002", MIGRATIONS_DIR / "versions" / "0002_change_counters.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.SCOPES == CHANGE_SCOPES


def test_every_write_to_a_scope_bumps_only_that_scope(seeded):
    url = seeded
    now = datetime.now(UTC).replace(tzinfo=None)
    with session_scope(url) as s:
        token = service.issue_token(s, user_name="alice")
    assert token
    writes = {
        "consent": [
            (
                "INSERT INTO gov_consent (consent_key, scope, choice, valid_from, source_ref, recorded_at, recorded_by) "
                "VALUES ('k1', 'secondary_use', 'opt_out', :now, 'f', :now, 'x')"
            ),
            "UPDATE gov_consent SET valid_to = :now WHERE consent_key = 'k1'",
            "DELETE FROM gov_consent WHERE consent_key = 'k1'",
        ],
        "access": [
            "UPDATE gov_user SET disabled_at = :now WHERE name = 'bob'",
            "UPDATE gov_api_token SET revoked_at = :now",
            "DELETE FROM gov_api_token",
            (
                "INSERT INTO gov_user (name, roles, holder_ids, created_at) "
                "VALUES ('zed', '[\"researcher\"]', '[]', :now)"
            ),
        ],
    }
    for scope, statements in writes.items():
        for sql in statements:
            before = _versions(url)
            with session_scope(url) as s:
                s.execute(text(sql), {"now": now})
            after = _versions(url)
            assert after[scope] > before[scope], sql
            assert {k: v for k, v in after.items() if k != scope} == {
                k: v for k, v in before.items() if k != scope
            }


def test_a_rolled_back_write_bumps_nothing(seeded):
    url = seeded
    before = _versions(url)
    try:
        with session_scope(url) as s:
            s.execute(text("UPDATE gov_user SET disabled_at = NULL"))
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    assert _versions(url) == before
