"""hdp.audit takes its anchor folder and checkpoint interval from the settings, at construction."""

from __future__ import annotations

from hdp.audit import AuditLog


def test_anchor_dir_and_checkpoint_interval_come_from_the_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("HDP_AUDIT_ANCHOR_DIR", raising=False)
    monkeypatch.delenv("HDP_AUDIT_CHECKPOINT_EVERY", raising=False)
    plain = AuditLog(tmp_path / "audit" / "a.jsonl", key=None)
    assert plain.anchor_path == tmp_path / "audit" / "a.jsonl.head" and plain.checkpoint_every == 100

    monkeypatch.setenv("HDP_AUDIT_ANCHOR_DIR", str(tmp_path / "worm"))
    monkeypatch.setenv("HDP_AUDIT_CHECKPOINT_EVERY", "7")
    log = AuditLog(tmp_path / "audit" / "a.jsonl", key=None)
    assert log.anchor_path == tmp_path / "worm" / "a.jsonl.head" and log.checkpoint_every == 7
    given = AuditLog(tmp_path / "b.jsonl", tmp_path / "b.head", key=None, checkpoint_every=3)
    assert given.anchor_path == tmp_path / "b.head" and given.checkpoint_every == 3
