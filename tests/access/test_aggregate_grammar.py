"""The aggregate tier as a closed language: what the grammar accepts, what it refuses and why,
the five attacks of issue 12 as regressions, and the laws (Hypothesis) that hold for every
query the grammar generates:

* every published cell stands for at least its holders' threshold of distinct persons,
  counted across every joined table;
* the same query gives the same answer (also from a fresh server reading the same release);
* no difference of published person counts, from queries with complementary filters, gives
  back a withheld cell's true count.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from access_support import World, auth
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from access.aggregate import width_bucket_free
from access.errors import Refusal
from access.ports import User
from access.service import AccessService
from hdp.settings import holders

ALICE = User("alice", frozenset({"researcher"}))
THRESHOLDS = {h.id: h.min_cell_count for h in holders()}


@pytest.fixture(scope="module")
def gworld(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("grammar_home"), persons=400, visits=2_400, unlinked=5)
    yield w
    w.service.close()


def _ask(w: World, sql: str, service: AccessService | None = None) -> dict:
    result = (service or w.service).query(ALICE, "r_agg", sql)
    return json.loads(result.body)


def _refused(w: World, sql: str) -> Refusal:
    with pytest.raises(Refusal) as info:
        w.service.query(ALICE, "r_agg", sql)
    return info.value


# -- the grammar: accepted and refused shapes ---------------------------------------------

ACCEPTED = [
    "SELECT count(*) FROM register_visit",
    "SELECT sex, count(*) AS visits, count(DISTINCT person_id) AS persons FROM register_visit GROUP BY sex",
    "SELECT sex, round(avg(hba1c_mmol_mol), 1) AS mean_hba1c, stddev_samp(bmi) FROM register_visit GROUP BY 1",
    "SELECT year(visit_date) AS y, count(*) FROM register_visit GROUP BY y ORDER BY y",
    "SELECT date_trunc('year', visit_date) AS y, count(*) FROM register_visit GROUP BY ALL",
    "SELECT extract(year FROM visit_date) AS y, count(*) FROM register_visit GROUP BY 1",
    "SELECT width_bucket(hba1c_mmol_mol, 30, 100, 7) AS band, count(*) FROM register_visit GROUP BY band",
    "SELECT floor(birth_year / 10) * 10 AS decade, count(*) FROM register_visit GROUP BY decade ORDER BY 2 DESC",
    "SELECT CASE WHEN bmi < 25 THEN 'normal' WHEN bmi < 30 THEN 'overweight' ELSE 'obese' END AS band, "
    "count(*) FROM register_visit GROUP BY band",
    "SELECT county, sum(bmi), var_pop(bmi), stddev_pop(bmi), count(bmi) FROM register_visit "
    "WHERE visit_date >= DATE '2018-01-01' AND sex IN ('F', 'M') AND NOT (diabetes_type = 1 OR bmi IS NULL) "
    "GROUP BY county",
    "SELECT p.sex, count(DISTINCT r.person_id) FROM register_visit r JOIN patient p ON p.person_id = r.person_id "
    "GROUP BY p.sex",
    "SELECT p.birth_year, avg(r.hba1c_mmol_mol) FROM patient p LEFT JOIN register_visit r USING (person_id) "
    "GROUP BY p.birth_year LIMIT 3",
    "SELECT sex, count(*) FROM register_visit WHERE county LIKE '0%' AND birth_year BETWEEN 1940 AND 1980 "
    "GROUP BY sex",
]


@pytest.mark.parametrize("sql", ACCEPTED)
def test_grammar_accepts(gworld, sql):
    body = _ask(gworld, sql)
    assert body["output_tier"] == "aggregate"
    assert body["disclosure"]["cells"] >= body["disclosure"]["published"] >= body["row_count"]


REFUSED = [
    # 1. a subquery inside a group key (it made one cell holding everyone)
    (
        "SELECT (SELECT string_agg(person_id, ',') FROM register_visit) AS v, count(*) FROM register_visit "
        "GROUP BY 1",
        "aggregate.subquery",
    ),
    (
        "SELECT (SELECT list(visit_date) FROM register_visit WHERE person_id = 'x') AS v, count(*) "
        "FROM register_visit GROUP BY 1",
        "aggregate.subquery",
    ),
    # 2. join amplification (the table again, restricted to one pseudonym)
    (
        "SELECT b.visit_date, count(*) FROM register_visit a JOIN register_visit b "
        "ON a.person_id = b.person_id AND b.person_id = 'x' GROUP BY 1",
        "aggregate.join",
    ),
    (
        "SELECT b.visit_date, count(*) FROM register_visit a JOIN register_visit b ON a.person_id = b.person_id "
        "WHERE b.person_id = 'x' GROUP BY 1",
        "aggregate.pseudonym",
    ),
    ("SELECT count(*) FROM register_visit a JOIN patient b ON a.birth_year = b.birth_year", "aggregate.join"),
    ("SELECT count(*) FROM register_visit a, patient b", "aggregate.join"),
    ("SELECT count(*) FROM register_visit a CROSS JOIN patient b", "aggregate.join"),
    (
        "SELECT count(*) FROM register_visit a FULL JOIN patient b ON a.person_id = b.person_id",
        "aggregate.join",
    ),
    # 3. one person inside a large cell
    ("SELECT count_if(person_id = 'x') FROM register_visit", "aggregate.aggregate_not_allowed"),
    (
        "SELECT sum(CASE WHEN person_id = 'x' THEN hba1c_mmol_mol ELSE 1000 END) FROM register_visit",
        "aggregate.measure_argument",
    ),
    ("SELECT count(*) FILTER (WHERE person_id = 'x') FROM register_visit", "aggregate.measure"),
    ("SELECT sum(hba1c_mmol_mol * (person_id = 'x')::INT) FROM register_visit", "aggregate.measure_argument"),
    # 4. a WHERE oracle
    (
        "SELECT count(*) FROM register_visit WHERE EXISTS (SELECT 1 FROM register_visit WHERE person_id = 'x' "
        "AND diabetes_type = 1)",
        "aggregate.subquery",
    ),
    ("SELECT count(*) FROM register_visit WHERE (SELECT count(*) FROM patient) > 5", "aggregate.subquery"),
    ("SELECT count(*) FROM register_visit WHERE person_id = 'x'", "aggregate.pseudonym"),
    ("SELECT count(*) FROM register_visit WHERE person_id LIKE 'a%'", "aggregate.pseudonym"),
    ("SELECT count(*) FROM register_visit WHERE hba1c_mmol_mol > bmi", "aggregate.predicate"),
    # the rest of the closed grammar
    ("SELECT person_id, count(*) FROM register_visit GROUP BY person_id", "aggregate.pseudonym"),
    ("WITH x AS (SELECT * FROM register_visit) SELECT count(*) FROM x", "aggregate.cte"),
    ("SELECT count(*) FROM register_visit UNION ALL SELECT count(*) FROM patient", "aggregate.set_operation"),
    ("SELECT sex, count(*) OVER () FROM register_visit", "aggregate.window"),
    ("SELECT sex, max(hba1c_mmol_mol) FROM register_visit GROUP BY sex", "aggregate.aggregate_not_allowed"),
    ("SELECT median(hba1c_mmol_mol) FROM register_visit", "aggregate.aggregate_not_allowed"),
    ("SELECT quantile_cont(hba1c_mmol_mol, 0.5) FROM register_visit", "aggregate.aggregate_not_allowed"),
    ("SELECT sex, count(*) FROM register_visit GROUP BY sex HAVING count(*) > 10", "aggregate.clause"),
    ("SELECT DISTINCT sex, count(*) FROM register_visit GROUP BY sex", "aggregate.clause"),
    ("SELECT sex, county, count(*) FROM register_visit GROUP BY sex", "aggregate.not_aggregate"),
    ("SELECT count(*) FROM register_visit GROUP BY sex", "aggregate.group_not_selected"),
    ("SELECT [birth_year] AS k, count(*) FROM register_visit GROUP BY 1", "aggregate.group_key"),
    ("SELECT list_value(sex, county) AS k, count(*) FROM register_visit GROUP BY 1", "aggregate.group_key"),
    ("SELECT sex || county AS k, count(*) FROM register_visit GROUP BY 1", "aggregate.group_key"),
    ("SELECT sum(hba1c_mmol_mol) / count(*) FROM register_visit", "aggregate.measure"),
    ("SELECT avg(sex) FROM register_visit", "aggregate.measure_argument"),
    ("SELECT count(DISTINCT sex) FROM register_visit", "aggregate.measure"),
    ("SELECT * FROM register_visit", "aggregate.shape"),
    ("SELECT sex FROM register_visit", "aggregate.not_aggregate"),
    ("SELECT sex, count(*) FROM register_visit GROUP BY ROLLUP (sex)", "aggregate.clause"),
    ("SELECT count(*) FROM (SELECT * FROM register_visit) t", "aggregate.subquery"),
    ("SELECT count(*) FROM register_visit ORDER BY hba1c_mmol_mol", "aggregate.order"),
]


@pytest.mark.parametrize(("sql", "reason"), REFUSED)
def test_grammar_refuses_with_a_reason_and_a_hint(gworld, sql, reason):
    err = _refused(gworld, sql)
    assert err.reason == reason, (err.reason, err.message)
    assert "Hint:" in err.message or err.reason.startswith("sql.")


def test_attacks_are_refused_over_http_and_audited(client, world):
    """The issue's five attack shapes, through the API as a researcher would send them."""
    pid = "d15c105e" * 8  # looks like a pseudonym; must never reach the audit log
    attacks = [
        "SELECT (SELECT string_agg(person_id, ',') FROM register_visit) AS v, count(*) FROM register_visit GROUP BY 1",
        f"SELECT b.visit_date, count(*) FROM register_visit a JOIN register_visit b ON a.person_id = b.person_id "
        f"WHERE b.person_id = '{pid}' GROUP BY 1",
        f"SELECT count_if(person_id = '{pid}') AS n FROM register_visit",
        f"SELECT count(*) FROM register_visit WHERE EXISTS (SELECT 1 FROM register_visit WHERE person_id = '{pid}')",
    ]
    for sql in attacks:
        r = client.post("/releases/r_agg/query", json={"sql": sql}, headers=auth(world.alice))
        assert r.status_code == 400, r.text
        assert r.json()["error"].startswith("aggregate.")
    refused = [e for e in world.service.audit.entries() if e.get("decision") == "refused"]
    assert len(refused) >= len(attacks)
    # A digest of what was refused (keyed, of the exact text), never the text itself.
    assert all(e.get("query_text_hmac") or e.get("query_sha256") for e in refused[-len(attacks) :])
    assert pid not in Path(world.settings.audit_path).read_text()  # never the text itself


