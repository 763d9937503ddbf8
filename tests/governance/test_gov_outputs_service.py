"""Output requests in the governance store (SQLite and Postgres): filing, checks, exceptions,
downloads, and the audit trail of each step."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from govtest_helpers import request_fields

from governance import airlock, service
from governance.errors import DuplicateDecision, InvalidRequest, InvalidTransition, NotFound, PermissionDenied
from governance.store import session_scope

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
J = "Meets the purpose; variables are proportionate."
C = "Checked the cells: every count above 10, no pseudonyms."
EXCEPTION = "Linkage to the cancer register is done by the register itself; it needs these rows."


def file_facts(**over):
    facts = dict(
        query_masked="SELECT sex, count(*) FROM register_visit GROUP BY sex",
        query_sha256="b" * 64,
        format="csv",
        file_name="out-1.csv",
        sha256="a" * 64,
        size_bytes=30,
        rows=2,
        columns=["sex", "n"],
        row_level=False,
        row_level_reasons=[],
    )
    facts.update(over)
    return facts


@pytest.fixture
def permit(seeded):
    """A released record-level permit (alice, member bob; holders ndr and region_uppsala) and
    two output checkers."""
    url = seeded
    with session_scope(url) as s:
        rid = service.file_request(
            s,
            applicant="alice",
            now=T0,
            **request_fields(
                output_tier="record",
                data_form="pseudonymised",
                pseudonymisation_justification="Visits of one person must be linked over time for trajectories.",
            ),
        )
        service.submit_request(s, request_id=rid, actor="alice", now=T0)
        service.create_user(s, name="oc-1", roles=["output_checker"])
        service.create_user(s, name="oc-2", roles=["output_checker"])
    for holder, steward in (("ndr", "s-ndr-1"), ("region_uppsala", "s-upp-1")):
        with session_scope(url) as s:
            service.decide(
                s,
                request_id=rid,
                holder_id=holder,
                reviewer=steward,
                decision="approve",
                justification=J,
                now=T0,
            )
    with session_scope(url) as s:
        p = service.record_release(
            s, request_id=rid, release_id="rel_out_1", manifest_sha256="c" * 64, now=T0
        )
    return url, p


def _file(url, permit_id, requester="alice", **over):
    with session_scope(url) as s:
        return service.file_output_request(
            s,
            permit_id=permit_id,
            requester=requester,
            title="Visits by sex",
            context="Two cells, both above 100 persons; no pseudonyms.",
            **file_facts(**over),
        )


def _check(url, oid, checker, decision="approve"):
    with session_scope(url) as s:
        return service.check_output(s, output_id=oid, checker=checker, decision=decision, comment=C)


def _audit(hdp_home):
    path = hdp_home.audit_dir / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_checkers_then_download_audited(permit, hdp_home):
    url, p = permit
    o = _file(url, p.id)
    assert (o.status, o.round, o.release_id, o.requester) == ("submitted", 1, "rel_out_1", "alice")
    with session_scope(url) as s, pytest.raises(InvalidTransition) as err:
        service.record_output_download(s, output_id=o.id, actor="alice", sha256=o.sha256)
    assert err.value.code == "output.not_approved"
    with session_scope(url) as s:
        assert [x.id for x in service.output_check_queue(s, checker="oc-1")] == [o.id]
        assert service.output_check_queue(s, checker="alice") == []
        assert service.output_check_queue(s, checker="bob") == []  # a member checks nothing of the project
        assert [x.id for x in service.output_check_queue(s, checker="s-ndr-1")] == [o.id]  # steward in scope
        assert service.output_check_queue(s, checker="s-ore-1") == []  # steward of a holder not in scope
    assert _check(url, o.id, "oc-1").status == "under_review"
    with session_scope(url) as s:
        assert service.output_check_queue(s, checker="oc-1") == []
    with pytest.raises(DuplicateDecision):
        _check(url, o.id, "oc-1")
    for who in ("alice", "bob", "carol", "s-ore-1"):
        with pytest.raises(PermissionDenied):
            _check(url, o.id, who)
    assert _check(url, o.id, "s-ndr-1").status == "approved"
    for who in ("bob", "oc-1"):
        with session_scope(url) as s, pytest.raises(PermissionDenied):
            service.record_output_download(s, output_id=o.id, actor=who, sha256=o.sha256)
    with session_scope(url) as s, pytest.raises(InvalidTransition) as err:
        service.record_output_download(s, output_id=o.id, actor="alice", sha256="e" * 64)
    assert err.value.code == "output.integrity"
    with session_scope(url) as s:
        assert (
            service.record_output_download(s, output_id=o.id, actor="alice", sha256=o.sha256).downloads == 1
        )
    events = [e for e in _audit(hdp_home) if e["event"].startswith("governance.output")]
    assert [e["event"] for e in events] == [
        "governance.output.filed",
        "governance.output.checked",
        "governance.output.checked",
        "governance.output.downloaded",
    ]
    assert all("context" not in e and "comment" not in e for e in events)  # free text stays in the store
    # Revoking the permit stops downloads at once.
    with session_scope(url) as s:
        service.revoke_permit(
            s, request_id=p.request_id, actor="s-ndr-1", justification="Ethics approval withdrawn."
        )
    with session_scope(url) as s, pytest.raises(PermissionDenied) as err:
        service.record_output_download(s, output_id=o.id, actor="alice", sha256=o.sha256)
    assert err.value.code == "output.permit_inactive"


def test_filing_rules(permit):
    url, p = permit
    with pytest.raises(PermissionDenied):
        _file(url, p.id, requester="carol")  # not on the permit
    with pytest.raises(InvalidRequest) as err:
        _file(url, p.id, file_name="../../etc/passwd", sha256="nothex")
    assert {c for c, _ in err.value.problems} >= {"output.file_name", "output.sha256"}
    with session_scope(url) as s, pytest.raises(InvalidRequest):
        service.file_output_request(
            s, permit_id=p.id, requester="alice", title="x\u202ey", context="short", **file_facts()
        )
    with pytest.raises(NotFound):
        _file(url, 999_999)


def test_row_level_needs_a_stewards_exception(permit, hdp_home):
    url, p = permit
    with pytest.raises(PermissionDenied) as err:
        _file(url, p.id, row_level=True, row_level_reasons=["pseudonym_selected"])
    assert err.value.code == "output.row_level_needs_exception"
    for who, code in (
        ("oc-1", "exception.not_steward"),
        ("s-ore-1", "exception.not_steward"),
        ("alice", "exception.project_member"),
    ):
        with session_scope(url) as s, pytest.raises(PermissionDenied) as err:
            service.record_output_exception(s, permit_id=p.id, steward=who, justification=EXCEPTION)
        assert err.value.code == code
    with session_scope(url) as s, pytest.raises(InvalidRequest):
        service.record_output_exception(s, permit_id=p.id, steward="s-ndr-1", justification="because")
    with session_scope(url) as s:
        e = service.record_output_exception(s, permit_id=p.id, steward="s-ndr-1", justification=EXCEPTION)
    assert (e.holder_id, e.steward) == ("ndr", "s-ndr-1")
    o = _file(url, p.id, row_level=True, row_level_reasons=["pseudonym_selected"])
    assert o.row_level and o.exception_id == e.id
    _check(url, o.id, "oc-1")
    _check(url, o.id, "oc-2")
    with session_scope(url) as s:
        service.withdraw_output_exception(s, exception_id=e.id, actor="s-upp-1")
        assert service.output_exception(s, permit_id=p.id) is None
        assert service.output_exceptions(s, permit_id=p.id)[0].withdrawn_by == "s-upp-1"
    with session_scope(url) as s, pytest.raises(PermissionDenied) as err:
        service.record_output_download(s, output_id=o.id, actor="alice", sha256=o.sha256)
    assert err.value.code == "output.exception_withdrawn"
    events = {e["event"] for e in _audit(hdp_home)}
    assert {"governance.output_exception.recorded", "governance.output_exception.withdrawn"} <= events


def test_return_resubmit_new_round_and_withdraw(permit):
    url, p = permit
    o = _file(url, p.id)
    _check(url, o.id, "oc-1")
    assert _check(url, o.id, "oc-2", "return").status == "returned"
    with session_scope(url) as s:
        o2 = service.resubmit_output_request(
            s,
            output_id=o.id,
            actor="alice",
            context="Banded by decade now; smallest cell has 31 persons.",
            replacement=file_facts(file_name="out-2.csv", sha256="f" * 64, rows=7),
        )
    assert (o2.status, o2.round, o2.sha256, o2.rows, o2.approvers) == (
        "submitted",
        2,
        "f" * 64,
        7,
        frozenset(),
    )
    assert _check(url, o.id, "oc-1").status == "under_review"  # oc-1 may check the new round
    with session_scope(url) as s:
        w = service.withdraw_output_request(s, output_id=o.id, actor="alice")
        assert w.status == "withdrawn"
        assert [x.id for x in service.list_output_requests(s, requester="alice")] == [o.id]
        assert len(service.get_output_request(s, output_id=o.id).checks) == 3


def test_rejected_is_final(permit):
    url, p = permit
    o = _file(url, p.id)
    assert _check(url, o.id, "oc-2", "reject").status == "rejected"
    with pytest.raises(InvalidTransition):
        _check(url, o.id, "oc-1")
    with session_scope(url) as s, pytest.raises(InvalidTransition):
        service.resubmit_output_request(
            s, output_id=o.id, actor="alice", context="Please look again at it now."
        )


def _together(*calls):
    """Run every call at the same moment in its own thread; results or exceptions."""
    import threading

    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def worker(i, fn):
        barrier.wait()
        try:
            results[i] = fn()
        except Exception as exc:  # asserted on below
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


@pytest.fixture
def slow_checks(monkeypatch):
    """Widen the race: a pause after the output and its checks are read, before writing."""
    import time

    real = airlock._output_value

    def slow(session, row):
        value = real(session, row)
        time.sleep(0.05)
        return value

    monkeypatch.setattr(airlock, "_output_value", slow)


def test_concurrent_checks_count_once_each(permit, slow_checks):
    from governance.errors import ConcurrencyConflict

    url, p = permit
    o = _file(url, p.id)
    first, second = _together(lambda: _check(url, o.id, "oc-1"), lambda: _check(url, o.id, "oc-2"))
    assert not isinstance(first, Exception) and not isinstance(second, Exception), (first, second)
    with session_scope(url) as s:
        final = service.get_output_request(s, output_id=o.id)
    assert final.status == "approved" and final.approvers == {"oc-1", "oc-2"} and len(final.checks) == 2
    # The same checker twice at once: one check is recorded, the other refused.
    o2 = _file(url, p.id, file_name="out-2.csv")
    results = _together(lambda: _check(url, o2.id, "oc-1"), lambda: _check(url, o2.id, "oc-1"))
    assert sum(isinstance(r, DuplicateDecision | ConcurrencyConflict) for r in results) == 1
    with session_scope(url) as s:
        assert len(service.get_output_request(s, output_id=o2.id).checks) == 1
