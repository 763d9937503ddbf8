"""Pseudonymisation stage: raw zone -> research zone, for one data holder.

Reads ``restricted/<holder>/raw.duckdb``, identifies every person, replaces the identifier with
the holder-domain keyed pseudonym, generalises quasi-identifiers and writes
``research/<holder>.duckdb`` as declared in ``schemas/policies/pseudonymise.json``.

Who a person is (:mod:`privacy.identifiers`): the best kind of identifier they carry,
national (personnummer, samordningsnummer) > reservnummer > interim > foreign > local, each
pseudonymised in its own namespace (a national number exactly as before; the other kinds
prefixed by kind and holder, so they link within the holder only). A CSV register's identifier
column may hold a national number, an interim number (``HDP_ACCEPT_INTERIM_NUMBERS``) or a
reserve number in one of the holder's formats (``schemas/holders.json``). A FHIR Patient is
identified by its national number (the view's ``personnummer`` column) if it has one, else by
the best of its other identifiers (read from the validated resource in ``fhir_resource``),
else by its logical id (kind ``local``). ``id_type`` in the research zone is the kind; birth
year and sex come from national numbers only, otherwise from the columns the policy names
(``fallback_from``: the Patient's birthDate year and gender).

Speed comes from doing the expensive work once per *distinct* value, not per row: one
aggregation finds the distinct identifiers (with a flag: does any of its rows reach the
research zone); they are validated with the vectorised parser and hashed with precomputed
HMAC states; distinct postal codes and encounter ids likewise; DuckDB then joins the small
maps onto the big tables and writes each research table with one INSERT. ``person_link`` is
deduplicated from the same map, and the identifier-quarantine scan runs only when some
distinct value is invalid or NULL. Key material never reaches DuckDB: only pseudonyms do.

No research row is ever written without a person. Rows whose identifier is unusable go to
the raw zone's ``quarantine`` table (stage ``pseudonymise``, reason ``identifier.*``, the whole
raw row as JSON in ``original``, for FHIR the resource as delivered). FHIR rows whose patient
cannot be resolved are quarantined too: ``person.unresolved`` (the reference names no delivered
Patient, or there is none) and ``person.patient_quarantined`` (the Patient was quarantined, for
its identifier or by the quality gate); they are counted in ``unresolved_person_rows``.

Rows the raw-zone quality gate quarantined (``quarantine`` stage ``quality``, matched by file
and line or by resource key: :func:`pipelines.quality.quarantine_rows.not_quarantined_sql`)
never reach the research zone, and a quarantined Patient does not resolve its resources'
``person_id`` (fail closed). They are counted per research table in ``excluded_by_quality``.
Identifiers are still validated on every delivered row, so an invalid one keeps its
``identifier.*`` record even when a quality check caught the row too. For every table,
``rows in = written + quarantined here + excluded_by_quality``.
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
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hdp.settings import Settings, get_settings
from pipelines import quarantine
from pipelines.clean_writer import TableSource, write_duckdb
from pipelines.outcomes.sql import SQL_TYPES, SURVEY_SQL_TYPE, score_sql, survey_positive_sql
from pipelines.outcomes.survey import SurveyError
from pipelines.outcomes.valuesets import ValueSetError
from pipelines.quality.quarantine_rows import FHIR_TABLES, not_quarantined_sql
from pipelines.quality.quarantine_rows import STAGE as QUALITY_STAGE
from pipelines.warehouse import write_connection
from privacy.domains import holder_domain, pseudonymiser, resource_message
from privacy.identifiers import (
    LOCAL,
    PATIENT_ID_SYSTEM,
    IdentifierScheme,
    classify_values,
    identify,
    load_scheme,
)
from privacy.identifiers import REASON_TEXT as IDENTIFIER_REASON_TEXT
from privacy.policy import (
    ColumnRule,
    PseudonymisePolicy,
    TableRule,
    county_prefixes,
    load_pseudonymise_policy,
)
from privacy.pseudonym import Pseudonymiser

log = logging.getLogger(__name__)

STAGE = "pseudonymise"

PERSON_UNRESOLVED = "person.unresolved"
PATIENT_QUARANTINED = "person.patient_quarantined"
#: Every reason this stage quarantines a row for (texts never hold a value nor a quote: SQL literals).
REASON_TEXT = {
    **IDENTIFIER_REASON_TEXT,
    PERSON_UNRESOLVED: "the patient reference names no Patient of this delivery",
    PATIENT_QUARANTINED: "the Patient was quarantined (its identifier, or the raw quality gate)",
}
#: A holder whose configuration is not given: national numbers only (interim numbers refused).
NATIONAL_ONLY = IdentifierScheme(holder="national_only", patient_id_fallback=False)


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
    #: FHIR rows quarantined because their patient could not be resolved (``person.*``)
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


def person_rows(
    raw_values: pa.Array,
    pseudo: Pseudonymiser,
    *,
    reference_date: date,
    scheme: IdentifierScheme = NATIONAL_ONLY,
) -> pa.Table:
    """Distinct raw identifier values -> validity, pseudonym and derived attributes, one row each.

    Columns ``raw_value, identifier, person_id, birth_year, sex, id_type, reason_code``
    (``identifier``, the namespaced identifier of :mod:`privacy.identifiers`, and ``person_id``
    NULL and ``reason_code`` set for an unusable value). Each valid value is hashed as it comes:
    a person delivered in two forms (``19811218-9876`` and ``198112189876``) is hashed twice,
    which is rare and cheaper than deduplicating a million values first; both rows get the same
    pseudonym.
    """
    identified = classify_values(raw_values, scheme, reference_date=reference_date)
    return _person_table(raw_values, identified, pseudo)


def _person_table(raw_values: pa.Array, identified: pa.Table, pseudo: Pseudonymiser) -> pa.Table:
    identifier = identified["identifier"]
    return pa.table(
        {
            "raw_value": raw_values,
            "identifier": identifier,
            "person_id": pseudo.many(identifier),
            "birth_year": identified["birth_year"],
            "sex": identified["sex"],
            "id_type": identified["kind"],
            "reason_code": identified["reason_code"],
        }
    )


def person_map(
    raw_values: pa.Array,
    pseudo: Pseudonymiser,
    *,
    reference_date: date,
    used: pa.Array | None = None,
    scheme: IdentifierScheme = NATIONAL_ONLY,
) -> tuple[pa.Table, pa.Table]:
    """:func:`person_rows` and the ``person_link`` rows (one per distinct namespaced identifier).

    ``used`` (boolean, one per value; default all true) marks the values that occur in at
    least one row carried into the research zone: only those persons go to the link.
    """
    rows = person_rows(raw_values, pseudo, reference_date=reference_date, scheme=scheme)
    keep = pc.is_valid(rows["person_id"])
    if used is not None:
        keep = pc.and_(keep, pc.fill_null(used, False))
    link = (
        rows.filter(keep)
        .select(["person_id", "identifier"])
        .group_by(["person_id", "identifier"])
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
    # resource_message(resource_type, id) for every id, without a Python string per value
    prefix = resource_message(resource_type, "")
    messages = pc.binary_join_element_wise(pa.scalar(prefix), ids.cast(pa.string()), "")
    return pa.table({"resource_id": ids, "pseudonym": pseudo.many(messages)})


# --------------------------------------------------------------------------------------
# The raw zone as the policy sees it
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RawTables:
    """The raw tables this run reads: which the policy covers, their columns, and which rows may
    reach the research zone."""

    #: every table of the raw zone (before this run adds ``quarantine``)
    present: set[str]
    #: the policy's rules whose raw table was delivered, in policy order
    rules: list[TableRule]
    #: raw table -> its columns
    columns: dict[str, set[str]]
    #: raw table -> SQL condition on alias ``r``: the row was not quarantined by the raw-zone
    #: quality gate (stage ``quality``). Every read that feeds the research zone carries it.
    keep: dict[str, str]


def _read_raw_tables(
    con: duckdb.DuckDBPyConnection, policy: PseudonymisePolicy, holder_id: str
) -> _RawTables:
    present = _tables(con)
    rules = [r for r in policy.tables if r.source in present]
    columns = {r.source: set(_columns(con, r.source)) for r in rules}
    for r in rules:
        unexpected = sorted(columns[r.source] - r.used_source_columns() - r.drop)
        if unexpected:
            log.warning(
                "holder %s: %s has columns not in the policy, dropped: %s",
                holder_id,
                r.source,
                ", ".join(unexpected),
            )
    quarantine.ensure_table(con)
    gated = con.execute("SELECT count(*) FROM quarantine WHERE stage = ?", [QUALITY_STAGE]).fetchall()[0][0]
    # (with no quality records the condition is true for every row: skip the anti-join)
    keep = {r.source: not_quarantined_sql(r.source, "r") if gated else "true" for r in rules}
    return _RawTables(present=present, rules=rules, columns=columns, keep=keep)


# --------------------------------------------------------------------------------------
# SQL for one table
# --------------------------------------------------------------------------------------


def _national_column(rule: TableRule, alias: str) -> str:
    """The Patient table's national identifier as matched against ``_patients.national``: blank
    counts as absent (the Patient is then known by another identifier)."""
    return f"nullif(trim(CAST({alias}.{_q(rule.identifier or '')} AS VARCHAR)), '')"


def _person_join(rule: TableRule) -> str:
    """The join giving raw table alias ``r`` its person as ``pm`` (NULL when it has none)."""
    if rule.patient_key:
        return (
            f"LEFT JOIN _patients pm ON r.{_q(rule.patient_key)} IS NOT DISTINCT FROM pm.patient_id "
            f"AND {_national_column(rule, 'r')} IS NOT DISTINCT FROM pm.national"
        )
    if rule.identifier:
        return f"LEFT JOIN _pm pm ON r.{_q(rule.identifier)} = pm.raw_value"
    return f"LEFT JOIN _patient_map pm ON r.{_q(rule.via_patient or '')} = pm.patient_id"


def _fallback_sql(action: str, column: str) -> str:
    """birth_year / sex from a raw column, for persons whose identifier carries none: the year
    of a (possibly partial) date, a FHIR administrative gender."""
    value = f"CAST(r.{_q(column)} AS VARCHAR)"
    if action == "birth_year":
        return f"TRY_CAST(left({value}, 4) AS INTEGER)"
    return f"CASE {value} WHEN 'female' THEN 'F' WHEN 'male' THEN 'M' END"


def _eq5d_sql(rule: TableRule, c: ColumnRule, cols: set[str] | None) -> str:
    """An ``eq5d`` column: the score compiled over raw columns ``r.<dimension>``
    (:mod:`pipelines.outcomes.sql`: NULL when a dimension is missing or not a level; nothing is
    imputed). A dimension the holder did not deliver gives a NULL of the score's type. An
    unknown value set or one for another instrument stops the run (fail closed).
    ``cols=None``: compile over every dimension (the check before any data moves)."""
    try:
        expr = score_sql(
            c.score or "",
            [f"r.{_q(d)}" for d in c.dimensions],
            value_set=c.value_set,
            levels=c.levels,
        )
    except (ValueSetError, ValueError) as exc:
        raise PseudonymiseError(f"policy table {rule.name}, column {c.name}: {exc}") from exc
    if cols is not None and not set(c.dimensions) <= cols:
        return f"CAST(NULL AS {SQL_TYPES[c.score or '']})"
    return expr


def _survey_sql(rule: TableRule, c: ColumnRule, cols: set[str] | None) -> str:
    """A ``survey`` column: 1/0/NULL, is the raw answer ``r.<from>`` positive
    (:func:`pipelines.outcomes.sql.survey_positive_sql`, schemas/surveys/). An answer column the
    holder did not deliver gives a NULL INTEGER; an unknown survey or dimension stops the run."""
    try:
        expr = survey_positive_sql(f"r.{_q(c.answer or '')}", c.dimension or "", c.survey or "")
    except SurveyError as exc:
        raise PseudonymiseError(f"policy table {rule.name}, column {c.name}: {exc}") from exc
    if cols is not None and c.answer not in cols:
        return f"CAST(NULL AS {SURVEY_SQL_TYPE})"
    return expr


#: derived-column actions and their compilers (``cols=None``: check only)
_DERIVED = {"eq5d": _eq5d_sql, "survey": _survey_sql}


def check_derived_columns(policy: PseudonymisePolicy) -> None:
    """Compile every derived (``eq5d``, ``survey``) column of the policy; raise PseudonymiseError
    if one cannot be (unknown value set or survey, value set for another instrument, ...)."""
    for rule in policy.tables:
        for c in rule.columns:
            if c.action in _DERIVED:
                _DERIVED[c.action](rule, c, None)


def _from_person_map(c: ColumnRule, cols: set[str]) -> bool:
    """The column is a person's attribute as the person maps hold it (the pseudonym; birth year
    and sex unless a fallback column was delivered; the identifier's kind): the clean writer
    takes it from the person map rather than from the staged rows (:func:`_research_ddl`)."""
    if c.action in ("birth_year", "sex"):
        return not (c.fallback and c.fallback in cols)
    return c.action in ("person_id", "id_type")


#: the staged rows' column naming the person: their row in the person map (``person_no``)
_PERSON_NO = "_person_no"


def _research_select(rule: TableRule, cols: set[str], keep: str, *, staged: bool = False) -> str:
    """The query producing the research table from raw table alias ``r``: the rows that satisfy
    ``keep`` and have a person (every other row is quarantined or excluded by the gate).
    ``staged``: the rows as handed over to the clean writer, the person's number in place of
    their person-map columns (:func:`_research_ddl`)."""
    joins = [f"{_q(rule.source)} r", _person_join(rule)]
    select = [f"pm.person_no AS {_PERSON_NO}"] if staged else []
    for i, c in enumerate(rule.columns):
        if c.source and c.source not in cols:
            select.append(f"NULL AS {_q(c.name)}")  # holder did not deliver this column
            continue
        if staged and _from_person_map(c, cols):
            continue
        if c.action in _DERIVED:
            expr = _DERIVED[c.action](rule, c, cols)
        elif c.action in ("birth_year", "sex") and c.fallback and c.fallback in cols:
            expr = f"coalesce(pm.{c.action}, {_fallback_sql(c.action, c.fallback)})"
        elif c.action in ("person_id", "birth_year", "sex", "id_type"):
            expr = f"pm.{c.action}"
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
    return f"SELECT {', '.join(select)} FROM {' '.join(joins)} WHERE pm.person_id IS NOT NULL AND {keep}"


#: Keyed pseudonyms are random hex: no compression scheme gains more than the hex encoding's
#: factor two, and DuckDB's automatic analysis of such strings costs more than the rest of
#: the write together (measured: 3.4 s vs 0.8 s for 2 M rows). Store them uncompressed.
_UNCOMPRESSED_ACTIONS = frozenset({"person_id", "resource_pseudonym"})


#: The person map's view in the clean writer: ``person_no`` and the person-map columns
#: (:func:`_write_person_map`)
_PERSONS_VIEW = "_persons"


@dataclass(frozen=True)
class _TypedResearchQuery:
    #: CREATE TABLE for the research table (types from the query, pseudonyms uncompressed)
    ddl: str
    #: the staging query, its untyped NULL columns (a column the holder did not deliver) cast to VARCHAR
    query: str
    #: the clean writer's SELECT giving the research rows from the staged ones (``_src``) and the
    #: person map; None: the staged rows are the research rows
    writer_select: str | None


def _research_ddl(
    con: duckdb.DuckDBPyConnection, rule: TableRule, cols_in: set[str], keep: str
) -> _TypedResearchQuery:
    """The research table's DDL and how its rows are staged and written.

    The pseudonym is 64 hex characters. Written once per row into the Parquet hand-over and
    read back by the clean writer, it took more of the stage's time than anything else (10 M
    rows: 737 MB of Parquet, against 103 MB without). So a table with persons is staged with
    each row's person number, an INTEGER, and without the person's other attributes; the clean
    writer joins the person map (one row per person) and writes the research table whole."""
    research = _research_select(rule, cols_in, keep)
    types = {name: dtype for name, dtype, *_ in con.execute(f"DESCRIBE {research}").fetchall()}
    with_persons = any(c.action == "person_id" for c in rule.columns)
    ddl, staged, written = [], [_PERSON_NO] if with_persons else [], []
    for c in rule.columns:
        untyped = types[c.name] == '"NULL"'
        dtype = "VARCHAR" if untyped else types[c.name]
        using = " USING COMPRESSION uncompressed" if c.action in _UNCOMPRESSED_ACTIONS else ""
        ddl.append(f"{_q(c.name)} {dtype}{using}")
        if with_persons and _from_person_map(c, cols_in):
            written.append(f"m.{c.action}")
        else:
            staged.append(f"CAST({_q(c.name)} AS VARCHAR) AS {_q(c.name)}" if untyped else _q(c.name))
            written.append(f"s.{_q(c.name)}")
    query = _research_select(rule, cols_in, keep, staged=True) if with_persons else research
    return _TypedResearchQuery(
        ddl=f"CREATE TABLE {_q(rule.name)} ({', '.join(ddl)})",
        query=f"SELECT {', '.join(staged)} FROM ({query})",
        writer_select=(
            f"SELECT {', '.join(written)} FROM _src s JOIN {_PERSONS_VIEW} m ON s.{_PERSON_NO} = m.person_no"
            if with_persons
            else None
        ),
    )


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


# --------------------------------------------------------------------------------------
# The steps of the stage, in the order they run
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _StagePaths:
    raw_db: Path
    research_db: Path
    #: the research database is built here and renamed into place
    research_tmp: Path
    #: Parquet hand-over of the research tables to the clean writer (restricted)
    staging: Path
    #: DuckDB spill files of this process (restricted: they hold identifiers)
    spill: Path


def _stage_paths(holder_id: str, settings: Settings) -> _StagePaths:
    research_db = settings.research_db(holder_id)
    return _StagePaths(
        raw_db=settings.raw_db(holder_id),
        research_db=research_db,
        research_tmp=research_db.with_name(f".{research_db.name}.{os.getpid()}.tmp"),
        staging=settings.holder_dir(holder_id) / "research_staging",
        spill=settings.ensure_restricted(settings.scratch_dir / f"pseudonymise-{holder_id}"),
    )


def _memory_limit() -> str:
    """DuckDB memory cap for the stage's connection (``HDP_PSEUDONYMISE_MEMORY_LIMIT``, default 2GB;
    the setting admits only a number and a unit, so it can go into SQL)."""
    return get_settings().pseudonymise_memory_limit


def _configure(con: duckdb.DuckDBPyConnection, spill: Path) -> None:
    # Row order in the research zone carries no meaning (its values are deterministic, its
    # order is not promised), so DuckDB may write in parallel without reordering.
    con.execute("SET preserve_insertion_order = false")
    # Bounded memory: joins and aggregates spill rather than grow with the delivery (10 M
    # rows, 1 M persons: peak RSS about 2 GiB with the 2 GB cap, 4.3 GiB without it).
    con.execute(f"SET memory_limit = '{_memory_limit()}'")
    # Spill files hold identifiers: inside the restricted zone, whatever the default.
    con.execute(f"SET temp_directory = {_sql_str(spill)}")


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


@dataclass(frozen=True)
class _DistinctIdentifiers:
    #: distinct non-null identifier values as delivered (strings)
    values: pa.Array
    #: boolean, one per value: at least one of its rows is carried into the research zone
    used: pa.Array
    #: some identifier column holds a NULL (those rows are quarantined as ``identifier.missing``)
    any_null: bool


def _column_rules(raw: _RawTables) -> list[TableRule]:
    """The rules whose identifier column is read value by value (CSV registers): every rule
    with a delivered identifier column except the FHIR Patient table (:func:`_patient_maps`)."""
    return [
        r for r in raw.rules if r.identifier and not r.patient_key and r.identifier in raw.columns[r.source]
    ]


def _distinct_identifiers(con: duckdb.DuckDBPyConnection, raw: _RawTables) -> _DistinctIdentifiers:
    """Every delivered identifier value, once, flagged by whether the research zone uses it.

    Every value is validated later (a row with an invalid identifier gets its identifier.*
    quarantine record even when a quality check caught the row too), but only the persons of kept
    rows go to ``person_link``. One aggregation over the rows: NULL is grouped like any value
    and split off afterwards.
    """
    parts = [
        f"SELECT CAST(r.{_q(r.identifier or '')} AS VARCHAR) AS v, {raw.keep[r.source]} AS keep "
        f"FROM {_q(r.source)} r"
        for r in _column_rules(raw)
    ]
    none = _DistinctIdentifiers(pa.array([], pa.string()), pa.array([], pa.bool_()), any_null=False)
    if not parts:
        return none
    t = con.sql(
        f"SELECT v, bool_or(keep) AS keep FROM ({' UNION ALL '.join(parts)}) GROUP BY v"
    ).to_arrow_table()
    t = t.combine_chunks()
    any_null = t.num_rows > 0 and t["v"].null_count > 0
    if any_null:
        t = t.filter(pc.is_valid(t["v"]))
    if not t.num_rows:
        return replace(none, any_null=any_null)
    return _DistinctIdentifiers(t["v"].chunk(0).cast(pa.string()), t["keep"].chunk(0), any_null)


def _invalid_values(values: pa.Array, identified: pa.Table) -> pa.Table:
    """``(raw_value, reason_code)`` of the distinct values that are not usable identifiers."""
    return pa.table({"raw_value": values, "reason_code": identified["reason_code"]}).filter(
        pc.is_valid(identified["reason_code"])
    )


def _reset_quarantine(con: duckdb.DuckDBPyConnection, raw: _RawTables) -> None:
    """Forget this stage's earlier records of every source it reads: a re-run replaces them."""
    for source_name in sorted({r.source_name for r in raw.rules}):
        quarantine.reset(con, stage=STAGE, source=source_name)


