"""Append-only, hash-chained audit log (JSON lines).

Each entry carries ``seq``, ``prev`` (the previous entry's hash) and ``hash`` (SHA-256 over the
canonical JSON of the entry without ``hash``), so editing, removing or reordering any entry
breaks the chain from that point on. Entries hold who/what/when/ids/counts only, never an
identifier or a health value: callers pass ids (request, release, permit, check) and counts.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str = ""


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Append one event; returns the stored entry (with seq, ts, prev, hash)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as fh:
            # An exclusive lock makes read-last-then-append atomic across processes.
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.seek(0)
                last = None
                for line in fh:
                    if line.strip():
                        last = line
                prev = json.loads(last) if last else None
                entry = {
                    "seq": (prev["seq"] + 1) if prev else 1,
                    "ts": event.pop("ts", None) or datetime.now(UTC).isoformat(),
                    **event,
                    "prev": prev["hash"] if prev else GENESIS,
                }
                entry["hash"] = entry_hash(entry)
                fh.seek(0, 2)
                fh.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
                fh.flush()
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return entry

    def entries(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)

    def verify(self) -> VerifyResult:
        """Walk the chain; report the first entry whose hash, link or sequence is wrong."""
        prev_hash, expected_seq, count = GENESIS, 1, 0
        with open(self.path, encoding="utf-8") if self.path.exists() else _empty() as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    return VerifyResult(False, count, expected_seq, f"line {lineno} is not JSON")
                seq = entry.get("seq")
                if seq != expected_seq:
                    return VerifyResult(False, count, expected_seq, f"expected seq {expected_seq}, found {seq}")
                if entry.get("prev") != prev_hash:
                    return VerifyResult(False, count, seq, "link to previous entry broken")
                if entry.get("hash") != entry_hash(entry):
                    return VerifyResult(False, count, seq, "entry content does not match its hash")
                prev_hash, expected_seq, count = entry["hash"], expected_seq + 1, count + 1
        return VerifyResult(True, count)


class _empty:
    def __enter__(self) -> list[str]:
        return []

    def __exit__(self, *exc: object) -> None:
        return None
