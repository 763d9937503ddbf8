"""Data Docs: a static HTML site per run, rendered by Great Expectations, with no raw values.

The gate computes its verdicts itself (DuckDB pushdown over the check library); GX renders
them. Each check becomes the closest GX expectation (``expect_column_values_to_be_between``
for a range check, ``unexpected_rows_expectation`` for SQL-level checks) whose result holds
counts only: ``partial_unexpected_list`` is always empty and no row is ever handed to GX, so
the site cannot show a value however GX's result format is set.

The site lives at ``$HDP_HOME/quality/docs/<run>/index.html``; GX's own project files
(``great_expectations.yml``, the validation-results store) at ``$HDP_HOME/quality/gx/<run>/``,
never in the repository. Usage analytics are switched off before GX is imported.

Offline: GX's pages load 17 assets from CDNs and a remote logo whose URL carries the project's
data-context id. After each build every page is rewritten to load nothing from elsewhere
(``pipelines.quality.offline_html``) with one small local stylesheet (``hdp-docs.css``) and
without GX's newsletter footer; GX's copied ``static/`` folder (fonts, logos, a stylesheet with
a remote image) is removed, and the index is ours: a plain table of every validation of the
run (GX's builds its table with jQuery from a CDN).
"""

from __future__ import annotations

import fcntl
import html
import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.quality.catalog import ALL_TABLES, Check
from pipelines.quality.offline_html import offline_page
from pipelines.quality.results import ERROR, PASS, SKIPPED, CheckResult, GateResult
from pipelines.quality.store import safe_name

if TYPE_CHECKING:  # GX is imported inside render() and its steps only (slow; analytics off first)
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
    from great_expectations.data_context import FileDataContext
    from great_expectations.data_context.store.store import DataDocsSiteConfigTypedDict
    from great_expectations.data_context.types.resource_identifiers import ValidationResultIdentifier

    class _SiteConfig(DataDocsSiteConfigTypedDict):
        """GX's site config type lacks SiteBuilder's ``show_how_to_buttons`` (GX calls it incomplete)."""

        show_how_to_buttons: bool


log = logging.getLogger(__name__)

#: The one Data Docs site of a run's GX project.
SITE_NAME = "hdp_run"
#: The site's own stylesheet, at its root; every page links it by a relative path.
STYLESHEET = "hdp-docs.css"
#: Enough layout for GX's Bootstrap markup to read well without Bootstrap; system fonts only.
_CSS = """\
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1d1d1f; }
main, .container-fluid { max-width: 80rem; margin: 0 auto; padding: 1rem 1.5rem; }
a { color: #0b57a4; }
h1 { font-size: 1.5rem; } h2, h3, h4 { margin: 1.2rem 0 .5rem; }
table { border-collapse: collapse; margin: .5rem 0; width: 100%; }
th, td { border: 1px solid #c9ccd1; padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #eef0f3; }
.row { display: flex; flex-wrap: wrap; }
.col-lg-2, .col-md-2 { flex: 0 0 15rem; max-width: 15rem; padding-right: 1rem; }
.col-md-10, .col-lg-10 { flex: 1 1 30rem; min-width: 0; }
.col-6 { flex: 0 0 50%; } .col-12 { flex: 0 0 100%; }
.d-none, .cooltip .top, .sr-only { display: none; }
.card, .alert { border: 1px solid #c9ccd1; border-radius: 4px; padding: .5rem .75rem; margin: .5rem 0; }
.alert-secondary, .bg-light { background: #f5f6f8; }
.nav, .breadcrumb { list-style: none; padding-left: 0; }
.navbar { display: flex; align-items: center; gap: 1rem; padding: .5rem 1.5rem; border-bottom: 1px solid #c9ccd1; }
.btn { display: inline-block; border: 1px solid #0b57a4; border-radius: 4px; padding: .2rem .6rem; }
.text-success, .ok { color: #176b2c; } .text-danger, .failed { color: #a4161a; }
.fa-check-circle::before { content: "\\2714"; } .fa-times::before { content: "\\2716"; }
.fas { font-style: normal; }
.ge-breadcrumbs.d-none { display: flex; gap: 1rem; margin: 0; } /* "Home" leads back to the index */
.card:has(.btn-group-toggle), .btn-group-toggle { display: none; } /* filters that needed jQuery */
"""
#: GX's newsletter footer on every page: a marketing link with tracking parameters.
_GX_NEWSLETTER = re.compile(r"<footer>(?:(?!</footer>).)*greatexpectations\.io/newsletter.*?</footer>", re.S)