# -- the laws ---------------------------------------------------------------------------------

KEYS = [
    "r.sex",
    "r.county",
    "r.birth_year",
    "year(r.visit_date)",
    "r.diabetes_type",
    "CASE WHEN r.bmi < 25 THEN 'a' WHEN r.bmi < 30 THEN 'b' ELSE 'c' END",
    "width_bucket(r.hba1c_mmol_mol, 30, 100, 7)",
    "floor(r.birth_year / 10) * 10",
]
JOIN_KEYS = ["p.sex", "p.birth_year"]
CONDITIONS = [
    "r.hba1c_mmol_mol < {v}",
    "r.sex = 'F'",
    "r.county IN ('01', '03', '12')",
    "r.visit_date >= DATE '2019-01-01'",
    "NOT r.diabetes_type = 1",
    "r.birth_year BETWEEN 1940 AND {y}",
    "r.bmi IS NOT NULL",
    "year(r.visit_date) <> {yr}",
]
MEASURES = [
    "count(*)",
    "count(DISTINCT r.person_id)",
    "avg(r.hba1c_mmol_mol)",
    "sum(r.bmi)",
    "stddev(r.bmi)",
    "count(r.bmi)",
    "var_pop(r.hba1c_mmol_mol)",
]


@st.composite
def grammar_queries(draw):
    join = draw(st.sampled_from(["", "JOIN", "LEFT JOIN"]))
    keys = draw(st.lists(st.sampled_from(KEYS + (JOIN_KEYS if join else [])), max_size=3, unique=True))
    conds = draw(st.lists(st.sampled_from(CONDITIONS), max_size=3, unique=True))
    values = {
        "v": draw(st.integers(30, 100)),
        "y": draw(st.integers(1940, 2005)),
        "yr": draw(st.integers(2015, 2024)),
    }
    conds = [c.format(**values) for c in conds]
    connective = draw(st.sampled_from([" AND ", " OR "]))
    measures = draw(st.lists(st.sampled_from(MEASURES), min_size=1, max_size=3, unique=True))
    from_ = "register_visit r" + (f" {join} patient p ON p.person_id = r.person_id" if join else "")
    return keys, conds, connective, measures, from_


