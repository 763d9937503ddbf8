"""The PROM key figures pages (issue 17): steward-only, the holder's own data only, a table and an
inline SVG chart of mean index with CI bars, and no withheld value anywhere in the page."""

from __future__ import annotations

import hashlib
import re

import duckdb
from webtest_helpers import login, write_research_zone

from access.web.i18n import STRINGS
from access.web.prom import load_source
from pipelines.outcomes import key_figures

# 2020: 12 of the 61 register persons answered (shown). 2021: 3 persons (withheld), with values
# found nowhere else, so the page can be searched for them.
INDEX_2020 = [0.91, 0.85, 0.77, 0.95, 0.62, 0.88, 0.71, 0.99, 0.80, 0.83, 0.69, 0.93]
SMALL = [(0.4321, 13), (0.4567, 17), (0.4789, 19)]


def _pid(i: int) -> str:
    return hashlib.sha256(f"web-test-person-{i}".encode()).hexdigest()


def _write_prom(path) -> list[tuple]:
    rows = [(_pid(i), f"2020-03-{i + 1:02d}", x, 70 + i, "21341") for i, x in enumerate(INDEX_2020)]
    rows += [(_pid(40 + i), "2021-05-05", x, v, "55555") for i, (x, v) in enumerate(SMALL)]
    con = duckdb.connect(str(path))
    try:
        con.execute("""CREATE TABLE prom_response (person_id VARCHAR, visit_date DATE,
            eq5d_index_se_5l_tto_2020 DOUBLE, eq_vas INTEGER, eq5d_profile VARCHAR)""")
        con.executemany("INSERT INTO prom_response VALUES (?, ?, ?, ?, ?)", rows)
    finally:
        con.close()
    return rows


def _ndr_zone(hdp_home):
    path = hdp_home.research_db("ndr")
    write_research_zone(path)
    return _write_prom(path)


def test_steward_sees_table_and_chart_and_no_withheld_value(client, world, hdp_home):
    _ndr_zone(hdp_home)
    login(client, world.tokens["s-ndr"])
    r = client.get("/web/prom/ndr?lang=en")
    assert r.status_code == 200
    assert '<a href="/web/prom" aria-current="page">PROM key figures</a>' in r.text  # in the steward's menu
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"
    html = r.text
    assert "PROM key figures: Nationella diabetesregistret (NDR)" in html
    # the table: 2020 shown (12 responses, 12 of 61 register persons), 2021 withheld
    row_2020 = re.search(r'<th scope="row">2020</th>(.*?)</tr>', html, re.S).group(1)
    cells = re.findall(r"<td>(.*?)</td>", row_2020, re.S)
    assert cells[0] == "12" and cells[1] == "12" and cells[2] == "20 % (n=61)"
    mean = sum(INDEX_2020) / len(INDEX_2020)
    assert abs(float(cells[3].split(" ")[0]) - mean) <= 0.00051 and " n=12" in cells[3]
    row_2021 = re.search(r'<th scope="row">2021</th>(.*?)</tr>', html, re.S).group(1)
    cells_2021 = re.findall(r"<td>(.*?)</td>", row_2021, re.S)
    assert len(cells_2021) == 6
    assert all("Withheld" in c for c in cells_2021), cells_2021
    assert not re.search(r"\d", " ".join(cells_2021))  # not a digit: no count, value or interval
    for x, _v in SMALL:  # the small group's values appear nowhere (nor their mean)
        assert f"{x:.3f}" not in html and f"{x:.2f}" not in html
    small_mean = sum(x for x, _ in SMALL) / len(SMALL)
    assert f"{small_mean:.3f}" not in html and f"{small_mean:.2f}" not in html
    # the chart: inline SVG, one point with its CI bar for the one shown mean, nothing external
    svg = re.search(r'<svg [^>]*data-testid="prom-chart-holder".*?</svg>', html, re.S).group(0)
    assert svg.count("<circle") == 1 and svg.count('class="ci"') == 1
    assert "2021" in svg  # the withheld period keeps its slot, without a point
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<script" not in html and "style=" not in html
    assert "Response rate: responders among persons with a register visit (register_visit)" in html


def test_quarters_and_swedish(client, world, hdp_home):
    _ndr_zone(hdp_home)
    login(client, world.tokens["s-ndr"])
    html = client.get("/web/prom/ndr?period=quarter&lang=sv").text
    assert '<th scope="row">2020-Q1</th>' in html and '<th scope="row">2021-Q2</th>' in html
    assert "PROM-nyckeltal" in html and "Visas ej: för få personer" in html


