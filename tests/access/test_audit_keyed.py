"""The keyed audit log against someone who can write the audit folder but not read the key store.

Every attack below is carried out with plain file access to the audit folder, as an attacker on
the host would: re-chaining the whole log, cutting it and rewriting the anchor, putting back an
anchor saved earlier, deleting log and anchor, moving entries between logs. Each must fail
``verify``; the checkpoints (a second place, outside the folder) catch what the folder alone
cannot.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat

import pytest

from hdp.audit import (
    AuditKey,
    AuditKeyError,
    AuditLog,
    Checkpoint,
    KeyRing,
    anchor_mac,
    entry_hash,
    entry_mac,
)


class MemoryCheckpoints:
    """A checkpoint store the attacker cannot reach (the governance store in production)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], str] = {}

    def record(self, log_id: str, seq: int, entry_hash: str) -> None:
        self.rows.setdefault((log_id, seq), entry_hash)

    def load(self, log_id: str) -> list[Checkpoint]:
        return [Checkpoint(s, h) for (lid, s), h in sorted(self.rows.items()) if lid == log_id]


def _key() -> AuditKey:
    return AuditKey("k-" + secrets.token_hex(8), secrets.token_bytes(32))


def _log(tmp_path, key, n=6, checkpoints=None, every=100, name="access.jsonl") -> AuditLog:
    log = AuditLog(
        tmp_path / "audit" / name, fsync=False, key=key, checkpoints=checkpoints, checkpoint_every=every
    )
    for i in range(n):
        log.append({"event": "access.query", "user": f"u{i % 2}", "rows": i, "decision": "allowed"})
    return log


def _entries(log):
    return [json.loads(x) for x in log.path.read_text().splitlines()]


def _write(log, entries):
    log.path.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))


def _write_anchor(log, head: dict):
    log.anchor_path.write_bytes(json.dumps(head).encode().ljust(256))


def test_keyed_log_verifies_and_names_its_key(tmp_path):
    key = _key()
    log = _log(tmp_path, key)
    r = log.verify()
    assert r.ok and r.keyed and r.entries == 6
    assert {e["mac_key"] for e in _entries(log)} == {key.key_id}
    anchor = json.loads(log.anchor_path.read_text())
    assert anchor["mac_key"] == key.key_id and len(anchor["mac"]) == 64


def test_full_rechain_without_the_key_fails(tmp_path):
    """Edit an entry, then recompute every hash and link and rewrite the anchor, as a plain
    SHA-256 chain would allow: the keyed hashes cannot be recomputed without the key."""
    log = _log(tmp_path, _key())
    entries = _entries(log)
    entries[2]["rows"] = 10_000
    prev = "0" * 64
    for e in entries:  # as unkeyed entries...
        e.pop("mac_key")
        e["prev"] = prev
        e["hash"] = prev = entry_hash(e)
    _write(log, entries)
    _write_anchor(log, {"seq": 6, "hash": prev})
    r = log.verify()
    assert not r.ok, r
    assert "not keyed" in r.reason


@pytest.mark.parametrize("claimed", ["real", "own"])
def test_full_rechain_with_a_key_of_ones_own_fails(tmp_path, claimed):
    """...or keyed with a key the attacker made up, under the real key's id or a new one."""
    real = _key()
    log = _log(tmp_path, real)
    fake = AuditKey(real.key_id if claimed == "real" else "k-attacker", secrets.token_bytes(32))
    entries = _entries(log)
    entries[2]["rows"] = 10_000
    prev = "0" * 64
    for e in entries:
        e["prev"] = prev
        e["mac_key"] = fake.key_id
        e["hash"] = prev = entry_mac(fake, log.log_id, e)
    _write(log, entries)
    _write_anchor(
        log, {"seq": 6, "hash": prev, "mac_key": fake.key_id, "mac": anchor_mac(fake, log.log_id, 6, prev)}
    )
    r = log.verify()
    assert not r.ok and r.first_bad_seq == 1, r


