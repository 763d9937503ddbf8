"""Query engine: one locked-down in-memory DuckDB per (release, permit).

Layout of each engine database::

    rel.<table>              the release file, ATTACHed READ_ONLY (never named by researchers)
    hdp_sys.consent_link     release person_id -> consent key (from consent_link.parquet)
    hdp_sys.unlinked         release persons without a consent link (always excluded: the
                             layer cannot evaluate their consent, so it fails closed)
    hdp_sys.excluded_person  persons excluded right now (unlinked + withdrawn / opted out)
    hdp_gen_<n>.<table>      the permitted columns (plus person_id and holder) of the rows
                             whose person is not excluded, materialised in a compressed
                             in-memory database; one *generation* per excluded set
    main.<table>             one view per permitted table over the current generation

After building, external access is disabled, Python replacement scans and extension
autoloading are off and the configuration is locked, so even a query that got past the SQL
sandbox could not read files, attach databases or change a limit. What DuckDB's settings do
not stop (reading ``rel.*``, ``hdp_sys.*`` or a generation directly, DML on them) is the
sandbox's job: only single SELECTs over ``main.<view>`` names ever reach ``run``.

Consent is re-evaluated at every query: the service passes the current excluded consent keys
to ``refresh_exclusions`` before each query, which, when the set changed, rewrites
``excluded_person``, materialises a new generation and swaps every view to it in one
transaction before the query runs. DuckDB's MVCC gives every query a consistent snapshot, so
a query that starts after a withdrawal was read never sees the withdrawn person. The old
generation is detached once no query is running (a query that started before the swap may
still be reading it).

Why materialise instead of filtering in the view: an anti-join of a 1,000,000-row table
against the excluded persons on 64-character pseudonyms costs 5-10x the query itself on
every query (measured: 12 ms direct, 90-360 ms through a filtering view). Withdrawals are
rare and queries frequent, so the filter is paid once per change of the excluded set
(about a second per million rows) and queries run at in-memory speed.

Why a compressed generation database: DuckDB does not compress in-memory tables by default,
and grouping by an uncompressed text column is 2-3x slower than by the dictionary-compressed
one of the release file (measured on the 1,000,000-row benchmark release, one thread: GROUP
BY sex 10.1 ms in memory vs 4.0 ms on the file). An in-memory database attached with
``COMPRESS`` and checkpointed once after the build stores the columns as the file does. A
checkpoint needs a database no transaction is reading, hence a fresh database per generation.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from access import sqlnames
from access.errors import NotFound, QueryCutOff, QueryRefused, Refusal
from access.ports import AGGREGATE, Permit
from access.sandbox import echo_name
from access.watchdog import WATCHDOG

RELEASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
#: Arrow batch size for fetching: big enough to amortise per-batch overhead, small enough that
#: the row limit is enforced within ~64k rows of the cut-off without materialising more.
FETCH_BATCH_ROWS = 65_536
STRUCTURAL_COLUMNS = ("person_id", "holder")
#: Where the release builder keeps a release's restricted files (``release_private_dir``).
CONSENT_LINK = "consent_link.parquet"
CELL_KEYS = "cell_keys.duckdb"
#: Views over the current generation *with* the perturbation keys; only SQL the layer itself
#: compiles (``access.aggregate``) names them.
KEYED_SCHEMA = "hdp_ck"
#: A row whose holder is not in the release's list (cannot happen for a built release) gets
#: this bit, which maps to the strictest default threshold.
MAX_HOLDER_BITS = 30
UNKNOWN_HOLDER_BIT = 1 << 31
#: Validated queries kept per engine: researchers repeat the same queries (notebooks re-run
#: cells, dashboards poll); 256 covers a working session without holding many parse trees.
PREPARED_CACHE_SIZE = 256
#: Tries to lease an engine that keeps being evicted before giving up (only under thrashing).
LEASE_ATTEMPTS = 5


class LRUCache:
    """A small thread-safe least-recently-used map."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[object, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: object) -> object | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: object, value: object) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0
    max_rows: int = 1_000_000
    memory_limit: str = "1GB"
    threads: int = 2


class ReleaseUnavailable(NotFound):
    pass


