"""The audit log's key: domain ``audit`` of the key store, handed to ``hdp.audit`` at the edges.

``hdp.audit`` imports nothing above ``hdp``, so it cannot open the key store itself. Each
process's edge installs :func:`home_key_source` once (:func:`configure`): ``edge.cli`` (every
``hdp`` command), ``access.app.create_app`` (each API worker) and the DAG file (Airflow
workers). A log under the data home's ``audit/`` folder then gets that home's audit key, loaded
on first use and kept for the life of the process (never per append); a log anywhere else is
unkeyed unless its writer passes a key (``AuditLog(key=key_ring())``).

The key is an ordinary data key: generated from the CSPRNG, stored wrapped under the
key-encryption key (outside ``$HDP_HOME``), never in the audit folder, never logged.
``hdp keys rotate-domain audit`` starts a new version; entries keep naming the version that
keyed them (``mac_key``) and verify with it, so old entries stay verifiable.
"""

from __future__ import annotations

import threading
from pathlib import Path

from hdp import audit
from hdp.settings import Settings, get_settings
from privacy.keys import KeyStore, KeyStoreError

AUDIT_DOMAIN = "audit"

_rings: dict[str, audit.KeyRing] = {}
_lock = threading.Lock()


def key_ring(settings: Settings | None = None) -> audit.KeyRing:
    """The audit key ring of a data home: the active key, and every older version by id."""
    store = KeyStore(settings or get_settings())
    active = store.active_key(AUDIT_DOMAIN)

    def lookup(key_id: str) -> audit.AuditKey | None:
        try:
            dk = store.key(key_id)
        except KeyStoreError:
            return None
        # Only a key of the audit domain can vouch for an entry, never a pseudonym key.
        return audit.AuditKey(dk.info.key_id, dk.secret) if dk.info.domain == AUDIT_DOMAIN else None

    return audit.KeyRing(audit.AuditKey(active.info.key_id, active.secret), lookup)


def _within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def home_key_source(log_path: Path) -> audit.KeyRing | None:
    """The key ring for a log under the current data home's audit folder, else None."""
    settings = get_settings()
    if not _within(log_path, settings.audit_dir):
        return None
    cache_key = str(settings.keys_dir)
    with _lock:
        ring = _rings.get(cache_key)
        if ring is None:
            ring = _rings[cache_key] = key_ring(settings)
        return ring


def configure() -> None:
    """Install :func:`home_key_source` as this process's audit key source (idempotent)."""
    audit.set_key_source(home_key_source)


def forget() -> None:
    """Drop cached keys (tests; after rotating the audit key in a long-running process)."""
    with _lock:
        _rings.clear()