def _sql(keys, where, measures, from_) -> str:
    select = ", ".join(
        [*(f"{k} AS k{i}" for i, k in enumerate(keys)), *(f"{m} AS m{i}" for i, m in enumerate(measures))]
    )
    return (
        f"SELECT {select} FROM {from_}"
        + (f" WHERE {where}" if where else "")
        + (f" GROUP BY {', '.join(f'k{i}' for i in range(len(keys)))}" if keys else "")
    )


class Direct:
    """The truth, from the release file itself (linked persons only, as the layer serves)."""

    def __init__(self, w: World) -> None:
        home = w.settings.releases_dir.parent
        self.con = duckdb.connect()
        self.con.execute(
            f"ATTACH '{w.settings.releases_dir / 'r_agg' / 'release.duckdb'}' AS rel (READ_ONLY)"
        )
        link = home / "restricted" / "releases" / "r_agg" / "consent_link.parquet"
        self.con.execute(f"CREATE TEMP TABLE linked AS SELECT person_id FROM read_parquet('{link}')")
        for t in ("register_visit", "patient"):
            self.con.execute(
                f"CREATE TEMP VIEW {t} AS SELECT * FROM rel.{t} WHERE person_id IN "
                "(SELECT person_id FROM linked)"
            )

    def cells(self, keys, where, from_) -> dict[tuple, tuple[int, int]]:
        """key values -> (distinct persons, strictest threshold of the holders in the cell)."""
        holders = (
            "list_distinct(flatten(list([r.holder" + (", p.holder" if " p " in f" {from_} " else "") + "])))"
        )
        exprs = [width_bucket_free(k) for k in keys]
        sql = (
            f"SELECT {', '.join([*exprs, 'count(DISTINCT r.person_id)', holders])} FROM {from_}"
            + (f" WHERE {width_bucket_free(where)}" if where else "")
            + (f" GROUP BY {', '.join(str(i + 1) for i in range(len(keys)))}" if keys else "")
        )
        out = {}
        for row in self.con.execute(sql).fetchall():
            *key, persons, hs = row
            if not persons:
                continue  # no cell (a total over nothing)
            out[tuple(key)] = (persons, max(THRESHOLDS.get(h, 10) for h in hs if h is not None))
        return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(grammar_queries())