def _quarantine_rows(
    con: duckdb.DuckDBPyConnection,
    raw: _RawTables,
    rule: TableRule,
    holder_id: str,
    *,
    rows: str,
    column: str,
) -> int:
    """Copy the raw rows of ``rows`` (a FROM clause over alias ``r`` that gives ``q.reason``) into
    the quarantine with their reason, the column it concerns, and where they came from: a FHIR
    row with its resource key and the resource as delivered, a CSV row with its file and line.
    Returns how many rows were copied."""
    cols = raw.columns[rule.source]
    texts = " ".join(
        f"WHEN '{code}' THEN '{text.replace(chr(39), chr(39) * 2)}'" for code, text in REASON_TEXT.items()
    )
    detail = f"'column {column}: ' || CASE q.reason {texts} END"
    record_key = rule.record_key or FHIR_TABLES.get(rule.source)
    if record_key is not None and record_key[1] not in cols:
        record_key = None
    key = f"'{record_key[0]}/' || r.{_q(record_key[1])}" if record_key else "NULL"
    head = f"INSERT INTO quarantine SELECT '{STAGE}', ?, '{rule.source_name}'"
    if record_key and "fhir_resource" in raw.present:
        # keep the resource exactly as delivered, and its position in the delivery
        # (one record per row even if the id occurs twice in fhir_resource)
        sql = f"""{head}, fr._source_file, fr._line_no, {key}, q.reason, {detail}, NULL,
                   encode(CAST(coalesce(fr.resource, to_json(r)) AS VARCHAR)), NULL
            FROM {rows}
            LEFT JOIN (SELECT id, arg_min(_source_file, _line_no) AS _source_file, min(_line_no) AS _line_no,
                              arg_min(resource, _line_no) AS resource
                       FROM fhir_resource WHERE resource_type = '{record_key[0]}' GROUP BY id) fr
                 ON fr.id = r.{_q(record_key[1])}"""
    else:
        has_pos = {"_source_file", "_line_no"} <= cols
        sf, ln = ("r._source_file", "r._line_no") if has_pos else ("NULL", "NULL")
        sql = f"""{head}, {sf}, {ln}, {key}, q.reason, {detail}, NULL,
                   encode(CAST(to_json(r) AS VARCHAR)), NULL
            FROM {rows}"""
    return int(con.execute(sql, [holder_id]).fetchall()[0][0])


