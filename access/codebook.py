"""A release's codebook and its sanitised manifest, for the researchers who hold a permit on it.

``build_codebook`` is pure: it joins what the platform already declares about each released
column and about the release itself:

* per variable: label (sv, en), unit, enumerated values or range, value set, code system and
  note from ``schemas/codebook.json`` (what a column means), unit, allowed values and plausible
  range from the source layouts (``schemas/sources/*.json``), the disclosure class (the
  catalogue's sensitivity, ``schemas/variables.json``), the type as the release stores it,
  the release policy's rule for it and its completeness from the release's quality label;
* for the release, its provenance: holders with their extract dates, the quality gates it
  passed (the release gate's counts from the manifest, and each holder's latest raw and
  research gate before the build, by zone, date and verdict; never an Airflow run id),
  exclusions by reason, and the disclosure settings (tier, k, each holder's minimum cell count,
  and for the aggregate tier the perturbation settings the service publishes).

``public_manifest`` keeps only an allow-list of the manifest's fields: no reviewer's name, no
justification text, no path, no key; a field the builder adds later stays hidden until it is
added here. ``codebook_for`` and ``manifest_for`` do the I/O (the permit check is
``AccessService.schema``, as for ``GET /releases/{id}/schema``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any

from access.engine import release_dir
from access.errors import NotFound
from access.ports import User
from access.service import AccessService
from governance.catalogue import load_catalogue
from hdp.settings import SCHEMAS_DIR, Holder, Settings, get_settings, holders
from pipelines.quality import store as quality_store

CODEBOOK_SCHEMA = "hdp.codebook/1"
CODEBOOK_DATA = SCHEMAS_DIR / "codebook.json"
MANIFEST = "manifest.json"
#: Columns every release table carries besides the requested variables.
STRUCTURAL = {"person_id": "pseudonym", "holder": "administrative"}
#: The gates before a release, in the order they run.
HOLDER_ZONES = ("raw", "research")


# -- declarative inputs -------------------------------------------------------------------------


@dataclass(frozen=True)
class CodebookData:
    """What the schema files say about columns (``load_data`` reads them)."""

    columns: Mapping[str, Mapping[str, Any]]  # column -> entry
    table_columns: Mapping[str, Mapping[str, Any]]  # table.column -> entry
    code_systems: Mapping[str, Mapping[str, Any]]
    exclusion_reasons: Mapping[str, Mapping[str, str]]
    sources: Mapping[str, Mapping[str, Any]]  # table.column -> source layout column
    value_sets: Mapping[str, Mapping[str, Any]]  # id -> {id, title, scale, source}
    sensitivity: Mapping[str, str]  # table.column -> catalogue sensitivity

    def entry(self, table: str, column: str) -> dict[str, Any]:
        """The column's codebook entry, the table's own entry over the general one."""
        return {**self.columns.get(column, {}), **self.table_columns.get(f"{table}.{column}", {})}


@cache
def load_data(schemas_dir: Path = SCHEMAS_DIR) -> CodebookData:
    """The codebook's declarative inputs from ``schemas_dir`` (read once per process)."""
    book = json.loads((schemas_dir / "codebook.json").read_text(encoding="utf-8"))
    sources: dict[str, Mapping[str, Any]] = {}
    for path in sorted((schemas_dir / "sources").glob("*.json")):
        layout = json.loads(path.read_text(encoding="utf-8"))
        for col in layout.get("columns", []):
            sources[f"{layout['raw_table']}.{col['raw']}"] = col
    value_sets = {}
    for path in sorted((schemas_dir / "valuesets").glob("*.json")):
        vs = json.loads(path.read_text(encoding="utf-8"))
        src = vs.get("source") or {}
        value_sets[vs["id"]] = {
            "id": vs["id"],
            "title": vs.get("title"),
            "scale": vs.get("scale"),
            "source": f"{src.get('authors', '')} ({src.get('year', '')})".strip() if src else None,
        }
    catalogue = load_catalogue(schemas_dir / "variables.json")
    return CodebookData(
        columns=book["columns"],
        table_columns=book.get("table_columns", {}),
        code_systems=book.get("code_systems", {}),
        exclusion_reasons=book.get("exclusion_reasons", {}),
        sources=sources,
        value_sets=value_sets,
        sensitivity={name: v["sensitivity"] for name, v in catalogue.items()},
    )


