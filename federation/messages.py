"""Signed, expiring, single-use messages between the hub and the nodes.

A message is a compact JWS (RFC 7515) signed with the sender's Ed25519 key (``alg: EdDSA``,
PyJWT over ``cryptography``), whose claims are:

=========== =================================================================================
``iss``     the sender's party id (``hub`` or ``node:<holder>``); the header's ``kid`` too
``aud``     the one party it is for; any other party refuses it
``typ``     the message type (:data:`MESSAGE_TYPES`)
``permit``  the application/permit id it is bound to (``null`` only for :data:`UNBOUND_TYPES`)
``iat``     when it was signed (seconds since the epoch)
``exp``     when it stops being believed: at most :data:`MAX_TTL` after ``iat``
``jti``     a 128-bit random nonce; a receiver remembers it until ``exp`` and refuses it again
``body``    the content: ids, decisions, counts, digests, never a record or an identifier
=========== =================================================================================

A forged message (wrong key, changed byte), one for another party, an expired one, one signed
too far in the future and a replayed one are all refused with a stable reason code
(:class:`MessageRejected`). Large payloads (a release part) travel beside the message, sealed
for their reader (``federation.sealing``); the message carries the SHA-256 of the sealed bytes,
so the signature covers them too.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from federation.identity import IdentityError, PartyKeys, PublicIdentity, checked_party

ALGORITHM = "EdDSA"
#: A message is believed at most this many seconds after it was signed.
MAX_TTL = 300
DEFAULT_TTL = 120
#: Bytes of a compact message at most (an aggregate answer's cells ride in the body, base64).
MAX_MESSAGE_CHARS = 96 * 1024 * 1024
#: A message signed by a clock up to this far ahead of the receiver's is still accepted.
CLOCK_SKEW = 30
#: Every message type, and who may send it.
MESSAGE_TYPES: Mapping[str, str] = {
    # node -> hub
    "poll": "node",  # "give me my messages" (the long poll's credential)
    "ack": "node",  # messages handled, by outbox id
    "catalogue": "node",  # the node's dataset summary (counts only)
    "prom_key_figures": "node",  # its holder's PROM key figures, every cell under its threshold
    "decision": "node",  # its stewards' decision on an application
    "part": "node",  # its part of a release, sealed for the secure environment
    "part_failed": "node",  # it could not build its part, with a reason code
    "aggregate_result": "node",  # its disclosure-controlled cells for a federated query
    "refusal": "node",  # it refuses a task, with a reason code
    "key_share": "node",  # a project key sealed for another node (relayed by the hub)
    "opt_out": "node",  # an opt-out sealed for another node (relayed by the hub)
    "exclusions": "node",  # project pseudonyms that left a release (consent), for the environment
    # hub -> node
    "application": "hub",  # an application in the node's scope, for its stewards
    "permit": "hub",  # a permit issued: build your part
    "revocation": "hub",  # a permit ended (revoked, expired, withdrawn)
    "aggregate_query": "hub",  # run this aggregate query on your part
    "relay": "hub",  # a key share or opt-out from another node, still sealed for you
}
#: Types that come before any permit exists, or are about the channel itself.
UNBOUND_TYPES = frozenset({"poll", "ack", "catalogue", "prom_key_figures", "opt_out", "relay"})


class MessageRejected(Exception):
    """A message that must not be believed; ``reason`` is a stable dotted code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Message:
    type: str
    sender: str
    recipient: str
    permit: int | None
    issued_at: int
    expires_at: int
    nonce: str
    body: Mapping[str, Any] = field(default_factory=dict)


class NonceStore(Protocol):
    """Remembers the nonces of believed messages until they expire."""

    def remember(self, sender: str, nonce: str, expires_at: int) -> bool:
        """Record ``nonce``; False if it was already recorded (a replay)."""
        ...


