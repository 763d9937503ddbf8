"""Build, gate and publish the release of an approved extract request.

A release joins the research zones of every holder in scope. Each holder's pseudonyms are
mapped, inside the restricted boundary, to the release's own project-domain pseudonym, so
the same person links across holders within a release and cannot be linked between two
projects' releases. Persons excluded by the consent registry at build time are left out;
so are persons known only by a holder-local identifier (reserve, interim, foreign or local:
the opt-out registry is keyed by personnummer, so their choice cannot be checked; fail
closed, see privacy/README.md "Consent"), and rows whose person cannot be resolved (fail
closed); each is counted.

The release is assembled in a staging directory, passed through the release quality gate
and only then renamed into place, so a half-built or failing release is never visible.

The builder holds identifiers (it reads ``person_link`` for the release pseudonyms), so the
release's DuckDB file is written by a fresh process from the release's Parquet files
(:mod:`pipelines.clean_writer`), and DuckDB spills into the restricted zone.

The builder takes its inputs (the approved request, the consent keys excluded at build time,
the settings) and returns what it built; reading them from governance and recording the
published release there is the edge's part (:mod:`edge.releases`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from governance import cohort
from governance.values import ApprovedRequest
from hdp.settings import REPO_ROOT, Settings, holder
from pipelines.cellkeys import CELL_KEYS, write_cell_keys
from pipelines.clean_writer import TableSource, write_duckdb
from pipelines.quality.gate import delivered_extract_date, raise_for_blocking, run_gate
from pipelines.quality.label import quality_label
from pipelines.release_identity import apply_release_policy, describe_release_policy, release_person_map
from privacy.disclosure import check_k_anonymity

#: The column that places each research table's rows in time (for the request's period).
EVENT_DATE_COLUMN = {
    "register_visit": "visit_date",
    "prom_response": "visit_date",
    "encounter": "start_time",
    "condition": "recorded_date",
    "observation": "effective_time",
    "medication_request": "authored_on",
    "procedure": "performed_date",
    "eq5d_response": "authored",
    "immunization": "occurrence_time",
    "allergy_intolerance": "recorded_date",
    "diagnostic_report": "effective_time",
    "document_reference": "document_time",
}
RELEASE_DB = "release.duckdb"
CONSENT_LINK = "consent_link.parquet"
MANIFEST = "manifest.json"


class ReleaseError(RuntimeError):
    """The release cannot be built as requested."""


@dataclass(frozen=True)
class ReleaseResult:
    release_id: str
    request_id: int
    path: str
    rows: dict[str, int] = field(default_factory=dict)
    persons: int = 0
    excluded_persons_consent: int = 0
    #: persons known only by a holder-local identifier, whose opt-out cannot be checked
    excluded_persons_consent_unverifiable: int = 0
    excluded_rows_unlinked: int = 0
    disclosure: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class PublishedRelease:
    """A release renamed into place: what the edge records in governance and the audit log."""

    result: ReleaseResult
    manifest_sha256: str


@dataclass(frozen=True)
class AssembledTable:
    """One table written into the staging directory."""

    rows: int
    unlinked_rows: int  # rows in the period whose person has no release pseudonym (left out)
    disclosure: dict[str, Any] | None  # the k-anonymity report of a record-level table


def _ident(name: str) -> str:
    return name.replace('"', '""')


def release_id_for(request_id: int) -> str:
    return f"rel-{request_id:05d}"


def release_domain(request_id: int) -> str:
    """Key domain of the release's pseudonyms: one per request, never shared between projects."""
    return f"release:{release_id_for(request_id)}"


