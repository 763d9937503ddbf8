"""Re-identification: two distinct approvers with the role, requester resolves once, audited."""

from __future__ import annotations

import json

import pytest
from pseudonymise.raw_fixtures import ANNA, build_ndr, build_region

from hdp.audit import AuditLog
from pipelines.pseudonymise import pseudonymise_holder
from pipelines.reid import ReidError, decide_reid, get_reid, request_reid, resolve_reid
from pipelines.release_identity import release_person_map

ROLES = {
    "alice": {"steward"},
    "bob": {"reid_approver"},
    "carol": {"steward"},
    "mallory": {"researcher"},
    "rita": {"researcher"},
}


def has_role(user: str, role: str) -> bool:
    return role in ROLES.get(user, set())


@pytest.fixture
def release(hdp_home, kek_env):
    build_ndr(hdp_home)
    build_region(hdp_home)
    pseudonymise_holder("ndr", settings=hdp_home)
    pseudonymise_holder("region_uppsala", settings=hdp_home)
    m = release_person_map(
        holder_ids=("ndr", "region_uppsala"), release_domain="release:rel-00007", settings=hdp_home
    )
    ndr_anna = _holder_pid(hdp_home, ANNA)
    anna = next(r["release_person_id"] for r in m.to_pylist() if r["person_id"] == ndr_anna)
    return hdp_home, anna


def _holder_pid(settings, pnr):
    import duckdb

    con = duckdb.connect(str(settings.raw_db("ndr")), read_only=True)
    try:
        return con.execute("SELECT person_id FROM person_link WHERE personnummer = ?", [pnr]).fetchall()[0][0]
    finally:
        con.close()


def _new(settings, pseudonym, requester="rita"):
    return request_reid(
        release_id="rel-00007",
        pseudonym=pseudonym,
        requester=requester,
        justification="INC-2026-001 patient-safety finding",
        settings=settings,
    )


def test_two_approvals_then_requester_resolves_once(release):
    s, anna = release
    rid = _new(s, anna)
    decide_reid(request_id=rid, actor="alice", decision="approve", has_role=has_role, settings=s)
    with pytest.raises(ReidError, match="2 different approvers"):
        resolve_reid(request_id=rid, actor="rita", has_role=has_role, settings=s)
    assert (
        decide_reid(request_id=rid, actor="bob", decision="approve", has_role=has_role, settings=s).status
        == "approved"
    )
    with pytest.raises(ReidError, match="only the requester"):
        resolve_reid(request_id=rid, actor="alice", has_role=has_role, settings=s)
    assert resolve_reid(request_id=rid, actor="rita", has_role=has_role, settings=s) == ANNA
    with pytest.raises(ReidError, match="already resolved"):
        resolve_reid(request_id=rid, actor="rita", has_role=has_role, settings=s)
    log = AuditLog(s.audit_dir / "audit.jsonl")
    assert log.verify().ok
    kinds = [e["kind"] for e in log.entries() if e["kind"].startswith("reid.")]
    assert kinds == [
        "reid.requested",
        "reid.approved",
        "reid.refused",
        "reid.approved",
        "reid.refused",
        "reid.resolved",
        "reid.refused",
    ]
    text = (s.audit_dir / "audit.jsonl").read_text()
    assert ANNA not in text and ANNA[2:] not in text and anna not in text
    for path in s.home.rglob("*"):  # the identifier appears nowhere new outside the raw zone
        if path.is_file() and s.restricted not in path.parents:
            assert ANNA.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("second", ["alice", "rita", "mallory"])
def test_refused_without_two_distinct_qualified_approvers(release, second):
    s, anna = release
    rid = _new(s, anna)
    decide_reid(request_id=rid, actor="alice", decision="approve", has_role=has_role, settings=s)
    with pytest.raises(ReidError):
        decide_reid(request_id=rid, actor=second, decision="approve", has_role=has_role, settings=s)
    assert get_reid(rid, settings=s).status == "pending"
    with pytest.raises(ReidError):
        resolve_reid(request_id=rid, actor="rita", has_role=has_role, settings=s)


def test_requester_cannot_approve_own_request(release):
    s, anna = release
    rid = _new(s, anna, requester="alice")
    with pytest.raises(ReidError, match="own request"):
        decide_reid(request_id=rid, actor="alice", decision="approve", has_role=has_role, settings=s)


def test_role_revoked_after_approval_blocks_resolve(release):
    s, anna = release
    rid = _new(s, anna)
    decide_reid(request_id=rid, actor="alice", decision="approve", has_role=has_role, settings=s)
    decide_reid(request_id=rid, actor="bob", decision="approve", has_role=has_role, settings=s)
    with pytest.raises(ReidError):
        resolve_reid(
            request_id=rid, actor="rita", has_role=lambda u, r: u != "bob" and has_role(u, r), settings=s
        )


def test_rejection_is_final(release):
    s, anna = release
    rid = _new(s, anna)
    decide_reid(request_id=rid, actor="alice", decision="reject", has_role=has_role, settings=s)
    with pytest.raises(ReidError, match="rejected"):
        decide_reid(request_id=rid, actor="bob", decision="approve", has_role=has_role, settings=s)


def test_request_validation(release):
    s, anna = release
    with pytest.raises(ReidError, match="no such release"):
        request_reid(release_id="rel-99999", pseudonym=anna, requester="rita", justification="x", settings=s)
    with pytest.raises(ReidError, match="64-character"):
        request_reid(release_id="rel-00007", pseudonym=ANNA, requester="rita", justification="x", settings=s)


def test_unknown_pseudonym_resolves_to_nothing(release):
    s, _ = release
    rid = _new(s, "0" * 64)
    decide_reid(request_id=rid, actor="alice", decision="approve", has_role=has_role, settings=s)
    decide_reid(request_id=rid, actor="bob", decision="approve", has_role=has_role, settings=s)
    with pytest.raises(ReidError, match="not a person"):
        resolve_reid(request_id=rid, actor="rita", has_role=has_role, settings=s)
    last = list(AuditLog(s.audit_dir / "audit.jsonl").entries())[-1]
    assert last["kind"] == "reid.resolved" and last["found"] is False
    assert json.dumps(last).count("0" * 64) == 0
