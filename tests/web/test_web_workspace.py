"""The workspace on the real app: the SQL editor over a record-level release, the results table
and its chart, refusals from the access service, and "request output" into output checking; and
the same editor over an aggregate-only release (grammar, disclosure summary, no output request)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "access"))  # outputs_support
from outputs_support import CSRF, airlock_world, browser  # noqa: E402

from access.web.workspace import MAX_BARS, bar_chart, example_query  # noqa: E402

GROUPED = "SELECT sex, count(*) AS n FROM register_visit GROUP BY sex ORDER BY sex"
CONTEXT = "Two cells by sex, each with more than 100 persons; no pseudonyms, no dates."


@pytest.fixture
def airlock(hdp_home):
    from governance.store import dispose_all, upgrade

    upgrade(hdp_home.governance_url)
    w = airlock_world(hdp_home.governance_url, hdp_home.releases_dir, release_id="rel_ws_0001")
    yield w
    dispose_all()


AGGREGATE_RELEASE = "rel_ws_agg_0001"
AGGREGATE_VARIABLES = [
    "register_visit.sex",
    "register_visit.birth_year",
    "register_visit.county",
    "register_visit.hba1c_mmol_mol",
]


def add_aggregate_permit(world, releases_dir: Path, release_id: str = AGGREGATE_RELEASE) -> int:
    """Alice's aggregate-only permit on its own synthetic release (beside her record-level one),
    filed, approved by the ndr steward and bound to the release as the release DAG would."""
    import hashlib

    from access.demo_release import write_release
    from governance import service
    from governance.store import session_scope

    with session_scope(world.url) as s:
        request_id = service.file_request(
            s,
            applicant="alice",
            project="Visits by sex, aggregates only",
            purpose="scientific_research",
            legal_basis="gdpr_6_1_e__9_2_j",
            ethics_ref="2024-01234-01",
            variables=AGGREGATE_VARIABLES,
            holders=["ndr"],
            members=[],
            cohort_criteria={},
            period=(None, None),
            output_tier="aggregate",
            access_days=30,
        )
        service.submit_request(s, request_id=request_id, actor="alice")
    with session_scope(world.url) as s:
        service.decide(
            s,
            request_id=request_id,
            holder_id="ndr",
            reviewer="s-ndr",
            decision="approve",
            justification="Aggregates only, under the holder's disclosure control.",
        )
    rel = releases_dir / release_id
    write_release(rel, persons=240, visits=960, seed=12)
    sha = hashlib.sha256((rel / "manifest.json").read_bytes()).hexdigest()
    with session_scope(world.url) as s:
        return service.record_release(s, request_id=request_id, release_id=release_id, manifest_sha256=sha).id


@pytest.fixture
def aggregate_permit(airlock, hdp_home) -> int:
    return add_aggregate_permit(airlock, hdp_home.releases_dir)


@pytest.fixture
def app(airlock):
    from access.app import create_app

    application = create_app()
    yield application
    application.state.service.close()


def run(c, release_id: str, sql: str, csrf: str | None = None):
    token = csrf if csrf is not None else CSRF.search(c.get(f"/web/workspace/{release_id}").text).group(1)
    return c.post(f"/web/workspace/{release_id}", data={"csrf_token": token, "sql": sql})


def audit(hdp_home) -> list[dict]:
    path = hdp_home.audit_dir / "access.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_editor_lists_the_release_and_runs_a_query_through_the_access_service(app, airlock, hdp_home):
    c = browser(app, airlock.tokens["alice"])
    index = c.get("/web/workspace")
    assert index.status_code == 200 and f'href="/web/workspace/{airlock.release_id}"' in index.text
    page = c.get(f"/web/workspace/{airlock.release_id}")
    assert page.status_code == 200
    tables = re.search(r'data-testid="workspace-tables">(.*?)</aside>', page.text, re.S).group(1)
    assert "<code>register_visit</code>" in tables and "<code>hba1c_mmol_mol</code>" in tables
    assert "At most 100 rows are shown here" in page.text
    assert f'href="/web/releases/{airlock.release_id}/codebook"' in page.text  # labels, units, value sets

    r = run(c, airlock.release_id, GROUPED)
    assert r.status_code == 200
    table = re.search(r'data-testid="result-table">(.*?)</table>', r.text, re.S).group(1)
    assert '<th scope="col">sex</th><th scope="col">n</th>' in table
    counts = [int(n) for n in re.findall(r'<td class="num">(\d+)</td>', table)]
    assert len(counts) == 2 and sum(counts) == 960  # every visit of the synthetic release
    assert 'data-testid="result-chart"' in r.text and r.text.count('<rect x="') == 2
    assert 'id="output-form"' in r.text and f'name="sql" value="{GROUPED}"' in r.text
    # The same service as the API: one allowed access.query entry, with the masked query's hash.
    queries = [e for e in audit(hdp_home) if e.get("event") == "access.query" and e.get("user") == "alice"]
    assert [(e["decision"], e["rows"], e["permit_id"]) for e in queries] == [
        ("allowed", 2, airlock.permit_id)
    ]


def test_refusals_are_shown_by_the_editor(app, airlock, hdp_home):
    c = browser(app, airlock.tokens["alice"])
    # More rows than a preview: refused by the export rule, and the output request is offered.
    r = run(c, airlock.release_id, "SELECT person_id, visit_date FROM register_visit")
    assert r.status_code == 403
    assert "The result has more than 100 rows. Add LIMIT 100" in r.text and 'id="output-form"' in r.text
    assert 'data-testid="result-table"' not in r.text
    # A table outside the permit: the sandbox's refusal, and nothing to request.
    r = run(c, airlock.release_id, "SELECT * FROM patient")
    assert (
        r.status_code in (400, 403) and "The query was refused" in r.text and 'id="output-form"' not in r.text
    )
    assert "SELECT * FROM patient" in r.text  # the query stays in the editor
    refused = [e for e in audit(hdp_home) if e.get("event") == "access.query" and e["decision"] == "refused"]
    assert {e["reason"] for e in refused} >= {"output.review_required"} and len(refused) == 2


def test_csrf_and_who_may_use_it(app, airlock, hdp_home):
    c = browser(app, airlock.tokens["alice"])
    assert run(c, airlock.release_id, GROUPED, csrf="forged").status_code == 403
    assert not [e for e in audit(hdp_home) if e.get("event") == "access.query"]  # never ran
    carol = browser(app, airlock.tokens["carol"])  # a researcher without a permit for it
    assert 'data-testid="workspace-none"' in carol.get("/web/workspace").text
    r = carol.get(f"/web/workspace/{airlock.release_id}")
    assert r.status_code == 403 and "no active permit" in r.text
    checker = browser(app, airlock.tokens["oc-1"])
    assert checker.get("/web/workspace").status_code == 403
    from fastapi.testclient import TestClient

    r = TestClient(app, base_url="http://testserver").get("/web/workspace", follow_redirects=False)
    assert r.status_code == 303 and "/web/login" in r.headers["location"]


def test_request_output_from_a_result_goes_to_output_checking(app, airlock):
    c = browser(app, airlock.tokens["alice"])
    page = run(c, airlock.release_id, GROUPED)
    form = re.search(r'<form method="post" action="/web/outputs"(.*?)</form>', page.text, re.S).group(1)
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form))
    assert fields["release_id"] == airlock.release_id and fields["sql"] == GROUPED
    r = c.post(
        "/web/outputs",
        data={**fields, "format": "csv", "title": "Visits by sex", "context": CONTEXT},
        follow_redirects=False,
    )
    assert r.status_code == 303 and re.fullmatch(r"/web/outputs/\d+", r.headers["location"])
    oid = int(r.headers["location"].rsplit("/", 1)[1])
    output = app.state.outputs.get(app.state.service.authenticate(airlock.tokens["alice"]), oid)
    assert (output.status, output.rows, output.format, list(output.columns)) == (
        "submitted",
        2,
        "csv",
        ["sex", "n"],
    )


def test_bar_chart_geometry():
    chart = bar_chart(["sex", "n"], [pa.string(), pa.int64()], [["F", 30], ["M", 10], [None, None]])
    assert chart is not None and [b.label for b in chart.bars] == ["F", "M", "∅"]
    f, m, empty = chart.bars
    assert f.x == m.x == chart.zero == chart.left  # bars start at zero
    assert f.width == pytest.approx(3 * m.width, rel=0.01) and empty.width == 0
    assert chart.ticks[0][1] == "0" and chart.ticks[-1][0] == chart.right
    # Negative values: bars go left of the zero line.
    chart = bar_chart(["k", "delta"], [pa.string(), pa.float64()], [["a", -2.5], ["b", 5.0]])
    assert chart.bars[0].x + chart.bars[0].width == chart.zero and chart.bars[1].x == chart.zero
    # Long results are cut at MAX_BARS; long labels are shortened (the tooltip keeps them whole).
    rows = [[f"category-with-a-very-long-name-{i}", i] for i in range(MAX_BARS + 5)]
    chart = bar_chart(["c", "n"], [pa.string(), pa.int32()], rows)
    assert len(chart.bars) == MAX_BARS and chart.total == MAX_BARS + 5
    assert chart.bars[0].short.endswith("…") and chart.bars[0].label == rows[0][0]
    # Anything but a category and a number draws nothing.
    assert bar_chart(["a", "b", "c"], [pa.string()] * 3, [["x", "y", "z"]]) is None
    assert bar_chart(["a", "b"], [pa.string(), pa.string()], [["x", "y"]]) is None
    assert bar_chart(["a", "n"], [pa.string(), pa.int64()], [["x", None]]) is None


# -- aggregate-only permits ---------------------------------------------------------------------

SQL_TEXTAREA = re.compile(r'<textarea id="sql"[^>]*>(.*?)</textarea>', re.S)


def cells(page: str) -> list[list[str]]:
    body = re.search(r'data-testid="result-table">.*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    return [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def summary(page: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r'data-testid="summary-(\w+)">(\d+)', page)}


def test_index_lists_both_tiers(app, airlock, aggregate_permit):
    index = browser(app, airlock.tokens["alice"]).get("/web/workspace")
    assert f'href="/web/workspace/{AGGREGATE_RELEASE}"' in index.text
    assert f'href="/web/workspace/{airlock.release_id}"' in index.text
    assert f'data-testid="tier-{AGGREGATE_RELEASE}">aggregates only<' in index.text
    assert f'data-testid="tier-{airlock.release_id}">record level<' in index.text
    sv = browser(app, airlock.tokens["alice"], lang="sv").get("/web/workspace")
    assert f'data-testid="tier-{AGGREGATE_RELEASE}">endast aggregat<' in sv.text


def test_aggregate_editor_runs_its_example_query_under_disclosure_control(
    app, airlock, aggregate_permit, hdp_home
):
    import html

    c = browser(app, airlock.tokens["alice"])
    page = c.get(f"/web/workspace/{AGGREGATE_RELEASE}")
    assert page.status_code == 200 and 'data-testid="aggregate-intro"' in page.text
    # The holder's settings, as AccessService.schema gives them (schemas/holders.json: ndr).
    settings = re.search(r'data-testid="workspace-disclosure">(.*?)</dl>', page.text, re.S).group(1)
    assert "<dd>ndr: 5</dd>" in settings and "multiples of 5, at most 7" in settings
    assert "2 largest contributors hold more than 90 %" in settings
    assert 'data-testid="aggregate-leaves"' in page.text and 'data-testid="row-limit"' not in page.text
    assert 'id="output-form"' not in page.text

    # The editor opens with a count by a categorical column that the grammar accepts and runs.
    sql = html.unescape(SQL_TEXTAREA.search(page.text).group(1))
    assert re.fullmatch(
        r"SELECT (\w+), count\(DISTINCT person_id\) AS persons\nFROM register_visit\n.*", sql, re.S
    )
    r = run(c, AGGREGATE_RELEASE, sql)
    assert r.status_code == 200 and 'data-testid="query-error"' not in r.text
    rows = cells(r.text)
    counts = [int(n) for _, n in rows]
    assert len(rows) >= 2 and all(n % 5 == 0 and n >= 5 for n in counts)  # perturbed onto the base-5 grid
    got = summary(r.text)
    assert got["published"] == len(rows) and got["cells"] == got["published"] + got["withheld"]
    assert 'data-testid="result-chart"' in r.text and r.text.count('<rect x="') == len(rows)
    assert 'id="output-form"' not in r.text  # aggregate results leave directly

    # Small cells: most birth years of 240 persons spread over 75 years are withheld, and said so.
    r = run(
        c,
        AGGREGATE_RELEASE,
        "SELECT birth_year, count(DISTINCT person_id) AS persons FROM register_visit GROUP BY birth_year",
    )
    got = summary(r.text)
    assert r.status_code == 200 and got["withheld"] > 0 and got["published"] == len(cells(r.text))
    assert got["cells"] == got["published"] + got["withheld"] and "too few persons: " in r.text

    # The same service as the API: allowed aggregate-tier entries carrying the summary.
    queries = [
        e
        for e in audit(hdp_home)
        if e.get("event") == "access.query" and e["release_id"] == AGGREGATE_RELEASE
    ]
    assert [(e["decision"], e["tier"], e["permit_id"]) for e in queries] == [
        ("allowed", "aggregate", aggregate_permit)
    ] * 2
    assert queries[1]["published"] == got["published"]


def test_a_long_aggregate_result_is_listed_in_part(app, airlock, aggregate_permit, monkeypatch):
    from access.web import workspace

    monkeypatch.setattr(workspace, "AGGREGATE_SHOWN_ROWS", 2)
    c = browser(app, airlock.tokens["alice"])
    r = run(c, AGGREGATE_RELEASE, "SELECT holder, count(*) AS n FROM register_visit GROUP BY holder")
    published = summary(r.text)["published"]
    assert published == 4 and len(cells(r.text)) == 2  # the four holders' cells, two listed
    assert "4 rows, 2 columns · the first 2 are shown here" in r.text


def test_aggregate_editor_refuses_record_level_sql_with_the_grammar_reason(
    app, airlock, aggregate_permit, hdp_home
):
    c = browser(app, airlock.tokens["alice"])
    r = run(c, AGGREGATE_RELEASE, "SELECT * FROM register_visit")
    assert r.status_code == 400
    error = re.search(r'data-testid="query-error">(.*?)</div>', r.text, re.S).group(1)
    assert "SELECT * is not allowed with an aggregate-only permit" in error and "Hint: " in error
    assert 'data-testid="result-table"' not in r.text and 'id="output-form"' not in r.text
    r = run(c, AGGREGATE_RELEASE, "SELECT sex, max(hba1c_mmol_mol) AS top FROM register_visit GROUP BY sex")
    assert r.status_code == 400 and "The query was refused" in r.text and 'id="output-form"' not in r.text
    refused = [e for e in audit(hdp_home) if e.get("event") == "access.query" and e["decision"] == "refused"]
    assert len(refused) == 2 and all(e["reason"].startswith("aggregate.") for e in refused)


def test_aggregate_results_need_no_output_request(app, airlock, aggregate_permit):
    """What the page says: the airlock refuses an output request for an aggregate permit."""
    from access.errors import Refusal

    alice = app.state.service.authenticate(airlock.tokens["alice"])
    with pytest.raises(Refusal) as err:
        app.state.outputs.create(alice, AGGREGATE_RELEASE, GROUPED, "csv", title="Visits", context=CONTEXT)
    assert err.value.reason == "output.not_needed"


def test_example_query_fits_the_aggregate_grammar():
    from access import grammar
    from access.sandbox import validate

    def accepted(tables: dict[str, list[tuple[str, str]]], pseudonyms=()) -> str:
        sql = example_query(
            {t: [{"name": c, "type": ty} for c, ty in cols] for t, cols in tables.items()}, pseudonyms
        )
        checked = validate(sql, tables={t: [c for c, _ in cols] for t, cols in tables.items()})
        grammar.parse(checked.tree, tables)  # raises QueryRefused outside the grammar
        return sql

    visits = [("person_id", "VARCHAR"), ("visit_date", "DATE"), ("Län kod", "VARCHAR"), ("sex", "VARCHAR")]
    assert accepted({"visits": visits}) == (
        'SELECT "Län kod", count(DISTINCT person_id) AS persons\nFROM visits\nGROUP BY "Län kod"\nORDER BY "Län kod"'
    )
    # A linkage key is never the category; a table without one falls through to the next.
    assert "GROUP BY sex" in accepted({"visits": visits}, pseudonyms=["Län kod"])
    numbers = [("person_id", "VARCHAR"), ("hba1c", "DOUBLE")]
    assert accepted({"lab": numbers, "visits": visits}).endswith(
        'FROM visits\nGROUP BY "Län kod"\nORDER BY "Län kod"'
    )
    # No categorical column anywhere: an ungrouped count; no person_id: rows.
    assert accepted({"lab": numbers}) == "SELECT count(DISTINCT person_id) AS persons\nFROM lab"
    assert accepted({"flags": [("done", "BOOLEAN")]}).startswith("SELECT done, count(*) AS n")
    assert example_query({}) == ""