def variables_by_table(variables: tuple[str, ...]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for variable in variables:
        table, _, column = variable.partition(".")
        if not table or not column or not table.isidentifier() or not column.isidentifier():
            raise ReleaseError(f"variable {variable!r} is not of the form table.column")
        columns = grouped.setdefault(table, [])  # a table asked for by its person_id alone is still in
        if column not in ("person_id", "holder"):  # always present
            columns.append(column)
    return grouped


def code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"hdp {version('hdp')}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _holder_columns(con: duckdb.DuckDBPyConnection, holder_id: str, table: str) -> set[str]:
    """Columns of ``table`` in the attached research zone of ``holder_id`` (empty if it has none)."""
    return {
        r[0]
        for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = ? AND table_name = ?",
            [f"h_{holder_id}", table],
        ).fetchall()
    }


def _select_cohort(con: duckdb.DuckDBPyConnection, request: ApprovedRequest) -> None:
    """Temp table ``cohort``: the eligible persons who meet the request's cohort criteria.

    A person qualifies when, in every table the criteria name, at least one of their rows (in
    any holder in scope) meets all of that table's conditions. Values are bound parameters.
    """
    try:
        conditions = cohort.by_table(cohort.parse(request.cohort_criteria))
    except cohort.InvalidCriteria as exc:
        raise ReleaseError(f"cohort criteria cannot be applied: {exc}") from None
    con.execute("CREATE TEMP TABLE cohort AS SELECT * FROM eligible")
    for table, conds in sorted(conditions.items()):
        selects, params = [], []
        for holder_id in request.holders:
            columns = _holder_columns(con, holder_id, table)
            if not columns:
                continue
            if missing := sorted({c.column for c in conds} - columns):
                raise ReleaseError(
                    f"cohort criteria name {table} column(s) {missing} that {holder_id} does not have"
                )
            selects.append(
                f'SELECT e.release_person_id FROM "h_{holder_id}"."{table}" t JOIN eligible e '
                f"ON e.holder = '{holder_id}' AND e.person_id = t.person_id WHERE "
                + " AND ".join(c.sql("t") for c in conds)
            )
            params += [v for c in conds for v in c.operands if c.op != "is_null"]
        if not selects:
            raise ReleaseError(f"cohort criteria name table {table}, which no holder in scope has")
        con.execute(f"DELETE FROM cohort WHERE release_person_id NOT IN ({' UNION '.join(selects)})", params)


#: Quasi-identifiers that describe the person rather than an event: k-anonymity is checked on
#: these (event dates are shifted per person by the release policy instead).
PERSON_QUASI_IDENTIFIERS = ("birth_year", "sex", "id_type", "county", "deceased_year")


def _generalise(
    con: duckdb.DuckDBPyConnection, table: str, request: ApprovedRequest, settings: Settings
) -> None:
    """Apply the release policy (schemas/policies/release.json) to one assembled table, in place."""
    generalised = apply_release_policy(
        con.sql(f'SELECT * FROM "{table}"').to_arrow_table(),
        table_name=table,
        release_domain=release_domain(request.request_id),
        settings=settings,
    )
    con.register("_generalised", generalised)
    con.execute(f'CREATE OR REPLACE TEMP TABLE "{table}" AS SELECT * FROM _generalised ORDER BY ALL')
    con.unregister("_generalised")


