"""The check library: declarative checks in ``schemas/checks/*.json``, loaded and validated.

A check is data, reviewed like code. Each one names the zones it runs in (raw, research,
release), the table and column(s) it looks at, its Kahn category (conformance, completeness,
plausibility), a kind from a closed vocabulary (``KINDS``), a severity (``blocking`` stops the
downstream release tasks, ``warning`` is reported only), a threshold (tolerated share of
failing rows, optionally also a count) and a note for operators and stewards. A warning never
excludes a row: only a blocking check may quarantine (the library refuses anything else).

Zone-specific differences (another table name, a different threshold) go in ``overrides``;
``resolve(check, zone)`` applies them. This module is pure: no database, no GX.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from hdp.settings import SCHEMAS_DIR

CHECKS_DIR = SCHEMAS_DIR / "checks"
#: Code lists shared with the FHIR terminology check (one source of truth).
CODES_DIR = SCHEMAS_DIR / "codes"

ZONES = ("raw", "research", "release")
SEVERITIES = ("blocking", "warning")
CATEGORIES = {
    "conformance": ("value", "relational", "computational"),
    "completeness": ("presence",),
    "plausibility": ("uniqueness", "atemporal", "temporal"),
}
#: The sources a check can depend on; ``any`` means every holder, whatever it delivers.
SOURCES = ("register", "prom", "fhir", "any")

#: kind -> (required parameters, optional parameters). Row-level kinds compile to one boolean
#: "this row fails" SQL expression, so every row-level check of a table runs in a single scan.
KINDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # row-level
    "not_null": (frozenset({"column"}), frozenset()),
    "in_set": (frozenset({"column", "values"}), frozenset({"where"})),
    "code_list": (frozenset({"column", "code_list"}), frozenset({"where"})),
    "range": (frozenset({"column", "min", "max"}), frozenset({"where"})),
    "regex": (frozenset({"column", "pattern"}), frozenset()),
    "personnummer": (frozenset({"column"}), frozenset()),
    "predicate": (frozenset({"columns", "fail_when", "description"}), frozenset({"where"})),
    # set-level: one query each
    "unique": (frozenset({"columns"}), frozenset()),
    "foreign_key": (frozenset({"columns", "ref_table", "ref_columns"}), frozenset()),
    "join_predicate": (
        frozenset({"columns", "ref_table", "join", "ref_columns", "fail_when", "description"}),
        frozenset(),
    ),
    "match_within": (
        frozenset(
            {
                "person_column",
                "date_column",
                "ref_table",
                "ref_person_column",
                "ref_date_column",
                "window_days",
            }
        ),
        frozenset(),
    ),
    "row_count_min": (frozenset({"min_rows"}), frozenset()),
    "quarantine_reason": (frozenset({"reason_codes"}), frozenset()),
    "flag_count": (frozenset({"flag_codes"}), frozenset()),
    "columns_absent": (frozenset({"columns"}), frozenset()),
    "no_identifier_values": (frozenset(), frozenset({"exclude_columns"})),
}
ROW_KINDS = frozenset({"not_null", "in_set", "code_list", "range", "regex", "personnummer", "predicate"})
#: Kinds whose failing rows can be copied to the raw zone's quarantine with the check id.
QUARANTINABLE_KINDS = ROW_KINDS | {"foreign_key"}
#: ``table: "*"`` means every user table of the zone's database.
ALL_TABLES = "*"

_ID = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
_OVERRIDABLE = frozenset({"severity", "threshold", "table", "params", "quarantine", "note"})


class CheckLibraryError(ValueError):
    """The check library in schemas/checks is malformed (file and check id in the message)."""


@dataclass(frozen=True)
class Threshold:
    """Tolerated failures: the check passes while failed/total <= max_failed_share and,
    when set, failed <= max_failed_count."""

    max_failed_share: float
    max_failed_count: int | None = None

    def allows(self, failed: int, total: int) -> bool:
        share = failed / total if total else 0.0
        if share > self.max_failed_share:
            return False
        return self.max_failed_count is None or failed <= self.max_failed_count

    def describe(self) -> str:
        text = f"<= {self.max_failed_share:.2%} of rows"
        if self.max_failed_count is not None:
            text += f" and <= {self.max_failed_count} rows"
        return text


@dataclass(frozen=True)
class Check:
    id: str
    kind: str
    category: str
    subcategory: str
    source: str
    zones: tuple[str, ...]
    table: str
    severity: str
    threshold: Threshold
    note: str
    params: Mapping[str, Any] = field(default_factory=dict)
    quarantine: bool = False
    #: extra sources that must be present (cross-source checks), e.g. ("register", "fhir")
    requires: tuple[str, ...] = ()
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    file: str = ""

    @property
    def column(self) -> str | None:
        """The one column a column-level check is about (None for table-level checks)."""
        col = self.params.get("column")
        if col:
            return str(col)
        cols = self.params.get("columns")
        if (
            isinstance(cols, list | tuple)
            and len(cols) == 1
            and self.kind not in ("unique", "columns_absent")
        ):
            return str(cols[0])
        return None

    @property
    def row_level(self) -> bool:
        return self.kind in ROW_KINDS

    def applies_to(self, zone: str, sources: Iterable[str] | None) -> bool:
        """Whether this check runs in ``zone`` for a scope delivering ``sources``
        (None: any sources, as in a release that mixes holders)."""
        if zone not in self.zones:
            return False
        if sources is None:
            return True
        have = set(sources)
        if self.source != "any" and self.source not in have:
            return False
        return all(s in have for s in self.requires)


def _fail(file: str, cid: str, msg: str) -> CheckLibraryError:
    return CheckLibraryError(f"{file}: check {cid!r}: {msg}")


def _threshold(raw: Any, file: str, cid: str) -> Threshold:
    if not isinstance(raw, Mapping) or "max_failed_share" not in raw:
        raise _fail(file, cid, "threshold must be an object with max_failed_share")
    unknown = set(raw) - {"max_failed_share", "max_failed_count"}
    if unknown:
        raise _fail(file, cid, f"unknown threshold fields {sorted(unknown)}")
    share = raw["max_failed_share"]
    if not isinstance(share, int | float) or isinstance(share, bool) or not 0 <= share <= 1:
        raise _fail(file, cid, "max_failed_share must be a number in [0, 1]")
    count = raw.get("max_failed_count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
        raise _fail(file, cid, "max_failed_count must be a non-negative integer")
    return Threshold(float(share), count)


def _check_identifiers(params: Mapping[str, Any], file: str, cid: str) -> None:
    """Column and table names end up in SQL: allow plain lower-case identifiers only."""
    for key in ("column", "person_column", "date_column", "ref_person_column", "ref_date_column"):
        if key in params and not _IDENT.match(str(params[key])):
            raise _fail(file, cid, f"{key} {params[key]!r} is not a plain identifier")
    for key in ("columns", "ref_columns", "exclude_columns"):
        if key in params:
            vals = params[key]
            if not isinstance(vals, list) or not all(isinstance(v, str) and _IDENT.match(v) for v in vals):
                raise _fail(file, cid, f"{key} must be a list of plain identifiers")
    if "ref_table" in params and not _IDENT.match(str(params["ref_table"])):
        raise _fail(file, cid, f"ref_table {params['ref_table']!r} is not a plain identifier")


#: The fields every check has; any other field of a check object is a parameter of its kind.
_BASE_FIELDS = frozenset(
    {
        "id",
        "kind",
        "category",
        "subcategory",
        "source",
        "zones",
        "table",
        "severity",
        "threshold",
        "note",
        "quarantine",
        "requires",
        "overrides",
    }
)


def _kind_params(raw: Mapping[str, Any], kind: str, file: str, cid: str) -> dict[str, Any]:
    """The check's parameters: exactly the required and optional ones of its kind, identifiers plain."""
    required, optional = KINDS[kind]
    params = {k: v for k, v in raw.items() if k not in _BASE_FIELDS}
    missing = required - set(params)
    if missing:
        raise _fail(file, cid, f"kind {kind} needs {sorted(missing)}")
    unknown = set(params) - required - optional
    if unknown:
        raise _fail(file, cid, f"unknown fields {sorted(unknown)} for kind {kind}")
    _check_identifiers(params, file, cid)
    return params