def test_every_published_cell_has_enough_persons_across_joined_tables(gworld, query):
    keys, conds, connective, measures, from_ = query
    where = connective.join(conds)
    body = _ask(gworld, _sql(keys, where, measures, from_))
    truth = Direct(gworld).cells(keys, where, from_)
    for row in body["rows"]:
        key = tuple(row[: len(keys)])
        persons, threshold = truth[key]
        assert persons >= threshold, (key, persons, threshold)
    # and the counts published are on the release's grid (region_skane: multiples of 10)
    for i, m in enumerate(measures):
        if m.startswith("count"):
            assert all(row[len(keys) + i] is None or row[len(keys) + i] % 10 == 0 for row in body["rows"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(grammar_queries())
def test_the_same_query_gives_the_same_answer(gworld, query):
    keys, conds, connective, measures, from_ = query
    sql = _sql(keys, connective.join(conds), measures, from_)
    first = _ask(gworld, sql)
    assert _ask(gworld, sql)["rows"] == first["rows"]
    # Spelled differently, the same question: the same cells, the same noise.
    respelled = sql.replace("SELECT ", "SELECT  ").replace(" FROM ", "\nFROM ")
    assert _ask(gworld, respelled)["rows"] == first["rows"]


def test_a_fresh_server_gives_the_same_answer(gworld):
    """The keys are the release's, not the process's: another worker, or a restart, agrees."""
    sql = "SELECT county, sex, count(*), count(DISTINCT person_id), avg(hba1c_mmol_mol) FROM register_visit GROUP BY ALL"
    other = AccessService(gworld.settings, gworld.gov)
    try:
        assert _ask(gworld, sql, other)["rows"] == _ask(gworld, sql)["rows"]
    finally:
        other.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(grammar_queries())
def test_complementary_filters_never_give_back_a_withheld_count(gworld, query):
    """Total minus the same total under the opposite filter, cell by cell: never a withheld
    cell's true number of persons (published person counts are multiples of the rounding
    base, which is at least the threshold, and a withheld cell has 1..threshold-1 persons)."""
    keys, conds, _connective, _measures, from_ = query
    if not conds:
        return
    cond = " AND ".join(conds)
    measure = ["count(DISTINCT r.person_id)"]
    filtered = {tuple(r[:-1]): r[-1] for r in _ask(gworld, _sql(keys, cond, measure, from_))["rows"]}
    total = {tuple(r[:-1]): r[-1] for r in _ask(gworld, _sql(keys, None, measure, from_))["rows"]}
    opposite = {
        tuple(r[:-1]): r[-1] for r in _ask(gworld, _sql(keys, f"NOT ({cond})", measure, from_))["rows"]
    }
    truth = Direct(gworld).cells(keys, cond, from_)
    for key, (persons, _threshold) in truth.items():
        if key in filtered:
            continue  # published: nothing to recover
        if key in total and key in opposite:
            assert total[key] - opposite[key] != persons, (key, persons)


def test_differencing_recovers_neither_a_small_count_nor_its_mean(gworld):
    """Issue 12, attack 5: a total minus the same total with the opposite filter gave a
    3-person cell and its mean HbA1c. Find a small group, then try it."""
    direct = Direct(gworld)
    year, sex, county, persons, rows, mean = direct.con.execute(
        "SELECT birth_year, sex, county, count(DISTINCT person_id), count(*), avg(hba1c_mmol_mol) "
        "FROM register_visit GROUP BY ALL HAVING count(DISTINCT person_id) BETWEEN 1 AND 4 "
        "ORDER BY 4 DESC, 1, 2, 3 LIMIT 1"
    ).fetchall()[0]
    small = f"birth_year = {year} AND sex = '{sex}' AND county = '{county}'"
    ask = "SELECT count(DISTINCT person_id) AS p, count(*) AS n, avg(hba1c_mmol_mol) AS m FROM register_visit"
    assert _ask(gworld, f"{ask} WHERE {small}")["rows"] == []  # withheld
    ((tp, tn, tm),) = _ask(gworld, ask)["rows"]
    ((bp, bn, bm),) = _ask(gworld, f"{ask} WHERE NOT ({small})")["rows"]
    assert tp - bp != persons
    assert (tp - bp) % 5 == 0 and (tn - bn) % 5 == 0
    recovered_mean = (tm * tn - bm * bn) / rows
    assert abs(recovered_mean - mean) > 1e-6
    # Repeating the same questions gives the same noise: averaging recovers nothing.
    for _ in range(3):
        assert _ask(gworld, ask)["rows"] == [[tp, tn, tm]]


def test_a_measure_gets_the_same_noise_however_it_is_asked(gworld):
    """Asking one mean in many positions, rounded or not, next to other measures, must not give
    many noisy copies to average: the noise follows the cell and what is measured."""
    base = _ask(gworld, "SELECT sex, avg(hba1c_mmol_mol) FROM register_visit GROUP BY sex")["rows"]
    for sql in (
        "SELECT sex, count(*), sum(bmi), avg(hba1c_mmol_mol) FROM register_visit GROUP BY sex",
        "SELECT avg(hba1c_mmol_mol) AS m, sex FROM register_visit GROUP BY sex",
        "SELECT sex, stddev(bmi), avg(hba1c_mmol_mol), avg(hba1c_mmol_mol) AS again FROM register_visit GROUP BY 1",
    ):
        rows = _ask(gworld, sql)["rows"]
        means = {
            r[0] if isinstance(r[0], str) else r[1]: [v for v in r if isinstance(v, float)] for r in rows
        }
        for sex, mean in base:
            assert mean in means[sex], (sql, sex)
    rounded = _ask(gworld, "SELECT sex, round(avg(hba1c_mmol_mol), 2) FROM register_visit GROUP BY sex")[
        "rows"
    ]
    assert [(s, round(m, 2)) for s, m in base] == [tuple(r) for r in rounded]
    # A sum is its published mean times its published count of values.
    ((n, mean, total),) = _ask(gworld, "SELECT count(bmi), avg(bmi), sum(bmi) FROM register_visit")["rows"]
    assert total == pytest.approx(mean * n, rel=1e-9)


def test_settings_are_readable_and_keys_are_not(client, world):
    """Researchers see the disclosure settings of their aggregate permit, everyone each
    holder's; no perturbation key is reachable by name from a query."""
    schema = client.get("/releases/r_agg/schema", headers=auth(world.alice)).json()
    d = schema["disclosure"]
    assert d["perturbation"]["rounding_base"] == 10 and d["thresholds"]["region_skane"] == 10
    assert "disclosure" not in client.get("/releases/r_rec/schema", headers=auth(world.alice)).json()
    public = {h["holder_id"]: h for h in client.get("/governance/disclosure").json()}
    assert public["ndr"]["perturbation"] == {
        "threshold": 5,
        "rounding_base": 5,
        "max_noise": 7,
        "variance": 6.0,
        "magnitude": 0.5,
    }
    assert not any("__" in c["name"] for cols in schema["tables"].values() for c in cols)
    for sql in (
        "SELECT sum(__rk) FROM register_visit",
        "SELECT __pn, count(*) FROM register_visit GROUP BY 1",
        "SELECT count(*) FROM hdp_ck.register_visit",
        "SELECT count(*) FROM hdp_keys.person_key",
    ):
        for release in ("r_agg", "r_rec"):
            r = client.post(f"/releases/{release}/query", json={"sql": sql}, headers=auth(world.alice))
            assert r.status_code in (400, 403), (sql, release, r.text)


def test_join_amplification_of_one_persons_rows_is_withheld(gworld):
    """A self-join squares each person's rows: a person with many visits would dominate the
    joined row count of any cell and show through it. Such cells are withheld."""
    direct = Direct(gworld)
    body = _ask(
        gworld,
        "SELECT a.sex, count(*) FROM register_visit a JOIN register_visit b "
        "ON a.person_id = b.person_id GROUP BY a.sex",
    )
    # In every published cell no two persons hold more than 90 % of the joined rows.
    for sex, _n in body["rows"]:
        ((top2, rows),) = direct.con.execute(
            "SELECT list_sum(list_sort(list(n * n), 'DESC')[1:2]), sum(n * n) FROM "
            "(SELECT person_id, count(*) AS n FROM register_visit WHERE sex = ? GROUP BY 1)",
            [sex],
        ).fetchall()
        assert top2 <= 0.9 * rows
    # A cell of few persons with many visits each: withheld for dominance or size, never published.
    few = _ask(
        gworld,
        "SELECT a.birth_year, count(*) FROM register_visit a JOIN register_visit b "
        "ON a.person_id = b.person_id WHERE a.birth_year < 1935 GROUP BY a.birth_year",
    )
    for year, _n in few["rows"]:
        ((top2, rows),) = direct.con.execute(
            "SELECT list_sum(list_sort(list(n * n), 'DESC')[1:2]), sum(n * n) FROM "
            "(SELECT person_id, count(*) AS n FROM register_visit WHERE birth_year = ? GROUP BY 1)",
            [year],
        ).fetchall()
        assert top2 <= 0.9 * rows


def test_rows_dominance_rule_on_crafted_cells():
    """The rule itself, on exact per-person row counts: one person with 100 joined rows among
    five with one each dominates; six persons with 3 rows each do not."""
    from access.aggregate import CompiledQuery, DisclosureSettings, _rows_dominated
    from privacy.cellkey import PerturbationSettings, build_ptable

    cq = CompiledQuery(
        query=None,
        stats_sql="",
        exact_sql="",
        value_columns=(),
        magnitude_columns=frozenset(),
        persons_in_stats=False,
        rows_dominance=True,
        holder_of_bit={},
        max_rows_per_person=100,
    )
    ps = PerturbationSettings()
    ds = DisclosureSettings(thresholds={}, perturbation=ps, ptable=build_ptable(ps))
    assert _rows_dominated({}, {"__toprows": [100, 1, 1], "__totrows": 104}, cq, ds)
    assert not _rows_dominated({}, {"__toprows": [3, 3, 3], "__totrows": 18}, cq, ds)
    assert _rows_dominated({"__rows": 150}, None, cq, ds)  # the bound cannot settle it: counts as dominated
    assert not _rows_dominated({"__rows": 1_000}, None, cq, ds)