def test_truncation_with_a_rewritten_anchor_fails(tmp_path):
    """Cut the last two entries and write an anchor that names the new last entry."""
    log = _log(tmp_path, _key())
    entries = _entries(log)[:4]
    _write(log, entries)
    _write_anchor(log, {"seq": 4, "hash": entries[-1]["hash"]})  # no MAC: the key is needed
    r = log.verify()
    assert not r.ok and r.first_bad_seq == 4 and "anchor" in r.reason, r
    _write_anchor(
        log,
        {
            "seq": 4,
            "hash": entries[-1]["hash"],
            "mac_key": entries[-1]["mac_key"],
            "mac": hmac.new(b"guess", b"x", hashlib.sha256).hexdigest(),
        },
    )
    r = log.verify()
    assert not r.ok and r.first_bad_seq == 4, r


def test_anchor_saved_earlier_and_put_back_is_caught_by_a_checkpoint(tmp_path):
    """The one anchor an attacker can produce is an old one they copied. After cutting the
    log back to it, only a second place can tell: the checkpoint store."""
    cps = MemoryCheckpoints()
    log = _log(tmp_path, _key(), n=4, checkpoints=cps, every=5)
    saved_log, saved_anchor = log.path.read_bytes(), log.anchor_path.read_bytes()
    for i in range(4):  # seq 5..8; a checkpoint at seq 5
        log.append({"event": "access.query", "user": "u", "rows": i, "decision": "allowed"})
    assert [c.seq for c in cps.load(log.log_id)] == [5]
    log.path.write_bytes(saved_log)
    log.anchor_path.write_bytes(saved_anchor)
    assert AuditLog(log.path, key=log._ring).verify().ok  # the folder alone is consistent...
    r = log.verify()  # ...the checkpoint is not
    assert not r.ok and r.first_bad_seq == 5 and "checkpoint" in r.reason, r


def test_deleted_and_regenerated_log_fails_against_the_checkpoint(tmp_path):
    """Log and anchor deleted; the service writes on from seq 1 with the real key. Every
    entry verifies, yet the checkpoints show another history."""
    cps = MemoryCheckpoints()
    key = _key()
    log = _log(tmp_path, key, n=12, checkpoints=cps, every=5)
    log.path.unlink()
    log.anchor_path.unlink()
    assert not log.verify().ok  # nothing there, but checkpoints at 5 and 10
    writer = _log(tmp_path, key, n=11, checkpoints=cps, every=5)  # grows past both checkpoints
    r = writer.verify()
    assert not r.ok and r.first_bad_seq == 5 and "checkpoint" in r.reason, r


def test_entries_cannot_move_between_logs(tmp_path):
    key = _key()
    a = _log(tmp_path, key, name="audit.jsonl")
    b = AuditLog(tmp_path / "audit" / "access.jsonl", fsync=False, key=key)
    b.path.write_bytes(a.path.read_bytes())
    b.anchor_path.write_bytes(a.anchor_path.read_bytes())
    assert not b.verify().ok


def test_unkeyed_entry_after_keyed_ones_fails_and_is_never_written(tmp_path):
    key = _key()
    log = _log(tmp_path, key)
    with pytest.raises(AuditKeyError):
        AuditLog(log.path, key=None).append({"event": "x"})
    entries = _entries(log)
    extra = {"seq": 7, "ts": "2026-01-01T00:00:00+00:00", "event": "x", "prev": entries[-1]["hash"]}
    extra["hash"] = entry_hash(extra)
    _write(log, [*entries, extra])
    r = log.verify()
    assert not r.ok and r.first_bad_seq == 7, r


def test_keyed_log_is_always_verified_keyed(tmp_path):
    log = _log(tmp_path, _key())
    r = AuditLog(log.path, key=None).verify()
    assert not r.ok and "needs the audit key" in r.reason


def test_old_unkeyed_log_needs_a_seal_and_is_then_protected(tmp_path):
    old = _log(tmp_path, None)
    key = _key()
    assert old.verify().ok  # an unkeyed log, checked unkeyed, as before
    r = AuditLog(old.path, key=key).verify()
    assert not r.ok and "not keyed" in r.reason  # with the key, an unkeyed head does not pass
    AuditLog(old.path, key=key).append({"event": "audit.sealed", "sealed_entries": 6})
    assert AuditLog(old.path, key=key).verify().ok
    entries = _entries(old)  # re-chain the unkeyed prefix: the seal's keyed link breaks
    entries[0]["rows"] = 99
    prev = "0" * 64
    for e in entries[:6]:
        e["prev"] = prev
        e["hash"] = prev = entry_hash(e)
    _write(old, entries)
    r = AuditLog(old.path, key=key).verify()
    assert not r.ok and r.first_bad_seq == 7, r


