"""The access layer against the real governance store (SQLite, Alembic-migrated).

No in-memory stand-in: users, tokens, the request, every holder's approval, the release binding,
revocation, expiry and consent withdrawals all go through ``governance.service`` /
``governance.consent`` on a SQLite file, and the app built by ``create_app()`` reaches them
through ``access.governance_adapter.ServiceGovernance`` exactly as in production.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from access_support import auth

from access.demo_release import consent_key, person_id, write_release
from access.engine import Limits
from access.service import AccessSettings
from governance import consent as gov_consent
from governance import service
from governance.store import dispose_all, session_scope, upgrade

RELEASE = "rel_int_0001"
SEED = 5
PERSONS = 120
J = "Proportionate to the purpose; ethics approval on file."
VARIABLES = [
    "register_visit.sex",
    "register_visit.birth_year",
    "register_visit.visit_date",
    "register_visit.hba1c_mmol_mol",
    "register_visit.diabetes_type",
    "register_visit.person_id",
]


class GovWorld:
    """A governance store with one released request and a release directory for it."""

    def __init__(self, home) -> None:
        from hdp.settings import get_settings

        settings = get_settings()
        self.url = settings.governance_url
        assert self.url.startswith("sqlite:///") and str(home) in self.url
        upgrade(self.url)
        now = datetime.now(UTC)
        with session_scope(self.url) as s:
            for name in ("alice", "bob", "carol"):
                service.create_user(s, name=name, roles=["researcher"])
            service.create_user(s, name="s-ndr", roles=["steward"], holder_ids=["ndr"])
            service.create_user(s, name="admin", roles=["admin"])
            self.tokens = {
                n: service.issue_token(s, user_name=n) for n in ("alice", "bob", "carol", "s-ndr", "admin")
            }
        with session_scope(self.url) as s:
            self.request_id = service.file_request(
                s,
                applicant="alice",
                now=now,
                project="HbA1c over time in type 1 and type 2 diabetes",
                purpose="scientific_research",
                legal_basis="gdpr_6_1_e__9_2_j",
                ethics_ref="2024-01234-01",
                variables=VARIABLES,
                holders=["ndr"],
                members=["bob"],
                cohort_criteria={},
                period=(None, None),
                data_form="pseudonymised",
                pseudonymisation_justification="Repeated visits per person must be linked over time.",
                output_tier="record",
                access_days=30,
            )
            service.submit_request(s, request_id=self.request_id, actor="alice", now=now)
        # Every holder in scope approves (ndr needs one reviewer).
        with session_scope(self.url) as s:
            status = service.decide(
                s,
                request_id=self.request_id,
                holder_id="ndr",
                reviewer="s-ndr",
                decision="approve",
                justification=J,
                now=now,
            )
        assert status == "approved"
        with session_scope(self.url) as s:
            ready = service.requests_ready_for_release(s)
        assert [r.request_id for r in ready] == [self.request_id]
        release_dir = settings.releases_dir / RELEASE
        write_release(release_dir, persons=PERSONS, visits=600, seed=SEED)
        manifest_sha = hashlib.sha256((release_dir / "manifest.json").read_bytes()).hexdigest()
        with session_scope(self.url) as s:
            self.permit = service.record_release(
                s, request_id=self.request_id, release_id=RELEASE, manifest_sha256=manifest_sha
            )
        self.access_settings = AccessSettings(
            releases_dir=settings.releases_dir,
            audit_path=settings.audit_dir / "access.jsonl",
            limits=Limits(timeout_s=5.0, max_rows=100_000, memory_limit="256MB", threads=1),
            audit_fsync=False,
        )


@pytest.fixture
def gov_world(hdp_home):
    w = GovWorld(hdp_home.home)
    yield w
    dispose_all()


@pytest.fixture
def app_client(gov_world):
    from fastapi.testclient import TestClient

    from access.app import create_app

    app = create_app(gov_world.access_settings)  # no governance given: the real store at HDP_GOVERNANCE_URL
    with TestClient(app) as c:
        c.hdp_app = app
        yield c


def _query(client, token, sql):
    return client.post(f"/releases/{RELEASE}/query", json={"sql": sql}, headers=auth(token))


def _count_person(client, token, i: int) -> int:
    r = _query(
        client, token, f"SELECT count(*) AS n FROM register_visit WHERE person_id = '{person_id(i, SEED)}'"
    )
    assert r.status_code == 200, r.text
    return r.json()["rows"][0][0]


def test_member_allowed_non_member_refused_then_revoked(app_client, gov_world):
    t = gov_world.tokens
    for who in ("alice", "bob"):  # applicant and project member
        r = _query(
            app_client, t[who], "SELECT sex, count(*) AS n FROM register_visit GROUP BY sex ORDER BY sex"
        )
        assert r.status_code == 200, r.text
        assert r.headers["X-HDP-Permit"] == str(gov_world.permit.id)
    schema = app_client.get(f"/releases/{RELEASE}/schema", headers=auth(t["bob"])).json()
    assert {c["name"] for c in schema["tables"]["register_visit"]} >= {
        "hba1c_mmol_mol",
        "person_id",
        "holder",
    }
    assert "bmi" not in {c["name"] for c in schema["tables"]["register_visit"]}  # not requested, not shown

    r = _query(app_client, t["carol"], "SELECT count(*) FROM register_visit")
    assert r.status_code == 403 and r.json()["error"] == "permit.none"
    r = _query(app_client, t["s-ndr"], "SELECT count(*) FROM register_visit")
    assert r.status_code == 403 and r.json()["error"] == "role.not_researcher"
    assert _query(app_client, "hdp_not_a_token", "SELECT 1").status_code == 401

    with session_scope(gov_world.url) as s:
        service.revoke_permit(
            s,
            request_id=gov_world.request_id,
            actor="s-ndr",
            justification="Ethics approval withdrawn by the review board.",
        )
    for who in ("alice", "bob"):
        r = _query(app_client, t[who], "SELECT count(*) FROM register_visit")
        assert r.status_code == 403 and r.json()["error"] == "permit.none", r.text
    assert app_client.get("/releases", headers=auth(t["alice"])).json() == []


@pytest.mark.parametrize("change", ["revoke_tokens", "disable_user", "drop_member", "raw_sql_revocation"])
def test_every_governance_change_bites_on_the_next_query(app_client, gov_world, change):
    """Token, user and permit answers are cached between queries; a committed change of any
    of them, by the service or by anything else writing the tables, is seen at once."""
    t = gov_world.tokens
    for _ in range(3):  # warm: later lookups are answered from the cache
        assert _query(app_client, t["bob"], "SELECT count(*) FROM register_visit").status_code == 200
    gov = app_client.hdp_app.state.service.governance
    assert gov._tokens.hits >= 2 and gov._permits.hits >= 2
    with session_scope(gov_world.url) as s:
        if change == "revoke_tokens":
            service.revoke_tokens(s, user_name="bob")
        elif change == "disable_user":
            service.disable_user(s, name="bob", actor="admin")
        elif change == "drop_member":  # an operator's direct SQL: no service code involved
            from sqlalchemy import text

            s.execute(
                text("UPDATE gov_permit SET users = :u WHERE id = :i"),
                {"u": '["alice"]', "i": gov_world.permit.id},
            )
        else:
            from sqlalchemy import text

            s.execute(
                text("UPDATE gov_permit SET revoked_at = :t WHERE id = :i"),
                {"t": datetime.now(UTC).replace(tzinfo=None), "i": gov_world.permit.id},
            )
    r = _query(app_client, t["bob"], "SELECT count(*) FROM register_visit")
    assert r.status_code in (401, 403), r.text
    if change in ("drop_member", "raw_sql_revocation"):
        assert r.json()["error"] == "permit.none"


def test_refused_after_expiry(app_client, gov_world):
    t = gov_world.tokens
    assert _query(app_client, t["bob"], "SELECT count(*) FROM register_visit").status_code == 200
    svc = app_client.hdp_app.state.service
    expires = gov_world.permit.expires_at
    svc.clock = lambda: expires + timedelta(seconds=1)
    r = _query(app_client, t["bob"], "SELECT count(*) FROM register_visit")
    assert r.status_code == 403 and r.json()["error"] == "permit.none"
    svc.clock = lambda: expires - timedelta(seconds=1)  # still in force one second before
    assert _query(app_client, t["bob"], "SELECT count(*) FROM register_visit").status_code == 200


def test_consent_withdrawal_removes_person_from_next_query(app_client, gov_world):
    t = gov_world.tokens
    assert _count_person(app_client, t["alice"], 7) > 0
    assert _count_person(app_client, t["alice"], 8) > 0
    total_before = _query(
        app_client, t["alice"], "SELECT count(DISTINCT person_id) FROM register_visit"
    ).json()
    # A general withdrawal recorded straight through governance.consent (another process would do the same).
    with session_scope(gov_world.url) as s:
        gov_consent.withdraw_consent(
            s, consent_key=consent_key(7, SEED), source_ref="form-2026-17", actor="s-ndr"
        )
    assert _count_person(app_client, t["alice"], 7) == 0
    assert _count_person(app_client, t["bob"], 7) == 0
    assert _count_person(app_client, t["alice"], 8) > 0  # nobody else is touched
    total_after = _query(
        app_client, t["alice"], "SELECT count(DISTINCT person_id) FROM register_visit"
    ).json()
    assert total_after["rows"][0][0] == total_before["rows"][0][0] - 1

    # An opt-out of another purpose does not exclude; one of this purpose does.
    with session_scope(gov_world.url) as s:
        gov_consent.record_consent(
            s,
            consent_key=consent_key(8, SEED),
            scope="public_health",
            choice="opt_out",
            source_ref="form-2026-18",
            actor="s-ndr",
        )
    assert _count_person(app_client, t["alice"], 8) > 0
    with session_scope(gov_world.url) as s:
        gov_consent.record_consent(
            s,
            consent_key=consent_key(8, SEED),
            scope="scientific_research",
            choice="opt_out",
            source_ref="form-2026-19",
            actor="s-ndr",
        )
    assert _count_person(app_client, t["alice"], 8) == 0


def test_governance_router_is_mounted_by_create_app(app_client, gov_world):
    """The /governance routes run in the same app, on the same store, with the same tokens."""
    t = gov_world.tokens
    assert "scientific_research" in app_client.get("/governance/purposes").json()["purposes"]
    permits = app_client.get("/governance/permits", headers=auth(t["bob"]))
    assert permits.status_code == 200 and [p["release_id"] for p in permits.json()] == [RELEASE]
    assert app_client.get("/governance/permits").status_code == 401
    # A steward records a withdrawal over HTTP; the next query through the same app excludes the person.
    assert _count_person(app_client, t["alice"], 11) > 0
    r = app_client.post(
        "/governance/consent/withdraw",
        headers=auth(t["bob"]),
        json={"consent_key": consent_key(11, SEED), "source_ref": "form-2026-20"},
    )
    assert r.status_code == 403  # researchers do not keep consent records
    r = app_client.post(
        "/governance/consent/withdraw",
        headers=auth(t["s-ndr"]),
        json={"consent_key": consent_key(11, SEED), "source_ref": "form-2026-20"},
    )
    assert r.status_code == 201, r.text
    assert _count_person(app_client, t["alice"], 11) == 0