def docs_index(quality_dir: Path, run_id: str) -> Path:
    return quality_dir / "docs" / safe_name(run_id) / "index.html"


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _expectation(check: Check | None, res: CheckResult) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(GX expectation type, kwargs, result dict) for one check result: counts only."""
    mostly = max(0.0, min(1.0, 1.0 - res.max_failed_share))
    p = dict(check.params) if check else {}
    column_result = {
        "element_count": res.total_rows,
        "unexpected_count": res.failed_rows,
        "unexpected_percent": round(100.0 * res.failed_share, 4),
        "missing_count": 0,
        "partial_unexpected_list": [],
    }
    kind = res.kind
    if kind == "not_null":
        return "expect_column_values_to_not_be_null", {"column": p["column"], "mostly": mostly}, column_result
    if kind == "in_set":
        return (
            "expect_column_values_to_be_in_set",
            {"column": p["column"], "value_set": list(p["values"]), "mostly": mostly},
            column_result,
        )
    if kind == "range":
        return (
            "expect_column_values_to_be_between",
            {"column": p["column"], "min_value": p["min"], "max_value": p["max"], "mostly": mostly},
            column_result,
        )
    if kind == "regex":
        return (
            "expect_column_values_to_match_regex",
            {"column": p["column"], "regex": p["pattern"], "mostly": mostly},
            column_result,
        )
    if kind == "unique" and len(p.get("columns", ())) == 1:
        return (
            "expect_column_values_to_be_unique",
            {"column": p["columns"][0], "mostly": mostly},
            column_result,
        )
    if kind == "unique":
        return (
            "expect_compound_columns_to_be_unique",
            {"column_list": list(p["columns"]), "mostly": mostly},
            column_result,
        )
    if kind == "row_count_min":
        return (
            "expect_table_row_count_to_be_between",
            {"min_value": p["min_rows"], "max_value": None},
            {"observed_value": res.total_rows},
        )
    description = {
        "code_list": f"{res.column} in code list {p.get('code_list')}",
        "personnummer": f"{res.column} is a valid personnummer/samordningsnummer (date, Luhn check digit, serial not 000)",
        "predicate": str(p.get("description", "")),
        "join_predicate": str(p.get("description", "")),
        "foreign_key": f"({', '.join(p.get('columns', ()))}) found in {p.get('ref_table')}",
        "match_within": f"matching {p.get('ref_table')} row within {p.get('window_days')} days",
        "quarantine_reason": f"records quarantined at ingestion ({', '.join(p.get('reason_codes', ()))})",
        "columns_absent": "no direct-identifier columns",
        "no_identifier_values": "no personnummer-shaped text",
    }.get(kind, kind)
    query = f"SELECT * FROM {{batch}} -- {res.id}: rows failing '{description}' in {res.table}"
    return (
        "unexpected_rows_expectation",
        {"unexpected_rows_query": query, "description": description},
        {"observed_value": res.failed_rows, "details": {"total_rows": res.total_rows}},
    )


def _rule(etype: str, kwargs: dict[str, Any]) -> str:
    col = kwargs.get("column")
    if etype == "expect_column_values_to_not_be_null":
        return f"{col} is not empty"
    if etype == "expect_column_values_to_be_in_set":
        return f"{col} in {{{', '.join(map(str, kwargs['value_set']))}}}"
    if etype == "expect_column_values_to_be_between":
        return f"{col} between {kwargs['min_value']} and {kwargs['max_value']}"
    if etype == "expect_column_values_to_match_regex":
        return f"{col} matches {kwargs['regex']}"
    if etype == "expect_column_values_to_be_unique":
        return f"{col} is unique"
    if etype == "expect_compound_columns_to_be_unique":
        return f"({', '.join(kwargs['column_list'])}) is unique"
    if etype == "expect_table_row_count_to_be_between":
        return f"at least {kwargs['min_value']} rows"
    return etype


def _description(res: CheckResult, rule: str) -> str:
    """What GX shows for the expectation: check id, rule, verdict and counts (never a value)."""
    limit = f"{res.max_failed_share:.2%}" + (
        f" and {res.max_failed_count} rows" if res.max_failed_count is not None else ""
    )
    text = (
        f"{res.id} [{res.severity}] {res.verdict.upper()}: {rule}. "
        f"{res.failed_rows} of {res.total_rows} rows failed ({res.failed_share:.2%}); tolerated {limit}."
    )
    if res.quarantined_rows:
        text += f" {res.quarantined_rows} rows copied to quarantine."
    if res.reason:
        text += f" ({res.reason})"
    return text


def _meta(check: Check | None, res: CheckResult) -> dict[str, Any]:
    lines = [
        f"**{res.id}** ({res.category}/{res.subcategory}, {res.severity}): verdict **{res.verdict}**, "
        f"{res.failed_rows} of {res.total_rows} rows failed; tolerated {res.max_failed_share:.2%}"
        + (f" and at most {res.max_failed_count} rows" if res.max_failed_count is not None else "")
        + "."
    ]
    if check is not None:
        lines.append(check.note)
    if res.reason:
        lines.append(f"Note: {res.reason}.")
    if res.quarantined_rows:
        lines.append(f"{res.quarantined_rows} rows copied to the raw zone's quarantine with this check id.")
    return {
        "check_id": res.id,
        "severity": res.severity,
        "verdict": res.verdict,
        "table": res.table,
        "notes": {"format": "markdown", "content": lines},
    }


@dataclass(frozen=True)
class _TableSuite:
    """One table's results of a gate, as one GX suite validation result."""

    name: str
    table: str
    result: ExpectationSuiteValidationResult