def _quarantine_identifiers(
    con: duckdb.DuckDBPyConnection, raw: _RawTables, holder_id: str, bad: pa.Table, any_null: bool
) -> dict[str, int]:
    """Quarantine every raw row of an identifier column (:func:`_column_rules`) whose identifier
    is unusable or missing, with its reason and the row as delivered. ``bad`` holds the unusable
    distinct values and their reasons. Returns raw table -> rows quarantined."""
    quarantined_rows: dict[str, int] = {}
    # Finding the rows of bad values is a scan of every identifier column; with no invalid
    # value and no NULL among the distinct identifiers there is nothing to find.
    if not any_null and not bad.num_rows:
        return quarantined_rows
    con.register("_bad", bad)
    try:
        for r in _column_rules(raw):
            quarantined_rows[r.source] = _quarantine_rows(
                con, raw, r, holder_id, rows=_bad_rows(r), column=r.identifier or ""
            )
    finally:
        con.unregister("_bad")
    return quarantined_rows


def _quarantine_patients(con: duckdb.DuckDBPyConnection, raw: _RawTables, holder_id: str) -> dict[str, int]:
    """Quarantine the FHIR Patient rows whose chosen identifier is unusable (``_patients``)."""
    rule = _patient_rule(raw)
    bad = con.execute("SELECT count(*) FROM _patients WHERE reason_code IS NOT NULL").fetchall()[0][0]
    if rule is None or not bad:  # the usual case: no scan of the Patient table
        return {}
    pk = _q(rule.patient_key or "")
    rows = (
        f"{_q(rule.source)} r JOIN _patients p ON r.{pk} IS NOT DISTINCT FROM p.patient_id "
        f"AND {_national(rule, raw, 'r')} IS NOT DISTINCT FROM p.national AND p.reason_code IS NOT NULL "
        "CROSS JOIN LATERAL (SELECT p.reason_code AS reason) q"
    )
    column = rule.identifier if rule.identifier in raw.columns[rule.source] else rule.patient_key
    return {rule.source: _quarantine_rows(con, raw, rule, holder_id, rows=rows, column=column or "")}


