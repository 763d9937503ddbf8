"""Helpers shared by the governance tests (users, a valid request)."""

from __future__ import annotations

import os
import shutil
import uuid

import pytest

#: Postgres used by the tests (database ``test``, trust auth); each session gets its own schema.
PG_BASE = os.environ.get("HDP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

RESEARCHERS = ("alice", "bob", "carol")
STEWARDS = {
    "s-ndr-1": ("ndr",),
    "s-ndr-2": ("ndr",),
    "s-upp-1": ("region_uppsala",),
    "s-ore-1": ("region_orebro",),
    "s-ore-2": ("region_orebro",),
    "s-ska-1": ("region_skane",),
}


def seed_users(url: str) -> None:
    from governance import service
    from governance.store import session_scope

    with session_scope(url) as s:
        for name in RESEARCHERS:
            service.create_user(s, name=name, roles=["researcher"])
        for name, holders in STEWARDS.items():
            service.create_user(s, name=name, roles=["steward"], holder_ids=holders)
        service.create_user(s, name="admin", roles=["admin"])
        # A steward who is also a researcher: must never decide on their own request.
        service.create_user(s, name="dual", roles=["researcher", "steward"], holder_ids=["ndr"])


def request_fields(**over):
    fields = dict(
        project="Long-term HbA1c and PROM trajectories in type 1 diabetes",
        purpose="scientific_research",
        legal_basis="gdpr_6_1_e__9_2_j",
        ethics_ref="2024-01234-01",
        variables=["register_visit.hba1c_mmol_mol", "register_visit.birth_year", "observation.value"],
        holders=["ndr", "region_uppsala"],
        members=["bob"],
        cohort_criteria={"register_visit.diabetes_type": {"in": [1]}},
        period=("2015-01-01", "2024-12-31"),
        output_tier="aggregate",
        access_days=365,
    )
    fields.update(over)
    return fields


TABLES = (
    "gov_request_event",
    "gov_decision",
    "gov_holder_review",
    "gov_permit",
    "gov_request",
    "gov_api_token",
    "gov_user",
    "gov_consent",
    "gov_config",
    "gov_audit_checkpoint",
    "gov_query_ledger",
)


def fresh_store(backend: str, request: pytest.FixtureRequest, tmp_path) -> str:
    """Empty, migrated store for one test (or one Hypothesis example)."""
    if backend == "sqlite":
        target = tmp_path / f"gov-{uuid.uuid4().hex[:8]}.sqlite"
        shutil.copy(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite:///{target}"
    url = request.getfixturevalue("pg_schema_url")
    from sqlalchemy import text

    from governance.store import engine_for

    with engine_for(url).begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    return url