def test_rotated_key_still_verifies_older_entries(tmp_path):
    v1, v2 = _key(), _key()
    log = _log(tmp_path, v1, n=3)
    AuditLog(log.path, key=KeyRing(v2, {v1.key_id: v1}.get)).append({"event": "after rotation"})
    assert AuditLog(log.path, key=KeyRing(v2, {v1.key_id: v1}.get)).verify().ok
    r = AuditLog(log.path, key=v2).verify()  # without the old version
    assert not r.ok and r.first_bad_seq == 1


def test_refused_text_digest_is_keyed(tmp_path):
    key = _key()
    log = AuditLog(tmp_path / "a.jsonl", key=key)
    text = "SELECT * FROM patient WHERE person_id = '19121212-1212'"
    assert log.text_mac(text) == log.text_mac(text) != hashlib.sha256(text.encode()).hexdigest()
    assert AuditLog(tmp_path / "b.jsonl", key=_key()).text_mac(text) != log.text_mac(text)
    assert AuditLog(tmp_path / "c.jsonl", key=None).text_mac(text) is None


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_audit_files_are_owner_only_whatever_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        log = _log(tmp_path / "home", _key(), n=2)
    finally:
        os.umask(old)
    assert stat.S_IMODE(log.path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.anchor_path.stat().st_mode) == 0o600


def test_an_older_world_readable_log_is_narrowed(tmp_path):
    (tmp_path / "audit").mkdir(mode=0o755)
    path = tmp_path / "audit" / "a.jsonl"
    path.write_text("")
    path.chmod(0o644)
    AuditLog(path, key=_key(), fsync=False).append({"event": "x"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_checkpoint_failure_never_loses_the_entry(tmp_path):
    class Down:
        calls = 0

        def record(self, *a):
            Down.calls += 1
            raise ConnectionError("store down")

        def load(self, log_id):
            raise ConnectionError("store down")

    log = _log(tmp_path, _key(), n=7, checkpoints=Down(), every=5)
    assert len(_entries(log)) == 7 and Down.calls == 1  # failed at 5; retried at most once a second
    r = log.verify()
    assert not r.ok and "checkpoint store could not be read" in r.reason  # fail closed


def test_close_checkpoints_the_head(tmp_path):
    cps = MemoryCheckpoints()
    log = _log(tmp_path, _key(), n=7, checkpoints=cps, every=5)
    log.close()
    assert [c.seq for c in cps.load(log.log_id)] == [5, 7]
    assert log.verify().ok and log.verify().checkpoints == 2


def test_home_logs_get_the_key_store_audit_key_and_it_never_lies_in_the_audit_folder(hdp_home):
    from hdp import audit
    from privacy import audit_key
    from privacy.keys import KeyStore

    before = audit.key_source()
    audit_key.configure()
    umask = os.umask(0)  # the widest: files and folders must still be the owner's only
    try:
        log = AuditLog(hdp_home.audit_dir / "audit.jsonl")
        log.append({"event": "x"})
        assert log.keyed and log.verify().ok
        elsewhere = AuditLog(hdp_home.home / "elsewhere" / "a.jsonl")
        elsewhere.append({"event": "x"})
        assert not elsewhere.keyed
    finally:
        os.umask(umask)
        audit.set_key_source(before)
        audit_key.forget()
    secret = KeyStore(hdp_home).active_key("audit", create=False).secret
    for f in hdp_home.audit_dir.rglob("*"):
        data = f.read_bytes()
        assert secret not in data and secret.hex().encode() not in data, f
    assert secret not in (hdp_home.keys_dir / "keystore.json").read_bytes()  # stored wrapped only
    for f in (hdp_home.keys_dir / "keystore.json", log.path, log.anchor_path):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    for d in (hdp_home.keys_dir, hdp_home.audit_dir):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