def release_dir(releases_dir: Path, release_id: str) -> Path:
    """The directory of ``release_id``; refuses ids that are not plain names (no traversal)."""
    if not RELEASE_ID_RE.match(release_id) or ".." in release_id:
        raise ReleaseUnavailable("release.unknown", "no such release")
    return releases_dir / release_id


def default_private_root(releases_dir: Path) -> Path:
    """Where a data home keeps its releases' restricted files (``hdp.settings``:
    ``<home>/releases`` and ``<home>/restricted/releases``)."""
    return releases_dir.parent / "restricted" / "releases"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def permitted_columns(permit: Permit) -> dict[str, set[str]]:
    """table -> permitted column names, from the permit's ``table.column`` variables."""
    out: dict[str, set[str]] = {}
    for var in permit.variables:
        table, sep, column = var.partition(".")
        if not sep or not table or not column:
            continue  # a malformed variable grants nothing
        out.setdefault(table.lower(), set()).add(column.lower())
    return out


_UNKNOWN_COLUMN = re.compile(
    r'Referenced column "(?P<a>[^"]+)" not found|does not have a column named "(?P<b>[^"]+)"'
)
_CANDIDATES = re.compile(r"Candidate bindings:[\s:]*(?P<list>.*)")


def unknown_column_message(text: str, sql: str | None) -> str | None:
    """``unknown column 'hba1x' at line 1, col 8; did you mean hba1c_mmol_mol?`` for DuckDB's
    binder error about a column, the position in the researcher's own text (None: another error).
    Candidates come from the tables of the query's FROM clause, which are the permitted views."""
    m = _UNKNOWN_COLUMN.search(text)
    if not m:
        return None
    name = m.group("a") or m.group("b") or ""
    cand = _CANDIDATES.search(text)
    offered = re.findall(r'"([^"]+)"', cand.group("list")) if cand else []
    offered = [c.rsplit(".", 1)[-1] for c in offered]
    source = (sqlnames.source_of(sql) if sql else None) or ""
    suggestion = sqlnames.did_you_mean(name, offered) or (f"; did you mean {offered[0]}?" if offered else "")
    return f"unknown column {echo_name(name)}{sqlnames.where(source, name)}{suggestion}"


def map_duckdb_error(err: duckdb.Error, sql: str | None = None, limits: Limits | None = None) -> Refusal:
    """Turn an engine error into a refusal without quoting data.

    Conversion and range errors can quote a value from the data (for an aggregate-only permit
    that would be a disclosure), so their text is withheld; binder and parser errors name only
    tables, columns and functions and are passed on, an unknown column with its position in
    ``sql``'s source text and the closest permitted names. A limit says its size.
    """
    if isinstance(err, duckdb.InterruptException):
        size = f" of {limits.timeout_s:g} s" if limits else ""
        return QueryCutOff("limit.time", f"the query ran longer than the time limit{size} and was stopped")
    if isinstance(err, duckdb.OutOfMemoryException):
        size = f" of {limits.memory_limit}" if limits else ""
        return QueryCutOff(
            "limit.memory", f"the query needed more memory than the limit{size} and was stopped"
        )
    if isinstance(err, duckdb.PermissionException):
        return QueryRefused("sql.forbidden_construct", "the engine refused an operation outside the sandbox")
    if isinstance(err, duckdb.BinderException | duckdb.CatalogException | duckdb.ParserException):
        text = str(err)
        column = unknown_column_message(text, sql)
        if column is not None:  # same stable reason code, a message that says where and what instead
            return QueryRefused("sql.invalid", column)
        first = text.splitlines()[0][:300]
        # A binder error about a named column ("column "sex" must appear in the GROUP BY clause"):
        # say where that name is in the researcher's text.
        named = re.match(r'^Binder Error: column "([^"]+)"', first)
        source = sqlnames.source_of(sql) if sql and named else None
        at = sqlnames.where(source, named.group(1)) if source and named else ""
        return QueryRefused("sql.invalid", f"{first}{' (' + at.strip() + ')' if at else ''}")
    return QueryRefused(
        "sql.runtime_error",
        f"the query failed while running ({type(err).__name__}); the engine's message is withheld "
        "because it may quote data",
    )


#: Pseudonyms are random hex: compressing them gains little and makes the point lookups and
#: joins on ``person_id`` researchers do (one person's history, linking tables) about 4x
#: slower (measured on the benchmark release: 27 ms vs 6.7 ms for one person's visits).
_PSEUDONYM_STORAGE = " USING COMPRESSION uncompressed"


