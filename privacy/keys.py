"""Encrypted key store for the pseudonym domains (envelope encryption).

Every pseudonym domain (``holder:<id>``, ``release:<id>``, ``consent``), and the audit log
(``audit``), has its own 256-bit HMAC key ("data key"), generated from the operating system's
CSPRNG. Data keys are stored only *wrapped*: AES-256-GCM under a key-encryption key (KEK) that never lives under
``$HDP_HOME``. The wrapped keys sit in ``restricted/keys/keystore.json`` with key ids,
versions and domains in clear (they are not secret); the associated data of each wrap binds
the ciphertext to its domain, key id and version, so a wrapped key moved to another entry
fails to unwrap.

The KEK comes from, in order:

1. ``HDP_KEK``: base64 of 32 bytes (for secret managers that inject environment variables);
2. ``HDP_KEK_FILE``: a file outside ``$HDP_HOME`` holding base64 of 32 bytes;
3. development only: ``$HDP_KEK_DIR/kek`` (default ``~/.config/hdp/kek``), generated on first
   use with mode 0600. In production (``HDP_ENV=production``) a missing KEK is an error.

The :class:`Kms` protocol (``wrap``/``unwrap``) is the seam for an external KMS (Vault transit,
a cloud KMS, an HSM): pass another implementation to :class:`KeyStore`. Nothing here logs,
prints or raises with key material; :class:`DataKey` hides its bytes from ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hdp.settings import Settings, get_settings, open_private

log = logging.getLogger(__name__)

STORE_FORMAT = 1
STORE_NAME = "keystore.json"
KEY_BYTES = 32
NONCE_BYTES = 12

ACTIVE = "active"
RETIRED = "retired"
#: A federation party's own key pairs, as 32-byte seeds: the Ed25519 key that signs its messages
#: and the X25519 key that opens payloads sealed for it.
FEDERATION_DOMAINS = ("federation:sign", "federation:seal")


class KeyStoreError(RuntimeError):
    """The key store cannot be used (missing, corrupt, or misconfigured)."""


class KekError(KeyStoreError):
    """No usable key-encryption key, or the one given does not open the store."""


# --------------------------------------------------------------------------------------
# KEK sources
# --------------------------------------------------------------------------------------


def _decode_kek(text: str, origin: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KekError(f"{origin} is not valid base64 (expected base64 of 32 random bytes)") from None
    if len(raw) != KEY_BYTES:
        raise KekError(f"{origin} must decode to {KEY_BYTES} bytes, not {len(raw)}")
    return raw


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def read_kek_file(path: Path, settings: Settings, origin: str) -> bytes:
    """The key-encryption key in file ``path``: outside the data home, not readable by others in
    production, base64 of 32 bytes. ``origin`` names the file's source in errors."""
    if _is_within(path, settings.home):
        raise KekError(
            f"{origin} ({path}) lies inside HDP_HOME; keep the key-encryption key outside the data home"
        )
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise KekError(f"{origin} ({path}) does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KekError(f"{origin} ({path}) cannot be read: {type(exc).__name__}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        if settings.is_production:
            raise KekError(f"{origin} ({path}) is readable by group/others; chmod 600 it")
        log.warning("key-encryption key file %s is readable by group/others; chmod 600 it", path)
    return _decode_kek(text, origin)


def load_kek(settings: Settings | None = None) -> bytes:
    """The key-encryption key from the environment or a file outside ``$HDP_HOME``.

    ``settings`` (default: the current ones) gives the data home and the environment; the key's
    source (``HDP_KEK``, ``HDP_KEK_FILE``, ``HDP_KEK_DIR``) is always this process's current
    setting, read at each call.
    """
    settings = settings or get_settings()
    source = get_settings()
    if source.kek is not None and source.kek.get_secret_value():
        return _decode_kek(source.kek.get_secret_value(), "HDP_KEK")
    if source.kek_file is not None:
        return read_kek_file(source.kek_file, settings, "HDP_KEK_FILE")
    if settings.is_production:
        raise KekError("HDP_ENV=production needs a key-encryption key: set HDP_KEK or HDP_KEK_FILE")
    path = source.kek_dir / "kek"
    if path.exists():
        return read_kek_file(path, settings, "development KEK file")
    if _is_within(path, settings.home):
        raise KekError(f"development KEK location {path} lies inside HDP_HOME; set HDP_KEK_DIR elsewhere")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    kek = secrets.token_bytes(KEY_BYTES)
    # O_EXCL: two processes racing here must not both write a key; the loser reads the winner's.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_kek_file(path, settings, "development KEK file")
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(base64.b64encode(kek).decode() + "\n")
    log.warning(
        "development: generated a new key-encryption key at %s (set HDP_KEK or HDP_KEK_FILE in production)",
        path,
    )
    return kek


# --------------------------------------------------------------------------------------
# KMS seam
# --------------------------------------------------------------------------------------


@runtime_checkable
class Kms(Protocol):
    """Wraps and unwraps data keys. ``key_id`` names the KEK (not secret)."""

    @property
    def key_id(self) -> str: ...

    def wrap(self, plaintext: bytes, *, aad: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes: ...


def kek_fingerprint(kek: bytes) -> str:
    """A public id of a KEK: a keyed hash, reveals nothing usable about the key."""
    return "kek-" + hmac.new(kek, b"hdp kek fingerprint v1", hashlib.sha256).hexdigest()[:16]


class LocalAesGcmKms:
    """AES-256-GCM with a local KEK; the default :class:`Kms`."""

    def __init__(self, kek: bytes) -> None:
        if len(kek) != KEY_BYTES:
            raise KekError(f"key-encryption key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(kek)
        self._key_id = kek_fingerprint(kek)

    def __repr__(self) -> str:
        return f"LocalAesGcmKms(key_id={self._key_id!r})"

    @property
    def key_id(self) -> str:
        return self._key_id

    def wrap(self, plaintext: bytes, *, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], aad)
        except InvalidTag:
            raise KekError(
                "a data key did not decrypt: wrong key-encryption key, or the key store was altered"
            ) from None


def default_kms(settings: Settings | None = None) -> Kms:
    return LocalAesGcmKms(load_kek(settings))


# --------------------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyInfo:
    """Public metadata of one data key (safe to print)."""

    key_id: str
    domain: str
    version: int
    status: str
    created_at: str


@dataclass(frozen=True)
class DataKey:
    """An unwrapped data key. ``repr`` never shows the bytes."""

    info: KeyInfo
    secret: bytes = field(repr=False)


def _aad(domain: str, key_id: str, version: int) -> bytes:
    return f"hdp-data-key|v{STORE_FORMAT}|{domain}|{key_id}|{version}".encode()


def validate_domain(domain: str) -> str:
    kind, _, name = domain.partition(":")
    if domain in ("consent", "audit", "ledger", *FEDERATION_DOMAINS) or (
        kind in ("holder", "release") and name and all(c.isalnum() or c in "_-." for c in name)
    ):
        # "audit": the audit log's MAC key (privacy/audit_key.py); "ledger": the query
        # ledger's digests of query texts (access/ledger.py); "federation:*": this party's
        # Ed25519 signing seed and X25519 sealing key (federation/identity.py)
        return domain
    raise KeyStoreError(
        f"unknown key domain {domain!r}; expected 'holder:<id>', 'release:<id>', 'consent', "
        "'audit', 'ledger', 'federation:sign' or 'federation:seal'"
    )


class KeyStore:
    """The wrapped data keys in ``restricted/keys/``; one JSON document, replaced atomically."""

    def __init__(self, settings: Settings | None = None, *, kms: Kms | None = None) -> None:
        self.settings = settings or get_settings()
        self._kms = kms
        self.dir = self.settings.keys_dir
        self.path = self.dir / STORE_NAME

    @property
    def kms(self) -> Kms:
        if self._kms is None:
            self._kms = default_kms(self.settings)
        return self._kms

    # -- file handling ----------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.settings.ensure_restricted(self.dir)  # 0700 up to restricted/, whatever the umask
        with os.fdopen(
            open_private(self.dir / "keystore.lock", os.O_RDWR | os.O_CREAT | os.O_APPEND), "a+"
        ) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"format": STORE_FORMAT, "kek_id": None, "keys": []}
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise KeyStoreError(f"key store {self.path} is unreadable ({type(exc).__name__})") from None
        if not isinstance(doc, dict) or doc.get("format") != STORE_FORMAT:
            found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise KeyStoreError(f"key store {self.path} has format {found!r}, expected {STORE_FORMAT}")
        return doc

    def _write(self, doc: dict[str, Any]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def _check_kek(self, doc: dict[str, Any]) -> None:
        stored = doc.get("kek_id")
        if stored is not None and doc["keys"] and stored != self.kms.key_id:
            raise KekError(
                f"the key store is wrapped under {stored}, but the key-encryption key supplied is "
                f"{self.kms.key_id}; set HDP_KEK/HDP_KEK_FILE to the right key"
            )

    # -- queries ------------------------------------------------------------
    def list(self) -> list[KeyInfo]:
        """Metadata of every stored key (no key material, no KEK needed)."""
        return [self._info(e) for e in self._read()["keys"]]

    @staticmethod
    def _info(e: dict[str, Any]) -> KeyInfo:
        return KeyInfo(
            key_id=e["key_id"],
            domain=e["domain"],
            version=int(e["version"]),
            status=e["status"],
            created_at=e["created_at"],
        )

    def _unwrap(self, e: dict[str, Any]) -> DataKey:
        wrapped = base64.b64decode(e["wrapped"])
        secret = self.kms.unwrap(wrapped, aad=_aad(e["domain"], e["key_id"], int(e["version"])))
        return DataKey(info=self._info(e), secret=secret)

    def active_key(self, domain: str, *, create: bool = True) -> DataKey:
        """The current key of ``domain``; generated (and stored wrapped) on first use."""
        validate_domain(domain)
        with self._locked():
            doc = self._read()
            self._check_kek(doc)
            current = self._active_entry(doc, domain)
            if current is None:
                if not create:
                    raise KeyStoreError(f"no key for domain {domain!r}")
                current = self._new_entry(doc, domain, version=1)
                self._write(doc)
                log.info("generated data key %s for domain %s", current["key_id"], domain)
        return self._unwrap(current)

    def install_key(self, domain: str, secret: bytes) -> KeyInfo:
        """Store ``secret`` as the key of ``domain``, received from another party (a project key
        the nodes of one federated release share). Idempotent for the same secret; a domain that
        already has a different active key is refused, so a key is never silently replaced."""
        validate_domain(domain)
        if len(secret) != KEY_BYTES:
            raise KeyStoreError(f"a data key is {KEY_BYTES} bytes")
        with self._locked():
            doc = self._read()
            self._check_kek(doc)
            current = self._active_entry(doc, domain)
            if current is not None:
                if hmac.compare_digest(self._unwrap(current).secret, secret):
                    return self._info(current)
                raise KeyStoreError(f"domain {domain!r} already has a different key")
            entry = self._new_entry(doc, domain, version=1, secret=secret)
            self._write(doc)
            log.info("installed data key %s for domain %s", entry["key_id"], domain)
        return self._info(entry)

    def key(self, key_id: str) -> DataKey:
        """A specific key version (active or retired), for re-identification after rotation."""
        for e in self._read()["keys"]:
            if e["key_id"] == key_id:
                return self._unwrap(e)
        raise KeyStoreError(f"no key with id {key_id!r}")

    @staticmethod
    def _active_entry(doc: dict[str, Any], domain: str) -> dict[str, Any] | None:
        active = [e for e in doc["keys"] if e["domain"] == domain and e["status"] == ACTIVE]
        return max(active, key=lambda e: int(e["version"])) if active else None

    def _new_entry(
        self, doc: dict[str, Any], domain: str, *, version: int, secret: bytes | None = None
    ) -> dict[str, Any]:
        key_id = "k-" + secrets.token_hex(8)
        secret = secrets.token_bytes(KEY_BYTES) if secret is None else secret
        entry = {
            "key_id": key_id,
            "domain": domain,
            "version": version,
            "status": ACTIVE,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "wrapped": base64.b64encode(self.kms.wrap(secret, aad=_aad(domain, key_id, version))).decode(),
        }
        doc["keys"].append(entry)
        doc["kek_id"] = self.kms.key_id
        return entry

    # -- rotation -----------------------------------------------------------
    def rotate_kek(self, new_kms: Kms) -> int:
        """Re-wrap every data key under ``new_kms``; pseudonyms do not change.

        All keys are unwrapped with the current KEK first, so a wrong current KEK fails
        before anything is written. Returns how many keys were re-wrapped.
        """
        with self._locked():
            doc = self._read()
            self._check_kek(doc)
            rewrapped = []
            for e in doc["keys"]:
                dk = self._unwrap(e)
                aad = _aad(e["domain"], e["key_id"], int(e["version"]))
                rewrapped.append(
                    {**e, "wrapped": base64.b64encode(new_kms.wrap(dk.secret, aad=aad)).decode()}
                )
            # prove the new wraps open before replacing the store
            for e in rewrapped:
                new_kms.unwrap(
                    base64.b64decode(e["wrapped"]), aad=_aad(e["domain"], e["key_id"], int(e["version"]))
                )
            doc = {**doc, "keys": rewrapped, "kek_id": new_kms.key_id}
            self._write(doc)
        self._kms = new_kms
        log.info("re-wrapped %d data keys under %s", len(rewrapped), new_kms.key_id)
        return len(rewrapped)

    def rotate_domain(self, domain: str) -> KeyInfo:
        """Start a new key version for ``domain``; the old one is kept, marked retired.

        This *changes every pseudonym* of the domain: see README "Rotating a domain key".
        """
        validate_domain(domain)
        with self._locked():
            doc = self._read()
            self._check_kek(doc)
            current = self._active_entry(doc, domain)
            if current is not None:
                self._unwrap(current)  # fail closed on a wrong KEK before changing anything
                current["status"] = RETIRED
            version = 1 + max((int(e["version"]) for e in doc["keys"] if e["domain"] == domain), default=0)
            entry = self._new_entry(doc, domain, version=version)
            self._write(doc)
        log.info("domain %s rotated to key %s (version %d)", domain, entry["key_id"], version)
        return self._info(entry)
