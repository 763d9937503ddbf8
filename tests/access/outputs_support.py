"""A record-level release in the real governance store, for the airlock's web and browser tests.

``airlock_world(url, releases_dir)`` creates whatever users are missing (researchers alice and
bob, a steward of ndr, two output checkers), files alice's record-level request (pseudonymised,
justified), has the ndr steward approve it, writes a synthetic release in the contract layout
and binds it to the permit, exactly as the release DAG would.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECORD_VARIABLES = [
    "register_visit.person_id",
    "register_visit.sex",
    "register_visit.birth_year",
    "register_visit.county",
    "register_visit.visit_date",
    "register_visit.hba1c_mmol_mol",
    "register_visit.diabetes_type",
]
USERS = {
    "alice": (["researcher"], []),
    "bob": (["researcher"], []),
    "carol": (["researcher"], []),
    "s-ndr": (["steward"], ["ndr"]),
    "oc-1": (["output_checker"], []),
    "oc-2": (["output_checker"], []),
}


@dataclass
class AirlockWorld:
    url: str
    release_id: str
    permit_id: int = 0
    request_id: int = 0
    tokens: dict[str, str] = field(default_factory=dict)


def airlock_world(
    url: str,
    releases_dir: Path,
    *,
    release_id: str = "rel_airlock_0001",
    persons: int = 240,
    visits: int = 960,
) -> AirlockWorld:
    from access.demo_release import write_release
    from governance import service
    from governance.errors import NotFound
    from governance.store import session_scope

    world = AirlockWorld(url=url, release_id=release_id)
    with session_scope(url) as s:
        for name, (roles, holders) in USERS.items():
            try:
                service.get_user(s, name=name)
            except NotFound:
                service.create_user(s, name=name, roles=roles, holder_ids=holders)
            world.tokens[name] = service.issue_token(s, user_name=name)
        world.request_id = service.file_request(
            s,
            applicant="alice",
            project="HbA1c trajectories, record level",
            purpose="scientific_research",
            legal_basis="gdpr_6_1_e__9_2_j",
            ethics_ref="2024-01234-01",
            variables=RECORD_VARIABLES,
            holders=["ndr"],
            members=["bob"],
            cohort_criteria={},
            period=(None, None),
            data_form="pseudonymised",
            pseudonymisation_justification="Visits of one person must be linked over time for trajectories.",
            output_tier="record",
            access_days=30,
        )
        service.submit_request(s, request_id=world.request_id, actor="alice")
    with session_scope(url) as s:
        service.decide(
            s,
            request_id=world.request_id,
            holder_id="ndr",
            reviewer="s-ndr",
            decision="approve",
            justification="Ethics approval on file; record level is justified for linkage.",
        )
    rel = releases_dir / release_id
    write_release(rel, persons=persons, visits=visits, seed=11)
    sha = hashlib.sha256((rel / "manifest.json").read_bytes()).hexdigest()
    with session_scope(url) as s:
        world.permit_id = service.record_release(
            s, request_id=world.request_id, release_id=release_id, manifest_sha256=sha
        ).id
    return world


#: The CSRF token a web form carries.
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def browser(app: Any, token: str, lang: str = "en") -> Any:
    """A TestClient signed in to the web pages with ``token`` (its own cookie jar, like a browser)."""
    from fastapi.testclient import TestClient

    c = TestClient(app, base_url="http://testserver")
    form = c.get(f"/web/login?lang={lang}")
    r = c.post(
        "/web/login",
        data={"token": token, "csrf_token": CSRF.search(form.text).group(1), "next": ""},  # type: ignore[union-attr]
        follow_redirects=True,
    )
    assert r.status_code == 200
    return c