def _quarantine_unresolved(con: duckdb.DuckDBPyConnection, raw: _RawTables, holder_id: str) -> dict[str, int]:
    """Quarantine the rows of FHIR tables that would reach the research zone but whose patient
    resolves to no person: ``person.unresolved`` when no delivered Patient has that id (or the
    row names none), ``person.patient_quarantined`` when the Patient was quarantined."""
    out: dict[str, int] = {}
    for r in raw.rules:
        if not r.via_patient:
            continue
        via = f"r.{_q(r.via_patient)}" if r.via_patient in raw.columns[r.source] else "NULL"
        rows = (
            f"(SELECT * FROM {_q(r.source)} r WHERE {raw.keep[r.source]} "
            f"AND NOT EXISTS (SELECT 1 FROM _patient_map m WHERE m.patient_id = {via})) r "
            f"CROSS JOIN LATERAL (SELECT CASE WHEN EXISTS (SELECT 1 FROM _patients p WHERE p.patient_id = {via}) "
            f"THEN '{PATIENT_QUARANTINED}' ELSE '{PERSON_UNRESOLVED}' END AS reason) q"
        )
        out[r.source] = _quarantine_rows(con, raw, r, holder_id, rows=rows, column=r.via_patient)
    return out


def _quarantined_by_reason(con: duckdb.DuckDBPyConnection, holder_id: str) -> dict[str, int]:
    rows = con.execute(
        "SELECT reason_code, count(*) FROM quarantine WHERE stage = ? AND holder = ? GROUP BY 1 ORDER BY 1",
        [STAGE, holder_id],
    ).fetchall()
    return {str(code): int(n) for code, n in rows}


