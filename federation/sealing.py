"""Payloads sealed for their one reader: libsodium sealed boxes (X25519 + XSalsa20-Poly1305, PyNaCl).

A release part is sealed by its node for the secure processing environment; a project key is
sealed by the node that drew it for each other node in scope. The hub relays and stores sealed
bytes it cannot open (except those sealed for itself). A sealed box is anonymous: who sealed it
is proven by the signed message that carries its SHA-256 (:func:`digest`), never by the box.
"""

from __future__ import annotations

import hashlib

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox


class SealError(Exception):
    """Sealed bytes that do not open with this key (altered, truncated, or for someone else)."""

    reason = "payload.unsealable"


def seal(payload: bytes, recipient: PublicKey) -> bytes:
    return bytes(SealedBox(recipient).encrypt(payload))


def open_sealed(sealed: bytes, key: PrivateKey) -> bytes:
    try:
        return bytes(SealedBox(key).decrypt(sealed))
    except (CryptoError, ValueError, TypeError):
        raise SealError("the payload does not open with this party's key") from None


def digest(sealed: bytes) -> str:
    """The SHA-256 a message carries to bind a sealed payload to its signature."""
    return hashlib.sha256(sealed).hexdigest()