@dataclass(frozen=True)
class ReleaseFiles:
    """The files an engine opens: the release database, and from the private side the consent
    link and (when built) the perturbation keys."""

    database: Path
    consent_link: Path
    cell_keys: Path | None

    @classmethod
    def find(cls, directory: Path, private_directory: Path, output_tier: str) -> ReleaseFiles:
        """The release's files, or the refusal that says which one a query cannot do without."""
        database = directory / "release.duckdb"
        link = private_directory / CONSENT_LINK
        keys = private_directory / CELL_KEYS
        if not database.is_file():
            raise ReleaseUnavailable("release.unknown", "the release has no database")
        if not link.is_file():
            # Without the consent link no withdrawal could be applied: refuse the whole release.
            raise QueryRefused("release.no_consent_link", "the release has no consent link", status=503)
        has_keys = keys.is_file()
        if output_tier == AGGREGATE and not has_keys:
            # Without the perturbation keys no count could be perturbed: refuse rather than
            # publish exact counts.
            raise QueryRefused(
                "release.no_cell_keys", "the release has no perturbation keys; rebuild it", status=503
            )
        return cls(database, link, keys if has_keys else None)


def _lock_down(con: duckdb.DuckDBPyConnection, limits: Limits) -> None:
    """No Python objects, extensions or files reachable from a query; bounded memory and
    threads; and no query can change any of it back."""
    for stmt in (
        "SET python_enable_replacements = false",
        "SET autoload_known_extensions = false",
        "SET autoinstall_known_extensions = false",
        "SET allow_community_extensions = false",
        "SET enable_external_access = false",
        f"SET memory_limit = {_sql_str(limits.memory_limit)}",
        f"SET threads = {int(limits.threads)}",
        "SET lock_configuration = true",
    ):
        con.execute(stmt)