def _county_map(con: duckdb.DuckDBPyConnection, raw: _RawTables) -> None:
    """Temp table ``_county``: distinct postal codes of kept rows -> county.

    The regex runs per distinct code, the join per row: measured 2.4 s for the regex on 10 M
    rows vs about 1 s for distinct + join.
    """
    pc_parts = [
        f"SELECT CAST(r.{_q(c.source or '')} AS VARCHAR) AS v FROM {_q(r.source)} r WHERE {raw.keep[r.source]}"
        for r in raw.rules
        for c in r.columns
        if c.action == "county" and c.source in raw.columns[r.source]
    ]
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _county AS
        SELECT v AS postal_code, {county_sql("v")} AS county
        FROM (SELECT DISTINCT v FROM ({" UNION ALL ".join(pc_parts) if pc_parts else "SELECT NULL::VARCHAR AS v"})
              WHERE v IS NOT NULL)""")


def _load_temp_table(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    """Temp table ``name`` holding the Arrow ``table`` (copied: joins on it run in DuckDB)."""
    con.register("_arrow", table)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {_q(name)} AS SELECT * FROM _arrow")
    finally:
        con.unregister("_arrow")


def _patient_rule(raw: _RawTables) -> TableRule | None:
    """The FHIR Patient table's rule (``patient_key``), when its table and key were delivered."""
    rule = next((r for r in raw.rules if r.patient_key), None)
    if rule is None or rule.patient_key not in raw.columns[rule.source]:
        return None
    return rule


def _national(rule: TableRule, raw: _RawTables, alias: str) -> str:
    """The Patient's national identifier column, blank as NULL (NULL if not delivered)."""
    return _national_column(rule, alias) if rule.identifier in raw.columns[rule.source] else "NULL::VARCHAR"