class MemoryNonceStore:
    """A process's nonce memory (tests, and single-process parties with a short life)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._seen: dict[tuple[str, str], int] = {}
        self._clock = clock

    def remember(self, sender: str, nonce: str, expires_at: int) -> bool:
        now = int(self._clock())
        for key in [k for k, exp in self._seen.items() if exp + CLOCK_SKEW < now]:
            del self._seen[key]
        if (sender, nonce) in self._seen:
            return False
        self._seen[(sender, nonce)] = expires_at
        return True


def _check_type(message_type: str, sender: str) -> None:
    role = MESSAGE_TYPES.get(message_type)
    if role is None:
        raise MessageRejected("message.unknown_type", "no such message type")
    if (role == "hub") != (sender == "hub"):
        raise MessageRejected("message.wrong_sender", f"a {message_type} message comes from the {role}")


def sign(
    keys: PartyKeys,
    message_type: str,
    body: Mapping[str, Any],
    *,
    recipient: str,
    permit: int | None,
    ttl: int = DEFAULT_TTL,
    now: float | None = None,
) -> str:
    """Sign a message from ``keys.party`` to ``recipient``; returns the compact JWS."""
    _check_type(message_type, keys.party)
    checked_party(recipient)
    if permit is None and message_type not in UNBOUND_TYPES:
        raise ValueError(f"a {message_type} message must be bound to a permit")
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"ttl must be 1..{MAX_TTL} seconds")
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": keys.party,
        "aud": recipient,
        "typ": message_type,
        "permit": permit,
        "iat": issued,
        "exp": issued + ttl,
        "jti": secrets.token_urlsafe(16),
        "body": dict(body),
    }
    return jwt.encode(claims, keys.signing, algorithm=ALGORITHM, headers={"kid": keys.party})


def verify(
    token: str,
    *,
    recipient: str,
    sender_key: Callable[[str], PublicIdentity | None],
    nonces: NonceStore,
    now: float | None = None,
) -> Message:
    """Check ``token`` completely and return its message, or raise :class:`MessageRejected`.

    Order matters: the signature is checked before any claim is believed, and the nonce is
    recorded only for a message that passed every other check (an attacker cannot burn a
    legitimate nonce with a forged copy).
    """
    if not isinstance(token, str) or token.count(".") != 2 or len(token) > MAX_MESSAGE_CHARS:
        raise MessageRejected("message.malformed", "not a compact JWS")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise MessageRejected("message.malformed", "unreadable header") from None
    if header.get("alg") != ALGORITHM:
        raise MessageRejected("message.bad_algorithm", "only EdDSA is accepted")
    try:
        sender = checked_party(header.get("kid"))
    except IdentityError:
        raise MessageRejected("message.unknown_sender", "no such party") from None
    identity = sender_key(sender)
    if identity is None:
        raise MessageRejected("message.unknown_sender", "the sender is not registered")
    public: Ed25519PublicKey = identity.verifier()
    clock = time.time() if now is None else now
    try:
        claims = jwt.decode(
            token,
            public,
            algorithms=[ALGORITHM],
            audience=recipient,
            issuer=sender,
            leeway=0,
            options={
                "require": ["iss", "aud", "iat", "exp", "jti"],
                "verify_iat": False,
                "verify_exp": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise MessageRejected("message.bad_signature", "the signature does not verify") from None
    except jwt.InvalidAudienceError:
        raise MessageRejected("message.wrong_recipient", "the message is for another party") from None
    except jwt.InvalidIssuerError:
        raise MessageRejected("message.bad_signature", "issuer and key id differ") from None
    except jwt.InvalidTokenError as exc:
        raise MessageRejected("message.malformed", type(exc).__name__) from None
    return _believe(claims, sender=sender, recipient=recipient, nonces=nonces, clock=clock)


def _believe(
    claims: Mapping[str, Any], *, sender: str, recipient: str, nonces: NonceStore, clock: float
) -> Message:
    issued, expires, nonce = claims.get("iat"), claims.get("exp"), claims.get("jti")
    message_type, permit, body = claims.get("typ"), claims.get("permit"), claims.get("body", {})
    if not (
        isinstance(issued, int) and isinstance(expires, int) and isinstance(nonce, str) and 16 <= len(nonce)
    ):
        raise MessageRejected("message.malformed", "iat, exp and jti are required")
    if not isinstance(message_type, str) or not isinstance(body, dict):
        raise MessageRejected("message.malformed", "typ and body are required")
    if permit is not None and (not isinstance(permit, int) or isinstance(permit, bool) or permit < 1):
        raise MessageRejected("message.malformed", "permit must be a positive integer")
    _check_type(message_type, sender)
    if permit is None and message_type not in UNBOUND_TYPES:
        raise MessageRejected("message.unbound", f"a {message_type} message must be bound to a permit")
    if expires - issued > MAX_TTL or expires <= issued:
        raise MessageRejected("message.ttl", f"a message lives at most {MAX_TTL} s")
    if issued > clock + CLOCK_SKEW:
        raise MessageRejected("message.not_yet_valid", "signed in the future")
    if clock >= expires:  # strict: the receiver's clock decides, skew only excuses early arrival
        raise MessageRejected("message.expired", "the message has expired")
    if not nonces.remember(sender, nonce, expires):
        raise MessageRejected("message.replayed", "this message was already received")
    return Message(
        type=message_type,
        sender=sender,
        recipient=recipient,
        permit=permit,
        issued_at=issued,
        expires_at=expires,
        nonce=nonce,
        body=body,
    )
