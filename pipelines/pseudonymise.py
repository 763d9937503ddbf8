"""Pseudonymisation stage: raw zone -> research zone, for one data holder.

Reads ``restricted/<holder>/raw.duckdb``, validates every person identifier, replaces it with
the holder-domain keyed pseudonym, generalises quasi-identifiers and writes
``research/<holder>.duckdb`` as declared in ``schemas/policies/pseudonymise.json``.

Speed comes from doing the expensive work once per *distinct* value, not per row: one
aggregation finds the distinct identifiers (with a flag: does any of its rows reach the
research zone); they are validated with the vectorised parser and hashed with precomputed
HMAC states; distinct postal codes and encounter ids likewise; DuckDB then joins the small
maps onto the big tables and writes each research table with one INSERT. ``person_link`` is
deduplicated from the same map, and the identifier-quarantine scan runs only when some
distinct value is invalid or NULL. Key material never reaches DuckDB: only pseudonyms do.

Rows whose identifier is invalid go to the raw zone's ``quarantine`` table (stage
``pseudonymise``, reason ``identifier.*``, the whole raw row as JSON in ``original``). FHIR
rows whose patient cannot be resolved keep ``person_id`` NULL and are counted, not dropped.

Rows the raw-zone quality gate quarantined (``quarantine`` stage ``quality``, matched by file
and line or by resource key: :func:`pipelines.quality.quarantine_rows.not_quarantined_sql`)
never reach the research zone, and a quarantined Patient does not resolve its resources'
``person_id`` (fail closed). They are counted per research table in ``excluded_by_quality``.
Identifiers are still validated on every delivered row, so an invalid one keeps its
``identifier.*`` record even when a quality check caught the row too.
The research database is rebuilt from scratch in a temporary file and renamed into place,
so a re-run gives the same result and readers never see a half-written file.

Clean to the byte. This process holds identifiers (and HMAC states), so it writes nothing
outside the restricted zone itself: DuckDB would copy stale heap memory into the unused part
of the research file's blocks (see :mod:`pipelines.clean_writer`). It writes each research
table as a Parquet file into ``restricted/<holder>/research_staging/`` (identifier-free values
only; spill files go to ``restricted/tmp/``), and a fresh process that never held an
identifier builds the research database from those files.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from hdp.settings import Settings, get_settings
from pipelines import quarantine
from pipelines.clean_writer import TableSource, write_duckdb
from pipelines.quality.quarantine_rows import STAGE as QUALITY_STAGE
from pipelines.quality.quarantine_rows import not_quarantined_sql
from pipelines.warehouse import write_connection
from privacy.domains import holder_domain, pseudonymiser, resource_message
from privacy.personnummer import REASON_TEXT, parse_batch
from privacy.policy import (
    PseudonymisePolicy,
    TableRule,
    county_prefixes,
    load_pseudonymise_policy,
)
from privacy.pseudonym import Pseudonymiser

log = logging.getLogger(__name__)

STAGE = "pseudonymise"


class PseudonymiseError(RuntimeError):
    """The stage cannot run for this holder (no raw zone, broken policy, ...)."""


@dataclass(frozen=True)
class PseudonymiseResult:
    """Counts only: safe for logs, XComs and asset extras."""

    holder: str
    rows_in: int
    rows_out: int
    persons: int
    quarantined: int
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    unresolved_person_rows: int = 0
    tables: dict[str, int] = field(default_factory=dict)
    #: research table -> raw rows the raw-zone quality gate quarantined (stage ``quality``) that
    #: would otherwise have been written (rows also quarantined here for their identifier are
    #: counted in ``quarantined`` only), so ``rows_in == rows_out + quarantined + excluded``.
    excluded_by_quality: dict[str, int] = field(default_factory=dict)
    key_id: str = ""
    research_db: str = ""


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() "
            "AND table_schema = 'main'"
        ).fetchall()
    }


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database() "
            "AND table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
            [table],
        ).fetchall()
    ]


def reference_date_for(holder_id: str, settings: Settings) -> date:
    """The delivery's extract date (decides the century of 10-digit identifiers).

    Using the extract date rather than today keeps a re-run's result identical.
    """
    manifest = settings.landing_dir(holder_id) / "delivery.json"
    try:
        return date.fromisoformat(json.loads(manifest.read_text(encoding="utf-8"))["extract_date"])
    except FileNotFoundError:
        log.warning(
            "holder %s: no delivery.json; using today as reference date for 10-digit identifiers", holder_id
        )
        return date.today()
    except (KeyError, ValueError, json.JSONDecodeError) as exc:
        raise PseudonymiseError(f"{manifest} has no valid extract_date ({type(exc).__name__})") from None


# --------------------------------------------------------------------------------------
# Pure maps (Arrow in, Arrow out)
# --------------------------------------------------------------------------------------


def person_rows(raw_values: pa.Array, pseudo: Pseudonymiser, *, reference_date: date) -> pa.Table:
    """Distinct raw identifier values -> validity, pseudonym and derived attributes, one row each.

    Columns ``raw_value, normalised, person_id, birth_year, sex, id_type, reason_code``
    (``normalised`` and ``person_id`` NULL and ``reason_code`` set for an invalid value). Each
    valid value is hashed as it comes: a person delivered in two forms (``19811218-9876`` and
    ``198112189876``) is hashed twice, which is rare and cheaper than deduplicating a million
    values first; both rows get the same pseudonym.
    """
    return _person_table(raw_values, parse_batch(raw_values, reference_date=reference_date), pseudo)


def _person_table(raw_values: pa.Array, parsed: pa.Table, pseudo: Pseudonymiser) -> pa.Table:
    normalised = parsed["normalised"]
    return pa.table(
        {
            "raw_value": raw_values,
            "normalised": normalised,
            "person_id": pseudo.many(normalised),
            "birth_year": pc.year(parsed["birth_date"]).cast(pa.int32()),
            "sex": parsed["sex"],
            "id_type": parsed["kind"],
            "reason_code": parsed["reason_code"],
        }
    )


def person_map(
    raw_values: pa.Array, pseudo: Pseudonymiser, *, reference_date: date, used: pa.Array | None = None
) -> tuple[pa.Table, pa.Table]:
    """:func:`person_rows` and the ``person_link`` rows (one per distinct normalised identifier).

    ``used`` (boolean, one per value; default all true) marks the values that occur in at
    least one row carried into the research zone: only those persons go to the link.
    """
    rows = person_rows(raw_values, pseudo, reference_date=reference_date)
    keep = pc.is_valid(rows["person_id"])
    if used is not None:
        keep = pc.and_(keep, pc.fill_null(used, False))
    link = (
        rows.filter(keep)
        .select(["person_id", "normalised"])
        .group_by(["person_id", "normalised"])
        .aggregate([])
        .rename_columns(["person_id", "personnummer"])
    )
    return rows, link


def county_sql(column: str) -> str:
    """SQL mapping a postal-code column to its county code (NULL unless exactly 5 ASCII digits).

    A constant 1,000-entry list indexed by the three-digit prefix. Same result as
    :func:`privacy.policy.postcode_to_county` (property-tested).
    """
    prefixes = county_prefixes()
    lookup = (
        "["
        + ", ".join(f"'{prefixes[f'{i:03d}']}'" if f"{i:03d}" in prefixes else "NULL" for i in range(1000))
        + "]"
    )
    digits = f"replace(CAST({column} AS VARCHAR), ' ', '')"
    return (
        f"CASE WHEN regexp_full_match({digits}, '[0-9]{{5}}') "
        f"THEN {lookup}[CAST(left({digits}, 3) AS INTEGER) + 1] END"
    )


def resource_map(ids: pa.Array, resource_type: str, pseudo: Pseudonymiser) -> pa.Table:
    messages = pa.array([resource_message(resource_type, v) for v in ids.to_pylist()], pa.string())
    return pa.table({"resource_id": ids, "pseudonym": pseudo.many(messages)})


# --------------------------------------------------------------------------------------
# SQL for one table
# --------------------------------------------------------------------------------------


def _select_sql(rule: TableRule, cols: set[str]) -> tuple[str, str]:
    """(FROM ... joins, SELECT list) producing the research table from raw table alias r."""
    joins = [f"{_q(rule.source)} r"]
    if rule.identifier:
        joins.append(f"LEFT JOIN _pm pm ON r.{_q(rule.identifier)} = pm.raw_value")
        person = "pm"
    else:
        joins.append(f"LEFT JOIN _patient_map pm ON r.{_q(rule.via_patient or '')} = pm.patient_id")
        person = "pm"
    select = []
    for i, c in enumerate(rule.columns):
        if c.source and c.source not in cols:
            select.append(f"NULL AS {_q(c.name)}")  # holder did not deliver this column
            continue
        if c.action == "person_id":
            expr = f"{person}.person_id"
        elif c.action in ("birth_year", "sex", "id_type"):
            expr = f"{person}.{c.action}"
        elif c.action == "county":
            joins.append(f"LEFT JOIN _county c{i} ON r.{_q(c.source or '')} = c{i}.postal_code")
            expr = f"c{i}.county"
        elif c.action == "year":
            expr = f"TRY_CAST(left(CAST(r.{_q(c.source or '')} AS VARCHAR), 4) AS INTEGER)"
        elif c.action == "resource_pseudonym":
            joins.append(
                f"LEFT JOIN {_q('_res_' + (c.resource_type or ''))} x{i} "
                f"ON r.{_q(c.source or '')} = x{i}.resource_id"
            )
            expr = f"x{i}.pseudonym"
        else:  # keep
            expr = f"r.{_q(c.source or c.name)}"
        select.append(f"{expr} AS {_q(c.name)}")
    return " ".join(joins), ", ".join(select)


#: Keyed pseudonyms are random hex: no compression scheme gains more than the hex encoding's
#: factor two, and DuckDB's automatic analysis of such strings costs more than the rest of
#: the write together (measured: 3.4 s vs 0.8 s for 2 M rows). Store them uncompressed.
_UNCOMPRESSED_ACTIONS = frozenset({"person_id", "resource_pseudonym"})


def _research_ddl(con: duckdb.DuckDBPyConnection, rule: TableRule, query: str) -> tuple[str, str]:
    """CREATE TABLE for the research table (types from the query, pseudonyms uncompressed), and
    the query with its untyped NULL columns (a column the holder did not deliver) cast to VARCHAR."""
    types = {name: dtype for name, dtype, *_ in con.execute(f"DESCRIBE {query}").fetchall()}
    cols, select = [], []
    for c in rule.columns:
        untyped = types[c.name] == '"NULL"'
        dtype = "VARCHAR" if untyped else types[c.name]
        using = " USING COMPRESSION uncompressed" if c.action in _UNCOMPRESSED_ACTIONS else ""
        cols.append(f"{_q(c.name)} {dtype}{using}")
        select.append(f"CAST({_q(c.name)} AS VARCHAR) AS {_q(c.name)}" if untyped else _q(c.name))
    return f"CREATE TABLE {_q(rule.name)} ({', '.join(cols)})", f"SELECT {', '.join(select)} FROM ({query})"


def _sql_str(value: str | Path) -> str:
    return "'" + str(value).replace("'", "''") + "'"


#: Parquet hand-over of research tables to the clean writer, read once, right away: no bloom
#: filters (nothing looks values up in these files; they cost a hash per value on both sides),
#: lz4 (less CPU than the default snappy, same size on the benchmark's 10 M rows).
_STAGING_PARQUET = "FORMAT parquet, COMPRESSION lz4_raw, WRITE_BLOOM_FILTER false"


def _bad_rows(rule: TableRule) -> str:
    """FROM clause of the raw rows whose identifier is invalid or missing, with reason ``q.reason``.

    A semi-join against the (small) set ``_bad(raw_value, reason_code)`` of invalid values,
    rather than a join of every row with the person map: one cheap scan of the table.
    """
    ident = f"r.{_q(rule.identifier or '')}"
    return (
        f"(SELECT * FROM {_q(rule.source)} WHERE {_q(rule.identifier or '')} IS NULL "
        f"OR {_q(rule.identifier or '')} IN (SELECT raw_value FROM _bad)) r "
        f"LEFT JOIN _bad b ON {ident} = b.raw_value "
        f"CROSS JOIN LATERAL (SELECT coalesce(b.reason_code, 'identifier.missing') AS reason) q"
    )


def _county_map(
    con: duckdb.DuckDBPyConnection, rules: list[TableRule], cols: dict[str, set[str]], keep: dict[str, str]
) -> None:
    """Temp table ``_county``: distinct postal codes of kept rows -> county.

    The regex runs per distinct code, the join per row: measured 2.4 s for the regex on 10 M
    rows vs about 1 s for distinct + join.
    """
    pc_parts = [
        f"SELECT CAST(r.{_q(c.source or '')} AS VARCHAR) AS v FROM {_q(r.source)} r WHERE {keep[r.source]}"
        for r in rules
        for c in r.columns
        if c.action == "county" and c.source in cols[r.source]
    ]
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _county AS
        SELECT v AS postal_code, {county_sql("v")} AS county
        FROM (SELECT DISTINCT v FROM ({" UNION ALL ".join(pc_parts) if pc_parts else "SELECT NULL::VARCHAR AS v"})
              WHERE v IS NOT NULL)""")