_PATIENTS_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),
        ("national", pa.string()),  # the national column as matched (blank: NULL)
        ("used", pa.bool_()),  # a row of this Patient is carried into the research zone
        ("identifier", pa.string()),  # namespaced (privacy.identifiers); NULL when unusable
        ("person_id", pa.string()),
        ("birth_year", pa.int32()),
        ("sex", pa.string()),
        ("id_type", pa.string()),
        ("reason_code", pa.string()),
        ("person_no", pa.int32()),  # numbered after _pm's (_person_numbers)
    ]
)


def _fhir_candidates(
    con: duckdb.DuckDBPyConnection, raw: _RawTables, scheme: IdentifierScheme, patient_ids: pa.Array
) -> pa.Table:
    """The best non-national identifier of each of ``patient_ids`` by the holder's rules
    (:meth:`~privacy.identifiers.IdentifierScheme.fhir_rules`): ``(patient_id, kind, system,
    value)``, read from the validated Patient resources. Identifiers without a value and those
    with ``use: old`` are ignored; an identifier matched by its type only is namespaced by it.
    (Ingestion keeps one resource per Patient id; were there two, the best of both would win.)"""
    rules = scheme.fhir_rules()
    empty = pa.table({n: pa.array([], pa.string()) for n in ("patient_id", "kind", "system", "value")})
    if "fhir_resource" not in raw.present or not len(patient_ids) or not rules.num_rows:
        return empty
    con.register("_want", pa.table({"patient_id": patient_ids}))
    con.register("_id_rules", rules)
    try:
        return (
            con.sql("""
            WITH ids AS (
                SELECT id AS patient_id, unnest(json_extract(resource, '$.identifier[*]')) AS i FROM fhir_resource
                WHERE resource_type = 'Patient' AND id IN (SELECT patient_id FROM _want)),
            flat AS (
                SELECT patient_id, json_extract_string(i, '$.system') AS system,
                       trim(json_extract_string(i, '$.value')) AS value,
                       json_extract_string(i, '$.type.coding[*].code') AS type_codes
                FROM ids
                WHERE coalesce(json_extract_string(i, '$.use'), '') <> 'old'
                  AND nullif(trim(json_extract_string(i, '$.value')), '') IS NOT NULL)
            SELECT f.patient_id,
                   arg_min(ru.kind, (ru.rank, f.value)) AS kind,
                   arg_min(coalesce(f.system, 'type:' || ru.type_code), (ru.rank, f.value)) AS system,
                   arg_min(f.value, (ru.rank, f.value)) AS value
            FROM flat f JOIN _id_rules ru ON f.system = ru.system OR list_contains(f.type_codes, ru.type_code)
            GROUP BY f.patient_id""")
            .to_arrow_table()
            .cast(empty.schema)
        )
    finally:
        con.unregister("_want")
        con.unregister("_id_rules")


def _patient_maps(
    con: duckdb.DuckDBPyConnection,
    raw: _RawTables,
    scheme: IdentifierScheme,
    pseudo: Pseudonymiser,
    *,
    reference_date: date,
    holder_id: str,
    first_person_no: int,
) -> None:
    """Temp tables ``_patients`` (every delivered FHIR Patient: its identity, pseudonym or the
    reason it has none) and ``_patient_map`` (patient id -> person of the Patients that resolve
    their resources: a usable identity and a Patient row the gate kept; fail closed).

    A Patient is identified by its national number when it has one (a present but invalid
    one quarantines it), else by the best of its other identifiers, else by its logical id.
    """
    rule = _patient_rule(raw)
    if rule is None:
        _load_temp_table(con, "_patients", _PATIENTS_SCHEMA.empty_table())
    else:
        pats = (
            con.sql(
                f"SELECT CAST(r.{_q(rule.patient_key or '')} AS VARCHAR) AS patient_id, "
                f"{_national(rule, raw, 'r')} AS national, bool_or({raw.keep[rule.source]}) AS used "
                f"FROM {_q(rule.source)} r GROUP BY ALL ORDER BY ALL"
            )
            .to_arrow_table()
            .combine_chunks()
        )
        has_national = pc.is_valid(pats["national"])
        national = pats.filter(has_national)
        by_national = classify_values(national["national"], scheme, reference_date=reference_date)
        other = pats.filter(pc.invert(has_national))
        by_other = _identify_without_national(con, raw, scheme, other["patient_id"], reference_date)
        identified = pa.concat_tables([by_national, by_other])
        keys = pa.concat_tables([national, other])
        table = pa.table(
            {
                "patient_id": keys["patient_id"],
                "national": keys["national"],
                "used": keys["used"],
                "identifier": identified["identifier"],
                "person_id": pseudo.many(identified["identifier"]),
                "birth_year": identified["birth_year"],
                "sex": identified["sex"],
                "id_type": identified["kind"],
                "reason_code": identified["reason_code"],
                "person_no": _person_numbers(keys.num_rows, first=first_person_no),
            },
            schema=_PATIENTS_SCHEMA,
        )
        _load_temp_table(con, "_patients", table)
    con.execute("""CREATE OR REPLACE TEMP TABLE _patient_map AS
        SELECT patient_id, person_id, min(person_no) AS person_no FROM _patients
        WHERE used AND person_id IS NOT NULL AND patient_id IS NOT NULL GROUP BY patient_id, person_id""")
    dup = con.execute("SELECT count(*) - count(DISTINCT patient_id) FROM _patient_map").fetchall()[0][0]
    if dup:
        raise PseudonymiseError(f"holder {holder_id}: {dup} FHIR patient ids map to more than one person")


def _identify_without_national(
    con: duckdb.DuckDBPyConnection,
    raw: _RawTables,
    scheme: IdentifierScheme,
    patient_ids: pa.Array,
    reference_date: date,
) -> pa.Table:
    """The identity of Patients without a national number, one row per id of ``patient_ids``."""
    cand = _fhir_candidates(con, raw, scheme, patient_ids)
    pos = pc.index_in(patient_ids, value_set=cand["patient_id"])
    kinds, systems, values = (pc.take(cand[c], pos) for c in ("kind", "system", "value"))
    if scheme.patient_id_fallback:  # finally the Patient's logical id (kind local)
        none = pc.is_null(pos)
        kinds = pc.if_else(none, LOCAL, kinds)
        systems = pc.if_else(none, PATIENT_ID_SYSTEM, systems)
        values = pc.if_else(none, patient_ids, values)
    return identify(kinds, systems, values, scheme, reference_date=reference_date)