def _enforce_k_anonymity(con: duckdb.DuckDBPyConnection, table: str, *, k: int) -> dict[str, Any]:
    """Make a record-level table k-anonymous on its person-level quasi-identifiers.

    Local suppression, as ARX does it: persons in an equivalence class of fewer than ``k``
    persons get their quasi-identifiers set to NULL; if the class of suppressed values is
    itself smaller than ``k``, those rows are dropped. The result is verified with the access
    layer's k-anonymity check and the release fails closed if it does not hold.
    """
    columns = [r[0] for r in con.execute(f'DESCRIBE "{table}"').fetchall()]
    qis = [c for c in PERSON_QUASI_IDENTIFIERS if c in columns]
    report: dict[str, Any] = {"k": k, "quasi_identifiers": qis, "persons_suppressed": 0, "rows_dropped": 0}
    if not qis:
        return report
    quoted = ", ".join(f'"{c}"' for c in qis)
    match = " AND ".join(f't."{c}" IS NOT DISTINCT FROM s."{c}"' for c in qis)
    small = f'SELECT {quoted} FROM "{table}" GROUP BY ALL HAVING count(DISTINCT person_id) < {int(k)}'
    report["persons_suppressed"] = con.execute(
        f'SELECT count(DISTINCT person_id) FROM "{table}" t WHERE EXISTS (SELECT 1 FROM ({small}) s WHERE {match})'
    ).fetchall()[0][0]
    con.execute(
        f'UPDATE "{table}" AS t SET {", ".join(f"{c} = NULL" for c in quoted.split(", "))} '
        f"WHERE EXISTS (SELECT 1 FROM ({small}) s WHERE {match})"
    )
    before = con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0]
    con.execute(f'DELETE FROM "{table}" AS t WHERE EXISTS (SELECT 1 FROM ({small}) s WHERE {match})')
    report["rows_dropped"] = before - con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0]
    persons = con.sql(f'SELECT DISTINCT person_id, {quoted} FROM "{table}"').to_arrow_table()
    verdict = check_k_anonymity(persons, qis, k)
    if not verdict.ok:
        raise ReleaseError(f"{table} is not {k}-anonymous on {qis} after suppression; release refused")
    return report


def assemble(
    request: ApprovedRequest,
    *,
    person_map: pa.Table,
    excluded_consent_keys: frozenset[str],
    staging: Path,
    settings: Settings,
) -> ReleaseResult:
    """Write the release's tables into ``staging``. Pure apart from reading research zones."""
    release_id = release_id_for(request.request_id)
    staging.mkdir(parents=True)
    spill = settings.ensure_restricted(settings.scratch_dir / f"release-{release_id}")
    con = _connect(spill)
    excluded_persons, unverifiable_persons = _select_eligible(con, person_map, excluded_consent_keys)
    _attach_research_zones(con, request.holders, settings)
    _select_cohort(con, request)
    tables = {
        table: _write_table(con, table, columns, request, staging, settings)
        for table, columns in sorted(variables_by_table(request.variables).items())
    }
    released_persons = _select_released_persons(con, tables)
    private = _fresh_private_staging_dir(settings, release_id)
    _write_consent_link(con, private / CONSENT_LINK)
    _write_database_and_keys(con, tables, staging=staging, private=private, spill=spill)
    return ReleaseResult(
        release_id=release_id,
        request_id=request.request_id,
        path=str(staging),
        rows={table: t.rows for table, t in tables.items()},
        persons=released_persons,
        excluded_persons_consent=excluded_persons,
        excluded_persons_consent_unverifiable=unverifiable_persons,
        excluded_rows_unlinked=sum(t.unlinked_rows for t in tables.values()),
        disclosure={table: t.disclosure for table, t in tables.items() if t.disclosure is not None},
    )


