"""The hash-chained audit log: tampering is detected and named; no identifier gets in."""

from __future__ import annotations

import json

import pytest
from access_support import auth
from hypothesis import given, settings
from hypothesis import strategies as st

from hdp.audit import AuditLog, build_report, render_report


def _log(tmp_path, n=6) -> AuditLog:
    log = AuditLog(tmp_path / "audit" / "a.jsonl", fsync=False)
    for i in range(n):
        log.append({"event": "access.query", "user": f"u{i % 2}", "rows": i, "decision": "allowed"})
    return log


def _lines(log):
    return log.path.read_text().splitlines()


def _write(log, lines):
    log.path.write_text("\n".join(lines) + "\n")


def test_intact_log_verifies(tmp_path):
    r = _log(tmp_path).verify()
    assert r.ok and r.entries == 6


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 5), st.sampled_from(["edit", "remove", "swap", "truncate", "garble"]))
def test_any_tampering_names_first_bad_entry(tmp_path_factory, index, kind):
    log = _log(tmp_path_factory.mktemp("t"))
    lines = _lines(log)
    if kind == "edit":
        e = json.loads(lines[index])
        e["rows"] = 10_000
        lines[index] = json.dumps(e, sort_keys=True)
        expected = index + 1
    elif kind == "remove":
        del lines[index]
        expected = index + 1
    elif kind == "swap":
        j = index + 1 if index < 5 else index - 1
        lines[index], lines[j] = lines[j], lines[index]
        expected = min(index, j) + 1
    elif kind == "truncate":
        lines = lines[:index]
        expected = index + 1
    else:
        lines[index] = lines[index][:-5]
        expected = index + 1
    _write(log, lines)
    r = log.verify()
    assert not r.ok
    assert r.first_bad_seq == expected, r


def test_rehashed_edit_still_caught_by_anchor(tmp_path):
    """Even an editor who recomputes every hash after the last entry is caught at the head."""
    from hdp.audit import entry_hash

    log = _log(tmp_path)
    lines = [json.loads(x) for x in _lines(log)]
    lines[-1]["rows"] = 999
    lines[-1]["hash"] = entry_hash(lines[-1])
    _write(log, [json.dumps(e, sort_keys=True) for e in lines])
    r = log.verify()
    assert not r.ok and r.first_bad_seq == 6


def test_missing_anchor_fails(tmp_path):
    log = _log(tmp_path)
    log.anchor_path.unlink()
    assert not log.verify().ok


def test_verify_during_concurrent_appends_never_false_alarms(tmp_path):
    """Appends from another process-like writer while an operator verifies: every verify sees
    the log and its anchor as of one moment (no 'tail removed' between the two reads)."""
    import threading

    log = AuditLog(tmp_path / "a.jsonl")
    log.append({"event": "start"})
    stop = threading.Event()

    def writer() -> None:
        writer_log = AuditLog(tmp_path / "a.jsonl")  # its own instance, as another worker has
        while not stop.is_set():
            writer_log.append({"event": "access.query", "rows": 1})

    t = threading.Thread(target=writer)
    t.start()
    try:
        results = [log.verify() for _ in range(200)]
    finally:
        stop.set()
        t.join()
    assert all(r.ok for r in results), next(r for r in results if not r.ok)
    assert results[-1].entries > results[0].entries  # the writer really ran meanwhile


def test_anchor_rewritten_in_place_stays_parseable(tmp_path):
    log = AuditLog(tmp_path / "a.jsonl")
    for i in range(1, 12):  # seq grows from 1 to 2 digits: the record keeps its width
        log.append({"event": "e", "i": i})
    raw = (tmp_path / "a.jsonl.head").read_bytes()
    assert json.loads(raw)["seq"] == 11 and len(raw) == 256
    assert log.verify().ok


def test_query_literals_never_reach_the_log(world):
    from access.ports import User

    alice = User("alice", frozenset({"researcher"}))
    pnr = "19121212-1212"
    world.service.query(
        alice,
        "r_rec",
        f"SELECT count(*) FROM register_visit WHERE person_id = '{pnr}' "
        "AND hba1c_mmol_mol > 73.5 -- patient 191212121212",
    )
    from access.errors import Refusal

    with pytest.raises(Refusal):
        world.service.query(alice, "r_rec", f"SELECT * FROM read_csv('/x/{pnr}.csv')")
    text = world.settings.audit_path.read_text()
    for secret in (pnr, "191212121212", "73.5", "/x/"):
        assert secret not in text
    entries = [json.loads(x) for x in text.splitlines()]
    assert (
        entries[-2]["query_masked"]
        == "SELECT COUNT(*) FROM register_visit WHERE person_id = ? AND hba1c_mmol_mol > ?"
    )
    assert entries[-2]["decision"] == "allowed" and len(entries[-2]["result_sha256"]) == 64
    assert entries[-1]["decision"] == "refused" and entries[-1]["reason"] == "sql.table_function"


def test_result_hash_matches_body(client, world):
    r = client.post(
        "/releases/r_rec/query", json={"sql": "SELECT sex FROM patient LIMIT 50"}, headers=auth(world.alice)
    )
    import hashlib

    assert hashlib.sha256(r.content).hexdigest() == r.headers["X-HDP-Result-SHA256"]
    last = json.loads(world.settings.audit_path.read_text().splitlines()[-1])
    assert last["result_sha256"] == r.headers["X-HDP-Result-SHA256"]
    assert last["permit_id"] == 1 and last["rows"] == int(r.headers["X-HDP-Rows"])


def test_operator_report_flags_unusual_access(tmp_path):
    log = AuditLog(tmp_path / "a.jsonl", fsync=False)
    day = "2026-03-02T10:00:00+00:00"  # Monday, 11:00 in Stockholm
    night = "2026-03-03T01:30:00+00:00"
    for _ in range(3):
        log.append({"ts": day, "event": "access.query", "user": "calm", "decision": "allowed", "rows": 100})
    log.append({"ts": day, "event": "access.query", "user": "greedy", "decision": "allowed", "rows": 900_000})
    log.append({"ts": night, "event": "access.query", "user": "owl", "decision": "allowed", "rows": 10})
    for _ in range(4):
        log.append(
            {
                "ts": day,
                "event": "access.query",
                "user": "prober",
                "decision": "refused",
                "reason": "sql.table_function",
                "rows": 0,
            }
        )
    log.append({"ts": day, "event": "access.auth", "decision": "refused", "reason": "auth.invalid_token"})
    rep = build_report(log.entries())
    kinds = {(f["kind"], f["user"]) for f in rep["findings"]}
    assert ("volume", "greedy") in kinds
    assert ("off_hours", "owl") in kinds
    assert ("refusals", "prober") in kinds
    assert ("authentication", "(unauthenticated)") in kinds
    assert not any(u == "calm" for _, u in kinds)
    assert "greedy" in render_report(rep)