def _quarantine_identifiers(
    con: duckdb.DuckDBPyConnection,
    rules: list[TableRule],
    cols: dict[str, set[str]],
    present: set[str],
    holder_id: str,
    bad: pa.Table,
    null_identifiers: bool,
) -> dict[str, int]:
    """Replace this stage's quarantine records: every raw row whose identifier is invalid or
    missing, with its reason and the row (FHIR: the resource) as delivered. ``bad`` holds the
    invalid distinct values and their reasons. Returns raw table -> rows quarantined."""
    for source_name in sorted({r.source_name for r in rules if r.identifier}):
        quarantine.reset(con, stage=STAGE, source=source_name)
    reasons_sql = " ".join(f"WHEN '{code}' THEN '{text}'" for code, text in REASON_TEXT.items())
    quarantined_rows: dict[str, int] = {}
    # Finding the rows of bad values is a scan of every identifier column; with no invalid
    # value and no NULL among the distinct identifiers there is nothing to find.
    if not null_identifiers and not bad.num_rows:
        return quarantined_rows
    con.register("_bad", bad)
    try:
        for r in rules:
            if not r.identifier or r.identifier not in cols[r.source]:
                continue
            has_pos = {"_source_file", "_line_no"} <= cols[r.source]
            sf, ln = ("r._source_file", "r._line_no") if has_pos else ("NULL", "NULL")
            key = (
                f"'{r.record_key[0]}/' || r.{_q(r.record_key[1])}"
                if r.record_key and r.record_key[1] in cols[r.source]
                else "NULL"
            )
            original = "encode(CAST(to_json(r) AS VARCHAR))"
            if r.record_key and "fhir_resource" in present:
                # keep the resource exactly as delivered, and its position in the delivery
                # (one record per row even if the id occurs twice in fhir_resource)
                cur = con.execute(
                    f"""INSERT INTO quarantine
                    SELECT '{STAGE}', ?, '{r.source_name}', fr._source_file, fr._line_no, {key}, q.reason,
                           'column {r.identifier}: ' || CASE q.reason {reasons_sql} END, NULL,
                           encode(CAST(coalesce(fr.resource, to_json(r)) AS VARCHAR)), NULL
                    FROM {_bad_rows(r)}
                    LEFT JOIN (SELECT id, arg_min(_source_file, _line_no) AS _source_file, min(_line_no) AS _line_no,
                                      arg_min(resource, _line_no) AS resource
                               FROM fhir_resource WHERE resource_type = '{r.record_key[0]}' GROUP BY id) fr
                         ON fr.id = r.{_q(r.record_key[1])}""",
                    [holder_id],
                )
            else:
                cur = con.execute(
                    f"""INSERT INTO quarantine
                    SELECT '{STAGE}', ?, '{r.source_name}', {sf}, {ln}, {key}, q.reason,
                           'column {r.identifier}: ' || CASE q.reason {reasons_sql} END, NULL, {original}, NULL
                    FROM {_bad_rows(r)}""",
                    [holder_id],
                )
            quarantined_rows[r.source] = int(cur.fetchall()[0][0])
    finally:
        con.unregister("_bad")
    return quarantined_rows