def _connect(spill: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    # One thread: the same input must give byte-identical Parquet files on every run.
    con.execute("SET threads = 1")
    # An in-memory database spills to ./.tmp by default: wherever the worker happens to run.
    con.execute("SET temp_directory = ?", [str(spill)])
    return con


def _select_eligible(
    con: duckdb.DuckDBPyConnection, person_map: pa.Table, excluded_consent_keys: frozenset[str]
) -> tuple[int, int]:
    """Temp table ``eligible``: the persons of ``person_map`` not excluded by consent, and whose
    consent can be checked (a consent key: known by a national number; fail closed for the others).

    Returns how many release persons consent excluded, and how many could not be checked.
    """
    con.register("person_map", person_map)
    con.register("excluded", pa.table({"consent_key": pa.array(sorted(excluded_consent_keys), pa.string())}))
    con.execute("""
        CREATE TEMP TABLE eligible AS
        SELECT holder, person_id, release_person_id, consent_key FROM person_map
        WHERE consent_key IS NOT NULL AND consent_key NOT IN (SELECT consent_key FROM excluded)
    """)
    excluded_persons, unverifiable = con.execute("""
        SELECT count(DISTINCT release_person_id) FILTER (consent_key IN (SELECT consent_key FROM excluded)),
               count(DISTINCT release_person_id) FILTER (consent_key IS NULL)
        FROM person_map
    """).fetchall()[0]
    return int(excluded_persons), int(unverifiable)


def _attach_research_zones(
    con: duckdb.DuckDBPyConnection, holder_ids: tuple[str, ...], settings: Settings
) -> None:
    for holder_id in holder_ids:
        path = settings.research_db(holder_id)
        if not path.exists():
            raise ReleaseError(f"holder {holder_id} has no research zone yet; run its pseudonymisation first")
        con.execute(f"ATTACH '{path}' AS \"h_{holder_id}\" (READ_ONLY)")


def _period_conditions(table: str, period: tuple[date | None, date | None]) -> list[str]:
    """SQL conditions (on alias ``t``) that keep the rows of ``table`` dated within ``period``."""
    date_col = EVENT_DATE_COLUMN.get(table)
    if not date_col:
        return []
    start, end = period
    # FHIR dates are kept as delivered: a dateTime with an offset, or a partial date ('2019-04'),
    # which has no day to compare and so falls outside any period asked for (never an error).
    day = f'TRY_CAST(left(CAST(t."{date_col}" AS VARCHAR), 10) AS DATE)'
    conditions = []
    if start:
        conditions.append(f"{day} >= DATE '{start}'")
    if end:
        conditions.append(f"{day} <= DATE '{end}'")
    return conditions


def _select_table_rows(
    con: duckdb.DuckDBPyConnection, table: str, columns: list[str], request: ApprovedRequest
) -> int:
    """Temp table ``table``: the cohort's rows of every holder in scope, under release pseudonyms.

    Returns how many rows in the period were left out because their person has no release pseudonym.
    """
    where = _period_conditions(table, request.period)
    parts = []
    unlinked = 0
    for holder_id in request.holders:
        present = _holder_columns(con, holder_id, table)
        if not present:
            continue
        missing = [c for c in columns if c not in present]
        if missing:
            raise ReleaseError(f"{table} of {holder_id} has no column(s) {missing}")
        source = f'"h_{holder_id}"."{table}" t'
        cols = "".join(f', t."{c}"' for c in columns)
        unlinked += con.execute(
            f"SELECT count(*) FROM {source} WHERE t.person_id IS NULL OR t.person_id NOT IN "
            f"(SELECT person_id FROM person_map WHERE holder = '{holder_id}')"
            + (f" AND {' AND '.join(where)}" if where else "")
        ).fetchall()[0][0]
        parts.append(
            f"SELECT e.release_person_id AS person_id, '{holder_id}' AS holder{cols} FROM {source} "
            f"JOIN cohort e ON e.holder = '{holder_id}' AND e.person_id = t.person_id"
            + (f" WHERE {' AND '.join(where)}" if where else "")
        )
    if not parts:
        raise ReleaseError(f"no holder in scope has table {table}")
    con.execute(f'CREATE TEMP TABLE "{table}" AS SELECT * FROM ({" UNION ALL ".join(parts)}) ORDER BY ALL')
    return int(unlinked)


def _write_table(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: list[str],
    request: ApprovedRequest,
    staging: Path,
    settings: Settings,
) -> AssembledTable:
    """Select, generalise and (record level) k-anonymise one table; write it as Parquet into ``staging``."""
    unlinked = _select_table_rows(con, table, columns, request)
    _generalise(con, table, request, settings)
    disclosure = None
    if request.output_tier == "record":
        disclosure = _enforce_k_anonymity(con, table, k=max(holder(h).k_anonymity for h in request.holders))
    rows = con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0]
    con.execute(f"COPY \"{table}\" TO '{staging / (table + '.parquet')}' (FORMAT parquet, COMPRESSION zstd)")
    return AssembledTable(rows=int(rows), unlinked_rows=unlinked, disclosure=disclosure)


