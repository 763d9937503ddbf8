"""The access layer's core: authenticate, authorise, sandbox, run, control disclosure, audit.

HTTP routes and the CLI are thin wrappers around ``AccessService``. Every decision fails
closed: anything that cannot be evaluated (governance down, no permit, unknown tier, no
consent link, a cell without statistics) is refused with a reason code. Every request is
appended to the hash-chained audit log, whatever the outcome, with ids, counts, the masked
query and the result hash only.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from access import aggregate, grammar
from access.auth import (
    Authenticator,
    ChainAuthenticator,
    LocalTokenAuthenticator,
    OIDCAuthenticator,
    jwks_from_url,
)
from access.engine import KEYED_SCHEMA, EngineCache, Limits, ReleaseEngine, ResultStream, release_dir
from access.errors import Forbidden, NotFound, QueryCutOff, QueryRefused, Refusal, Unauthenticated
from access.formats import MEDIA_TYPES, serialise
from access.ledger import QueryLedger, default_ledger, entry_for
from access.outputs import check_direct as check_export  # the airlock: record-level exports need checking
from access.ports import AGGREGATE, RECORD, Governance, Permit, User
from access.sandbox import MAX_SQL_LENGTH, ValidatedQuery, validate
from governance.ledger import DEFAULT_BUDGET
from hdp import settings as hdp_settings
from hdp.audit import AuditLog
from privacy import cellkey

AUDIT_FILE = "access.jsonl"
#: Queries longer than this are validated every time instead of being cached.
PREPARED_MAX_SQL = 4_000
#: With streaming asked for, results up to this many rows are still sent whole (with their
#: row count and hash in the headers); bigger ones are streamed. One fetch batch.
STREAM_AFTER_ROWS = 65_536


@dataclass(frozen=True)
class AccessSettings:
    releases_dir: Path
    audit_path: Path
    #: the releases' restricted files (consent link, perturbation keys); by default the data
    #: home's ``restricted/releases`` beside ``releases_dir``
    private_dir: Path | None = None
    limits: Limits = field(default_factory=Limits)
    max_sql_length: int = MAX_SQL_LENGTH
    dominance_n: int = 2
    dominance_k: float = 0.9
    engine_cache_size: int = 16
    #: distinct aggregate queries a permit may ask when no steward set its budget
    query_budget: int = DEFAULT_BUDGET
    audit_fsync: bool = True
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None

    @classmethod
    def from_env(cls) -> AccessSettings:
        """From ``hdp.settings`` plus ``HDP_ACCESS_*`` / ``HDP_OIDC_*`` variables."""
        s = hdp_settings.get_settings()
        return cls(
            releases_dir=s.releases_dir,
            private_dir=s.release_private_dir,
            audit_path=s.audit_dir / AUDIT_FILE,
            limits=Limits(
                timeout_s=s.access_timeout_s,
                max_rows=s.access_max_rows,
                memory_limit=s.access_memory_limit,
                threads=s.access_threads,
            ),
            query_budget=DEFAULT_BUDGET if s.access_query_budget is None else s.access_query_budget,
            oidc_issuer=s.oidc_issuer,
            oidc_audience=s.oidc_audience,
            oidc_jwks_url=s.oidc_jwks_url,
        )


@dataclass(frozen=True)
class QueryResult:
    body: bytes
    media_type: str
    rows: int
    sha256: str
    permit_id: int
    summary: dict[str, Any]


@dataclass(frozen=True)
class StreamedResult:
    """A large result sent as it is read (Arrow IPC); its row count and hash are only known
    at the end, so they are in the audit log's ``access.query_end`` entry, not in headers."""

    media_type: str
    permit_id: int
    chunks: Iterator[bytes]


class _Body:
    """The chunks of a streamed result. A generator that never started runs no ``finally``,
    so a body dropped before its first chunk (client gone before the response began) would
    keep its engine lease; this wrapper releases it on ``close`` or garbage collection."""

    def __init__(self, gen: Generator[bytes, None, None], owned: ExitStack) -> None:
        self._gen = gen
        self._owned = owned
        self._started = False

    def __iter__(self) -> _Body:
        return self

    def __next__(self) -> bytes:
        self._started = True
        return next(self._gen)

    def close(self) -> None:
        if not self._started:
            self._owned.close()  # releases the lease and closes the DuckDB stream
        self._gen.close()

    def __del__(self) -> None:
        self.close()


