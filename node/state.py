"""The node agent's own memory: which hub messages it acted on, which verdicts it sent, the permits
it holds tasks for. A small SQLite file in the node's restricted zone (ids and flags only)."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from hdp.settings import make_private_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS handled (outbox_id INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS mirrored (request_id INTEGER PRIMARY KEY, hub_round INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sent (request_id INTEGER NOT NULL, what TEXT NOT NULL, PRIMARY KEY (request_id, what));
CREATE TABLE IF NOT EXISTS permit (permit_id INTEGER PRIMARY KEY, body TEXT NOT NULL, ended INTEGER NOT NULL DEFAULT 0,
                                   part_sent INTEGER NOT NULL DEFAULT 0);
"""


class NodeState:
    def __init__(self, path: Path) -> None:
        make_private_file(path)
        self._lock = threading.Lock()
        self._con = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.executescript(SCHEMA)

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        with self._lock:
            row = self._con.execute(sql, args).fetchone()
        return None if row is None else row[0]

    def _insert(self, sql: str, args: tuple[Any, ...]) -> bool:
        with self._lock:
            try:
                self._con.execute(sql, args)
            except sqlite3.IntegrityError:
                return False
        return True

    def handled(self, outbox_id: int) -> bool:
        return self._one("SELECT 1 FROM handled WHERE outbox_id = ?", (outbox_id,)) is not None

    def mark_handled(self, outbox_id: int) -> None:
        self._insert("INSERT INTO handled VALUES (?)", (outbox_id,))

    def set_hub_round(self, request_id: int, hub_round: int) -> None:
        with self._lock:
            self._con.execute("INSERT OR REPLACE INTO mirrored VALUES (?, ?)", (request_id, hub_round))

    def hub_round(self, request_id: int) -> int | None:
        value = self._one("SELECT hub_round FROM mirrored WHERE request_id = ?", (request_id,))
        return None if value is None else int(value)

    def mirrored(self) -> list[int]:
        with self._lock:
            return [r[0] for r in self._con.execute("SELECT request_id FROM mirrored ORDER BY request_id")]

    def was_sent(self, request_id: int, what: str) -> bool:
        return (
            self._one("SELECT 1 FROM sent WHERE request_id = ? AND what = ?", (request_id, what)) is not None
        )

    def mark_sent(self, request_id: int, what: str) -> bool:
        """Record that ``what`` was sent for the request; False if it already was."""
        return self._insert("INSERT INTO sent VALUES (?, ?)", (request_id, what))

    def put_permit(self, permit_id: int, body: dict[str, Any]) -> None:
        with self._lock:
            self._con.execute(
                "INSERT INTO permit (permit_id, body) VALUES (?, ?) ON CONFLICT (permit_id) DO UPDATE SET body = excluded.body",
                (permit_id, json.dumps(body)),
            )

    def permit(self, permit_id: int) -> dict[str, Any] | None:
        value = self._one("SELECT body FROM permit WHERE permit_id = ? AND ended = 0", (permit_id,))
        return None if value is None else dict(json.loads(value))

    def end_permit(self, permit_id: int) -> None:
        with self._lock:
            self._con.execute("UPDATE permit SET ended = 1 WHERE permit_id = ?", (permit_id,))

    def permit_ended(self, permit_id: int) -> bool:
        return bool(self._one("SELECT ended FROM permit WHERE permit_id = ?", (permit_id,)))

    def part_sent(self, permit_id: int) -> bool:
        return bool(self._one("SELECT part_sent FROM permit WHERE permit_id = ?", (permit_id,)))

    def mark_part_sent(self, permit_id: int) -> None:
        with self._lock:
            self._con.execute("UPDATE permit SET part_sent = 1 WHERE permit_id = ?", (permit_id,))

    def permits_without_part(self) -> list[int]:
        with self._lock:
            rows = self._con.execute(
                "SELECT permit_id FROM permit WHERE ended = 0 AND part_sent = 0 ORDER BY permit_id"
            )
            return [r[0] for r in rows]

    def record_permits(self) -> list[int]:
        """Permits in force here whose release is record level (assembled in the secure environment)."""
        with self._lock:
            rows = self._con.execute(
                "SELECT permit_id, body FROM permit WHERE ended = 0 ORDER BY permit_id"
            ).fetchall()
        return [r[0] for r in rows if json.loads(r[1]).get("output_tier") == "record"]