def _batch_name(table: str) -> str:
    return table if table != ALL_TABLES else "all_tables"


def _validation_result(check: Check | None, res: CheckResult) -> ExpectationValidationResult:
    """One check result as a GX expectation validation result: counts only."""
    from great_expectations.core import ExpectationValidationResult
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    etype, kwargs, res_dict = _expectation(check, res)
    kwargs["description"] = _description(res, kwargs.pop("description", None) or _rule(etype, kwargs))
    config = ExpectationConfiguration(type=etype, kwargs=kwargs, meta=_meta(check, res))
    return ExpectationValidationResult(
        success=res.verdict in (PASS, SKIPPED),
        expectation_config=config,
        result=res_dict,
        exception_info={
            "raised_exception": res.verdict == ERROR,
            "exception_message": res.reason or None,
            "exception_traceback": None,
        },
    )


def _table_suite(
    result: GateResult, table: str, results: list[CheckResult], checks: dict[str, Check], run_time: datetime
) -> _TableSuite:
    """The suite of one table: its checks in id order, failed when any of them blocks."""
    from great_expectations.core import ExpectationSuiteValidationResult

    evrs = [_validation_result(checks.get(res.id), res) for res in sorted(results, key=lambda r: r.id)]
    ok = sum(1 for e in evrs if e.success)
    suite_name = f"{result.zone}.{safe_name(result.scope)}.{_batch_name(table)}"
    suite_result = ExpectationSuiteValidationResult(
        success=not any(r.blocks for r in results),
        results=evrs,
        suite_name=suite_name,
        statistics={
            "evaluated_expectations": len(evrs),
            "successful_expectations": ok,
            "unsuccessful_expectations": len(evrs) - ok,
            "success_percent": round(100.0 * ok / len(evrs), 2) if evrs else 100.0,
        },
        meta={
            "run_id": {"run_name": result.run_id, "run_time": run_time.isoformat()},
            "active_batch_definition": {
                "datasource_name": "hdp",
                "data_asset_name": f"{result.zone}/{result.scope}",
                "batch_definition_name": table,
            },
            "batch_spec": {},
            "batch_markers": {},
            "hdp_library_version": result.library_version,
        },
    )
    return _TableSuite(suite_name, table, suite_result)


def _run_context(project_dir: Path, site_dir: Path) -> FileDataContext:
    """The run's GX project, analytics off, with its Data Docs site ``SITE_NAME`` at ``site_dir``."""
    import great_expectations as gx

    context = gx.get_context(mode="file", project_root_dir=str(project_dir))
    if context.variables.analytics_enabled is not False:
        # recorded in the project file too, so nothing later re-enables it from a default
        context.variables.analytics_enabled = False
        context.variables.save()
    if SITE_NAME not in (context.config.data_docs_sites or {}):
        site_config: _SiteConfig = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(site_dir),
            },
        }
        context.add_data_docs_site(site_name=SITE_NAME, site_config=site_config)
    return context


def _store_suites(
    context: FileDataContext, suites: list[_TableSuite], run_id: str, run_time: datetime
) -> list[ValidationResultIdentifier]:
    """Store each suite's result in the run's validation-results store; returns their keys."""
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    keys = []
    for suite in suites:
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite.name),
            run_id=RunIdentifier(run_name=run_id, run_time=run_time),
            batch_identifier=_batch_name(suite.table),
        )
        context.validation_results_store.set(key, suite.result)
        keys.append(key)
    return keys