def test_page_agrees_with_the_computation(client, world, hdp_home):
    _ndr_zone(hdp_home)
    source = load_source(hdp_home.research_db("ndr"))
    assert not isinstance(source, str) and source.denominator_table == "register_visit"
    kf = key_figures(source.responses, holder="ndr", denominator=source.denominator)
    login(client, world.tokens["s-ndr"])
    html = client.get("/web/prom/ndr?lang=en").text
    withheld = [f for r in kf.rows for f in r.figures().values() if not f.shown]
    # 2020: no follow-up yet, so no improved share; 2021: every cell (3 persons)
    assert kf.threshold == 5 and len(withheld) == 7
    assert html.count("Withheld") == len(withheld)
    assert f"{kf.rows[0].mean_vas.value:.1f}" in html
    assert f"{kf.rows[0].mean_index.low:.3f}" in html and f"{kf.rows[0].mean_index.high:.3f}" in html


def test_access_like_the_other_steward_pages(client, world, hdp_home):
    _ndr_zone(hdp_home)
    r = client.get("/web/prom/ndr", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/web/login?next=/web/prom/ndr")
    login(client, world.tokens["alice"])  # a researcher
    assert client.get("/web/prom/ndr").status_code == 403
    assert client.get("/web/prom").status_code == 403
    client.cookies.clear()
    login(client, world.tokens["s-upp"])  # a steward of another holder
    assert client.get("/web/prom/ndr").status_code == 404
    assert client.get("/web/prom/no_such_holder").status_code == 404
    hub = client.get("/web/prom?lang=en")
    assert (
        hub.status_code == 200 and "/web/prom/region_uppsala" in hub.text and "/web/prom/ndr" not in hub.text
    )
    # no research zone yet: the page says so
    page = client.get("/web/prom/region_uppsala?lang=en")
    assert page.status_code == 200 and 'data-testid="prom-unavailable"' in page.text


def test_every_prom_string_has_both_languages():
    from access.web.i18n import LANGUAGES

    for key, texts in ((k, v) for k, v in STRINGS.items() if k.startswith("prom_")):
        assert set(texts) == set(LANGUAGES) and all(texts[lang].strip() for lang in LANGUAGES), key


def test_federation_page_is_a_hub_page_only(client):
    assert client.get("/web/federation/prom").status_code == 404  # no hub behind this app


def test_federation_page_shows_the_pool_and_each_node_and_no_withheld_value(client, hdp_home):
    """The hub's public page (issue 17): pooled figures and each node's published table; a period
    one node withheld is withheld in the pool and shows its reason only."""
    import pyarrow as pa

    from pipelines.outcomes.pooling import Part, pool_key_figures

    def table(rows):
        p, d, x, v = zip(*rows, strict=True)
        return pa.table(
            {
                "person_id": pa.array(p),
                "visit_date": pa.array(d, pa.string()),
                "eq5d_index_se_5l_tto_2020": pa.array(x, pa.float64()),
                "eq_vas": pa.array(v, pa.int64()),
                "eq5d_profile": pa.array(["11111"] * len(p)),
            }
        )

    ndr = table([(_pid(i), f"2020-03-{i + 1:02d}", x, 70 + i) for i, x in enumerate(INDEX_2020)])
    skane = table(
        [(_pid(100 + i), "2020-06-01", x, 60) for i, x in enumerate(INDEX_2020)]
        + [(_pid(200 + i), "2021-06-01", x, v) for i, (x, v) in enumerate(SMALL)]
    )
    parts = [
        key_figures(ndr, holder="ndr", threshold=5),
        key_figures(skane, holder="region_skane", threshold=5),
    ]
    pooled = pool_key_figures([Part(kf) for kf in parts])
    client.app.state.prom_federation = lambda period: (parts, pooled)
    try:
        r = client.get("/web/federation/prom?lang=en")
    finally:
        del client.app.state.prom_federation
    assert r.status_code == 200
    html = r.text
    for key in ("federation", "ndr", "region_skane"):
        assert f'data-testid="prom-table-{key}"' in html
    assert "24" in re.search(r'<th scope="row">2020</th>(.*?)</tr>', html, re.S).group(1)  # 12 + 12
    for value, _ in SMALL:
        assert f"{value}" not in html and f"{value:.3f}" not in html
    assert STRINGS["prom_reason_keyfigures.too_few_persons"]["en"] in html
