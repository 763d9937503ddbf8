"""The steward's request page: corrected figures and texts, and the decision aids (issue 16, item 5).

Each test drives the real app through the web test harness (tests/web/conftest.py): a migrated
store with alice's request on ndr, stewards per holder, and where needed a hand-made research
zone whose right answers are known.
"""

from __future__ import annotations

import hashlib
import html as htmllib
import json
import re

import duckdb
import pytest
from webtest_helpers import csrf_of, login, request_fields, write_research_zone

from access.web.precheck import group_size_sql
from governance import service
from governance.store import session_scope

JUSTIFICATION = "Ethics approval covers it; the variables are proportionate to the aim."


def decide(client, request_id, *, decision="approve", holder="ndr", **extra):
    page = client.get(f"/web/requests/{request_id}")
    data = {"csrf_token": csrf_of(page.text), "holder_id": holder, "decision": decision}
    data |= {"justification": JUSTIFICATION} | extra
    return client.post(f"/web/requests/{request_id}/decide", data=data, follow_redirects=True)


def stored(world, request_id):
    with session_scope(world.url) as s:
        return service.get_request(s, request_id=request_id)


def file_submitted(world, applicant="alice", **over) -> int:
    with session_scope(world.url) as s:
        rid = service.file_request(s, applicant=applicant, **request_fields(**over))
        service.submit_request(s, request_id=rid, actor=applicant)
    return rid


def cell(html: str, testid: str) -> str:
    m = re.search(rf'data-testid="{re.escape(testid)}"[^>]*>(.*?)</', html, re.S)
    assert m, testid
    return htmllib.unescape(m.group(1)).strip()


# ------------------------------------------------------------------ the figures and texts under "Why"


