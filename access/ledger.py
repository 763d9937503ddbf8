"""The access layer's side of the query ledger (``governance.ledger``): turn a published
aggregate result into a ledger entry of keyed digests, and admit it against the permit's
query budget before it leaves.

``StoreLedger`` records in the governance store (shared by every worker; its digests are keyed
with the key store's ``ledger`` key, so every worker computes the same digest for the same
query). ``MemoryLedger`` keeps the same rules in memory, for tests, the benchmark and the
embedded demo (its key lives and dies with the process).

A repeated query does not touch the store: each worker remembers the (permit, fingerprint,
result) triples it has recorded, so the hot path of a researcher re-running a notebook costs
one dictionary lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import pyarrow as pa

from access.governance_adapter import ServiceGovernance
from access.grammar import AggregateQuery
from governance import ledger as gl
from governance.store import session_scope
from privacy.keys import KeyStore

#: Remembered (permit, fingerprint, result) triples per worker before the oldest are forgotten
#: (forgetting only costs one store round trip when the query comes again).
KNOWN_CAPACITY = 100_000
#: The key store domain of the ledger's digest key.
LEDGER_DOMAIN = "ledger"


class QueryLedger(Protocol):
    def digest(self, text: str) -> str: ...

    def admit(
        self, *, permit_id: int, entry: gl.LedgerEntry, asked_by: str, at: datetime
    ) -> gl.Admission: ...


def entry_for(
    query: AggregateQuery, *, digest: Callable[[str], str], table: pa.Table, summary: dict[str, Any]
) -> gl.LedgerEntry:
    """The ledger entry of one published aggregate result (no literal survives undigested).

    Its result hash is over the published cells, whatever format they were sent in.
    """

    def term(pair: tuple[str, str]) -> gl.Term:
        return gl.Term(digest("term-form\0" + pair[0]), digest("term\0" + pair[1]))

    cells = tuple(tuple(_plain(v) for v in row.values()) for row in table.to_pylist())
    result_sha256 = hashlib.sha256(json.dumps(cells, separators=(",", ":")).encode()).hexdigest()
    return gl.LedgerEntry(
        fingerprint=digest("query\0" + query.canonical),
        shape=digest("shape\0" + query.shape),
        terms=tuple(term(t) for t in query.terms),
        negates=None if query.negates is None else tuple(term(t) for t in query.negates),
        measures=tuple(m.kind for m in query.measures),
        result_sha256=result_sha256,
        cells_published=int(summary.get("published", table.num_rows)),
        cells_withheld=int(summary.get("cells", 0)) - int(summary.get("published", 0)),
        cells=cells,
    )


def default_ledger(governance: object, *, default_budget: int = gl.DEFAULT_BUDGET) -> QueryLedger:
    """The governance store's ledger when the layer talks to the store, else one in memory."""
    if isinstance(governance, ServiceGovernance):
        key = KeyStore().active_key(LEDGER_DOMAIN).secret
        return StoreLedger(governance.url, key=key, default_budget=default_budget)
    return MemoryLedger(default_budget=default_budget)


def _plain(value: object) -> object:
    """A JSON-storable value (dates as ISO text)."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


class _Digests:
    """Keyed digests of query texts (the ledger never keeps a text)."""

    _key: bytes

    def digest(self, text: str) -> str:
        return hmac.new(self._key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


class _Known:
    def __init__(self) -> None:
        self._seen: dict[tuple[int, str, str], None] = {}
        self._lock = threading.Lock()

    def __contains__(self, key: tuple[int, str, str]) -> bool:
        with self._lock:
            return key in self._seen

    def add(self, key: tuple[int, str, str]) -> None:
        with self._lock:
            self._seen[key] = None
            while len(self._seen) > KNOWN_CAPACITY:
                self._seen.pop(next(iter(self._seen)))


class StoreLedger(_Digests):
    """The ledger in the governance store at ``url``."""

    def __init__(self, url: str, *, key: bytes, default_budget: int = gl.DEFAULT_BUDGET) -> None:
        self.url = url
        self._key = key
        self.default_budget = default_budget
        self._known = _Known()

    def admit(self, *, permit_id: int, entry: gl.LedgerEntry, asked_by: str, at: datetime) -> gl.Admission:
        key = (permit_id, entry.fingerprint, entry.result_sha256)
        if key in self._known:
            return gl.Admission(True, -1, -1, new=False)  # recorded before: no store round trip
        with session_scope(self.url) as session:
            admission = gl.record_query(
                session,
                permit_id=permit_id,
                entry=entry,
                asked_by=asked_by,
                at=at,
                default_budget=self.default_budget,
            )
        if admission.admitted:
            self._known.add(key)
        return admission


class MemoryLedger(_Digests):
    """The same rules in memory (one process): for tests, the benchmark and the embedded demo."""

    def __init__(
        self, *, default_budget: int = gl.DEFAULT_BUDGET, budgets: dict[int, int] | None = None
    ) -> None:
        self._key = secrets.token_bytes(32)
        self.default_budget = default_budget
        self.budgets = dict(budgets or {})
        self.recorded: list[gl.Recorded] = []
        self._lock = threading.Lock()

    def admit(self, *, permit_id: int, entry: gl.LedgerEntry, asked_by: str, at: datetime) -> gl.Admission:
        with self._lock:
            mine = [r for r in self.recorded if r.permit_id == permit_id]
            verdict = gl.admission(
                {r.entry.fingerprint for r in mine},
                entry.fingerprint,
                self.budgets.get(permit_id, self.default_budget),
            )
            if verdict.admitted and not any(
                r.entry.fingerprint == entry.fingerprint and r.entry.result_sha256 == entry.result_sha256
                for r in mine
            ):
                self.recorded.append(gl.Recorded(len(self.recorded) + 1, permit_id, entry, asked_by, at))
            return verdict

    def follow_up(self) -> list[gl.Flag]:
        with self._lock:
            return gl.flag_relations(list(self.recorded))