def _select_released_persons(con: duckdb.DuckDBPyConnection, tables: dict[str, AssembledTable]) -> int:
    """Temp view ``released_persons``: the release pseudonyms with a row in any table; returns their count."""
    con.execute(
        "CREATE TEMP VIEW released_persons AS SELECT DISTINCT person_id FROM ("
        + " UNION ALL ".join(f'SELECT person_id FROM "{t}"' for t in tables)
        + ")"
    )
    return int(con.execute("SELECT count(*) FROM released_persons").fetchall()[0][0])


def _fresh_private_staging_dir(settings: Settings, release_id: str) -> Path:
    private = private_staging_dir(settings, release_id)
    if private.exists():
        shutil.rmtree(private)
    private.mkdir(parents=True, mode=0o700)
    return private


def _write_consent_link(con: duckdb.DuckDBPyConnection, destination: Path) -> None:
    # The consent link maps every release pseudonym to the one cross-release consent key, so
    # it lives in the restricted zone, never beside the release files researchers may read.
    con.execute(f"""
        COPY (SELECT DISTINCT release_person_id AS person_id, consent_key FROM eligible
              WHERE release_person_id IN (SELECT person_id FROM released_persons) ORDER BY ALL)
        TO '{destination}' (FORMAT parquet)
    """)


def _table_ddl(con: duckdb.DuckDBPyConnection, tables: dict[str, AssembledTable]) -> dict[str, str]:
    """``CREATE TABLE`` of each assembled table, with its types as assembled."""
    return {
        table: f'CREATE TABLE "{table}" ('
        + ", ".join(
            f'"{_ident(name)}" {dtype}' for name, dtype, *_ in con.execute(f'DESCRIBE "{table}"').fetchall()
        )
        + ")"
        for table in tables
    }


def _write_database_and_keys(
    con: duckdb.DuckDBPyConnection,
    tables: dict[str, AssembledTable],
    *,
    staging: Path,
    private: Path,
    spill: Path,
) -> None:
    """Close the assembling connection, write the release database from the Parquet files and
    draw the release's perturbation keys."""
    ddl = _table_ddl(con, tables)
    con.close()
    _write_release_db(staging, ddl, spill)
    write_cell_keys(staging / RELEASE_DB, private / CELL_KEYS)


def _write_release_db(staging: Path, ddl: dict[str, str], spill: Path) -> None:
    # The access layer opens this file read-only; researchers never see consent keys. It is
    # written from the Parquet files by a process that never held an identifier, with each
    # table's rows in file order (the cell keys follow row ids).
    write_duckdb(
        staging / RELEASE_DB,
        [TableSource(t, staging / f"{t}.parquet", create) for t, create in ddl.items()],
        temp_directory=spill,
        threads=1,
    )
    shutil.rmtree(spill, ignore_errors=True)


def write_manifest(
    staging: Path,
    request: ApprovedRequest,
    result: ReleaseResult,
    *,
    policy: dict[str, Any],
    quality: dict[str, Any],
    extract_dates: Mapping[str, date | None] | None = None,
) -> dict[str, Any]:
    files = {
        p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(staging.glob("*.parquet"))
    }
    manifest = {
        "release_id": result.release_id,
        "request": {
            "request_id": request.request_id,
            "project": request.project,
            "purpose": request.purpose,
            "holders": list(request.holders),
            "variables": list(request.variables),
            "output_tier": request.output_tier,
            "period": [str(p) if p else None for p in request.period],
            "cohort_criteria": request.cohort_criteria,
        },
        "approvals": list(request.approvals),
        "rows": result.rows,
        "persons": result.persons,
        "excluded": {
            "persons_by_consent": result.excluded_persons_consent,
            "persons_consent_unverifiable": result.excluded_persons_consent_unverifiable,
            "rows_without_linkable_person": result.excluded_rows_unlinked,
        },
        "files": files,
        "disclosure": result.disclosure,
        "code_version": code_version(),
        "policy": policy,
        "quality": quality,
        # each holder's extract date as its delivery stated it (None: not stated), for the codebook
        "extract_dates": {h: (d.isoformat() if d else None) for h, d in (extract_dates or {}).items()},
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (staging / MANIFEST).write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
    )
    return manifest