def _prefetch(rs: ResultStream, rows: int) -> tuple[list[pa.RecordBatch], bool]:
    """Up to about ``rows`` rows of ``rs``; (batches, whether the result ended within them)."""
    head: list[pa.RecordBatch] = []
    seen = 0
    while seen <= rows:
        batch = rs.next_batch()
        if batch is None:
            return head, True
        head.append(batch)
        seen += batch.num_rows
    return head, False


@dataclass(frozen=True)
class RecordStream:
    """A record-level result too large to collect: its first batches and the open stream."""

    stream: ResultStream
    head: list[pa.RecordBatch]


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _now() -> datetime:
    return datetime.now(UTC)


def default_authenticator(settings: AccessSettings, governance: Governance) -> Authenticator:
    oidc = None
    if settings.oidc_issuer and settings.oidc_audience and settings.oidc_jwks_url:
        oidc = OIDCAuthenticator(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            jwks=jwks_from_url(settings.oidc_jwks_url),
        )
    return ChainAuthenticator(local=LocalTokenAuthenticator(governance), oidc=oidc)


class AccessService:
    def __init__(
        self,
        settings: AccessSettings,
        governance: Governance,
        *,
        authenticator: Authenticator | None = None,
        clock: Callable[[], datetime] = _now,
        ledger: QueryLedger | None = None,
    ) -> None:
        self.settings = settings
        self.governance = governance
        self.authenticator = authenticator or default_authenticator(settings, governance)
        self.clock = clock
        self.engines = EngineCache(
            settings.releases_dir,
            settings.limits,
            settings.engine_cache_size,
            private_dir=settings.private_dir,
        )
        self.audit = AuditLog(settings.audit_path, fsync=settings.audit_fsync)
        self.ledger = ledger or default_ledger(governance, default_budget=settings.query_budget)
        self._thresholds = {h.id: h.min_cell_count for h in hdp_settings.holders()}
        self._default_threshold = max([10, *self._thresholds.values()])
        self._perturbation = {
            h.id: cellkey.PerturbationSettings.for_holder(h.min_cell_count, dict(h.perturbation))
            for h in hdp_settings.holders()
        }
        self._audit_lock = threading.Lock()

    # -- helpers -----------------------------------------------------------
    def _log(self, **event: Any) -> None:
        self.audit.append(event)

    def _governance(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Refusal:
            raise
        except Exception as err:  # noqa: BLE001 - any governance failure must refuse, not serve
            raise Refusal(
                "governance.unavailable",
                f"the governance service could not be asked ({what}: {type(err).__name__}); try again",
                status=503,
            ) from None

    # -- authentication ------------------------------------------------------
    def authenticate(self, token: str | None, *, endpoint: str = "") -> User:
        if not token:
            self._log(event="access.auth", decision="refused", reason="auth.missing_token", endpoint=endpoint)
            raise Unauthenticated("auth.missing_token", "send an 'Authorization: Bearer <token>' header")
        user = self._governance("authenticate", lambda: self.authenticator.authenticate(token))
        if user is None:
            self._log(event="access.auth", decision="refused", reason="auth.invalid_token", endpoint=endpoint)
            raise Unauthenticated("auth.invalid_token", "the token is unknown, expired or invalid")
        return user

    # -- authorisation -----------------------------------------------------------
    def excluded_keys(self, permit: Permit, at: datetime) -> frozenset[str]:
        """The consent keys opted out of the permit's purpose at ``at``: read at the moment of
        every query (the port's cache is exactly as current as a fresh read)."""
        return frozenset(
            self._governance(
                "excluded_consent_keys",
                lambda: self.governance.excluded_consent_keys(purpose=permit.purpose, at=at),
            )
        )

    def _permit(self, user: User, release_id: str, now: datetime) -> Permit:
        release_dir(self.settings.releases_dir, release_id)  # refuses path tricks early
        if "researcher" not in user.roles:
            raise Forbidden("role.not_researcher", "only researchers query releases")
        permit = self._governance(
            "active_permit",
            lambda: self.governance.active_permit(user_name=user.name, release_id=release_id, at=now),
        )
        if permit is None:
            raise Forbidden("permit.none", "you have no active permit for this release")
        # Re-check what the permit says rather than trusting the lookup alone.
        if permit.release_id != release_id or user.name not in permit.users:
            raise Forbidden("permit.mismatch", "the permit does not name you for this release")
        if not permit.expires_at > now:
            raise Forbidden("permit.expired", "your permit for this release has expired")
        if permit.output_tier not in (RECORD, AGGREGATE):
            raise Forbidden("permit.unknown_tier", "the permit's output tier is not one this layer knows")
        return permit

    def my_releases(self, user: User) -> list[dict[str, Any]]:
        now = self.clock()
        permits = self._governance(
            "releases_for_user", lambda: self.governance.releases_for_user(user_name=user.name, at=now)
        )
        self._log(event="access.list", user=user.name, decision="allowed", rows=len(permits))
        return [
            {
                "release_id": p.release_id,
                "permit_id": p.id,
                "request_id": p.request_id,
                "purpose": p.purpose,
                "output_tier": p.output_tier,
                "holders": sorted(p.holders),
                "expires_at": p.expires_at.isoformat(),
            }
            for p in permits
            if p.expires_at > now
        ]

    def schema(self, user: User, release_id: str) -> dict[str, Any]:
        now = self.clock()
        try:
            permit = self._permit(user, release_id, now)
            engine = self.engines.get(permit)
        except Refusal as r:
            self._log(
                event="access.schema",
                user=user.name,
                release_id=release_id,
                decision="refused",
                reason=r.reason,
            )
            raise
        self._log(
            event="access.schema",
            user=user.name,
            release_id=release_id,
            permit_id=permit.id,
            decision="allowed",
        )
        return {
            "release_id": release_id,
            "permit_id": permit.id,
            "output_tier": permit.output_tier,
            "tables": {t: [{"name": c, "type": ty} for c, ty in cols] for t, cols in engine.views.items()},
            **({"disclosure": self.disclosure_settings(permit)} if permit.output_tier == AGGREGATE else {}),
        }

    # -- queries ------------------------------------------------------------------
    def query(
        self, user: User, release_id: str, sql: str, fmt: str = "json", *, stream: bool = False
    ) -> QueryResult | StreamedResult:
        """Run ``sql`` for ``user`` on ``release_id``; the serialised result, audited.

        ``stream=True`` (record-level permits, Arrow format): a result larger than
        ``STREAM_AFTER_ROWS`` is not collected but sent batch by batch as it is read
        (``StreamedResult``), so memory stays bounded by a few batches whatever the size.
        Smaller results come back whole, as without streaming.
        """
        started = time.perf_counter()
        now = self.clock()
        event: dict[str, Any] = {
            "event": "access.query",
            "user": user.name,
            "release_id": release_id,
            "format": fmt,
            "permit_id": None,
            "query_masked": None,
            "query_sha256": None,
        }
        stack = ExitStack()
        try:
            if fmt not in MEDIA_TYPES:
                raise QueryRefused("format.unknown", f"format must be one of {sorted(MEDIA_TYPES)}")
            permit = self._permit(user, release_id, now)
            event["permit_id"] = permit.id
            event["tier"] = permit.output_tier
            keys = self.excluded_keys(permit, now)
            engine = stack.enter_context(self.engines.lease(permit, keys))
            engine.refresh_exclusions(keys)
            checked, compiled = self._prepare(engine, sql, permit.output_tier)
            event["query_masked"] = checked.masked
            event["query_sha256"] = checked.masked_sha256
            summary: dict[str, Any] = {}
            if compiled is None:  # record tier: a file format is an export (access.outputs)
                record = self._record_table(engine, checked, release_id, fmt, stream=stream, stack=stack)
                if isinstance(record, RecordStream):
                    # Logged before the first byte leaves; the end (rows, hash) is logged too.
                    self._log(
                        **event, decision="allowed", streamed=True, rows=None, duration_ms=_ms_since(started)
                    )
                    owned = stack.pop_all()  # the lease and the stream now belong to the body
                    body_chunks = self._stream(record.stream, record.head, owned, event)
                    return StreamedResult(MEDIA_TYPES[fmt], permit.id, _Body(body_chunks, owned))
                table = record
            else:
                table, summary = self._aggregate_table(engine, compiled, permit, stack=stack)
                self._admit(user, permit, compiled, table, summary, now, event)
            body = serialise(
                table,
                fmt,
                meta={"release_id": release_id, "output_tier": permit.output_tier, "disclosure": summary}
                if fmt == "json"
                else None,
            )
            digest = hashlib.sha256(body).hexdigest()
        except Refusal as r:
            stack.close()
            # A refused query keeps a keyed digest of its exact text (even when refused before
            # masking); never the text, which may hold a personnummer. hdp/audit.py text_mac.
            event["query_text_hmac"] = self.audit.text_mac(sql)
            self._log(**event, decision="refused", reason=r.reason, rows=0, duration_ms=_ms_since(started))
            raise
        finally:
            stack.close()
        self._log(
            **event,
            decision="allowed",
            rows=table.num_rows,
            result_sha256=digest,
            duration_ms=_ms_since(started),
            **summary,
        )
        return QueryResult(body, MEDIA_TYPES[fmt], table.num_rows, digest, permit.id, summary)

    def _record_table(
        self,
        engine: ReleaseEngine,
        checked: ValidatedQuery,
        release_id: str,
        fmt: str,
        *,
        stream: bool,
        stack: ExitStack,
    ) -> pa.Table | RecordStream:
        """A record-level result, whole; or, streaming Arrow beyond ``STREAM_AFTER_ROWS`` rows,
        its first batches and the open stream (its closing is on ``stack``). More rows than a
        preview is an export (``access.outputs``): refused here, before or after the run."""
        check_export(release_id, fmt)
        if stream and fmt == "arrow":
            rs = engine.open_stream(checked.sql)
            stack.callback(rs.close)
            head, complete = _prefetch(rs, STREAM_AFTER_ROWS)
            if not complete:
                check_export(release_id, fmt, STREAM_AFTER_ROWS + 1)  # beyond a preview: an export
                return RecordStream(rs, head)
            table = pa.Table.from_batches(head, schema=rs.schema)
            if table.num_rows > self.settings.limits.max_rows:  # a limit below the threshold
                raise QueryCutOff(
                    "limit.rows",
                    f"the result has more than {self.settings.limits.max_rows} rows; aggregate or filter, "
                    "or narrow the query",
                )
        else:
            (table,) = engine.run([checked.sql])
        stack.close()  # lease ends before the Python-side work below
        check_export(release_id, fmt, table.num_rows)
        return table

    def _aggregate_table(
        self, engine: ReleaseEngine, compiled: aggregate.CompiledQuery, permit: Permit, *, stack: ExitStack
    ) -> tuple[pa.Table, dict[str, Any]]:
        """The published cells of an aggregate query and the disclosure summary."""
        disclosure = self._disclosure_settings(permit)
        (stats,) = engine.run([compiled.stats_sql])
        exact = None
        if aggregate.needs_exact(compiled, stats, disclosure):
            # Same snapshot for both: a consent change between them cannot mix two states.
            stats, exact = engine.run([compiled.stats_sql, compiled.exact_sql])
        stack.close()  # lease ends before the Python-side work below
        return aggregate.publish(compiled, stats, exact, disclosure)

    def _stream(
        self, rs: ResultStream, head: list[pa.RecordBatch], owned: ExitStack, event: dict[str, Any]
    ) -> Generator[bytes, None, None]:
        """Arrow IPC stream of ``head`` and then the rest of ``rs``; logs the end either way.

        Past the row limit, or on any error, the stream stops *without* its end-of-stream
        marker and the generator raises, so the server cuts the connection and the client
        sees an incomplete transfer rather than a silently shortened result.
        """
        started = time.perf_counter()
        digest = hashlib.sha256()
        rows = 0
        outcome: dict[str, Any] = {"completed": False, "reason": "stream.client_gone"}
        buf = io.BytesIO()

        def drain() -> bytes:
            data = buf.getvalue()
            buf.seek(0)
            buf.truncate()
            digest.update(data)
            return data

        try:
            writer = pa.ipc.new_stream(buf, rs.schema)
            yield drain()
            pending = iter(head)
            while True:
                batch = next(pending, None)
                if batch is None:
                    batch = rs.next_batch()
                if batch is None:
                    break
                rows += batch.num_rows
                if rows > self.settings.limits.max_rows:
                    outcome = {"completed": False, "reason": "limit.rows"}
                    raise QueryCutOff(
                        "limit.rows",
                        f"the result exceeded the row limit of {self.settings.limits.max_rows} rows while "
                        "streaming; aggregate or filter",
                    )
                writer.write_batch(batch)
                yield drain()
            writer.close()
            yield drain()
            outcome = {"completed": True}
        except Refusal as r:
            outcome = {"completed": False, "reason": r.reason}
            raise
        finally:
            owned.close()
            self._log(
                event="access.query_end",
                user=event["user"],
                release_id=event["release_id"],
                permit_id=event["permit_id"],
                query_sha256=event["query_sha256"],
                rows=rows,
                result_sha256=digest.hexdigest(),
                streamed=True,
                duration_ms=_ms_since(started),
                **outcome,
            )

    def disclosure_settings(self, permit: Permit) -> dict[str, Any]:
        """What a researcher or steward may read about the disclosure control of a permit's
        aggregate results: each holder's threshold and the release's perturbation settings
        (never a key)."""
        ds = self._disclosure_settings(permit)
        return {
            "thresholds": {h: ds.thresholds.get(h, ds.default_threshold) for h in sorted(permit.holders)},
            "perturbation": ds.perturbation.public(),
            "dominance": {"n": ds.dominance_n, "k": ds.dominance_k},
            "query_budget_default": self.settings.query_budget,
        }

    def _admit(
        self,
        user: User,
        permit: Permit,
        compiled: aggregate.CompiledQuery,
        table: pa.Table,
        summary: dict[str, Any],
        now: datetime,
        event: dict[str, Any],
    ) -> None:
        """Record the published cells in the query ledger; refuse when a new query would go
        past the permit's budget (nothing is sent then)."""
        entry = entry_for(compiled.query, digest=self.ledger.digest, table=table, summary=summary)
        admission = self.ledger.admit(permit_id=permit.id, entry=entry, asked_by=user.name, at=now)
        event["ledger_fingerprint"] = entry.fingerprint
        if admission.new:
            event["ledger_used"], event["ledger_budget"] = admission.used, admission.budget
        if not admission.admitted:
            raise Forbidden(
                "ledger.budget_exhausted",
                f"this permit has asked its {admission.budget} distinct aggregate queries; a steward of its "
                "holders can raise the budget (queries asked before may be repeated)",
            )

    def _disclosure_settings(self, permit: Permit) -> aggregate.DisclosureSettings:
        """Each holder's threshold for the cells it is in; one ptable per release, the strictest
        of its holders' (see ``privacy.cellkey.strictest``). Unknown holders count as strict."""
        perturbation = cellkey.strictest(
            self._perturbation.get(h) or cellkey.PerturbationSettings.for_holder(self._default_threshold, {})
            for h in sorted(permit.holders)
        )
        return aggregate.DisclosureSettings(
            thresholds=self._thresholds,
            perturbation=perturbation,
            ptable=cellkey.build_ptable(perturbation),
            default_threshold=self._default_threshold,
            dominance_n=self.settings.dominance_n,
            dominance_k=self.settings.dominance_k,
        )

    def _prepare(
        self, engine: ReleaseEngine, sql: str, tier: str
    ) -> tuple[ValidatedQuery, aggregate.CompiledQuery | None]:
        """Sandbox check (and, for the aggregate tier, the grammar check and the compiled
        statistics queries) of ``sql`` for this engine's permit, cached.

        Validation is a pure function of the SQL text, the permitted views and the settings,
        so an identical query on the same engine reuses it (it costs 1-2 ms of parsing and
        regenerating per query otherwise). Refusals are not cached: they are re-derived, so
        their messages never depend on history. Long texts are not cached (bounded memory).
        """
        key = (sql, tier)
        cacheable = len(sql) <= PREPARED_MAX_SQL
        if cacheable and (hit := engine.prepared.get(key)) is not None:
            return hit  # type: ignore[return-value]
        tables = {t: [c for c, _ in cols] for t, cols in engine.views.items()}
        checked = validate(sql, tables=tables, max_length=self.settings.max_sql_length)
        compiled = None
        if tier != RECORD:
            compiled = aggregate.compile_query(
                grammar.parse(checked.tree, engine.views),
                keyed_schema=KEYED_SCHEMA,
                holder_bits=engine.holder_bits,
                max_rows_per_person=engine.max_rows_per_person,
                complete_columns=engine.complete_columns,
            )
        if cacheable:
            engine.prepared.put(key, (checked, compiled))
        return checked, compiled

    def close(self) -> None:
        self.engines.close()


__all__ = ["AccessService", "AccessSettings", "QueryResult", "StreamedResult", "NotFound"]