def render(quality_dir: Path, result: GateResult, checks: dict[str, Check]) -> Path:
    """Add ``result`` to its run's Data Docs site and rebuild the site; returns index.html."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"  # before the import: GX reads it at start-up
    import great_expectations  # noqa: F401 - imported here first, after analytics are off

    run = safe_name(result.run_id)
    site_dir = quality_dir / "docs" / run
    run_time = datetime.fromisoformat(result.started_at).astimezone(UTC)
    by_table: dict[str, list[CheckResult]] = {}
    for res in result.checks:
        by_table.setdefault(res.table, []).append(res)
    suites = [_table_suite(result, table, by_table[table], checks, run_time) for table in sorted(by_table)]
    with _locked(quality_dir / "docs" / f"{run}.lock"):
        context = _run_context(quality_dir / "gx" / run, site_dir)
        set_aside_foreign_results(quality_dir / "gx" / run)
        keys = _store_suites(context, suites, result.run_id, run_time)
        # Only this gate's pages are (re)built, and GX's own index is not: ours replaces it, and
        # GX's builder lists every file under the site's validations/ as a result key (a file it
        # did not write there, an operator's copy say, made it raise IndexError).
        context.build_data_docs(site_names=[SITE_NAME], resource_identifiers=keys, build_index=False)
        _make_offline(site_dir)
        _write_index(site_dir, result.run_id, _index_rows(context, site_dir))
    return site_dir / "index.html"


#: Where a run's GX project keeps its validation results (GX's default for a file context).
_RESULTS_STORE = Path("gx", "uncommitted", "validations")
#: Foreign files found in that store are moved here, kept for the operator.
SET_ASIDE = "set-aside"


def set_aside_foreign_results(project_dir: Path) -> int:
    """Move every ``.json`` file of the run's validation-results store that GX could not read back
    as a result out of the store, into ``<project>/set-aside/`` (kept, not deleted); returns how many.

    GX lists the whole store on every build and parses each path as a result key, so one stray
    file (a copy, a note, a truncated write) stopped every later gate of the run from rendering.
    A result GX wrote is ``<zone>/<scope>/<table>/<run>/<time>/<batch>.json`` holding a JSON
    object; anything else is foreign.
    """
    store = project_dir / _RESULTS_STORE
    if not store.is_dir():
        return 0
    moved = 0
    # GX lists only files ending in .json (its own .ge_store_backend_id and the like stay)
    for path in sorted(p for p in store.rglob("*.json") if p.is_file()):
        if _is_result_file(path, store):
            continue
        target = project_dir / SET_ASIDE / path.relative_to(store)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)
        moved += 1
    if moved:
        log.warning(
            "docs.foreign_result_files: %d file(s) in %s were not validation results; moved to %s",
            moved,
            store,
            project_dir / SET_ASIDE,
        )
    return moved


def _is_result_file(path: Path, store: Path) -> bool:
    """Whether GX reads ``path`` back as a result: GX's own parser turns its folders into a key
    (suite folders, run name, run time, batch) that maps back to this path, and it holds a JSON
    object."""
    from great_expectations.data_context.types.resource_identifiers import ValidationResultIdentifier

    parts = path.relative_to(store).with_suffix("").parts
    if len(parts) < 4:
        return False
    try:
        # GX takes an unparseable run time for "now": the key must give back its own path
        if ValidationResultIdentifier.from_tuple(parts).to_tuple() != parts:
            return False
        return isinstance(json.loads(path.read_bytes()), dict)
    except (ValueError, TypeError, IndexError, OSError):
        return False


def _make_offline(site_dir: Path) -> None:
    """Every page of the site rewritten to load nothing from elsewhere; GX's static copy gone.

    All pages, not only this gate's: a page built before this version of the code is mended
    too; pages already rewritten are only read (5 ms a page to rewrite, 20-30 pages a gate).
    """
    shutil.rmtree(site_dir / "static", ignore_errors=True)  # GX copies it again on each build
    (site_dir / STYLESHEET).write_text(_CSS, encoding="utf-8")
    for page in site_dir.rglob("*.html"):
        if page == site_dir / "index.html":
            continue
        href = os.path.relpath(site_dir / STYLESHEET, page.parent)
        text = page.read_text(encoding="utf-8")
        if "<script" not in text and f'<link rel="stylesheet" href="{href}">' in text:
            continue  # rewritten by an earlier gate of the run (every GX page has scripts)
        rewritten = _GX_NEWSLETTER.sub("", offline_page(text, stylesheet_href=href))
        if rewritten != text:
            page.write_text(rewritten, encoding="utf-8")


@dataclass(frozen=True)
class IndexRow:
    """One validation on the index: a table's suite in one gate (counts and names only)."""

    suite: str
    zone: str
    scope: str
    table: str
    run_time: datetime
    success: bool
    evaluated: int
    unsuccessful: int
    link: str | None  # relative to the site's root; None when its page is missing