def _person_numbers(n: int, *, first: int = 0) -> pa.Array:
    """``first, first + 1, ...``: a row's number in the person maps (``_pm``, ``_patients``). The
    research rows are staged with it, not with their 64-character pseudonym (:func:`_research_ddl`)."""
    return pa.array(np.arange(first, first + n, dtype=np.int32))


def _distinct(con: duckdb.DuckDBPyConnection, parts: list[str]) -> pa.Array:
    if not parts:
        return pa.array([], pa.string())
    sql = " UNION ".join(parts)
    col = con.sql(f"SELECT DISTINCT v FROM ({sql}) WHERE v IS NOT NULL").to_arrow_table()["v"]
    arr = col.combine_chunks() if col.num_chunks else pa.array([], pa.string())
    return arr.cast(pa.string())


def _resource_maps(con: duckdb.DuckDBPyConnection, raw: _RawTables, pseudo: Pseudonymiser) -> None:
    """Temp table ``_res_<type>`` per resource type the policy pseudonymises: distinct resource
    id of kept rows -> pseudonym."""
    resource_types = {
        c.resource_type
        for r in raw.rules
        for c in r.columns
        if c.action == "resource_pseudonym" and c.resource_type is not None
    }
    for rtype in sorted(resource_types):
        parts = [
            f"SELECT CAST(r.{_q(c.source or '')} AS VARCHAR) AS v FROM {_q(r.source)} r WHERE {raw.keep[r.source]}"
            for r in raw.rules
            for c in r.columns
            if c.resource_type == rtype and c.source in raw.columns[r.source]
        ]
        _load_temp_table(con, "_res_" + rtype, resource_map(_distinct(con, parts), rtype, pseudo))


def _person_link(con: duckdb.DuckDBPyConnection) -> int:
    """``person_link`` (restricted): holder pseudonym -> namespaced identifier, for the persons
    of rows carried into the research zone. Returns the number of persons.

    The column keeps its name ``personnummer`` (release building, re-identification read it):
    it holds a national number's 12 digits exactly as before, and the namespaced identifier
    (``<kind>\\x1f<holder>\\x1f...``, :mod:`privacy.identifiers`) of every other kind."""
    con.execute(
        "CREATE OR REPLACE TABLE person_link (person_id VARCHAR USING COMPRESSION uncompressed, "
        "personnummer VARCHAR)"
    )
    return int(
        con.execute(
            "INSERT INTO person_link SELECT DISTINCT person_id, identifier FROM ("
            "SELECT person_id, identifier FROM _pm WHERE used AND person_id IS NOT NULL UNION ALL "
            "SELECT person_id, identifier FROM _patients WHERE used AND person_id IS NOT NULL)"
        ).fetchall()[0][0]
    )


def _clear_leftovers(paths: _StagePaths) -> None:
    """Remove what a killed run left behind. Called with the raw zone's write lock held, so no
    other run of this holder is writing."""
    paths.research_db.parent.mkdir(parents=True, exist_ok=True)
    for stale in paths.research_db.parent.glob(f".{paths.research_db.name}.*.tmp*"):
        stale.unlink(missing_ok=True)
    if paths.staging.exists():
        shutil.rmtree(paths.staging)


def _write_person_map(con: duckdb.DuckDBPyConnection, staging: Path) -> Path:
    """The person map of the clean writer (:func:`_research_ddl`) as Parquet in ``staging``: person
    number -> pseudonym, birth year, sex and identifier kind of every person a research row can
    name (both person maps, ``_pm`` and ``_patients``, number their rows apart). Identifier-free."""
    persons = staging / "_persons.parquet"
    columns = "person_no, person_id, birth_year, sex, id_type"
    con.execute(
        f"COPY (SELECT {columns} FROM _pm WHERE used AND person_id IS NOT NULL UNION ALL "
        f"SELECT {columns} FROM _patients WHERE used AND person_id IS NOT NULL) "
        f"TO {_sql_str(persons)} ({_STAGING_PARQUET})"
    )
    return persons


@dataclass(frozen=True)
class _StagedTable:
    """One research table written to its Parquet hand-over file, and its row accounting."""

    source: TableSource
    rows_in: int
    rows_out: int
    #: raw rows the raw-zone quality gate kept out (and that were not quarantined here)
    excluded_by_quality: int


def _stage_table(
    con: duckdb.DuckDBPyConnection,
    rule: TableRule,
    raw: _RawTables,
    staging: Path,
    *,
    persons: Path,
    quarantined_rows: int,
    holder_id: str,
) -> _StagedTable:
    typed = _research_ddl(con, rule, raw.columns[rule.source], raw.keep[rule.source])
    parquet = staging / f"{rule.name}.parquet"
    rows_out = int(
        con.execute(f"COPY ({typed.query}) TO {_sql_str(parquet)} ({_STAGING_PARQUET})").fetchall()[0][0]
    )
    rows_in = int(con.execute(f"SELECT count(*) FROM {_q(rule.source)}").fetchall()[0][0])
    # every raw row is written, quarantined here (identifier, person), or excluded by the gate
    excluded = rows_in - rows_out - quarantined_rows
    if excluded < 0:  # would mean a row was counted twice: never report a wrong count
        raise PseudonymiseError(f"holder {holder_id}: inconsistent row counts for {rule.name}")
    source = TableSource(rule.name, parquet, typed.ddl)
    if typed.writer_select is not None:
        source = replace(source, select=typed.writer_select, lookups=((_PERSONS_VIEW, persons),))
    return _StagedTable(source, rows_in, rows_out, excluded)


