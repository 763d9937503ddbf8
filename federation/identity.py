"""Who is who in the federation: each party's key pairs and the directory of public keys.

Every party (the hub, each node) has two key pairs, generated at run time from the operating
system's CSPRNG and kept only as wrapped seeds in its own key store (``privacy.keys``, domains
``federation:sign`` and ``federation:seal``):

* an **Ed25519** key that signs every message it sends (``federation.messages``);
* an **X25519** key that opens payloads sealed for it (``federation.sealing``): release parts
  for the secure processing environment (the hub), project keys for the other nodes in scope.

Its public halves are its *public identity*, a small JSON document that is safe to print,
copy and commit to a deployment repository. The hub's operator registers each node's public
identity (``hdp hub register-node``); each node is configured with the hub's. A fingerprint
(SHA-256 of both public keys) lets two operators compare an identity over the phone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nacl.public import PrivateKey as SealPrivateKey
from nacl.public import PublicKey as SealPublicKey

from hdp.settings import Settings
from privacy.keys import KeyStore

HUB = "hub"
NODE_PREFIX = "node:"
_PARTY = re.compile(r"^(hub|node:[a-z0-9][a-z0-9_\-]{0,62})$")
IDENTITY_FORMAT = 1


class IdentityError(ValueError):
    """A public identity that cannot be used (malformed, wrong length, unknown party)."""


def node_party(holder_id: str) -> str:
    """The party id of the node of data holder ``holder_id``."""
    return checked_party(NODE_PREFIX + holder_id)


def holder_of(party: str) -> str:
    """The data holder a node party id stands for."""
    if not party.startswith(NODE_PREFIX):
        raise IdentityError("not a node")
    return party[len(NODE_PREFIX) :]


def checked_party(party: object) -> str:
    if not isinstance(party, str) or not _PARTY.match(party):
        raise IdentityError("a party id is 'hub' or 'node:<holder id>'")
    return party


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: object, length: int, what: str) -> bytes:
    if not isinstance(text, str):
        raise IdentityError(f"{what} must be a base64url string")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise IdentityError(f"{what} is not base64url") from None
    if len(raw) != length:
        raise IdentityError(f"{what} must be {length} bytes")
    return raw


@dataclass(frozen=True)
class PublicIdentity:
    """A party's public keys: what others need to check its messages and seal payloads for it."""

    party: str
    sign_key: bytes  # Ed25519 public key, 32 bytes
    seal_key: bytes  # X25519 public key, 32 bytes

    def __post_init__(self) -> None:
        checked_party(self.party)
        if len(self.sign_key) != 32 or len(self.seal_key) != 32:
            raise IdentityError("public keys are 32 bytes each")

    @property
    def fingerprint(self) -> str:
        """SHA-256 over both public keys, grouped for reading aloud."""
        digest = hashlib.sha256(b"hdp-federation-identity|" + self.sign_key + self.seal_key).hexdigest()
        return ":".join(digest[i : i + 4] for i in range(0, 32, 4))

    def verifier(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.sign_key)

    def sealing_key(self) -> SealPublicKey:
        return SealPublicKey(self.seal_key)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": IDENTITY_FORMAT,
            "party": self.party,
            "sign_key": _b64(self.sign_key),
            "seal_key": _b64(self.seal_key),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> PublicIdentity:
        if not isinstance(doc, Mapping) or doc.get("format") != IDENTITY_FORMAT:
            raise IdentityError(f"a public identity is a JSON object with format {IDENTITY_FORMAT}")
        identity = cls(
            party=checked_party(doc.get("party")),
            sign_key=_unb64(doc.get("sign_key"), 32, "sign_key"),
            seal_key=_unb64(doc.get("seal_key"), 32, "seal_key"),
        )
        if "fingerprint" in doc and doc["fingerprint"] != identity.fingerprint:
            raise IdentityError("the fingerprint does not match the keys")
        return identity

    @classmethod
    def read(cls, path: Path) -> PublicIdentity:
        try:
            return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
        except json.JSONDecodeError:
            raise IdentityError(f"{Path(path).name} is not JSON") from None


@dataclass(frozen=True)
class PartyKeys:
    """This party's own private keys (never printed: ``repr`` hides them)."""

    party: str
    signing: Ed25519PrivateKey = field(repr=False)
    opening: SealPrivateKey = field(repr=False)

    @classmethod
    def from_seeds(cls, party: str, *, sign_seed: bytes, seal_seed: bytes) -> PartyKeys:
        return cls(
            party=checked_party(party),
            signing=Ed25519PrivateKey.from_private_bytes(sign_seed),
            opening=SealPrivateKey(seal_seed),
        )

    @classmethod
    def load(cls, party: str, settings: Settings) -> PartyKeys:
        """This party's keys from its own key store, generated on first use."""
        store = KeyStore(settings)
        return cls.from_seeds(
            party,
            sign_seed=store.active_key("federation:sign").secret,
            seal_seed=store.active_key("federation:seal").secret,
        )

    @property
    def public(self) -> PublicIdentity:
        return PublicIdentity(
            party=self.party,
            sign_key=self.signing.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
            seal_key=bytes(self.opening.public_key),
        )


class Directory:
    """The public identities a party trusts, by party id."""

    def __init__(self, identities: Iterable[PublicIdentity] = ()) -> None:
        self._by_party: dict[str, PublicIdentity] = {}
        for identity in identities:
            self.add(identity)

    def add(self, identity: PublicIdentity) -> None:
        self._by_party[identity.party] = identity

    def get(self, party: str) -> PublicIdentity | None:
        return self._by_party.get(party)

    def __contains__(self, party: object) -> bool:
        return party in self._by_party

    def parties(self) -> tuple[str, ...]:
        return tuple(sorted(self._by_party))