def private_staging_dir(settings: Settings, release_id: str) -> Path:
    """Where a release's restricted files (consent link, perturbation keys) are assembled."""
    return settings.release_private_dir / f".staging-{release_id}"


def _publish_dir(staging: Path, final: Path) -> None:
    """Rename ``staging`` to ``final``; an unrecorded earlier attempt is moved aside first, so
    a crash never loses both."""
    if final.exists():
        previous = final.with_name(f".previous-{final.name}")
        if previous.exists():
            shutil.rmtree(previous)
        final.rename(previous)
        staging.rename(final)
        shutil.rmtree(previous)
    else:
        staging.rename(final)


def build(
    request: ApprovedRequest, *, excluded_consent_keys: frozenset[str], staging: Path, settings: Settings
) -> ReleaseResult:
    """Assemble the release of ``request`` into ``staging`` (replacing an interrupted attempt)."""
    if staging.exists():
        shutil.rmtree(staging)
    person_map = release_person_map(
        holder_ids=request.holders, release_domain=release_domain(request.request_id), settings=settings
    )
    return assemble(
        request,
        person_map=person_map,
        excluded_consent_keys=excluded_consent_keys,
        staging=staging,
        settings=settings,
    )


def build_and_publish(
    request: ApprovedRequest, *, excluded_consent_keys: frozenset[str], run_id: str, settings: Settings
) -> PublishedRelease:
    """Build the release of an approved request, gate it and publish it atomically.

    Publishing only renames files into place: recording the release in governance is the
    caller's (the edge's) part, after this returns.
    """
    staging = settings.releases_dir / f".staging-{release_id_for(request.request_id)}"
    result = build(request, excluded_consent_keys=excluded_consent_keys, staging=staging, settings=settings)
    return gate_and_publish(request, result, staging=staging, run_id=run_id, settings=settings)


def gate_and_publish(
    request: ApprovedRequest, result: ReleaseResult, *, staging: Path, run_id: str, settings: Settings
) -> PublishedRelease:
    """Pass an assembled release through the release quality gate, write its manifest and rename
    it (its restricted files first) into place."""
    release_id = result.release_id
    final = settings.releases_dir / release_id
    raise_for_blocking(run_gate("release", release_dir=staging, run_id=run_id, settings=settings))
    write_manifest(
        staging,
        request,
        result,
        policy=describe_release_policy(),
        quality=quality_label(staging),
        extract_dates={h: delivered_extract_date(settings, h) for h in request.holders},
    )
    # Restricted files first: the access layer refuses a release whose consent link is missing.
    _publish_dir(private_staging_dir(settings, release_id), settings.release_private_dir / release_id)
    _publish_dir(staging, final)
    return PublishedRelease(
        result=replace(result, path=str(final)), manifest_sha256=sha256_file(final / MANIFEST)
    )


