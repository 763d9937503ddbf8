"""Audit-log head checkpoints in the governance store, and ``hdp audit verify|seal`` using them.

The attacker here can write the audit folder (delete, regenerate, restore old copies) but not
the governance store or the key store.
"""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner
from govtest_helpers import request_fields
from sqlalchemy import select

from governance import service
from governance.auditing import StoreCheckpoints
from governance.models import AuditCheckpointRow
from governance.store import session_scope


@pytest.fixture
def keyed(hdp_home):
    """This process keys $HDP_HOME/audit logs with the key store's audit key (as an edge does)."""
    from hdp import audit
    from privacy import audit_key

    before = audit.key_source()
    audit_key.configure()
    yield hdp_home
    audit.set_key_source(before)
    audit_key.forget()


def _file(url, n=1):
    for i in range(n):
        with session_scope(url) as s:
            rid = service.file_request(s, applicant="alice", **request_fields(project=f"Project number {i}"))
            service.submit_request(s, request_id=rid, actor="alice")


def _rows(url):
    with session_scope(url, readonly=True) as s:
        return [
            (r.log_id, r.seq, r.entry_hash)
            for r in s.scalars(select(AuditCheckpointRow).order_by(AuditCheckpointRow.seq))
        ]


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def _cli(*args):
    from edge.cli import main

    return CliRunner().invoke(main, ["audit", *args], catch_exceptions=False)


def test_each_governance_commit_checkpoints_its_audit_head(seeded, keyed):
    _file(seeded, 2)
    log = keyed.audit_dir / "audit.jsonl"
    last = _lines(log)[-1]
    assert "mac_key" in last
    rows = _rows(seeded)
    assert rows[-1] == ("audit.jsonl", last["seq"], last["hash"])
    entries = len(_lines(log))
    with pytest.raises(RuntimeError), session_scope(seeded) as s:  # rolled back: no entry, no checkpoint
        service.file_request(s, applicant="alice", **request_fields())
        raise RuntimeError("abandoned")
    assert _rows(seeded) == rows and len(_lines(log)) == entries


def test_store_checkpoints_keep_the_first_record_of_a_seq(seeded, caplog):
    cps = StoreCheckpoints(seeded)
    cps.record("access.jsonl", 100, "a" * 64)
    cps.record("access.jsonl", 100, "a" * 64)  # a second worker at shutdown: same head
    with caplog.at_level(logging.ERROR, logger="governance.auditing"):
        cps.record("access.jsonl", 100, "b" * 64)  # a replaced log: the evidence is kept
    assert "replaced" in caplog.text
    cps.record("access.jsonl", 200, "c" * 64)
    assert [(c.seq, c.hash) for c in cps.load("access.jsonl")] == [(100, "a" * 64), (200, "c" * 64)]
    assert cps.load("other.jsonl") == []
    assert "access.jsonl" in cps.log_ids()


def test_cli_verify_passes_an_intact_home_and_fails_a_deleted_and_regenerated_log(seeded, keyed, monkeypatch):
    monkeypatch.setenv("HDP_GOVERNANCE_URL", seeded)
    from hdp.settings import get_settings

    get_settings.cache_clear()
    _file(seeded, 3)
    r = _cli("verify")
    assert r.exit_code == 0, r.output
    assert "OK    audit.jsonl" in r.output and "keyed" in r.output
    log = keyed.audit_dir / "audit.jsonl"
    log.unlink()
    log.with_name("audit.jsonl.head").unlink()
    r = _cli("verify")  # nothing left in the folder, but the store remembers the log
    assert r.exit_code == 1 and "FAIL  audit.jsonl" in r.output and "checkpoint" in r.output, r.output
    _file(seeded, 4)  # the platform writes on: a fresh, validly keyed log from seq 1
    assert _lines(log)[0]["seq"] == 1
    r = _cli("verify")
    assert r.exit_code == 1, r.output
    assert "FAIL  audit.jsonl" in r.output and "checkpoint" in r.output
    r = _cli("verify", "--no-checkpoints")  # the folder alone cannot tell
    assert r.exit_code == 0, r.output


def test_cli_verify_needs_the_checkpoint_table_or_an_explicit_opt_out(keyed, monkeypatch, tmp_path):
    from hdp.audit import AuditLog
    from hdp.settings import get_settings

    monkeypatch.setenv("HDP_GOVERNANCE_URL", f"sqlite:///{tmp_path / 'none.sqlite'}")
    get_settings.cache_clear()
    AuditLog(keyed.audit_dir / "access.jsonl").append({"event": "x"})
    r = _cli("verify")
    assert r.exit_code != 0 and "checkpoints table" in r.output
    assert not (tmp_path / "none.sqlite").exists()  # verifying created no store
    r = _cli("verify", "--no-checkpoints")
    assert r.exit_code == 0 and "OK    access.jsonl" in r.output


def test_cli_seal_keys_an_old_unkeyed_log(seeded, hdp_home, monkeypatch):
    from hdp import audit
    from hdp.audit import AuditLog

    monkeypatch.setenv("HDP_GOVERNANCE_URL", seeded)
    from hdp.settings import get_settings

    get_settings.cache_clear()
    before = audit.key_source()
    try:
        old = AuditLog(hdp_home.audit_dir / "access.jsonl", key=None)  # written before audit keys
        for i in range(3):
            old.append({"event": "access.query", "rows": i})
        r = _cli("verify", "--path", str(old.path))
        assert r.exit_code == 1 and "not keyed" in r.output
        r = _cli("seal", "--path", str(old.path))
        assert r.exit_code == 0 and "sealed access.jsonl: 3 entries" in r.output, r.output
        r = _cli("verify", "--path", str(old.path))
        assert r.exit_code == 0 and "1 checkpoints agree" in r.output, r.output
        r = _cli("seal", "--path", str(old.path))
        assert "nothing to seal" in r.output
        r = _cli("report", "--path", str(old.path))  # the follow-up report reads keyed logs as before
        assert r.exit_code == 0 and "requests: 3" in r.output, r.output
    finally:
        audit.set_key_source(before)


def test_access_app_checkpoints_every_n_and_at_shutdown(seeded, keyed, monkeypatch):
    """The access layer's log (high volume) is checkpointed every N entries and when the
    server stops, not on every request."""
    from fastapi.testclient import TestClient

    from access.app import create_app
    from access.service import AccessSettings

    monkeypatch.setenv("HDP_GOVERNANCE_URL", seeded)
    from hdp.settings import get_settings

    get_settings.cache_clear()
    settings = AccessSettings(
        releases_dir=keyed.releases_dir, audit_path=keyed.audit_dir / "access.jsonl", audit_fsync=False
    )
    app = create_app(settings)  # no governance given: the real store, and its checkpoints
    app.state.service.audit.checkpoint_every = 5
    with TestClient(app) as client:
        for _ in range(7):
            client.get("/health")
        assert [r[1] for r in _rows(seeded) if r[0] == "access.jsonl"] == [5]
    app.state.service.close()
    assert [r[1] for r in _rows(seeded) if r[0] == "access.jsonl"] == [5, 7]  # at shutdown
    assert app.state.service.audit.verify().ok