def _build_research_db(
    con: duckdb.DuckDBPyConnection,
    raw: _RawTables,
    paths: _StagePaths,
    settings: Settings,
    *,
    quarantined_rows: dict[str, int],
    holder_id: str,
    timer: _PhaseTimer,
) -> list[_StagedTable]:
    """Stage every research table as Parquet, then have the clean writer build the research
    database from those files at ``paths.research_tmp``."""
    _clear_leftovers(paths)
    settings.ensure_restricted(paths.staging)
    try:
        persons = _write_person_map(con, paths.staging)
        staged = [
            _stage_table(
                con,
                r,
                raw,
                paths.staging,
                persons=persons,
                quarantined_rows=quarantined_rows.get(r.source, 0),
                holder_id=holder_id,
            )
            for r in raw.rules
        ]
        timer.lap("research tables staged")
        for name in ("_pm", "_patients", "_patient_map", "_county"):
            con.execute(f"DROP TABLE IF EXISTS {name}")
        # The research file itself: written once by a process that never held an identifier.
        written = write_duckdb(
            paths.research_tmp,
            [t.source for t in staged],
            temp_directory=paths.staging,
            preserve_insertion_order=False,
        )
        if written != {t.source.name: t.rows_out for t in staged}:
            raise PseudonymiseError(f"holder {holder_id}: the research file does not hold the staged rows")
        timer.lap("research file written")
    except BaseException:
        paths.research_tmp.unlink(missing_ok=True)
        paths.research_tmp.with_name(paths.research_tmp.name + ".wal").unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(paths.staging, ignore_errors=True)
    return staged


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


def _replace_research_db(paths: _StagePaths) -> None:
    """Rename the new research database into place: readers see the old file or the new one."""
    with _exclusive(paths.research_db):
        os.replace(paths.research_tmp, paths.research_db)
        paths.research_db.with_name(paths.research_db.name + ".wal").unlink(missing_ok=True)


# --------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------


def pseudonymise_holder(
    holder_id: str,
    *,
    settings: Settings | None = None,
    policy: PseudonymisePolicy | None = None,
    identifiers: IdentifierScheme | None = None,
) -> PseudonymiseResult:
    """Build ``research/<holder>.duckdb`` (and ``person_link``, quarantine) from the raw zone.

    ``identifiers``: the holder's identifier scheme (default: ``schemas/holders.json`` and
    ``HDP_ACCEPT_INTERIM_NUMBERS``)."""
    settings = settings or get_settings()
    policy = policy or load_pseudonymise_policy()
    check_derived_columns(policy)  # fail closed before any data moves
    scheme = identifiers or load_scheme(holder_id, accept_interim=settings.accept_interim_numbers)
    raw_path = settings.raw_db(holder_id)
    if not raw_path.exists():
        raise PseudonymiseError(f"holder {holder_id} has no raw zone at {raw_path}; run its ingestion first")
    ref = reference_date_for(holder_id, settings)
    pseudo = pseudonymiser(holder_domain(holder_id), settings=settings)
    paths = _stage_paths(holder_id, settings)

    with write_connection(paths.raw_db) as con:
        _configure(con, paths.spill)
        timer = _PhaseTimer(holder_id)
        raw = _read_raw_tables(con, policy, holder_id)

        values = _distinct_identifiers(con, raw)
        timer.lap(f"{len(values.values)} distinct identifiers")
        identified = classify_values(values.values, scheme, reference_date=ref)
        # Measured: running the two DuckDB steps (identifier quarantine, county map) in a worker
        # thread while this thread hashes gains nothing on two cores (the hashing slows from 1.4
        # to 2.4 s), so they run in turn.
        _reset_quarantine(con, raw)
        quarantined_rows = _quarantine_identifiers(
            con, raw, holder_id, _invalid_values(values.values, identified), values.any_null
        )
        _county_map(con, raw)
        persons_table = (
            _person_table(values.values, identified, pseudo)
            .append_column("used", values.used)
            .append_column("person_no", _person_numbers(len(values.values)))
        )
        timer.lap("identifiers validated, rows quarantined, county map, pseudonyms")
        _load_temp_table(con, "_pm", persons_table)

        _patient_maps(
            con,
            raw,
            scheme,
            pseudo,
            reference_date=ref,
            holder_id=holder_id,
            first_person_no=persons_table.num_rows,
        )
        unresolved = _quarantine_unresolved(con, raw, holder_id)
        for counts in (_quarantine_patients(con, raw, holder_id), unresolved):
            for source, n in counts.items():
                quarantined_rows[source] = quarantined_rows.get(source, 0) + n
        by_reason = _quarantined_by_reason(con, holder_id)
        _resource_maps(con, raw, pseudo)
        timer.lap("patient and resource maps, unresolved rows quarantined")
        persons = _person_link(con)
        timer.lap("person_link")

        staged = _build_research_db(
            con, raw, paths, settings, quarantined_rows=quarantined_rows, holder_id=holder_id, timer=timer
        )

    _replace_research_db(paths)
    result = PseudonymiseResult(
        holder=holder_id,
        rows_in=sum(t.rows_in for t in staged),
        rows_out=sum(t.rows_out for t in staged),
        persons=persons,
        quarantined=sum(by_reason.values()),
        quarantined_by_reason=by_reason,
        unresolved_person_rows=sum(unresolved.values()),
        tables={t.source.name: t.rows_out for t in staged},
        excluded_by_quality={t.source.name: t.excluded_by_quality for t in staged},
        key_id=pseudo.key_id,
        research_db=str(paths.research_db),
    )
    log.info(
        "pseudonymised holder %s: %d rows in, %d out, %d persons, %d quarantined, %d excluded by the "
        "quality gate, %d without a resolvable patient",
        holder_id,
        result.rows_in,
        result.rows_out,
        result.persons,
        result.quarantined,
        sum(result.excluded_by_quality.values()),
        result.unresolved_person_rows,
    )
    return result


__all__ = ["PseudonymiseError", "PseudonymiseResult", "person_map", "person_rows", "pseudonymise_holder"]
