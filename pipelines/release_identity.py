"""Release-side identity work: release pseudonyms and quasi-identifier generalisation.

Both run inside the restricted zone (they read ``person_link`` or the release key) and hand
the release builder only pseudonyms and generalised values.
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hdp.settings import Settings, get_settings
from pipelines.warehouse import read_connection
from privacy.domains import CONSENT_DOMAIN, pseudonymiser, release_domain_name, resource_message
from privacy.identifiers import national_mask
from privacy.policy import ReleasePolicy, ReleaseRule, county_prefixes, load_release_policy
from privacy.pseudonym import Pseudonymiser

NEVER_GENERALISED = frozenset({"person_id", "holder"})
SHIFT_TYPE = "DateShift"  # HMAC message prefix of the per-person date offset


class PersonLinkMissing(RuntimeError):
    """A holder in scope has not been pseudonymised yet (no person_link)."""


MAP_SCHEMA = pa.schema(
    [
        ("holder", pa.string()),
        ("person_id", pa.string()),
        ("release_person_id", pa.string()),
        #: NULL for a person known only by a holder-local identifier: the opt-out registry is keyed
        #: by personnummer, so there is no key to look up (the release builder leaves them out)
        ("consent_key", pa.string()),
    ]
)


def release_person_map(
    *, holder_ids: tuple[str, ...] | list[str], release_domain: str, settings: Settings | None = None
) -> pa.Table:
    """Holder pseudonyms -> this release's pseudonyms and consent keys.

    Columns ``(holder, person_id, release_person_id, consent_key)``. The
    release pseudonym is computed from the namespaced identifier (:mod:`privacy.identifiers`)
    under the release's own key: a national number gives the same person one
    ``release_person_id`` across every holder of the release (and unrelated ones in another
    release); a holder-local identifier (reserve, interim, foreign, local) carries its holder in
    its namespace, so it never links to another holder's person. Identifiers are read from
    ``person_link`` and never leave this function.
    """
    settings = settings or get_settings()
    domain = release_domain_name(release_domain)
    parts = []
    for holder_id in holder_ids:
        path = settings.raw_db(holder_id)
        if not path.exists():
            raise PersonLinkMissing(f"holder {holder_id} has no raw zone; ingest and pseudonymise it first")
        with read_connection(path) as con:
            present = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'person_link'"
            ).fetchall()[0][0]
            if not present:
                raise PersonLinkMissing(
                    f"holder {holder_id} has no person_link; run its pseudonymisation first"
                )
            t = con.sql("SELECT person_id, personnummer FROM person_link").to_arrow_table()
        parts.append(t.append_column("holder", pa.array([holder_id] * t.num_rows, pa.string())))
    if not parts:
        return MAP_SCHEMA.empty_table()
    links = pa.concat_tables(parts)
    uniq = pc.unique(links["personnummer"]) if links.num_rows else pa.array([], pa.string())
    # At a node the project key comes from the federation (drawn by one node of the scope and
    # shared sealed); a node never draws one of its own for a release.
    release = pseudonymiser(domain, settings=settings, create=settings.federation_role != "node").many(uniq)
    consent = pseudonymiser(CONSENT_DOMAIN, settings=settings).many(uniq)
    idx = pc.index_in(links["personnummer"], value_set=uniq)
    return pa.table(
        {
            "holder": links["holder"],
            "person_id": links["person_id"],
            "release_person_id": release.take(idx),
            "consent_key": pc.if_else(
                national_mask(links["personnummer"]), consent.take(idx), pa.scalar(None, pa.string())
            ),
        },
        schema=MAP_SCHEMA,
    )


# --------------------------------------------------------------------------------------
# Quasi-identifier policy
# --------------------------------------------------------------------------------------


def shift_days(person_ids: pa.Array, pseudo: Pseudonymiser, max_days: int) -> pa.Array:
    """Per-person offset in [-max_days, max_days], from the release key (not guessable)."""
    msgs = pa.array(
        [None if p is None else resource_message(SHIFT_TYPE, p) for p in person_ids.to_pylist()], pa.string()
    )
    hexes = pseudo.many(msgs).to_pylist()
    span = 2 * max_days + 1
    return pa.array([None if h is None else int(h[:16], 16) % span - max_days for h in hexes], pa.int32())


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_temporal(t: pa.DataType) -> bool:
    return pa.types.is_date(t) or pa.types.is_timestamp(t)


def _expr(rule: ReleaseRule, col: str, dtype: pa.DataType, joins: list[str], i: int) -> str | None:
    """SQL for one output column, or None to drop it."""
    c = f"t.{_q(col)}"
    a = rule.action
    if a == "keep":
        return c
    if a == "drop":
        return None
    # string columns holding ISO dates/times (FHIR) are converted through TIMESTAMPTZ/DATE
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        as_date: str | None = f"TRY_CAST({c} AS DATE)"
        as_ts = f"TRY_CAST({c} AS TIMESTAMPTZ)"
        is_date_only = f"(length({c}) = 10)"
    else:
        as_date = f"CAST({c} AS DATE)" if _is_temporal(dtype) else None
        as_ts = c
        is_date_only = "true" if pa.types.is_date(dtype) else "false"
    if a == "year":
        return f"CAST(year({as_date}) AS INTEGER)" if as_date else f"CAST({c} AS INTEGER)"
    if a == "band5":
        year = f"year({as_date})" if as_date else f"CAST({c} AS INTEGER)"
        return f"CAST({year} - ({year} % 5) AS INTEGER)"
    if a == "month":
        return f"CAST(date_trunc('month', {as_date or c}) AS DATE)"
    if a == "shift":
        joins.append("LEFT JOIN _shift s ON t.person_id = s.person_id")
        if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
            return (
                f"CASE WHEN {is_date_only} THEN strftime({as_date} + s.days, '%Y-%m-%d') "
                f"ELSE strftime(({as_ts} + to_days(s.days)) AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ') END"
            )
        if pa.types.is_date(dtype):
            return f"CAST({c} + s.days AS DATE)"
        return f"{c} + to_days(s.days)"
    if a == "top_code":
        parts = []
        if pa.types.is_integer(dtype) or pa.types.is_floating(dtype):
            cap = rule.param("max")
            return f"least({c}, {float(cap)})" if cap is not None else c
        label = str(rule.param("label", "other")).replace("'", "''")
        joins.append(
            f"LEFT JOIN (SELECT {_q(col)} AS v, count(DISTINCT person_id) AS n FROM _src GROUP BY 1) r{i} "
            f"ON t.{_q(col)} = r{i}.v"
        )
        parts.append(
            f"CASE WHEN {c} IS NULL THEN NULL WHEN r{i}.n < {int(rule.param('min_count'))} "
            f"THEN '{label}' ELSE CAST({c} AS VARCHAR) END"
        )
        return parts[0]
    if a == "county":
        joins.append(f"LEFT JOIN _county k{i} ON replace(CAST({c} AS VARCHAR), ' ', '') = k{i}.postal_code")
        return f"k{i}.county"
    raise AssertionError(f"unhandled action {a}")


def _rare_combination(columns: list[str], min_count: int, joins: list[str], j: int) -> str:
    """SQL condition: the row's values in ``columns`` (as delivered to the release, before any rule)
    are held by fewer than ``min_count`` distinct persons of the release table. A row with all of
    them NULL says nothing and is left alone."""
    keys = ", ".join(f"{_q(c)} AS v{n}" for n, c in enumerate(columns))
    on = " AND ".join(f"t.{_q(c)} IS NOT DISTINCT FROM g{j}.v{n}" for n, c in enumerate(columns))
    joins.append(
        f"LEFT JOIN (SELECT {keys}, count(DISTINCT person_id) AS n FROM _src GROUP BY ALL) g{j} ON {on}"
    )
    all_null = " AND ".join(f"t.{_q(c)} IS NULL" for c in columns)
    return f"(g{j}.n < {int(min_count)} AND NOT ({all_null}))"


def apply_release_policy(
    table: pa.Table,
    *,
    table_name: str,
    release_domain: str,
    policy: ReleasePolicy | None = None,
    settings: Settings | None = None,
) -> pa.Table:
    """Generalise one release table's quasi-identifiers as the release policy says.

    ``table`` must carry the release's ``person_id`` (the release-domain pseudonym) when a
    ``shift`` or ``top_code`` rule or a combination (:class:`privacy.policy.ReleaseCombination`)
    applies. Row and column order are kept; dropped columns disappear.
    Describe what was applied in the manifest with :func:`describe_release_policy`.
    """
    policy = policy or load_release_policy()
    rules = {
        col: policy.rule_for(table_name, col) for col in table.column_names if col not in NEVER_GENERALISED
    }
    combinations = [
        (combo, [c for c in combo.columns if c in rules])
        for combo in policy.combinations_for(table_name)
        if any(c in rules for c in combo.columns)
    ]
    needs_person = bool(combinations) or any(r.action in ("shift", "top_code") for r in rules.values())
    if needs_person and "person_id" not in table.column_names:
        raise ValueError(f"{table_name}: the release policy needs person_id to shift dates / count persons")
    con = duckdb.connect()
    try:
        con.register("_src", table)
        shifts = {int(r.param("max_days")) for r in rules.values() if r.action == "shift"}
        if shifts:
            pids = pc.unique(table["person_id"]) if table.num_rows else pa.array([], pa.string())
            pseudo = pseudonymiser(release_domain_name(release_domain), settings=settings or get_settings())
            con.register(
                "_shift", pa.table({"person_id": pids, "days": shift_days(pids, pseudo, shifts.pop())})
            )
        if any(r.action == "county" for r in rules.values()):
            pref = county_prefixes()
            codes = pa.array([f"{p}{d:02d}" for p in sorted(pref) for d in range(100)])
            con.register(
                "_county",
                pa.table(
                    {
                        "postal_code": codes,
                        "county": pa.array(np.repeat([pref[p] for p in sorted(pref)], 100)),
                    }
                ),
            )
        joins = ["(SELECT *, row_number() OVER () AS _rn FROM _src) t"]
        exprs: dict[str, str | None] = {
            col: f"t.{_q(col)}"
            if col in NEVER_GENERALISED
            else _expr(rules[col], col, table.schema.field(col).type, joins, i)
            for i, col in enumerate(table.column_names)
        }
        for n, (combo, carried) in enumerate(combinations):
            rare = _rare_combination(carried, combo.min_count, joins, n)
            for col in carried:
                rule, expr = rules[col], exprs[col]
                if expr is None:
                    continue
                label = rule.param("label") if rule.action == "top_code" else None
                instead = "'" + str(label).replace("'", "''") + "'" if label is not None else "NULL"
                exprs[col] = f"CASE WHEN {rare} THEN {instead} ELSE {expr} END"
        select = [f"{expr} AS {_q(col)}" for col, expr in exprs.items() if expr is not None]
        seen: list[str] = []
        for join in joins:
            if join not in seen:
                seen.append(join)
        return con.sql(f"SELECT {', '.join(select)} FROM {' '.join(seen)} ORDER BY t._rn").to_arrow_table()
    finally:
        con.close()


def describe_release_policy(policy: ReleasePolicy | None = None) -> dict[str, Any]:
    """The policy as applied, for ``manifest.json``."""
    return (policy or load_release_policy()).describe()
