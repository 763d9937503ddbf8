"""Helpers shared by the governance tests (users, a valid request)."""

from __future__ import annotations

RESEARCHERS = ("alice", "bob", "carol")
STEWARDS = {
    "s-ndr-1": ("ndr",), "s-ndr-2": ("ndr",),
    "s-upp-1": ("region_uppsala",),
    "s-ore-1": ("region_orebro",), "s-ore-2": ("region_orebro",),
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