# --------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """The same advisory lock pipelines.warehouse uses, without opening the database."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


#: DuckDB memory cap for the stage's connection (override: HDP_PSEUDONYMISE_MEMORY_LIMIT).
MEMORY_LIMIT = "2GB"


def _memory_limit() -> str:
    value = os.environ.get("HDP_PSEUDONYMISE_MEMORY_LIMIT", MEMORY_LIMIT).strip()
    if not value.replace(".", "").isalnum():
        raise PseudonymiseError("HDP_PSEUDONYMISE_MEMORY_LIMIT must look like '2GB'")
    return value


class _PhaseTimer:
    """Debug log of how long each phase took (phase names and seconds only)."""

    def __init__(self, holder_id: str) -> None:
        self.holder_id = holder_id
        self.t, self.cpu = time.perf_counter(), time.process_time()

    def lap(self, phase: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        log.debug(
            "pseudonymise %s: %s in %.2f s (cpu %.2f s)", self.holder_id, phase, now - self.t, cpu - self.cpu
        )
        self.t, self.cpu = now, cpu


def _distinct_flagged(con: duckdb.DuckDBPyConnection, parts: list[str]) -> tuple[pa.Array, pa.Array, bool]:
    """Distinct non-null values ``v`` of the union of ``parts``; per value, whether any of its
    rows has ``keep`` true (columns ``v``, ``keep`` in every part); whether any ``v`` was NULL.

    One aggregation over the rows: NULL is grouped like any value and split off afterwards.
    """
    if not parts:
        return pa.array([], pa.string()), pa.array([], pa.bool_()), False
    t = con.sql(
        f"SELECT v, bool_or(keep) AS keep FROM ({' UNION ALL '.join(parts)}) GROUP BY v"
    ).to_arrow_table()
    t = t.combine_chunks()
    has_null = t.num_rows > 0 and t["v"].null_count > 0
    if has_null:
        t = t.filter(pc.is_valid(t["v"]))
    if not t.num_rows:
        return pa.array([], pa.string()), pa.array([], pa.bool_()), has_null
    return t["v"].chunk(0).cast(pa.string()), t["keep"].chunk(0), has_null


def _distinct(con: duckdb.DuckDBPyConnection, parts: list[str]) -> pa.Array:
    if not parts:
        return pa.array([], pa.string())
    sql = " UNION ".join(parts)
    col = con.sql(f"SELECT DISTINCT v FROM ({sql}) WHERE v IS NOT NULL").to_arrow_table()["v"]
    arr = col.combine_chunks() if col.num_chunks else pa.array([], pa.string())
    return arr.cast(pa.string())


def pseudonymise_holder(
    holder_id: str,
    *,
    settings: Settings | None = None,
    policy: PseudonymisePolicy | None = None,
) -> PseudonymiseResult:
    """Build ``research/<holder>.duckdb`` (and ``person_link``, quarantine) from the raw zone."""
    settings = settings or get_settings()
    policy = policy or load_pseudonymise_policy()
    raw_path = settings.raw_db(holder_id)
    if not raw_path.exists():
        raise PseudonymiseError(f"holder {holder_id} has no raw zone at {raw_path}; run its ingestion first")
    ref = reference_date_for(holder_id, settings)
    pseudo = pseudonymiser(holder_domain(holder_id), settings=settings)
    research_path = settings.research_db(holder_id)
    tmp_path = research_path.with_name(f".{research_path.name}.{os.getpid()}.tmp")
    staging = settings.holder_dir(holder_id) / "research_staging"
    spill = settings.ensure_restricted(settings.scratch_dir / f"pseudonymise-{holder_id}")

    with write_connection(raw_path) as con:
        # Row order in the research zone carries no meaning (its values are deterministic, its
        # order is not promised), so DuckDB may write in parallel without reordering.
        con.execute("SET preserve_insertion_order = false")
        # Bounded memory: joins and aggregates spill rather than grow with the delivery (10 M
        # rows, 1 M persons: peak RSS about 2 GiB with the 2 GB cap, 4.3 GiB without it).
        con.execute(f"SET memory_limit = '{_memory_limit()}'")
        # Spill files hold identifiers: inside the restricted zone, whatever the default.
        con.execute(f"SET temp_directory = {_sql_str(spill)}")
        timer = _PhaseTimer(holder_id)
        present = _tables(con)
        rules = [r for r in policy.tables if r.source in present]
        cols = {r.source: set(_columns(con, r.source)) for r in rules}
        for r in rules:
            unexpected = sorted(cols[r.source] - r.used_source_columns() - r.drop)
            if unexpected:
                log.warning(
                    "holder %s: %s has columns not in the policy, dropped: %s",
                    holder_id,
                    r.source,
                    ", ".join(unexpected),
                )

        # Rows the raw-zone quality gate quarantined (stage 'quality') never reach the research
        # zone: every read that feeds it carries this condition (alias r).
        quarantine.ensure_table(con)
        gated = con.execute("SELECT count(*) FROM quarantine WHERE stage = ?", [QUALITY_STAGE]).fetchall()[0][
            0
        ]
        # (with no quality records the condition is true for every row: skip the anti-join)
        keep = {r.source: not_quarantined_sql(r.source, "r") if gated else "true" for r in rules}

        # 1. distinct identifiers -> person map. Every delivered value is validated (a row
        #    with an invalid identifier gets its identifier.* quarantine record even when a
        #    quality check caught it too); person_link holds the persons of kept rows only.
        id_parts = [
            f"SELECT CAST(r.{_q(r.identifier)} AS VARCHAR) AS v, {keep[r.source]} AS keep "
            f"FROM {_q(r.source)} r"
            for r in rules
            if r.identifier and r.identifier in cols[r.source]
        ]
        values, used, null_identifiers = _distinct_flagged(con, id_parts)
        timer.lap(f"{len(values)} distinct identifiers")
        parsed = parse_batch(values, reference_date=ref)
        bad = pa.table({"raw_value": values, "reason_code": parsed["reason_code"]}).filter(
            pc.is_valid(parsed["reason_code"])
        )
        # 2. Identifier quarantine (replacing earlier records) and county map, then the HMACs.
        #    Measured: running the two DuckDB steps in a worker thread while this thread hashes
        #    gains nothing on two cores (the hashing slows from 1.4 to 2.4 s), so they run in turn.
        quarantined_rows = _quarantine_identifiers(
            con, rules, cols, present, holder_id, bad, null_identifiers
        )
        _county_map(con, rules, cols, keep)
        pm = _person_table(values, parsed, pseudo).append_column("used", used)
        by_reason = dict(
            con.execute(
                "SELECT reason_code, count(*) FROM quarantine WHERE stage = ? AND holder = ? GROUP BY 1 ORDER BY 1",
                [STAGE, holder_id],
            ).fetchall()
        )
        timer.lap("identifiers validated, rows quarantined, county map, pseudonyms")
        con.register("_pm_arrow", pm)
        con.execute("CREATE OR REPLACE TEMP TABLE _pm AS SELECT * FROM _pm_arrow")
        con.unregister("_pm_arrow")
        # 3. FHIR patients -> person (valid identifiers only)
        patient_rule = next((r for r in rules if r.source == "fhir_patient"), None)
        if patient_rule is not None and "patient_id" in cols["fhir_patient"]:
            con.execute(f"""CREATE OR REPLACE TEMP TABLE _patient_map AS
                SELECT DISTINCT r.patient_id, pm.person_id FROM fhir_patient r
                JOIN _pm pm ON r.{_q(patient_rule.identifier or "personnummer")} = pm.raw_value
                WHERE pm.person_id IS NOT NULL AND {keep["fhir_patient"]}""")
            dup = con.execute("SELECT count(*) - count(DISTINCT patient_id) FROM _patient_map").fetchall()[0][
                0
            ]
            if dup:
                raise PseudonymiseError(
                    f"holder {holder_id}: {dup} FHIR patient ids map to more than one person"
                )
        else:
            con.execute("CREATE OR REPLACE TEMP TABLE _patient_map (patient_id VARCHAR, person_id VARCHAR)")

        #    distinct resource ids -> pseudonyms
        for rtype in sorted(
            {c.resource_type for r in rules for c in r.columns if c.action == "resource_pseudonym"}
        ):
            parts = [
                f"SELECT CAST(r.{_q(c.source or '')} AS VARCHAR) AS v FROM {_q(r.source)} r WHERE {keep[r.source]}"
                for r in rules
                for c in r.columns
                if c.resource_type == rtype and c.source in cols[r.source]
            ]
            con.register("_res_arrow", resource_map(_distinct(con, parts), rtype or "", pseudo))
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {_q('_res_' + (rtype or ''))} AS SELECT * FROM _res_arrow"
            )
            con.unregister("_res_arrow")

        timer.lap("patient and resource maps")
        # 4. person_link (restricted): holder pseudonym -> normalised identifier
        con.execute(
            "CREATE OR REPLACE TABLE person_link (person_id VARCHAR USING COMPRESSION uncompressed, "
            "personnummer VARCHAR)"
        )
        persons = con.execute(
            "INSERT INTO person_link SELECT DISTINCT person_id, normalised FROM _pm "
            "WHERE used AND person_id IS NOT NULL"
        ).fetchall()[0][0]

        timer.lap("person_link")
        # 5. research zone, rebuilt from scratch in a temporary file. We hold the raw zone's
        # write lock, so no other run of this holder is writing: leftovers of a killed run go.
        research_path.parent.mkdir(parents=True, exist_ok=True)
        for stale in research_path.parent.glob(f".{research_path.name}.*.tmp*"):
            stale.unlink(missing_ok=True)
        if staging.exists():
            shutil.rmtree(staging)
        settings.ensure_restricted(staging)
        counts: dict[str, int] = {}
        excluded: dict[str, int] = {}
        rows_in = unresolved = 0
        sources: list[TableSource] = []
        try:
            for r in rules:
                joins, select = _select_sql(r, cols[r.source])
                valid = "pm.person_id IS NOT NULL" if r.identifier else "true"
                query = f"SELECT {select} FROM {joins} WHERE {valid} AND {keep[r.source]}"
                ddl, typed_query = _research_ddl(con, r, query)
                parquet = staging / f"{r.name}.parquet"
                counts[r.name] = int(
                    con.execute(
                        f"COPY ({typed_query}) TO {_sql_str(parquet)} ({_STAGING_PARQUET})"
                    ).fetchall()[0][0]
                )
                sources.append(TableSource(r.name, parquet, ddl))
                n_in = int(con.execute(f"SELECT count(*) FROM {_q(r.source)}").fetchall()[0][0])
                rows_in += n_in
                # every raw row is written, quarantined for its identifier, or excluded by the gate
                excluded[r.name] = n_in - counts[r.name] - quarantined_rows.get(r.source, 0)
                if excluded[r.name] < 0:  # would mean a row was counted twice: never report a wrong count
                    raise PseudonymiseError(f"holder {holder_id}: inconsistent row counts for {r.name}")
                if r.via_patient:
                    unresolved += con.execute(
                        f"SELECT count(*) FROM read_parquet({_sql_str(parquet)}) WHERE person_id IS NULL"
                    ).fetchall()[0][0]
            timer.lap("research tables staged")
            for name in ("_pm", "_patient_map", "_county"):
                con.execute(f"DROP TABLE IF EXISTS {name}")
            # The research file itself: written once by a process that never held an identifier.
            written = write_duckdb(tmp_path, sources, temp_directory=staging, preserve_insertion_order=False)
            if written != counts:
                raise PseudonymiseError(
                    f"holder {holder_id}: the research file does not hold the staged rows"
                )
            timer.lap("research file written")
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            tmp_path.with_name(tmp_path.name + ".wal").unlink(missing_ok=True)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    with _exclusive(research_path):
        os.replace(tmp_path, research_path)
        research_path.with_name(research_path.name + ".wal").unlink(missing_ok=True)
    result = PseudonymiseResult(
        holder=holder_id,
        rows_in=int(rows_in),
        rows_out=int(sum(counts.values())),
        persons=int(persons),
        quarantined=int(sum(by_reason.values())),
        quarantined_by_reason={k: int(v) for k, v in by_reason.items()},
        unresolved_person_rows=int(unresolved),
        tables={k: int(v) for k, v in counts.items()},
        excluded_by_quality={k: int(v) for k, v in excluded.items()},
        key_id=pseudo.key_id,
        research_db=str(research_path),
    )
    log.info(
        "pseudonymised holder %s: %d rows in, %d out, %d persons, %d quarantined, %d excluded by the "
        "quality gate, %d unresolved",
        holder_id,
        result.rows_in,
        result.rows_out,
        result.persons,
        result.quarantined,
        sum(excluded.values()),
        result.unresolved_person_rows,
    )
    return result


__all__ = ["PseudonymiseError", "PseudonymiseResult", "person_map", "person_rows", "pseudonymise_holder"]