def assemble_parts(
    request: ApprovedRequest,
    parts: Mapping[str, Mapping[str, Path]],
    *,
    staging: Path,
    settings: Settings,
) -> ReleaseResult:
    """Assemble a federated release from the parts the nodes built (holder -> table -> Parquet).

    Each node has already selected its cohort, applied the release policy, its consent
    exclusions and k-anonymity, and passed its gate, with the project pseudonyms the nodes share.
    Here the parts become one release: rows of every holder per table, k-anonymity enforced again
    over the union (a person's rows from two holders can form a rarer combination), the release
    database, fresh perturbation keys, and a consent link that maps each project pseudonym to
    itself (consent is kept at the nodes; the nodes send the pseudonyms that leave a release).
    """
    release_id = release_id_for(request.request_id)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    spill = settings.ensure_restricted(settings.scratch_dir / f"release-{release_id}")
    con = _connect(spill)
    tables: dict[str, AssembledTable] = {}
    for table in sorted(variables_by_table(request.variables)):
        files = [str(p[table]) for _, p in sorted(parts.items()) if table in p]
        if not files:
            continue
        con.execute(
            f"CREATE TABLE {_ident(table)} AS SELECT * FROM read_parquet(?, union_by_name = true) "
            "ORDER BY holder, person_id",
            [files],
        )
        disclosure = None
        if request.output_tier == "record":
            disclosure = _enforce_k_anonymity(
                con, table, k=max(holder(h).k_anonymity for h in request.holders)
            )
        rows = con.execute(f"SELECT count(*) FROM {_ident(table)}").fetchall()[0][0]
        con.execute(
            f"COPY {_ident(table)} TO '{staging / (table + '.parquet')}' (FORMAT parquet, COMPRESSION zstd)"
        )
        tables[table] = AssembledTable(rows=int(rows), unlinked_rows=0, disclosure=disclosure)
    if not tables:
        raise ReleaseError("no node delivered a table of this release")
    released_persons = _select_released_persons(con, tables)
    private = _fresh_private_staging_dir(settings, release_id)
    con.execute(
        f"COPY (SELECT person_id, person_id AS consent_key FROM released_persons ORDER BY ALL) "
        f"TO '{private / CONSENT_LINK}' (FORMAT parquet)"
    )
    _write_database_and_keys(con, tables, staging=staging, private=private, spill=spill)
    return ReleaseResult(
        release_id=release_id,
        request_id=request.request_id,
        path=str(staging),
        rows={table: t.rows for table, t in tables.items()},
        persons=released_persons,
        disclosure={table: t.disclosure for table, t in tables.items() if t.disclosure is not None},
    )


def published_release(release_id: str, *, request_id: int, settings: Settings) -> ReleaseResult | None:
    """What the manifest of a published release records (None if there is none).

    For a retry after the release was published and recorded (the worker died before
    reporting success): the work is done, and this reports it.
    """
    final = settings.releases_dir / release_id
    if not (final / MANIFEST).exists():
        return None
    manifest = json.loads((final / MANIFEST).read_text(encoding="utf-8"))
    return ReleaseResult(
        release_id=release_id,
        request_id=request_id,
        path=str(final),
        rows=manifest["rows"],
        persons=manifest["persons"],
    )


def rebuild_for_comparison(
    request: ApprovedRequest, *, excluded_consent_keys: frozenset[str], destination: Path, settings: Settings
) -> dict[str, int]:
    """Rebuild an already released request into ``destination`` (not published); returns its row counts.

    For operators and tests to check that a release is reproducible from the research zones
    and keys: the Parquet files must be byte-identical to the published ones.
    """
    try:
        return build(
            request, excluded_consent_keys=excluded_consent_keys, staging=destination, settings=settings
        ).rows
    finally:  # the rebuilt consent link and keys are not needed for a comparison of the files
        shutil.rmtree(private_staging_dir(settings, release_id_for(request.request_id)), ignore_errors=True)


def delete_release_files(release_id: str, *, settings: Settings) -> bool:
    """Delete a release's files and its restricted files; True if the release directory existed."""
    path = settings.releases_dir / release_id
    existed = path.exists()
    if existed:
        shutil.rmtree(path)
    shutil.rmtree(settings.release_private_dir / release_id, ignore_errors=True)
    return existed