# -- the pure part ------------------------------------------------------------------------------


def _values(entry: Mapping[str, Any], source: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """Enumerated values with labels where the codebook gives them, else the layout's list."""
    declared = entry.get("values")
    if isinstance(declared, Mapping):
        return [{"code": code, "label": dict(label)} for code, label in declared.items()]
    listed = declared if isinstance(declared, list) else source.get("allowed")
    return [{"code": code} for code in listed] if listed else None


def policy_rule(policy: Mapping[str, Any] | None, table: str, column: str) -> dict[str, Any] | None:
    """The release policy's rule for ``table.column`` (exact name before ``*.column``), or None."""
    rules = (policy or {}).get("rules") or []
    for wanted in (f"{table}.{column}", f"*.{column}"):
        for rule in rules:
            if rule.get("variable") == wanted:
                return {k: v for k, v in rule.items() if k != "variable"}
    return None


def variable_entry(
    data: CodebookData,
    table: str,
    column: str,
    sql_type: str,
    *,
    policy: Mapping[str, Any] | None = None,
    quality: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One released column as the codebook describes it."""
    name = f"{table}.{column}"
    entry = data.entry(table, column)
    source = data.sources.get(name, {})
    code_system = data.code_systems.get(entry.get("code_system", ""))
    value_set = data.value_sets.get(entry.get("value_set", ""))
    disclosure = data.sensitivity.get(name) or STRUCTURAL.get(column) or "unclassified"
    stats = (quality or {}).get(name) or {}
    out: dict[str, Any] = {
        "name": name,
        "table": table,
        "column": column,
        "label": dict(entry["label"]) if "label" in entry else None,
        "type": sql_type,
        "unit": entry.get("unit") or source.get("unit"),
        "values": _values(entry, source),
        "range": entry.get("range") or source.get("plausible"),
        "value_set": value_set,
        "code_system": {"id": entry["code_system"], **code_system} if code_system else None,
        "disclosure_class": disclosure,
        "release_rule": policy_rule(policy, table, column),
        "completeness": stats.get("completeness"),
        "note": dict(entry["note"]) if "note" in entry else None,
    }
    return out


def _gate_summary(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One gate run (its result rows) as zone, day, verdict and counts; never its run id."""
    verdicts = [r["verdict"] for r in rows]
    blocking = [r for r in rows if r["severity"] == "blocking" and r["verdict"] in ("fail", "error")]
    started = str(rows[0]["started_at"])
    return {
        "zone": rows[0]["zone"],
        "date": started[:10],
        "passed": not blocking,
        "checks": sum(1 for v in verdicts if v != "skipped"),
        "failed": sorted(r["check_id"] for r in rows if r["verdict"] == "fail"),
        "warned": sorted(r["check_id"] for r in rows if r["verdict"] == "warn"),
    }


def _instant(text: str) -> datetime | None:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def holder_gates(history: Iterable[Mapping[str, Any]], built_at: str | None) -> list[dict[str, Any]]:
    """Per zone, the latest gate run before ``built_at`` (ISO time; None: the latest), summarised."""
    runs: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    limit = _instant(built_at) if built_at else None
    for r in history:
        if limit and (started := _instant(str(r["started_at"]))) and started > limit:
            continue
        runs.setdefault((str(r["started_at"]), str(r["run_id"])), []).append(r)
    latest: dict[str, list[Mapping[str, Any]]] = {}
    for key in sorted(runs):
        rows = runs[key]
        latest[str(rows[0]["zone"])] = rows
    return [_gate_summary(latest[z]) for z in HOLDER_ZONES if z in latest]


def release_gate(label: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The release gate's verdict and counts from the manifest's quality label."""
    if not label:
        return None
    checks = label.get("checks") or {}
    return {
        "zone": "release",
        "passed": bool(label.get("passed")),
        "checks": checks.get("evaluated"),
        "passed_checks": checks.get("passed"),
        "warned_checks": checks.get("warned"),
        "failed_checks": checks.get("failed"),
        "not_applicable": checks.get("skipped"),
        "failed": sorted(f["id"] for f in label.get("failed") or []),
        "warned": sorted(f["id"] for f in label.get("warned") or []),
    }


def exclusions(manifest: Mapping[str, Any], data: CodebookData) -> list[dict[str, Any]]:
    """Counts left out of the release, by reason (labels from the codebook data)."""
    excluded = manifest.get("excluded") or {}
    disclosure = manifest.get("disclosure") or {}
    counts = {
        "consent.opted_out": excluded.get("persons_by_consent"),
        "consent.unverifiable": excluded.get("persons_consent_unverifiable"),
        "person.unlinkable": excluded.get("rows_without_linkable_person"),
        "k_anonymity.suppressed": sum(int(d.get("persons_suppressed") or 0) for d in disclosure.values())
        if disclosure
        else None,
        "k_anonymity.rows_dropped": sum(int(d.get("rows_dropped") or 0) for d in disclosure.values())
        if disclosure
        else None,
    }
    out = []
    for reason, count in counts.items():
        if count is None:
            continue  # not recorded by this release's builder
        meta = data.exclusion_reasons.get(reason, {})
        label = {k: meta[k] for k in ("sv", "en") if k in meta}
        out.append({"reason": reason, "count": int(count), "unit": meta.get("unit"), "label": label or None})
    return out


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


def build_codebook(
    release_id: str,
    *,
    schema: Mapping[str, Any],
    manifest: Mapping[str, Any],
    data: CodebookData,
    holder_registry: Mapping[str, Holder],
    extract_dates: Mapping[str, date | None],
    gates: Mapping[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """The codebook of ``release_id``: its variables (``schema``: the permitted tables and
    columns with their types, as ``AccessService.schema`` gives them) and its provenance."""
    request = manifest.get("request") or {}
    quality = manifest.get("quality") or {}
    policy = manifest.get("policy")
    tables = schema.get("tables") or {}
    variables = [
        variable_entry(data, table, col["name"], col["type"], policy=policy, quality=quality.get("variables"))
        for table, cols in tables.items()
        for col in cols
    ]
    holder_ids = list(request.get("holders") or manifest.get("holders") or [])
    rows = manifest.get("rows") or manifest.get("tables") or {}
    disclosure = manifest.get("disclosure") or {}
    tier = schema.get("output_tier") or request.get("output_tier")
    settings: dict[str, Any] = {
        "output_tier": tier,
        "k_anonymity": {t: d.get("k") for t, d in disclosure.items()} or None,
        "quasi_identifiers": {t: d.get("quasi_identifiers") for t, d in disclosure.items()} or None,
        "min_cell_count": {h: holder_registry[h].min_cell_count for h in holder_ids if h in holder_registry},
    }
    if schema.get("disclosure"):  # the aggregate tier's thresholds, perturbation, budget
        settings["aggregate"] = schema["disclosure"]
    provenance = {
        "built_at": manifest.get("built_at"),
        "request_id": request.get("request_id"),
        "project": request.get("project"),
        "purpose": request.get("purpose"),
        "period": request.get("period"),
        "persons": manifest.get("persons"),
        "rows": {t: rows[t] for t in sorted(rows)},
        "code_version": (manifest.get("code_version") or "")[:12] or None,
        "holders": [
            {
                "id": h,
                "name": holder_registry[h].name if h in holder_registry else h,
                "extract_date": _iso(extract_dates.get(h)),
                "quality_gates": gates.get(h, []),
            }
            for h in holder_ids
        ],
        "quality": release_gate(quality),
        "exclusions": exclusions(manifest, data),
        "disclosure": settings,
    }
    return {
        "schema": CODEBOOK_SCHEMA,
        "release_id": release_id,
        "output_tier": tier,
        "variables": variables,
        "provenance": provenance,
    }


#: The manifest fields researchers may read, and for nested ones which of their fields.
PUBLIC_MANIFEST: Mapping[str, Any] = {
    "release_id": True,
    "request": (
        "request_id",
        "project",
        "purpose",
        "holders",
        "variables",
        "output_tier",
        "period",
        "cohort_criteria",
    ),
    "approvals": ("holder_id", "decided_at"),  # no reviewer, no justification
    "rows": True,
    "persons": True,
    "excluded": True,
    "files": True,  # file names (no directory), SHA-256 and sizes
    "disclosure": True,
    "code_version": True,
    "policy": True,
    "quality": True,
    "extract_dates": True,  # per holder, the date its delivery states (no path, no file)
    "built_at": True,
    "tables": True,  # synthetic releases' row counts
    "holders": True,
    "synthetic": True,
}


def _no_paths(value: Any) -> Any:
    """``value`` with any string that looks like a file-system path withheld."""
    if isinstance(value, str):
        return (
            "(withheld)"
            if value.startswith(("/", "~")) or "\\" in value or "/restricted/" in value
            else value
        )
    if isinstance(value, list):
        return [_no_paths(v) for v in value]
    if isinstance(value, dict):
        return {k: _no_paths(v) for k, v in value.items() if "/" not in str(k)}
    return value


def public_manifest(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The allow-listed part of a manifest (see ``PUBLIC_MANIFEST``)."""
    out: dict[str, Any] = {}
    for key, keep in PUBLIC_MANIFEST.items():
        if key not in manifest:
            continue
        value = manifest[key]
        if isinstance(keep, tuple):
            if isinstance(value, list):
                value = [{k: v.get(k) for k in keep if k in v} for v in value if isinstance(v, Mapping)]
            elif isinstance(value, Mapping):
                value = {k: value[k] for k in keep if k in value}
        out[key] = value
    return _no_paths(out)


# -- the I/O around it --------------------------------------------------------------------------


def read_manifest(releases_dir: Path, release_id: str) -> dict[str, Any]:
    path = release_dir(releases_dir, release_id) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound("release.no_manifest", "the release has no manifest") from None
    except ValueError:
        raise NotFound("release.no_manifest", "the release's manifest cannot be read") from None


def extract_dates_of(
    manifest: Mapping[str, Any], holder_ids: Iterable[str], settings: Settings
) -> dict[str, date | None]:
    """Each holder's extract date: the manifest's when it records them; else the holder's
    delivery in this data home when it predates the build (a later delivery is not the one
    released); None when not known here (at a federation's hub, the nodes hold them)."""
    recorded = manifest.get("extract_dates") or {}
    built = manifest.get("built_at")
    out: dict[str, date | None] = {}
    for h in holder_ids:
        if h in recorded:
            out[h] = date.fromisoformat(str(recorded[h])) if recorded[h] else None
            continue
        path = settings.landing_dir(h) / "delivery.json"
        try:
            delivered = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            if built and delivered > datetime.fromisoformat(str(built)):
                out[h] = None
                continue
            out[h] = date.fromisoformat(json.loads(path.read_text(encoding="utf-8"))["extract_date"])
        except (OSError, ValueError, KeyError, TypeError):
            out[h] = None
    return out


def gates_of(
    holder_ids: Iterable[str], built_at: str | None, settings: Settings
) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for h in holder_ids:
        history = [
            r
            for zone in HOLDER_ZONES
            for r in quality_store.history(settings.quality_dir, zone=zone, scope=h)
        ]
        out[h] = holder_gates(history, built_at)
    return out


def codebook_for(svc: AccessService, user: User, release_id: str) -> dict[str, Any]:
    """The codebook of a release the user holds a permit on (``svc.schema`` checks and audits)."""
    schema = svc.schema(user, release_id)
    manifest = read_manifest(svc.settings.releases_dir, release_id)
    settings = get_settings()
    holder_ids = list((manifest.get("request") or {}).get("holders") or manifest.get("holders") or [])
    return build_codebook(
        release_id,
        schema=schema,
        manifest=manifest,
        data=load_data(),
        holder_registry={h.id: h for h in holders()},
        extract_dates=extract_dates_of(manifest, holder_ids, settings),
        gates=gates_of(holder_ids, manifest.get("built_at"), settings),
    )


def manifest_for(svc: AccessService, user: User, release_id: str) -> dict[str, Any]:
    """The sanitised manifest of a release the user holds a permit on."""
    svc.schema(user, release_id)  # the permit check and its audit entry
    return public_manifest(read_manifest(svc.settings.releases_dir, release_id))