class ReleaseEngine:
    """The locked-down database for one permit on one release."""

    def __init__(
        self,
        directory: Path,
        permit: Permit,
        limits: Limits,
        excluded_keys: frozenset[str] = frozenset(),
        *,
        private_directory: Path,
    ) -> None:
        files = ReleaseFiles.find(directory, private_directory, permit.output_tier)
        #: Whether the release has perturbation keys (aggregate permits cannot do without).
        self.cell_keys = files.cell_keys is not None
        #: holder id -> its bit in a cell's holder mask (see ``access.aggregate``)
        self.holder_bits: dict[str, int] = {}
        #: table -> the most rows one person has in it (bounds one person's share of a cell)
        self.max_rows_per_person: dict[str, int] = {}
        #: table -> its columns without a NULL (their values' persons are the cell's persons,
        #: so the aggregate tier need not count them apart)
        self.complete_columns: dict[str, frozenset[str]] = {}
        self.permit = permit
        self.limits = limits
        #: Validated queries of this permit (see ``AccessService._prepare``): validation depends
        #: only on the SQL text and this engine's views, so the cache lives and dies with it.
        self.prepared = LRUCache(PREPARED_CACHE_SIZE)
        self._lock = threading.Lock()
        # Lease counting: an engine evicted from the cache while queries still run on it is
        # only *retired*; the last lease to end closes it (closing under a running query
        # would fail that query with an engine error).
        self._lease_lock = threading.Lock()
        self._leases = 0
        self._retired = False
        self.closed = False
        self._excluded_keys: frozenset[str] | None = None
        # Generations (see the module docstring): the current one, the ones replaced but
        # possibly still read, and how many queries are running (they may read any of them).
        self._generation = 0
        self._stale: list[str] = []
        self._running = 0
        self._gen_lock = threading.Lock()
        self.con = self._open(files, excluded_keys)

    def _open(self, files: ReleaseFiles, excluded_keys: frozenset[str]) -> duckdb.DuckDBPyConnection:
        """The in-memory database: the release attached read-only, the permitted views over
        the consented rows, then locked down (no file, extension or setting reachable)."""
        con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False})
        try:
            con.execute(f"ATTACH {_sql_str(str(files.database))} AS rel (READ_ONLY)")
            if files.cell_keys is not None:
                con.execute(f"ATTACH {_sql_str(str(files.cell_keys))} AS hdp_keys (READ_ONLY)")
            con.execute("CREATE SCHEMA hdp_sys")
            con.execute(f"CREATE SCHEMA {KEYED_SCHEMA}")
            con.execute(
                "CREATE TABLE hdp_sys.consent_link AS SELECT CAST(person_id AS VARCHAR) AS person_id, "
                "CAST(consent_key AS VARCHAR) AS consent_key "
                f"FROM read_parquet({_sql_str(str(files.consent_link))})"
            )
            con.execute("CREATE TABLE hdp_sys.excluded_person (person_id VARCHAR)")
            self.views = self._columns(con)
            if self.cell_keys:
                self.holder_bits = self._holder_bits(con)
            self._create_exclusions(con)
            self._materialise(con, excluded_keys)
            _lock_down(con, self.limits)
        except Exception:
            con.close()
            raise
        return con

    def _columns(self, con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[str, str]]]:
        """Permitted tables -> their permitted columns (plus person_id and holder)."""
        wanted = permitted_columns(self.permit)
        cols = con.execute(
            "SELECT table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = 'rel' ORDER BY table_name, column_index"
        ).fetchall()
        by_table: dict[str, list[tuple[str, str]]] = {}
        for table, column, dtype in cols:
            by_table.setdefault(table.lower(), []).append((column, dtype))
        views: dict[str, list[tuple[str, str]]] = {}
        for table, allowed in sorted(wanted.items()):
            columns = by_table.get(table)
            if not columns:
                continue
            names = {c.lower() for c, _ in columns}
            if "person_id" not in names:
                continue  # consent cannot be applied to a table without persons: never exposed
            views[table] = [
                (c, t) for c, t in columns if c.lower() in allowed or c.lower() in STRUCTURAL_COLUMNS
            ]
        return views

    def _materialise(self, con: duckdb.DuckDBPyConnection, keys: frozenset[str]) -> None:
        """(Re)compute excluded persons for ``keys`` and a new generation of the filtered
        tables; swap every view to it in one transaction."""
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("DELETE FROM hdp_sys.excluded_person")
            con.execute("INSERT INTO hdp_sys.excluded_person SELECT person_id FROM hdp_sys.unlinked")
            if keys:
                con.execute(
                    "INSERT INTO hdp_sys.excluded_person SELECT DISTINCT cl.person_id "
                    "FROM hdp_sys.consent_link cl "
                    "JOIN (SELECT unnest(?::VARCHAR[]) AS k) x ON x.k = cl.consent_key",
                    [sorted(keys)],
                )
            con.execute("COMMIT")
        except duckdb.Error:
            con.execute("ROLLBACK")
            raise
        gen = f"hdp_gen_{self._generation + 1}"
        con.execute(f"ATTACH ':memory:' AS {gen} (COMPRESS)")
        try:
            for table, chosen in self.views.items():
                columns = ", ".join(
                    f"{_q(c)} {ty}{_PSEUDONYM_STORAGE if c.lower() == 'person_id' else ''}"
                    for c, ty in chosen
                )
                hidden_types = "".join(f", {name} {ty}" for name, ty, _ in self._hidden_columns(table))
                con.execute(f"CREATE TABLE {gen}.main.{_q(table)} ({columns}{hidden_types})")
                hidden = "".join(f", {expr}" for _, _, expr in self._hidden_columns(table))
                keys_join = (
                    (
                        f"JOIN hdp_keys.{_q('record_key__' + table)} k ON k.row_no = t.rowid "
                        "JOIN hdp_keys.person_key pk ON pk.person_id = t.person_id "
                    )
                    if self.cell_keys
                    else ""
                )
                con.execute(
                    f"INSERT INTO {gen}.main.{_q(table)} SELECT {', '.join(f't.{_q(c)}' for c, _ in chosen)}{hidden} "
                    f"FROM rel.{_q(table)} AS t {keys_join}"
                    "ANTI JOIN hdp_sys.excluded_person e ON e.person_id = t.person_id "
                    "WHERE t.person_id IS NOT NULL"
                )
            con.execute(f"CHECKPOINT {gen}")  # compresses; nothing else has touched {gen} yet
            if self.cell_keys:
                self.max_rows_per_person = {
                    table: int(
                        con.execute(
                            f"SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM {gen}.main.{_q(table)} "
                            "GROUP BY __pn)"
                        ).fetchall()[0][0]
                    )
                    for table in self.views
                }
                self.complete_columns = {table: self._complete(con, gen, table) for table in self.views}
            con.execute("BEGIN TRANSACTION")
            for table, chosen in self.views.items():
                # Researchers' views show the permitted columns only; the keyed views, which the
                # sandbox keeps out of reach (no qualified names), add the perturbation keys.
                listed = ", ".join(_q(c) for c, _ in chosen)
                con.execute(
                    f"CREATE OR REPLACE VIEW main.{_q(table)} AS SELECT {listed} FROM {gen}.main.{_q(table)}"
                )
                con.execute(
                    f"CREATE OR REPLACE VIEW {KEYED_SCHEMA}.{_q(table)} AS SELECT * FROM {gen}.main.{_q(table)}"
                )
            con.execute("COMMIT")
        except duckdb.Error:
            try:
                con.execute("ROLLBACK")
            except duckdb.Error:
                pass  # no transaction was open
            con.execute(f"DETACH {gen}")
            raise
        with self._gen_lock:
            if self._generation:
                self._stale.append(f"hdp_gen_{self._generation}")
            self._generation += 1
        self._excluded_keys = keys
        self._detach_unread(con)

    def _complete(self, con: duckdb.DuckDBPyConnection, gen: str, table: str) -> frozenset[str]:
        names = [c for c, _ in self.views[table]]
        counts = con.execute(
            f"SELECT count(*), {', '.join(f'count({_q(c)})' for c in names)} FROM {gen}.main.{_q(table)}"
        ).fetchall()[0]
        return frozenset(c.lower() for c, n in zip(names, counts[1:], strict=True) if n == counts[0])

    def _hidden_columns(self, table: str) -> list[tuple[str, str, str]]:
        """(name, type, expression) of the perturbation columns of a generation's table:
        record key, person number, person key, both combined (unique per person), the
        person's bit in a 64-bit cell signature, and the row's holder bit."""
        if not self.cell_keys:
            return []
        holder_case = " ".join(f"WHEN {_sql_str(h)} THEN {1 << bit}" for h, bit in self.holder_bits.items())
        return [
            ("__rk", "UTINYINT", "k.record_key"),
            ("__pn", "INTEGER", "pk.person_no"),
            ("__pk", "UTINYINT", "pk.person_key"),
            ("__pnk", "BIGINT", "pk.person_no::BIGINT * 256 + pk.person_key"),
            ("__pb", "UBIGINT", "(1::UBIGINT << (pk.person_no % 64))"),
            ("__hb", "UINTEGER", f"(CASE t.holder {holder_case} ELSE {UNKNOWN_HOLDER_BIT} END)::UINTEGER"),
        ]

    def _holder_bits(self, con: duckdb.DuckDBPyConnection) -> dict[str, int]:
        """holder id -> bit number, for the holders present in the permitted tables."""
        holders: set[str] = set()
        for table, cols in self.views.items():
            if any(c.lower() == "holder" for c, _ in cols):
                holders.update(
                    r[0]
                    for r in con.execute(
                        f"SELECT DISTINCT CAST(holder AS VARCHAR) FROM rel.{_q(table)} WHERE holder IS NOT NULL"
                    ).fetchall()
                )
        if len(holders) > MAX_HOLDER_BITS:
            raise QueryRefused(
                "release.too_many_holders", f"more than {MAX_HOLDER_BITS} holders in one release", status=503
            )
        return {h: i for i, h in enumerate(sorted(holders))}

    def _detach_unread(self, con: duckdb.DuckDBPyConnection) -> None:
        """Detach replaced generations once no query is running (a query that started before
        a swap may be reading the generation it replaced; one that starts after cannot)."""
        with self._gen_lock:
            if self._running or not self._stale:
                return
            stale, self._stale = self._stale, []
        for gen in stale:
            con.execute(f"DETACH {gen}")

    def _query_started(self) -> None:
        with self._gen_lock:
            self._running += 1

    def _query_ended(self) -> None:
        with self._gen_lock:
            self._running -= 1
            detach = not self._running and bool(self._stale) and not self.closed
        if detach:
            with self._lock:  # not while a refresh is swapping views
                cur = self.con.cursor()
                try:
                    self._detach_unread(cur)
                finally:
                    cur.close()

    def _create_exclusions(self, con: duckdb.DuckDBPyConnection) -> None:
        if not self.views:
            con.execute("CREATE TABLE hdp_sys.unlinked (person_id VARCHAR)")
            return
        persons = " UNION ".join(
            f"SELECT CAST(person_id AS VARCHAR) AS person_id FROM rel.{_q(t)}" for t in self.views
        )
        con.execute(
            f"CREATE TABLE hdp_sys.unlinked AS SELECT person_id FROM ({persons}) p "
            "WHERE person_id IS NOT NULL AND person_id NOT IN "
            "(SELECT person_id FROM hdp_sys.consent_link WHERE consent_key IS NOT NULL)"
        )

    @property
    def unlinked_count(self) -> int:
        row = self.con.cursor().execute("SELECT count(*) FROM hdp_sys.unlinked").fetchone()
        return int(row[0]) if row else 0

    def refresh_exclusions(self, keys: frozenset[str]) -> None:
        """Make the released rows match ``keys`` (the current opt-outs) before a query runs."""
        with self._lock:
            # Identity first: the consent cache hands back the same frozenset while nothing
            # changed, and comparing 10,000 keys per query is measurable.
            if keys is self._excluded_keys or keys == self._excluded_keys:
                return
            cur = self.con.cursor()
            try:
                self._materialise(cur, keys)
            finally:
                cur.close()

    def run(self, statements: Sequence[str], *, limits: Limits | None = None) -> list[pa.Table]:
        """Run validated SELECTs in one snapshot, under the time and row limits."""
        limits = limits or self.limits
        self._query_started()
        cur = self.con.cursor()
        deadline = WATCHDOG.watch(limits.timeout_s, cur.interrupt)
        running: str | None = None  # the statement an error belongs to
        try:
            if len(statements) == 1:  # one statement is its own snapshot: no transaction to open
                running = statements[0]
                return [self._fetch(cur, running, limits.max_rows)]
            cur.execute("BEGIN TRANSACTION")
            out = []
            for running in statements:
                out.append(self._fetch(cur, running, limits.max_rows))
            cur.execute("COMMIT")
            return out
        except duckdb.Error as err:
            raise map_duckdb_error(err, running, limits) from None
        finally:
            WATCHDOG.cancel(deadline)
            cur.close()
            self._query_ended()

    def open_stream(self, sql: str, *, limits: Limits | None = None) -> ResultStream:
        """Start a validated SELECT and return its batches on demand (for large results).

        The caller must hold a lease for as long as the stream is open and must ``close`` it.
        """
        self._query_started()
        try:
            return ResultStream(self.con, sql, limits or self.limits, on_close=self._query_ended)
        except BaseException:
            self._query_ended()
            raise

    @staticmethod
    def _fetch(cur: duckdb.DuckDBPyConnection, sql: str, max_rows: int) -> pa.Table:
        reader = cur.sql(sql).to_arrow_reader(FETCH_BATCH_ROWS)
        batches: list[pa.RecordBatch] = []
        rows = 0
        for batch in reader:
            rows += batch.num_rows
            if rows > max_rows:
                raise QueryCutOff(
                    "limit.rows",
                    f"the result has more than the row limit of {max_rows} rows; aggregate or filter, "
                    "or narrow the query",
                )
            batches.append(batch)
        return pa.Table.from_batches(batches, schema=reader.schema)

    def acquire(self) -> bool:
        """Take a lease; False when the engine is already retired (get a fresh one)."""
        with self._lease_lock:
            if self._retired:
                return False
            self._leases += 1
            return True

    def release(self) -> None:
        with self._lease_lock:
            self._leases -= 1
            close_now = self._retired and self._leases == 0 and not self.closed
            if close_now:
                self.closed = True
        if close_now:
            self.con.close()

    def retire(self) -> None:
        """Stop new leases; close now if idle, else when the last running query ends."""
        with self._lease_lock:
            self._retired = True
            close_now = self._leases == 0 and not self.closed
            if close_now:
                self.closed = True
        if close_now:
            self.con.close()

    @property
    def leases(self) -> int:
        return self._leases

    def close(self) -> None:
        self.retire()


