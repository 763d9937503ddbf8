"""Data Docs offline: no page loads anything from outside the machine, GX's tracking logo is gone,
and the index lists every validation of the run (suite, holder, time, result, link)."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pipelines.quality import docs
from pipelines.quality.offline_html import offline_css, offline_page
from pipelines.quality.results import FAIL, PASS, CheckResult, GateResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the offline check in ops/
from ops.offline import external_loads, external_loads_css  # noqa: E402

# What GX 1.x writes into its pages (tests/quality/test_no_leak.py renders real gates too).
GX_PAGE = """<!DOCTYPE html>
<html><head><title>Data docs</title>
<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>
<link rel="shortcut icon" href="../../static/images/favicon.ico" type="image/x-icon"/>
<!--[if IE]><script src="https://example.org/ie.js"></script><![endif]-->
<style>.navbar-brand { background: url('https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/full_logo_dark.png') 0 0; }
@import url("https://fonts.googleapis.com/css?family=Roboto");
.ok { background: url(data:image/png;base64,iVBO) }</style>
<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>
<script>$(function () { $('[data-toggle="tooltip"]').tooltip() })</script>
</head><body>
<a href="https://greatexpectations.io"><img src="https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png?d=1&amp;dataContextId=fbaefd54" alt="Great Expectations"></a>
<img src="../../local.png" alt="local">
<label onclick="showAllValidations()">All</label>
<p title="a &amp; b" style="background-image:url(//cdn.example.org/x.png)">3 &lt; 4 &#8212; done</p>
<video src="https://example.org/v.mp4"><p>video</p></video>
</body></html>"""


def test_offline_page_removes_every_outside_load_and_keeps_the_content():
    page = offline_page(GX_PAGE, stylesheet_href="../../hdp-docs.css")
    assert external_loads(page) == []
    assert (
        "<script" not in page and "<link" in page and "amazonaws" not in page and "dataContextId" not in page
    )
    assert "fonts.googleapis" not in page and "<!--" not in page and "video" not in page
    assert '<link rel="stylesheet" href="../../hdp-docs.css">' in page  # the one local stylesheet
    assert '<a href="https://greatexpectations.io">' in page  # a link loads nothing until clicked
    assert '<img src="../../local.png" alt="local">' in page
    assert "<label>All</label>" in page  # no handler left to call a script that is gone
    assert "3 &lt; 4 &#8212; done" in page and 'title="a &amp; b"' in page  # text stays as written
    assert "url(data:image/png;base64,iVBO)" in page
    assert offline_page(page, stylesheet_href="../../hdp-docs.css") == page  # idempotent
    # and the check that finds loads does find them in GX's own page
    assert len(external_loads(GX_PAGE)) >= 6


def test_offline_css_keeps_relative_urls_only():
    css = "@import 'local.css'; @import url(https://x.org/a.css); a { b: url(img/a.png) } c { d: url(//x.org/p.gif) }"
    assert offline_css(css) == "@import 'local.css';  a { b: url(img/a.png) } c { d: none }"


def _check(check_id: str, table: str, verdict: str, failed: int) -> CheckResult:
    return CheckResult(
        id=check_id,
        zone="raw",
        table=table,
        column="hba1c_mmol_mol",
        kind="predicate",  # rendered without its catalogue entry (counts only)
        category="validity",
        subcategory="range",
        severity="blocking",
        failed_rows=failed,
        total_rows=400,
        max_failed_share=0.0,
        max_failed_count=None,
        verdict=verdict,
    )


def gate_result(run_id: str, scope: str, started: datetime, *, passed: bool) -> GateResult:
    """A raw-zone gate of two tables (the browser test renders it too)."""
    verdict, failed = (PASS, 0) if passed else (FAIL, 2)
    return GateResult(
        run_id=run_id,
        zone="raw",
        scope=scope,
        passed=passed,
        checks=(
            _check("register.hba1c_mmol_mol.range", "register_visit", verdict, failed),
            _check("register.prom.range", "prom_response", PASS, 0),
        ),
        started_at=started.isoformat(),
        duration_s=0.1,
        library_version="test",
    )


class _IndexTable(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.links: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = []
        if tag == "a":
            self.links.append(dict(attrs)["href"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _assert_site_offline(site: Path) -> int:
    """Every file of the site loads nothing from outside; returns how many pages were checked."""
    pages = 0
    for path in site.rglob("*"):
        if path.suffix == ".html":
            text = path.read_text()
            assert external_loads(text) == [], path
            assert "<script" not in text and "amazonaws" not in text and "dataContextId" not in text, path
            assert "newsletter" not in text and not re.search(r"\son[a-z]+=", text), path
            pages += 1
        elif path.suffix == ".css":
            assert external_loads_css(path.read_text()) == [], path
    assert not (site / "static").exists()  # GX's copy: fonts, logos and a remote background image
    return pages


@pytest.mark.slow
def test_data_docs_load_nothing_from_outside_and_the_index_lists_every_validation(hdp_home):
    quality_dir = hdp_home.quality_dir
    first = gate_result("run 1", "ndr", datetime(2026, 12, 4, 9, 30, 5, tzinfo=UTC), passed=True)
    second = gate_result("run 1", "region_uppsala", datetime(2026, 12, 4, 9, 31, 7, tzinfo=UTC), passed=False)
    docs.render(quality_dir, first, {})
    # a page GX built before the site was made offline (an older version) is mended too
    legacy = docs.docs_index(quality_dir, "run 1").parent / "legacy" / "page.html"  # GX reads validations/
    legacy.parent.mkdir(parents=True)
    legacy.write_text(GX_PAGE)
    index = docs.render(quality_dir, second, {})
    site = index.parent
    assert index == docs.docs_index(quality_dir, "run 1")

    assert _assert_site_offline(site) == 6  # the index, four validation pages and the legacy one
    assert '<link rel="stylesheet" href="../hdp-docs.css">' in legacy.read_text()
    # the project's data-context id (the tracking logo's parameter) is nowhere in the site
    gx_yml = next((quality_dir / "gx").rglob("great_expectations.yml")).read_text()
    context_id = re.search(r"data_context_id: ([0-9a-f-]{36})", gx_yml)
    assert context_id
    assert not [p for p in site.rglob("*") if p.is_file() and context_id.group(1) in p.read_text()]

    table = _IndexTable()
    table.feed(index.read_text())
    header, *rows = table.rows
    assert header == ["Suite", "Zone", "Holder / release", "Table", "Time", "Result", "Checks failed"]
    assert sorted(rows) == [
        [
            "raw.ndr.prom_response",
            "raw",
            "ndr",
            "prom_response",
            "2026-12-04 09:30:05 UTC",
            "passed",
            "0 of 1",
        ],
        [
            "raw.ndr.register_visit",
            "raw",
            "ndr",
            "register_visit",
            "2026-12-04 09:30:05 UTC",
            "passed",
            "0 of 1",
        ],
        [
            "raw.region_uppsala.prom_response",
            "raw",
            "region_uppsala",
            "prom_response",
            "2026-12-04 09:31:07 UTC",
            "passed",
            "0 of 1",
        ],
        [
            "raw.region_uppsala.register_visit",
            "raw",
            "region_uppsala",
            "register_visit",
            "2026-12-04 09:31:07 UTC",
            "failed",
            "1 of 1",
        ],
    ]
    # the same rows as data, and an index of one holder's validations only (for its stewards)
    assert [(r.suite, r.success) for r in docs.index_rows(quality_dir, "run 1")] == [
        (row[0], row[5] == "passed") for row in rows
    ]
    own = _IndexTable()
    own.feed(docs.scope_index_html(quality_dir, "run 1", "ndr") or "")
    assert [row[0] for row in own.rows[1:]] == ["raw.ndr.prom_response", "raw.ndr.register_visit"]
    assert external_loads(docs.scope_index_html(quality_dir, "run 1", "ndr") or "") == []
    assert docs.scope_index_html(quality_dir, "run 1", "region_orebro") is None
    assert docs.index_rows(quality_dir, "no such run") == []
    # each link opens its validation's page, which shows the check and its counts
    assert len(table.links) == 4
    failed_page = next(link for link in table.links if "region_uppsala/register_visit" in link)
    text = (site / failed_page).read_text()
    assert "register.hba1c_mmol_mol.range" in text and "2 of 400 rows failed" in text
    assert all((site / link).is_file() for link in table.links)
    # and each page links the site's own stylesheet by a path that resolves
    href = re.search(r'<link rel="stylesheet" href="([^"]+)">', text)
    assert (
        href
        and (site / failed_page).parent.joinpath(href.group(1)).resolve()
        == (site / docs.STYLESHEET).resolve()
    )


@pytest.mark.slow
def test_data_docs_of_a_real_gate_load_nothing_from_outside(zones):
    from pipelines.quality.gate import run_gate

    result = run_gate("raw", holder_id="region_uppsala", run_id="offline", render_docs=True)
    assert result.docs_path
    site = Path(result.docs_path).parent
    assert _assert_site_offline(site) >= 5
    assert "raw.region_uppsala." in Path(result.docs_path).read_text()


@pytest.mark.slow
def test_foreign_files_in_the_run_stop_no_later_gate_and_are_kept(hdp_home, caplog):
    """A file GX did not write, in the site's validations/ or in the run's results store (an
    operator's copy, a note, a truncated write), used to make every later build of the run raise
    IndexError. Now the site is built, the store's foreign files are moved aside (kept, counted,
    logged), and the index lists exactly the run's validations."""
    quality_dir = hdp_home.quality_dir
    docs.render(
        quality_dir, gate_result("run 1", "ndr", datetime(2026, 12, 4, 9, 30, 5, tzinfo=UTC), passed=True), {}
    )
    site = docs.docs_index(quality_dir, "run 1").parent
    project = next((quality_dir / "gx").iterdir())
    store = project / "gx" / "uncommitted" / "validations"
    foreign = {
        "copy.json": b"{}",
        "raw/ndr/notes.json": b'{"a": 1}',  # too short to be a result key
        "raw/ndr/prom_response/run 1/not-a-time/prom_response.json": b"{}",  # run time unparseable
        "raw/ndr/x/run 1/20261204T093005.000000Z/x.json": b'{"trunc',  # a result's shape, no JSON
    }
    for name, data in foreign.items():
        (store / name).parent.mkdir(parents=True, exist_ok=True)
        (store / name).write_bytes(data)
    (store / "README.txt").write_text("ignored by GX: kept where it is")
    (site / "validations" / "stray.html").write_text("<p>an operator's copy</p>")
    (site / "validations" / "a" / "b").mkdir(parents=True)
    (site / "validations" / "a" / "b" / "page.html").write_text("<p>x</p>")

    with caplog.at_level("WARNING", logger="pipelines.quality.docs"):
        index = docs.render(
            quality_dir,
            gate_result("run 1", "region_uppsala", datetime(2026, 12, 4, 9, 31, 7, tzinfo=UTC), passed=False),
            {},
        )
    ours = [r.getMessage() for r in caplog.records if r.name == "pipelines.quality.docs"]
    assert len(ours) == 1 and ours[0].startswith("docs.foreign_result_files: 4 file(s)")
    for name, data in foreign.items():  # kept for the operator, byte for byte
        assert not (store / name).exists() and (project / docs.SET_ASIDE / name).read_bytes() == data
    assert (store / "README.txt").exists() and (store / ".ge_store_backend_id").exists()
    assert len(docs.index_rows(quality_dir, "run 1")) == 4
    assert "raw.region_uppsala.register_visit" in index.read_text()
    assert docs.set_aside_foreign_results(project) == 0  # nothing left to move
