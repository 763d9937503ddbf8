"""Key store: envelope encryption, KEK sources, fail-closed, rotation, no key material on disk."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hdp.settings import get_settings
from privacy.domains import consent_key, pseudonymiser
from privacy.keys import KekError, KeyStore, KeyStoreError, LocalAesGcmKms, load_kek
from privacy.pseudonym import Pseudonymiser


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.fixture
def kek(monkeypatch):
    raw = secrets.token_bytes(32)
    monkeypatch.setenv("HDP_KEK", _b64(raw))
    monkeypatch.delenv("HDP_KEK_FILE", raising=False)
    return raw


def test_dev_kek_generated_outside_home_with_0600(hdp_home, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("HDP_KEK", raising=False)
    monkeypatch.delenv("HDP_KEK_FILE", raising=False)
    with caplog.at_level(logging.WARNING):
        first = load_kek(hdp_home)
    path = tmp_path / "kek" / "kek"
    assert path.exists() and (path.stat().st_mode & 0o777) == 0o600
    assert "generated a new key-encryption key" in caplog.text
    assert _b64(first) not in caplog.text
    assert load_kek(hdp_home) == first


def test_production_without_kek_is_an_error(hdp_home, monkeypatch):
    monkeypatch.delenv("HDP_KEK", raising=False)
    monkeypatch.delenv("HDP_KEK_FILE", raising=False)
    monkeypatch.setenv("HDP_ENV", "production")
    monkeypatch.setenv("HDP_GOVERNANCE_URL", "postgresql://x/y")
    get_settings.cache_clear()
    with pytest.raises(KekError, match="HDP_KEK"):
        load_kek(get_settings())


def test_kek_file_inside_home_refused(hdp_home, monkeypatch):
    monkeypatch.delenv("HDP_KEK", raising=False)
    inside = hdp_home.home / "kek"
    inside.write_text(_b64(secrets.token_bytes(32)))
    monkeypatch.setenv("HDP_KEK_FILE", str(inside))
    with pytest.raises(KekError, match="inside HDP_HOME"):
        load_kek(hdp_home)


def test_kek_file_outside_home_accepted(hdp_home, tmp_path, monkeypatch):
    monkeypatch.delenv("HDP_KEK", raising=False)
    raw = secrets.token_bytes(32)
    f = tmp_path / "kekfile"
    f.write_text(_b64(raw))
    f.chmod(0o600)
    monkeypatch.setenv("HDP_KEK_FILE", str(f))
    assert load_kek(hdp_home) == raw


@pytest.mark.parametrize("bad", ["not base64!!", _b64(b"short")])
def test_malformed_kek_rejected_without_echo(hdp_home, monkeypatch, bad):
    monkeypatch.setenv("HDP_KEK", bad)
    with pytest.raises(KekError) as exc:
        load_kek(hdp_home)
    assert bad not in str(exc.value)


def test_wrong_kek_fails_closed(hdp_home, kek, monkeypatch):
    KeyStore(hdp_home).active_key("holder:ndr")
    monkeypatch.setenv("HDP_KEK", _b64(secrets.token_bytes(32)))
    with pytest.raises(KekError, match="wrong key|wrapped under"):
        KeyStore(hdp_home).active_key("holder:ndr")
    with pytest.raises(KekError):
        KeyStore(hdp_home).active_key("holder:new_domain")  # no new key under a foreign KEK either


def test_tampered_entry_fails_closed(hdp_home, kek):
    store = KeyStore(hdp_home)
    a = store.active_key("holder:ndr")
    store.active_key("holder:region_skane")
    doc = json.loads(store.path.read_text())
    # swap wrapped keys between entries: the associated data must catch it
    doc["keys"][0]["wrapped"], doc["keys"][1]["wrapped"] = (
        doc["keys"][1]["wrapped"],
        doc["keys"][0]["wrapped"],
    )
    store.path.write_text(json.dumps(doc))
    with pytest.raises(KekError):
        KeyStore(hdp_home).key(a.info.key_id)


def test_no_key_material_on_disk_or_in_logs(hdp_home, kek, caplog):
    with caplog.at_level(logging.DEBUG):
        store = KeyStore(hdp_home)
        keys = [store.active_key(d) for d in ("holder:ndr", "release:rel-00001", "consent")]
        store.rotate_domain("holder:ndr")
        store.rotate_kek(LocalAesGcmKms(secrets.token_bytes(32)))
    secrets_ = [k.secret for k in keys] + [kek]
    needles = [s for k in secrets_ for s in (k, k.hex().encode(), _b64(k).encode())]
    for path in hdp_home.home.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert not any(n in blob for n in needles), path
    assert not any(n.decode("latin-1") in caplog.text for n in needles)
    assert all(k.secret.hex() not in repr(k) for k in keys)
    assert (store.path.stat().st_mode & 0o777) == 0o600


def test_kek_rotation_keeps_every_pseudonym(hdp_home, kek, monkeypatch):
    domains = ("holder:ndr", "holder:region_uppsala", "release:rel-00002", "consent")
    before = {d: pseudonymiser(d, settings=hdp_home).one("195001011234") for d in domains}
    store = KeyStore(hdp_home)
    new = secrets.token_bytes(32)
    assert store.rotate_kek(LocalAesGcmKms(new)) == len(domains)
    monkeypatch.setenv("HDP_KEK", _b64(new))
    after = {d: pseudonymiser(d, settings=hdp_home).one("195001011234") for d in domains}
    assert after == before
    monkeypatch.setenv("HDP_KEK", _b64(kek))  # the old KEK no longer opens the store
    with pytest.raises(KekError):
        pseudonymiser("holder:ndr", settings=hdp_home)


def test_kek_rotation_with_wrong_current_kek_changes_nothing(hdp_home, kek, monkeypatch):
    KeyStore(hdp_home).active_key("holder:ndr")
    before = KeyStore(hdp_home).path.read_bytes()
    monkeypatch.setenv("HDP_KEK", _b64(secrets.token_bytes(32)))
    with pytest.raises(KekError):
        KeyStore(hdp_home).rotate_kek(LocalAesGcmKms(secrets.token_bytes(32)))
    assert KeyStore(hdp_home).path.read_bytes() == before


def test_domain_rotation_changes_pseudonyms_and_keeps_old_version(hdp_home, kek):
    store = KeyStore(hdp_home)
    old = store.active_key("holder:ndr")
    p_old = pseudonymiser("holder:ndr", settings=hdp_home).one("195001011234")
    info = store.rotate_domain("holder:ndr")
    assert info.version == 2
    assert pseudonymiser("holder:ndr", settings=hdp_home).one("195001011234") != p_old
    assert store.key(old.info.key_id).secret == old.secret
    listed = {(k.domain, k.version, k.status) for k in store.list()}
    assert listed == {("holder:ndr", 1, "retired"), ("holder:ndr", 2, "active")}


def test_domains_are_independent_and_stable(hdp_home, kek):
    a = pseudonymiser("holder:ndr", settings=hdp_home)
    b = pseudonymiser("holder:region_skane", settings=hdp_home)
    assert a.one("195001011234") != b.one("195001011234")
    assert pseudonymiser("holder:ndr", settings=hdp_home).one("195001011234") == a.one("195001011234")


def test_unknown_domain_refused(hdp_home, kek):
    with pytest.raises(KeyStoreError):
        KeyStore(hdp_home).active_key("holder:../etc")


def test_consent_key_accepts_any_form(hdp_home, kek):
    assert consent_key("811218-9876", settings=hdp_home) == consent_key("198112189876", settings=hdp_home)
    assert len(consent_key("19811218-9876", settings=hdp_home)) == 64


def test_pseudonymiser_cannot_be_pickled():
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(Pseudonymiser(b"k" * 32, key_id="k-1"))


@given(st.binary(min_size=32, max_size=32), st.lists(st.one_of(st.none(), st.text(max_size=20)), max_size=30))
@settings(max_examples=100, deadline=None)
def test_fast_hmac_equals_stdlib(key, values):
    p = Pseudonymiser(key, key_id="k-test")
    expected = [None if v is None else hmac.new(key, v.encode(), hashlib.sha256).hexdigest() for v in values]
    assert p.many(pa.array(values, pa.string())).to_pylist() == expected
    assert [None if v is None else p.one(v) for v in values] == expected


def test_env_not_leaked(kek):
    assert os.environ["HDP_KEK"] == _b64(kek)