def test_persons_below_k_counts_distinct_persons_not_rows(client, world, hdp_home):
    """3 persons with 4 visits each on distinct dates: every (sex, visit_date) group holds one
    person, so 3 persons are in groups below k (the old sum over groups said 12)."""
    path = hdp_home.research_db("ndr")
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE register_visit (person_id VARCHAR, sex VARCHAR, visit_date DATE, hba1c_mmol_mol DOUBLE)"
    )
    for p in range(3):
        for v in range(4):
            con.execute(
                "INSERT INTO register_visit VALUES (?, 'F', ?, 50.0)", [f"p{p}", f"2020-0{v + 1}-0{p + 1}"]
            )
    assert con.execute(group_size_sql("register_visit", ("sex", "visit_date"), 5)).fetchone() == (
        3,
        12,
        1,
        12,
        3,
    )
    con.close()
    rid = file_submitted(
        world, variables=["register_visit.sex", "register_visit.visit_date", "register_visit.hba1c_mmol_mol"]
    )
    login(client, world.tokens["s-ndr"])
    page = client.get(f"/web/requests/{rid}").text
    row = re.search(
        r'<tr class="risk-at_risk"><td>ndr</td><td>register_visit</td>(.*?)</tr>', page, re.S
    ).group(1)
    cells = [c.strip() for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
    assert cells[1:6] == [
        "3",
        "12",
        "1",
        "12 (k=5)",
        "3",
    ]  # persons, groups, smallest, groups < k, persons < k


@pytest.mark.parametrize(
    "period,shown",
    [
        ((None, None), "Ingen period angiven"),
        (("2015-01-01", None), "från 2015-01-01"),
        ((None, "2024-12-31"), "till och med 2024-12-31"),
        (("2015-01-01", "2024-12-31"), "2015-01-01 – 2024-12-31"),
    ],
)
def test_period_reads_as_words_not_dashes(client, world, period, shown):
    rid = file_submitted(world, period=period)
    login(client, world.tokens["s-ndr"])
    page = client.get(f"/web/requests/{rid}").text
    assert cell(page, "period") == shown
    assert "– – –" not in page


def test_purposes_and_legal_bases_in_the_page_language(client, world):
    login(client, world.tokens["s-ndr"])
    sv = client.get(f"/web/requests/{world.request_id}?lang=sv").text
    assert "Vetenskaplig forskning med anknytning till hälso- eller omsorgssektorn" in sv
    assert "Uppgift av allmänt intresse (6.1 e)" in sv
    assert "Scientific research related" not in sv and "Task in the public interest" not in sv
    en = client.get(f"/web/requests/{world.request_id}?lang=en").text
    assert "Scientific research related to the health or care sectors" in en
    assert "Vetenskaplig forskning" not in en


def _gate(hdp_home, run_id, holder="ndr"):
    from pipelines.quality.results import CheckResult, GateResult
    from pipelines.quality.store import write_result

    checks = (
        CheckResult("ndr.hba1c.range", "research", "register_visit", "hba1c_mmol_mol", "range", "plausibility",
                    "atemporal", "warning", 3, 120, 0.01, None, "warn"),
        CheckResult("ndr.person.not_null", "research", "register_visit", "person_id", "not_null", "completeness",
                    "presence", "blocking", 0, 120, 0.0, None, "pass"),
        CheckResult("ndr.bmi.range", "research", "register_visit", "bmi", "range", "plausibility",
                    "atemporal", "warning", 0, 120, 0.0, None, "pass"),
    )  # fmt: skip
    write_result(hdp_home.quality_dir, GateResult(run_id, "research", holder, True, checks,
                                                  "2026-03-05T02:00:00+00:00", 0.1, "lib-1"))  # fmt: skip


def _docs_site(hdp_home, run_id):
    """A run's Data Docs site as pipelines.quality.docs lays it out, with pages of two holders."""
    from pipelines.quality.store import safe_name

    site = hdp_home.quality_dir / "docs" / safe_name(run_id)
    for holder in ("ndr", "region_uppsala"):
        page = (
            site
            / "validations"
            / "research"
            / holder
            / "register_visit"
            / "run"
            / "t"
            / "register_visit.html"
        )
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(f"<html><body>validation of {holder}</body></html>")
    from datetime import UTC, datetime

    from pipelines.quality.docs import IndexRow, _write_index

    rows = [
        IndexRow(
            f"research.{h}.register_visit", "research", h, "register_visit", datetime(2026, 3, 5, tzinfo=UTC),
            h == "ndr", 10, 0 if h == "ndr" else 3,
            f"validations/research/{h}/register_visit/run/t/register_visit.html",
        )
        for h in ("ndr", "region_uppsala")
    ]  # fmt: skip
    _write_index(site, run_id, rows)
    (site / "hdp-docs.css").write_text("body { margin: 0; }")
    (hdp_home.quality_dir / "secret.txt").write_text("outside the site")
    return site


def test_quality_label_is_readable_and_links_the_data_docs(client, world, hdp_home):
    run_id = "scheduled__2026-03-05T02:00:00+00:00"
    _gate(hdp_home, run_id)
    _docs_site(hdp_home, run_id)
    login(client, world.tokens["s-ndr"])
    page = client.get(f"/web/requests/{world.request_id}").text
    verdict = re.search(r'data-testid="quality-verdict-ndr">(.*?)</p>', page, re.S).group(1)
    strong = htmllib.unescape(re.search(r"<strong>(.*?)</strong>", verdict).group(1))
    assert strong == "Godkänd med varningar 2026-03-05: 2 kontroller godkända, 1 ej godkända"
    assert run_id not in strong  # the run id is only a small detail below
    assert "<small" in verdict and htmllib.escape(run_id) in verdict
    link = re.search(r'href="([^"]+)" data-testid="docs-link-ndr"', page).group(1)
    assert link == "/web/quality/docs/ndr/scheduled__2026-03-05T02_00_00_00_00/index.html"
    r = client.get(link)
    assert r.status_code == 200 and "research.ndr.register_visit" in r.text
    assert "region_uppsala" not in r.text  # the run's index, with this holder's rows only
    assert "script-src" not in r.headers["content-security-policy"]
    assert "default-src 'none'" in r.headers["content-security-policy"]
    base = link.removesuffix("index.html")
    assert client.get(base + "hdp-docs.css").headers["content-type"].startswith("text/css")
    own = base + "validations/research/ndr/register_visit/run/t/register_visit.html"
    assert client.get(own).status_code == 200
    # another holder's pages, traversal, hidden or unknown files: all 404
    for bad in (
        "validations/research/region_uppsala/register_visit/run/t/register_visit.html",
        "validations/research",
        "../secret.txt",
        "..%2Fsecret.txt",
        "%2e%2e/secret.txt",
        "validations/research/ndr/../region_uppsala/register_visit/run/t/register_visit.html",
        ".hidden.html",
        "missing.html",
    ):
        assert client.get(base + bad).status_code == 404, bad
    assert client.get("/web/quality/docs/ndr/..%2F..%2Fquality/secret.txt").status_code == 404
    # a steward of another holder and a researcher: 404, as for other steward pages
    client.cookies.clear()
    login(client, world.tokens["s-upp"])
    assert client.get(link).status_code == 404
    theirs = link.replace("/ndr/", "/region_uppsala/").removesuffix("index.html")
    index = client.get(theirs + "index.html").text
    assert "research.region_uppsala.register_visit" in index and "research.ndr." not in index
    assert (
        client.get(
            theirs + "validations/research/region_uppsala/register_visit/run/t/register_visit.html"
        ).status_code
        == 200
    )
    assert (
        client.get(theirs + "validations/research/ndr/register_visit/run/t/register_visit.html").status_code
        == 404
    )
    client.cookies.clear()
    login(client, world.tokens["alice"])
    assert client.get(link).status_code == 404


def test_release_label_reads_as_verdict_and_counts(client, world, hdp_home):
    login(client, world.tokens["s-ndr"])
    decide(client, world.request_id)
    with session_scope(world.url) as s:
        service.record_release(
            s,
            request_id=world.request_id,
            release_id="rel-aids-1",
            manifest_sha256=hashlib.sha256(b"m").hexdigest(),
        )
    rel = hdp_home.releases_dir / "rel-aids-1"
    rel.mkdir(parents=True)
    label = {"passed": False, "checks": {"evaluated": 9, "passed": 7, "failed": 1, "warned": 1},
             "failed": [{"id": "ndr.bmi.range"}], "warned": [{"id": "ndr.hba1c.range"}], "errored": []}  # fmt: skip
    (rel / "manifest.json").write_text(json.dumps({"quality": label}))
    page = client.get(f"/web/requests/{world.request_id}").text
    assert cell(page, "release-quality") == "Underkänd: 7 av 9 kontroller godkända"
    assert "<code>ndr.bmi.range</code>" in page and "<code>ndr.hba1c.range</code>" in page


# ------------------------------------------------------------------ additions to the request page


def test_cohort_size_per_holder_with_small_counts_protected(client, world, hdp_home):
    write_research_zone(hdp_home.research_db("ndr"))  # 60 persons born 1960-62 in county 03, one in 25
    small = file_submitted(world, cohort_criteria={"register_visit.county": {"in": ["25"]}})
    born_1960 = file_submitted(world, cohort_criteria={"register_visit.birth_year": {"=": 1960}})
    login(client, world.tokens["s-ndr"])
    page = client.get(f"/web/requests/{small}").text
    assert cell(page, "cohort-ndr") == "< 5"  # one person: never shown as 1
    page = client.get(f"/web/requests/{born_1960}").text
    assert cell(page, "cohort-ndr") == "20"
    page = client.get(f"/web/requests/{world.request_id}").text  # no criteria: everyone, rounded to 5
    assert cell(page, "cohort-ndr") == "60"


def test_permit_end_date_before_and_after_approval(client, world):
    login(client, world.tokens["s-ndr"])
    before = cell(client.get(f"/web/requests/{world.request_id}").text, "permit-end")
    assert before.startswith("365 dagar efter beslutet (omkring ")
    decide(client, world.request_id)
    with session_scope(world.url) as s:
        permit = service.permit_for_request(s, request_id=world.request_id)
    page = client.get(f"/web/requests/{world.request_id}").text
    assert cell(page, "permit-end") == permit.expires_at.date().isoformat()


def test_applicants_organisation_is_shown(client, world):
    login(client, world.tokens["s-ndr"])
    assert cell(client.get(f"/web/requests/{world.request_id}").text, "organisation") == "ej registrerad"
    with session_scope(world.url) as s:
        service.set_organisation(s, name="alice", organisation="Uppsala universitet <IMM>", actor="admin")
    page = client.get(f"/web/requests/{world.request_id}").text
    assert "Uppsala universitet &lt;IMM&gt;" in page


def test_overlapping_permits_of_the_applicant(client, world):
    login(client, world.tokens["s-ndr"])
    assert 'data-testid="overlaps-none"' in client.get(f"/web/requests/{world.request_id}").text
    earlier = file_submitted(
        world, project="Earlier NDR study", variables=["register_visit.sex", "register_visit.bmi"]
    )
    decide(client, earlier)
    page = client.get(f"/web/requests/{world.request_id}").text
    table = re.search(r'data-testid="overlaps">(.*?)</table>', page, re.S).group(1)
    assert f'href="/web/requests/{earlier}">Earlier NDR study</a>' in table
    assert "<code>register_visit.sex</code>" in table and "register_visit.bmi" not in table
    # the applicant does not see the stewards' overlap table
    client.cookies.clear()
    login(client, world.tokens["alice"])
    own = client.get(f"/web/requests/{world.request_id}")
    assert own.status_code == 200 and 'id="overlaps-heading"' not in own.text


def test_approval_with_groups_at_risk_needs_the_acknowledgement(client, world, hdp_home):
    write_research_zone(hdp_home.research_db("ndr"))  # the lonely 1931 person: a group of 1
    login(client, world.tokens["s-ndr"])
    page = client.get(f"/web/requests/{world.request_id}").text
    assert 'name="ack_at_risk"' in page and "Jag har sett grupperna med risk" in page
    refused = decide(client, world.request_id)
    assert refused.status_code == 422
    assert "bekräfta att du har sett grupperna med risk" in refused.text
    assert stored(world, world.request_id).decisions == ()
    # rejecting needs no acknowledgement; approving with it is accepted and recorded
    ok = decide(client, world.request_id, ack_at_risk="yes", safe=["projects", "data"])
    assert ok.status_code == 200
    (d,) = stored(world, world.request_id).decisions
    assert d.decision == "approve" and d.checklist["at_risk_acknowledged"] is True
    assert "2 av 5 säkerheter · risk bekräftad" in ok.text


def test_no_acknowledgement_needed_without_groups_at_risk(client, world, hdp_home):
    write_research_zone(hdp_home.research_db("ndr"), singleton=False)
    login(client, world.tokens["s-ndr"])
    assert 'name="ack_at_risk"' not in client.get(f"/web/requests/{world.request_id}").text
    assert decide(client, world.request_id).status_code == 200
    assert stored(world, world.request_id).status == "approved"


def test_five_safes_show_what_the_platform_knows_and_ticks_are_recorded(client, world):
    with session_scope(world.url) as s:
        service.set_organisation(s, name="alice", organisation="Karolinska institutet", actor="admin")
    login(client, world.tokens["s-ndr"])
    page = client.get(f"/web/requests/{world.request_id}").text
    safes = re.search(r'data-testid="five-safes">(.*?)</fieldset>', page, re.S).group(1)
    for safe in ("projects", "people", "settings", "data", "outputs"):
        assert f'name="safe" value="{safe}"' in safes
    assert "Etikprövning 2024-01234-01" in safes
    assert "Sökande alice (Karolinska institutet)" in safes
    assert "Endast aggregat genom åtkomstlagret" in safes and "åtkomst i 365 dagar" in safes
    assert "Nationella diabetesregistret (NDR) 5/5" in safes
    assert "cell-key-metoden" in safes
    decide(client, world.request_id, safe=["projects", "people", "settings", "data", "outputs"])
    (d,) = stored(world, world.request_id).decisions
    assert d.checklist == {
        "projects": True, "people": True, "settings": True, "data": True, "outputs": True,
        "at_risk_acknowledged": False,
    }  # fmt: skip
    with session_scope(world.url) as s:
        (event,) = [
            e for e in service.request_history(s, request_id=world.request_id) if e["action"] == "decide"
        ]
    assert event["detail"]["checklist"] == ["data", "outputs", "people", "projects", "settings"]


def post_comment(client, request_id, body, csrf=None):
    page = client.get(f"/web/requests/{request_id}")
    return client.post(
        f"/web/requests/{request_id}/comments",
        data={"csrf_token": csrf if csrf is not None else csrf_of(page.text), "body": body},
        follow_redirects=True,
    )


def test_comment_thread_stewards_and_applicant(client, world, hdp_home):
    login(client, world.tokens["s-ndr"])
    assert 'data-testid="comments-none"' in client.get(f"/web/requests/{world.request_id}").text
    r = post_comment(client, world.request_id, 'Why county? <script>alert("x")</script>\nPlease explain.')
    assert r.status_code == 200 and "Kommentaren är publicerad." in r.text
    assert "<script>alert" not in r.text and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in r.text
    assert post_comment(client, world.request_id, "no token here", csrf="forged").status_code == 403
    empty = post_comment(client, world.request_id, "   ")
    assert empty.status_code == 422 and "comment.empty" in empty.text
    client.cookies.clear()
    login(client, world.tokens["alice"])
    r = post_comment(client, world.request_id, "For the regional comparison.")
    thread = re.search(r'data-testid="comments">(.*?)</ol>', r.text, re.S).group(1)
    assert thread.index("s-ndr") < thread.index("alice") and "For the regional comparison." in thread
    # neither a steward of another holder nor another researcher can read or post
    for outsider in ("s-upp", "carol"):
        client.cookies.clear()
        login(client, world.tokens[outsider])
        assert client.get(f"/web/requests/{world.request_id}").status_code == 404
        forged = client.post(
            f"/web/requests/{world.request_id}/comments",
            data={"csrf_token": csrf_of(client.get("/web/transparency").text), "body": "let me in"},
        )
        assert forged.status_code == 404
    with session_scope(world.url) as s:
        assert [c.author for c in service.list_comments(s, request_id=world.request_id, reader="alice")] == [
            "s-ndr",
            "alice",
        ]
    audit = (hdp_home.audit_dir / "audit.jsonl").read_text()
    events = [json.loads(line) for line in audit.splitlines() if "governance.request.comment" in line]
    assert [e["actor"] for e in events] == ["s-ndr", "alice"] and "regional comparison" not in audit


def test_public_register_describes_purposes_in_the_page_language(client, world):
    login(client, world.tokens["s-ndr"])
    decide(client, world.request_id)
    client.cookies.clear()
    sv = client.get("/web/transparency?lang=sv").text
    assert "Vetenskaplig forskning med anknytning till hälso- eller omsorgssektorn" in sv
    assert "Scientific research related" not in sv
    en = client.get("/web/transparency?lang=en").text
    assert "Scientific research related to the health or care sectors" in en
    # the machine-readable register keeps its stable English descriptions
    (entry,) = client.get("/web/transparency.json").json()["permits"]
    assert entry["purpose_description"].startswith("Scientific research related")


def test_cohort_sizes_rules(tmp_path):
    """Criteria on a table the holder does not hold are listed, not applied; a missing column
    makes the figure unavailable (named, no value); no match at all is still "< n", never 0."""
    from dataclasses import fields

    from access.web import precheck
    from governance.catalogue import load_catalogue, table_holders
    from hdp.settings import holders

    write_research_zone(tmp_path / "ndr.duckdb")

    def sizes(criteria):
        check = precheck.precheck(
            ["register_visit.sex", "register_visit.hba1c_mmol_mol"],
            ["ndr", "region_uppsala"],
            catalogue=load_catalogue(),
            holders=holders(),
            table_holders=table_holders(),
            research_db=lambda h: tmp_path / f"{h}.duckdb",
            criteria=criteria,
        )
        return {c.holder_id: c for c in check.cohort}

    got = sizes({"condition.code": {"in": ["E11.9"]}, "register_visit.birth_year": {"between": [1961, 1962]}})
    assert got["ndr"].shown == "40" and got["ndr"].not_applied == ("condition",)
    assert got["region_uppsala"].status == "no_data" and got["region_uppsala"].not_applied == (
        "register_visit",
    )
    assert sizes({"register_visit.birth_year": {"=": 1800}})["ndr"].shown == "< 5"
    bad = sizes({"register_visit.no_such_column": {"=": 1}})["ndr"]
    assert bad.status == "unavailable" and bad.reason == "column(s) missing: register_visit.no_such_column"
    # only the published form is kept: no field can carry an exact small count
    assert {f.name for f in fields(precheck.CohortSize)} == {
        "holder_id", "status", "min_cell_count", "persons", "below", "not_applied", "reason",
    }  # fmt: skip