class ResultStream:
    """An open query whose Arrow batches are pulled one at a time, in one snapshot, under the
    time limit (the timer keeps running while the client reads: a slow reader cannot hold
    a snapshot for longer than the limit). The row limit is the caller's to enforce, as it
    counts what it sends."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        sql: str,
        limits: Limits,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._on_close = on_close
        self._limits = limits
        self._cur = con.cursor()
        self._deadline = WATCHDOG.watch(limits.timeout_s, self._cur.interrupt)
        self._closed = False
        try:
            self._cur.execute("BEGIN TRANSACTION")
            self._reader = self._cur.sql(sql).to_arrow_reader(FETCH_BATCH_ROWS)
        except duckdb.Error as err:
            self.close()
            raise map_duckdb_error(err, sql, limits) from None
        self.schema = self._reader.schema

    def next_batch(self) -> pa.RecordBatch | None:
        """The next batch, or None at the end."""
        try:
            return self._reader.read_next_batch()
        except StopIteration:
            return None
        except duckdb.Error as err:
            raise map_duckdb_error(err, None, self._limits) from None
        except pa.ArrowException:
            # DuckDB errors raised while Arrow pulls a batch arrive wrapped (the time limit's
            # interrupt among them); the text is withheld, as for any runtime error.
            raise QueryCutOff(
                "stream.aborted",
                "the query stopped while its result was being read (the time limit of "
                f"{self._limits.timeout_s:g} s, or a runtime error)",
            ) from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        WATCHDOG.cancel(self._deadline)
        try:
            self._cur.execute("ROLLBACK")  # read-only snapshot: nothing to keep
        except duckdb.Error:
            pass  # already aborted (interrupt); closing the cursor is all that is left
        finally:
            self._cur.close()
            if self._on_close is not None:
                self._on_close()


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class EngineCache:
    """Engines by (release, permit, release files' identity), least recently used first out.

    Building an engine costs a scan of the release (unlinked persons); queries reuse it.
    The key includes the files' size and mtime so a rebuilt release gets a fresh engine.
    """

    def __init__(
        self, releases_dir: Path, limits: Limits, capacity: int = 16, *, private_dir: Path | None = None
    ) -> None:
        self.releases_dir = releases_dir
        self.private_dir = private_dir or default_private_root(releases_dir)
        self.limits = limits
        self.capacity = capacity
        self._engines: OrderedDict[tuple, ReleaseEngine] = OrderedDict()
        self._lock = threading.Lock()
        self._build_locks: dict[tuple, threading.Lock] = {}

    def get(self, permit: Permit, excluded_keys: frozenset[str] = frozenset()) -> ReleaseEngine:
        directory = release_dir(self.releases_dir, permit.release)
        private = release_dir(self.private_dir, permit.release)
        stamp: list[tuple[int, int] | None] = []
        for path in (directory / "release.duckdb", private / CONSENT_LINK, private / CELL_KEYS):
            try:
                st = path.stat()
                stamp.append((st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                stamp.append(None)
        key = (permit.release_id, permit.id, permit.variables, tuple(stamp))
        with self._lock:
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
                return engine
            build_lock = self._build_locks.setdefault(key, threading.Lock())
        with build_lock:  # one build per key even when 20 researchers arrive at once
            with self._lock:
                engine = self._engines.get(key)
                if engine is not None:
                    return engine
            engine = ReleaseEngine(directory, permit, self.limits, excluded_keys, private_directory=private)
            with self._lock:
                self._engines[key] = engine
                self._build_locks.pop(key, None)
                while len(self._engines) > self.capacity:
                    _, old = self._engines.popitem(last=False)
                    old.retire()  # closes once the queries running on it have finished
            return engine

    @contextmanager
    def lease(self, permit: Permit, excluded_keys: frozenset[str] = frozenset()) -> Iterator[ReleaseEngine]:
        """The engine for ``permit``, guaranteed open until the block ends even if it is
        evicted meanwhile (eviction retires it; the last lease closes it)."""
        for _ in range(LEASE_ATTEMPTS):
            engine = self.get(permit, excluded_keys)
            if engine.acquire():
                break
        else:  # evicted between lookup and lease every time: the cache is thrashing
            raise QueryRefused(
                "engine.busy", "the release engine was replaced repeatedly; try again", status=503
            )
        try:
            yield engine
        finally:
            engine.release()

    def close(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.retire()
            self._engines.clear()