def _check_classification(raw: Mapping[str, Any], file: str, cid: str) -> None:
    """Kahn category and subcategory, source, zones and severity come from their vocabularies."""
    category, sub = raw.get("category"), raw.get("subcategory")
    if category not in CATEGORIES or sub not in CATEGORIES[category]:
        raise _fail(file, cid, f"category/subcategory {category}/{sub} is not a Kahn category")
    if raw.get("source") not in SOURCES:
        raise _fail(file, cid, f"source must be one of {SOURCES}")
    zones = raw.get("zones")
    if not isinstance(zones, list) or not zones or any(z not in ZONES for z in zones):
        raise _fail(file, cid, f"zones must be a non-empty list drawn from {ZONES}")
    if raw.get("severity") not in SEVERITIES:
        raise _fail(file, cid, f"severity must be one of {SEVERITIES}")


def _check_overrides(overrides: Any, zones: list[str], file: str, cid: str) -> None:
    """Each override is for one of the check's zones and changes only what may differ per zone."""
    if not isinstance(overrides, Mapping):
        raise _fail(file, cid, "overrides must be an object keyed by zone")
    for zone, ov in overrides.items():
        if zone not in zones or not isinstance(ov, Mapping) or set(ov) - _OVERRIDABLE:
            raise _fail(
                file,
                cid,
                f"override for {zone!r} must be for one of its zones and change only {sorted(_OVERRIDABLE)}",
            )
        if "severity" in ov and ov["severity"] not in SEVERITIES:
            raise _fail(file, cid, f"override severity for {zone} must be one of {SEVERITIES}")
        if "threshold" in ov:
            _threshold(ov["threshold"], file, cid)
        if "params" in ov:
            _check_identifiers(ov["params"], file, cid)


