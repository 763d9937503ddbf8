"""The federation's messages: a forged, altered, misdirected, expired or replayed message is never
believed; sealed payloads open only for their reader; identities round-trip."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation import messages, sealing
from federation.identity import Directory, IdentityError, PartyKeys, PublicIdentity, node_party
from federation.messages import MemoryNonceStore, MessageRejected, sign, verify
from privacy.keys import KeyStore, KeyStoreError

NOW = 1_800_000_000


def _party(name: str, n: int) -> PartyKeys:
    return PartyKeys.from_seeds(name, sign_seed=bytes([n]) * 32, seal_seed=bytes([n + 1]) * 32)


HUB = _party("hub", 1)
NDR = _party(node_party("ndr"), 3)
SKANE = _party(node_party("region_skane"), 5)
DIRECTORY = Directory([HUB.public, NDR.public])


def _verify(token: str, *, recipient: str = "hub", nonces=None, now: float = NOW + 1):
    return verify(
        token, recipient=recipient, sender_key=DIRECTORY.get, nonces=nonces or MemoryNonceStore(), now=now
    )


def _decision(**kw):
    kw.setdefault("recipient", "hub")
    kw.setdefault("permit", 7)
    kw.setdefault("now", NOW)
    return sign(NDR, "decision", {"decision": "approve"}, **kw)


def test_a_signed_message_is_believed_once():
    nonces = MemoryNonceStore(clock=lambda: NOW)
    token = _decision()
    message = _verify(token, nonces=nonces)
    assert (message.type, message.sender, message.permit, message.body) == (
        "decision",
        "node:ndr",
        7,
        {"decision": "approve"},
    )
    with pytest.raises(MessageRejected) as replay:
        _verify(token, nonces=nonces)
    assert replay.value.reason == "message.replayed"


def test_an_expired_message_is_refused():
    token = _decision(ttl=60)
    assert _verify(token, now=NOW + 59).permit == 7
    with pytest.raises(MessageRejected) as exc:
        _verify(token, now=NOW + 60)
    assert exc.value.reason == "message.expired"


def test_a_message_from_the_future_is_refused_beyond_the_clock_skew():
    token = _decision(now=NOW + messages.CLOCK_SKEW + 5)
    with pytest.raises(MessageRejected) as exc:
        _verify(token, now=NOW)
    assert exc.value.reason == "message.not_yet_valid"


def test_a_forged_signature_is_refused():
    # the unregistered Skåne key signs as if it were NDR's node
    forged = PartyKeys(party="node:ndr", signing=SKANE.signing, opening=SKANE.opening)
    token = sign(forged, "decision", {"decision": "approve"}, recipient="hub", permit=7, now=NOW)
    with pytest.raises(MessageRejected) as exc:
        _verify(token)
    assert exc.value.reason == "message.bad_signature"


def test_an_unregistered_sender_is_refused():
    token = sign(SKANE, "decision", {}, recipient="hub", permit=7, now=NOW)
    with pytest.raises(MessageRejected) as exc:
        _verify(token)
    assert exc.value.reason == "message.unknown_sender"


def test_a_message_for_another_party_is_refused():
    token = _decision(recipient="node:region_skane")
    with pytest.raises(MessageRejected) as exc:
        _verify(token)
    assert exc.value.reason == "message.wrong_recipient"


def test_a_node_cannot_send_what_only_the_hub_sends():
    with pytest.raises(MessageRejected):
        sign(NDR, "permit", {}, recipient="hub", permit=7)


def test_every_task_is_bound_to_a_permit():
    with pytest.raises(ValueError):
        sign(NDR, "decision", {}, recipient="hub", permit=None)
    assert _verify(sign(NDR, "poll", {}, recipient="hub", permit=None, now=NOW)).permit is None


def test_ttl_is_capped():
    with pytest.raises(ValueError):
        _decision(ttl=messages.MAX_TTL + 1)


def test_a_rejected_forgery_does_not_burn_the_real_nonce():
    nonces = MemoryNonceStore(clock=lambda: NOW)
    token = _decision()
    head, claims, sig = token.split(".")
    tampered = ".".join((head, claims, sig[:-4] + ("AAAA" if not sig.endswith("AAAA") else "BBBB")))
    with pytest.raises(MessageRejected):
        _verify(tampered, nonces=nonces)
    assert _verify(token, nonces=nonces).permit == 7


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_changing_any_byte_of_a_message_makes_it_unbelievable(data):
    token = _decision()
    position = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(
        st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    )
    if token[position] == replacement:
        return
    altered = token[:position] + replacement + token[position + 1 :]
    # a changed byte that decodes to the same bits (base64url padding bits of the last char) is
    # the same message; anything else must be refused
    try:
        same = [base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in altered.split(".")] == [
            base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in token.split(".")
        ]
    except Exception:
        same = False
    if same:
        return
    with pytest.raises(MessageRejected):
        _verify(altered)


@given(payload=st.binary(max_size=2048))
def test_sealed_payloads_open_only_for_their_reader(payload):
    sealed = sealing.seal(payload, HUB.public.sealing_key())
    assert sealing.open_sealed(sealed, HUB.opening) == payload
    with pytest.raises(sealing.SealError):
        sealing.open_sealed(sealed, NDR.opening)
    flipped = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(sealing.SealError):
        sealing.open_sealed(flipped, HUB.opening)


def test_public_identity_round_trips_and_checks_its_fingerprint():
    doc = NDR.public.to_json()
    assert PublicIdentity.from_json(doc) == NDR.public
    with pytest.raises(IdentityError):
        PublicIdentity.from_json({**doc, "fingerprint": "0000"})
    with pytest.raises(IdentityError):
        PublicIdentity.from_json({**doc, "sign_key": doc["sign_key"][:-2]})
    with pytest.raises(IdentityError):
        PublicIdentity.from_json({**doc, "party": "node:../x"})
    assert "secret" not in repr(NDR) and "signing=" not in repr(NDR)


def test_party_keys_live_in_the_key_store_and_are_stable(hdp_home):
    first = PartyKeys.load("node:ndr", hdp_home)
    again = PartyKeys.load("node:ndr", hdp_home)
    assert first.public == again.public
    domains = {k.domain for k in KeyStore(hdp_home).list()}
    assert {"federation:sign", "federation:seal"} <= domains


def test_a_received_project_key_is_installed_once_and_never_replaced(hdp_home):
    store = KeyStore(hdp_home)
    secret = bytes(range(32))
    info = store.install_key("release:fed-00001", secret)
    assert store.install_key("release:fed-00001", secret) == info
    assert store.active_key("release:fed-00001").secret == secret
    with pytest.raises(KeyStoreError):
        store.install_key("release:fed-00001", bytes(32))
    with pytest.raises(KeyStoreError):
        store.install_key("release:fed-00002", b"short")
