"""Helpers shared by the access-layer tests: a synthetic world and an auth header."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from access.demo_release import write_release
from access.engine import Limits
from access.ports import InMemoryGovernance, Permit
from access.service import AccessService, AccessSettings

RECORD_VARS = frozenset(
    {
        "register_visit.sex",
        "register_visit.birth_year",
        "register_visit.county",
        "register_visit.visit_date",
        "register_visit.hba1c_mmol_mol",
        "register_visit.bmi",
        "register_visit.diabetes_type",
        "patient.birth_year",
        "patient.sex",
    }
)


class World:
    """A data home with two releases (r_rec record-level, r_agg aggregate-only)."""

    def __init__(self, base, *, persons: int = 300, visits: int = 1_500, unlinked: int = 5) -> None:
        releases = base / "releases"
        self.gov = InMemoryGovernance()
        self.now = datetime.now(UTC)
        self.gov.add_user("alice", {"researcher"})
        self.gov.add_user("bob", {"researcher"})
        self.gov.add_user("olga", {"operator"})
        self.alice = self.gov.issue_token("alice")
        self.bob = self.gov.issue_token("bob")
        self.olga = self.gov.issue_token("olga")
        write_release(releases / "r_rec", persons=persons, visits=visits, seed=1, unlinked=unlinked)
        write_release(releases / "r_agg", persons=persons, visits=visits, seed=2, unlinked=unlinked)
        write_release(releases / "r_bob", persons=50, visits=100, seed=3)
        exp = self.now + timedelta(days=30)
        self.gov.add_permit(
            Permit(
                1,
                10,
                "r_rec",
                frozenset({"alice"}),
                RECORD_VARS,
                frozenset({"ndr", "region_uppsala", "region_orebro", "region_skane"}),
                "diabetes-outcomes",
                "record",
                exp,
            )
        )
        self.gov.add_permit(
            Permit(
                2,
                11,
                "r_agg",
                frozenset({"alice"}),
                RECORD_VARS,
                frozenset({"ndr", "region_uppsala", "region_orebro", "region_skane"}),
                "diabetes-outcomes",
                "aggregate",
                exp,
            )
        )
        self.gov.add_permit(
            Permit(
                3,
                12,
                "r_bob",
                frozenset({"bob"}),
                RECORD_VARS,
                frozenset({"ndr"}),
                "other-purpose",
                "record",
                exp,
            )
        )
        self.settings = AccessSettings(
            releases_dir=releases,
            audit_path=base / "audit" / "access.jsonl",
            limits=Limits(timeout_s=2.0, max_rows=100_000, memory_limit="512MB", threads=2),
            audit_fsync=False,
        )
        self.service = AccessService(self.settings, self.gov)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