def _index_rows(context: FileDataContext, site_dir: Path) -> list[IndexRow]:
    """Every validation result in the run's store, with the page GX built for it."""
    from great_expectations.data_context.types.resource_identifiers import ValidationResultIdentifier

    rows = []
    for key in context.validation_results_store.list_keys():
        assert isinstance(key, ValidationResultIdentifier)
        found = context.validation_results_store.get(key)
        if found is None:  # listed but gone: nothing to show
            continue
        batch = found.meta.get("active_batch_definition", {})
        zone, _, scope = str(batch.get("data_asset_name", "")).partition("/")
        # GX's filesystem layout of a validation page: the key's parts as folders, ".html" last
        page = Path("validations", *key.to_tuple()).with_suffix(".html")
        run_time = key.run_id.run_time
        assert run_time is not None  # _store_suites always sets it
        rows.append(
            IndexRow(
                suite=key.expectation_suite_identifier.name,
                zone=zone,
                scope=scope,
                table=str(batch.get("batch_definition_name", "")),
                run_time=run_time.astimezone(UTC),
                success=bool(found.success),
                evaluated=int(found.statistics.get("evaluated_expectations", 0)),
                unsuccessful=int(found.statistics.get("unsuccessful_expectations", 0)),
                link=page.as_posix() if (site_dir / page).is_file() else None,
            )
        )
    return sorted(rows, key=lambda r: (r.run_time, r.zone, r.scope, r.table))


def index_html(run_id: str, rows: list[IndexRow]) -> str:
    """The site's index: every validation of the run in a plain table (no script, no remote asset)."""
    e = html.escape
    body = []
    for r in rows:
        verdict = '<span class="ok">passed</span>' if r.success else '<span class="failed">failed</span>'
        link = f'<a href="{e(r.link, quote=True)}">{e(r.suite)}</a>' if r.link else e(r.suite)
        body.append(
            f"<tr><td>{link}</td><td>{e(r.zone)}</td><td>{e(r.scope)}</td><td>{e(r.table)}</td>"
            f"<td>{r.run_time:%Y-%m-%d %H:%M:%S} UTC</td><td>{verdict}</td>"
            f"<td>{r.unsuccessful} of {r.evaluated}</td></tr>"
        )
    failed = sum(not r.success for r in rows)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Data Docs: run {e(run_id)}</title>
<link rel="stylesheet" href="{STYLESHEET}">
</head>
<body>
<main>
<h1>Data quality: run {e(run_id)}</h1>
<p>{len(rows)} validations, {failed} failed. Each row is one table of one gate; the page behind
its link lists every check with its verdict and counts.</p>
<table>
<thead><tr><th scope="col">Suite</th><th scope="col">Zone</th><th scope="col">Holder / release</th>
<th scope="col">Table</th><th scope="col">Time</th><th scope="col">Result</th>
<th scope="col">Checks failed</th></tr></thead>
<tbody>
{chr(10).join(body)}
</tbody>
</table>
</main>
</body>
</html>
"""


#: The index's rows as data beside it, so that a page for one holder can list only its own.
INDEX_ROWS = "index.json"


def _write_index(site_dir: Path, run_id: str, rows: list[IndexRow]) -> None:
    (site_dir / "index.html").write_text(index_html(run_id, rows), encoding="utf-8")
    data = [{**asdict(r), "run_time": r.run_time.isoformat()} for r in rows]
    (site_dir / INDEX_ROWS).write_text(
        json.dumps({"run_id": run_id, "rows": data}, indent=1), encoding="utf-8"
    )


def index_rows(quality_dir: Path, run_id: str) -> list[IndexRow]:
    """The validations the run's index lists (empty when the run has no Data Docs)."""
    path = docs_index(quality_dir, run_id).parent / INDEX_ROWS
    if not path.is_file():
        return []
    rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    return [IndexRow(**{**r, "run_time": datetime.fromisoformat(r["run_time"])}) for r in rows]


def scope_index_html(quality_dir: Path, run_id: str, scope: str) -> str | None:
    """The run's index with only ``scope``'s validations (a holder's stewards see their own), or
    None when the run has none of that scope."""
    rows = [r for r in index_rows(quality_dir, run_id) if safe_name(r.scope) == safe_name(scope)]
    return index_html(run_id, rows) if rows else None
