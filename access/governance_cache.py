"""Answers from governance, served from memory only while provably current.

The access layer asks governance three things at every query: who holds this token, which
permit lets this user read this release, which persons are excluded for this purpose. Reading
them costs 0.5-0.8 ms each on SQLite (ORM session, several statements; the exclusion set is a
window-function query over every consent record plus shipping the set to Python: 80-100 ms
with 10,000 opt-outs), which was most of the layer's fixed cost per query.

Governance keeps *change counters* (``governance.models.CHANGE_SCOPES``, bumped by database
triggers in the same transaction as every write to the scope's tables). An answer is cached
together with

* the version of its scope read *before* the answer, in the same snapshot where the backend
  gives one (on Postgres' READ COMMITTED a write slipping between the two reads makes the
  cached version older than the answer: a spurious miss later, never a stale hit), and
* the time window in which it holds without any write: a permit from its issue to its
  expiry; an exclusion set from the moment it was computed to the next moment any consent
  record starts or ends.

It is served only if a fresh read of the version (one primary-key row) equals the cached one
and the query's time lies in the window. So a revoked token or permit, or a withdrawal,
committed by any process is seen by the very next query, exactly as without the cache. A
failing version read raises and the service refuses the query (fail closed). Refusals
(unknown token, no permit) are never cached: they always go to governance.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass(frozen=True)
class Answer(Generic[V]):
    """What a loader read: the value, the scope's version read before it, its time window."""

    value: V
    version: int
    valid_from: datetime | None = None  # None: from the beginning of time
    valid_until: datetime | None = None  # None: no end
    cacheable: bool = True

    def holds_at(self, at: datetime | None) -> bool:
        if at is None:
            return self.valid_from is None and self.valid_until is None
        return (self.valid_from is None or self.valid_from <= at) and (
            self.valid_until is None or at < self.valid_until
        )


class VersionedCache:
    """``key -> Answer``, least recently used out beyond ``capacity``."""

    def __init__(self, version: Callable[[], int], *, capacity: int = 4096) -> None:
        self._version = version
        self._entries: OrderedDict[Hashable, Answer] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, load: Callable[[], Answer[V]], *, at: datetime | None = None) -> V:
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry.holds_at(at) and self._version() == entry.version:
            with self._lock:
                self.hits += 1
                if key in self._entries:
                    self._entries.move_to_end(key)
            return entry.value
        answer = load()
        with self._lock:
            self.misses += 1
            if answer.cacheable and answer.holds_at(at):
                current = self._entries.get(key)
                if current is None or current.version <= answer.version:  # never replace newer by older
                    self._entries[key] = answer
                    self._entries.move_to_end(key)
                    while len(self._entries) > self.capacity:
                        self._entries.popitem(last=False)
            elif not answer.cacheable:
                self._entries.pop(key, None)
        return answer.value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


__all__ = ["Answer", "VersionedCache"]