def _check_warnings_keep_rows(
    raw: Mapping[str, Any], kind: str, overrides: Mapping[str, Any], file: str, cid: str
) -> None:
    """A warning never excludes rows. Quarantined rows do not reach the research zone, so
    quarantine is for blocking checks only, as the check runs in the raw zone (overrides applied)."""
    in_raw = overrides.get("raw", {})
    quarantine = bool(in_raw.get("quarantine", raw.get("quarantine", False)))
    if not quarantine:
        return
    if kind not in QUARANTINABLE_KINDS:
        raise _fail(file, cid, "quarantine is only for row-level or foreign_key checks")
    if in_raw.get("severity", raw.get("severity")) != "blocking":
        raise _fail(
            file,
            cid,
            "a warning never excludes rows: quarantine keeps failing rows out of the research zone, so "
            "only a blocking check may quarantine (make it blocking, or drop quarantine to report only)",
        )


def parse_check(raw: Mapping[str, Any], file: str = "<inline>") -> Check:
    """One check from its JSON object; raises CheckLibraryError naming what is wrong."""
    cid = str(raw.get("id", "?"))
    if not _ID.match(cid):
        raise _fail(file, cid, "id must be dotted lower-case words, e.g. register.hba1c_mmol_mol.range")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise _fail(file, cid, f"unknown kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    params = _kind_params(raw, kind, file, cid)
    _check_classification(raw, file, cid)
    zones = raw["zones"]
    table = raw.get("table")
    if not isinstance(table, str) or not (table == ALL_TABLES or _IDENT.match(table)):
        raise _fail(file, cid, "table must be a plain identifier or '*'")
    note = raw.get("note")
    if not isinstance(note, str) or not note.strip():
        raise _fail(file, cid, "every check needs a note saying why it exists")
    quarantine = bool(raw.get("quarantine", False))
    if quarantine and (kind not in QUARANTINABLE_KINDS or "raw" not in zones):
        raise _fail(
            file, cid, "quarantine is only for row-level or foreign_key checks that run in the raw zone"
        )
    overrides = raw.get("overrides", {})
    _check_overrides(overrides, zones, file, cid)
    _check_warnings_keep_rows(raw, kind, overrides, file, cid)
    return Check(
        id=cid,
        kind=kind,
        category=raw["category"],
        subcategory=raw["subcategory"],
        source=raw["source"],
        zones=tuple(zones),
        table=table,
        severity=raw["severity"],
        threshold=_threshold(raw.get("threshold"), file, cid),
        note=note.strip(),
        params=params,
        quarantine=quarantine,
        requires=tuple(raw.get("requires", ())),
        overrides=overrides,
        file=file,
    )


def resolve(check: Check, zone: str) -> Check:
    """The check as it runs in ``zone``: zone overrides applied, overrides cleared."""
    ov = check.overrides.get(zone, {})
    changes: dict[str, Any] = {"overrides": {}}
    if "severity" in ov:
        changes["severity"] = ov["severity"]
    if "threshold" in ov:
        changes["threshold"] = _threshold(ov["threshold"], check.file, check.id)
    if "table" in ov:
        changes["table"] = ov["table"]
    if "params" in ov:
        changes["params"] = {**check.params, **ov["params"]}
    if "quarantine" in ov:
        changes["quarantine"] = bool(ov["quarantine"]) and zone == "raw"
    if "note" in ov:
        changes["note"] = ov["note"]
    if zone != "raw":
        changes["quarantine"] = False  # only the raw zone is restricted enough to hold failing rows
    return replace(check, **changes)


def load_library(directory: Path = CHECKS_DIR) -> tuple[Check, ...]:
    """Every check in ``directory/*.json``, in file then declaration order; ids are unique."""
    checks: list[Check] = []
    seen: dict[str, str] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CheckLibraryError(f"{path.name}: not valid JSON (line {exc.lineno})") from None
        for raw in doc.get("checks", []):
            check = parse_check(raw, path.name)
            if check.id in seen:
                raise CheckLibraryError(
                    f"{path.name}: check id {check.id!r} also defined in {seen[check.id]}"
                )
            seen[check.id] = path.name
            checks.append(check)
    return tuple(checks)


@cache
def library() -> tuple[Check, ...]:
    """The project's check library (cached per process)."""
    return load_library()


def library_version(directory: Path = CHECKS_DIR) -> str:
    """SHA-256 over the library files (checks, code lists and mapping tables): recorded with every result."""
    digest = hashlib.sha256()
    for label, path in sorted(
        [
            *((f"checks/{p.name}", p) for p in directory.glob("*.json")),
            *((f"codes/{p.relative_to(CODES_DIR).as_posix()}", p) for p in CODES_DIR.rglob("*.csv")),
        ]
    ):
        digest.update(label.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def checks_for(
    zone: str, sources: Iterable[str] | None, checks: Iterable[Check] | None = None
) -> list[Check]:
    """The checks that run in ``zone`` for a scope delivering ``sources``, resolved for the zone."""
    if zone not in ZONES:
        raise ValueError(f"zone must be one of {ZONES}, not {zone!r}")
    src = None if sources is None else tuple(sources)
    return [resolve(c, zone) for c in (library() if checks is None else checks) if c.applies_to(zone, src)]


@cache
def code_list(name: str) -> frozenset[str]:
    """Codes of ``schemas/codes/<name>.csv`` (header ``code,display``)."""
    if not _IDENT.match(name):
        raise CheckLibraryError(f"code list name {name!r} is not a plain identifier")
    path = CODES_DIR / f"{name}.csv"
    if not path.exists():
        raise CheckLibraryError(f"code list {name!r} not found at {path}")
    with path.open(encoding="utf-8", newline="") as fh:
        return frozenset(row["code"].strip() for row in csv.DictReader(fh) if row.get("code", "").strip())
