"""A nonce memory that survives restarts: a small SQLite file in the party's private zone.

A party that forgot its nonces on restart would believe a replayed message again while the
message has not expired; so each party keeps them on disk until ``exp``. SQLite (stdlib) is
enough: one row per believed message, pruned as they expire; WAL lets the hub's workers share it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from federation.messages import CLOCK_SKEW
from hdp.settings import make_private_file


class FileNonceStore:
    """:class:`federation.messages.NonceStore` over a SQLite file (created 0600)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        make_private_file(self.path)
        self._clock = clock
        self._lock = threading.Lock()
        self._con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS nonce (sender TEXT NOT NULL, nonce TEXT NOT NULL, "
            "expires_at INTEGER NOT NULL, PRIMARY KEY (sender, nonce))"
        )

    def remember(self, sender: str, nonce: str, expires_at: int) -> bool:
        with self._lock:
            self._con.execute("DELETE FROM nonce WHERE expires_at < ?", (int(self._clock()) - CLOCK_SKEW,))
            try:
                self._con.execute("INSERT INTO nonce VALUES (?, ?, ?)", (sender, nonce, expires_at))
            except sqlite3.IntegrityError:
                return False
            return True

    def close(self) -> None:
        self._con.close()
