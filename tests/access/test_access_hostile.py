"""Hostile queries: each is refused (or cut off) with a reason, and the next request is served."""

from __future__ import annotations

import pytest
from access_support import auth

GOOD = "SELECT count(*) AS n FROM register_visit"

HOSTILE = [
    ("SELECT 1; DROP TABLE register_visit", "sql.multiple_statements"),
    ("SELECT 1; SELECT 2", "sql.multiple_statements"),
    ("SELECT 1 /* hide */; /* */ DELETE FROM register_visit", "sql.multiple_statements"),
    ("SELECT 1 -- comment\n; ATTACH '/tmp/x.duckdb' AS x", "sql.multiple_statements"),
    ("SELECT * FROM read_csv('/etc/passwd')", "sql.table_function"),
    ("SELECT * FROM read_csv_auto('/etc/passwd')", "sql.table_function"),
    ("SELECT * FROM '/etc/passwd'", "sql.table_not_allowed"),
    ("SELECT * FROM read_parquet('../r_bob/*.parquet')", "sql.table_function"),
    ("SELECT * FROM read_text('/etc/passwd')", "sql.table_function"),
    ("SELECT * FROM glob('/*')", "sql.table_function"),
    ("SELECT * FROM query('SELECT * FROM hdp_sys.consent_link')", "sql.table_function"),
    ("SELECT * FROM hdp_sys.consent_link", "sql.table_not_allowed"),
    ("SELECT * FROM rel.register_visit", "sql.table_not_allowed"),
    ("SELECT * FROM hdp_gen_1.register_visit", "sql.table_not_allowed"),  # the unfiltered-looking copy
    ("SELECT * FROM hdp_gen_1.main.register_visit", "sql.table_not_allowed"),
    ("SELECT * FROM pragma_storage_info('hdp_gen_1.main.register_visit')", "sql.table_function"),
    ("SELECT * FROM consent_link", "sql.table_not_allowed"),
    ("SELECT * FROM register_visit, hdp_sys.excluded_person", "sql.table_not_allowed"),
    ("SELECT * FROM information_schema.tables", "sql.table_not_allowed"),
    ("SELECT * FROM duckdb_tables()", "sql.table_function"),
    ("SELECT * FROM duckdb_databases()", "sql.table_function"),
    ("SELECT * FROM pg_class", "sql.table_not_allowed"),
    ("WITH pg_tables AS (SELECT * FROM pg_tables) SELECT * FROM pg_tables", "sql.table_not_allowed"),
    ("SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) a, x", "sql.table_not_allowed"),
    ("ATTACH '/tmp/other.duckdb' AS other", "sql.not_select"),
    ("DETACH rel", "sql.not_select"),
    ("COPY (SELECT * FROM register_visit) TO '/tmp/out.csv'", "sql.not_select"),
    ("COPY register_visit TO '/tmp/out.parquet'", "sql.not_select"),
    ("EXPORT DATABASE '/tmp/exp'", "sql.not_select"),
    ("INSTALL httpfs", "sql.not_select"),
    ("LOAD httpfs", "sql.not_select"),
    ("PRAGMA database_list", "sql.not_select"),
    ("SET enable_external_access = true", "sql.not_select"),
    ("RESET lock_configuration", "sql.not_select"),
    ("CALL pragma_version()", "sql.not_select"),
    ("INSERT INTO hdp_sys.excluded_person VALUES ('x')", "sql.not_select"),
    ("DELETE FROM hdp_sys.excluded_person", "sql.not_select"),
    ("CREATE TABLE t AS SELECT 1", "sql.not_select"),
    ("DESCRIBE register_visit", "sql.not_select"),
    ("SUMMARIZE register_visit", "sql.not_select"),
    ("SHOW TABLES", "sql.not_select"),
    ("EXPLAIN SELECT 1", "sql.not_select"),
    ("SELECT getenv('HOME')", "sql.function_not_allowed"),
    ("SELECT current_setting('memory_limit')", "sql.function_not_allowed"),
    (
        "SELECT * FROM register_visit WHERE person_id IN (SELECT person_id FROM hdp_sys.unlinked)",
        "sql.table_not_allowed",
    ),
    (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
        "sql.recursive_cte",
    ),
    ("SELECT 1 INTO x", "sql.syntax"),
    ("SELECT $1", "sql.forbidden_construct"),
    ("SELECT * FROM regіster_visit", "sql.table_not_allowed"),  # Cyrillic i
    ("SELECT 1\u202e; DROP TABLE x", "sql.invalid_characters"),  # bidi override
    ("SELECT\u200b* FROM register_visit", "sql.invalid_characters"),  # zero-width space
    ("SELECT 1\x00", "sql.invalid_characters"),
    ("SELECT 1 ； SELECT 2", "sql.syntax"),  # full-width semicolon is no separator
    ("", "sql.empty"),
    ("SELECT 'x' " + "|| 'x' " * 5000, "sql.too_long"),
]


@pytest.mark.parametrize(("sql", "reason"), HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_hostile_query_refused_and_server_keeps_serving(shared_client, shared_world, sql, reason):
    client, world = shared_client, shared_world
    r = client.post("/releases/r_rec/query", json={"sql": sql}, headers=auth(world.alice))
    assert r.status_code in (400, 403, 422), r.text
    assert r.json()["error"] == reason, r.json()
    assert r.json()["message"]
    ok = client.post("/releases/r_rec/query", json={"sql": GOOD}, headers=auth(world.alice))
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        (
            "SELECT count(*) FROM register_visit a, register_visit b, register_visit c, register_visit d",
            "limit.time",
        ),
        ("SELECT a.* FROM register_visit a, register_visit b", "limit.rows"),
        # length(list(...)) rather than count(*): the optimiser may drop an aggregate whose value is unused.
        (
            "SELECT length(list(x)) FROM (SELECT a.person_id || b.person_id AS x "
            "FROM register_visit a, register_visit b, register_visit c)",
            "limit.time",
        ),
    ],
)
def test_bombs_are_cut_off(shared_client, shared_world, sql, reason):
    client, world = shared_client, shared_world
    r = client.post("/releases/r_rec/query", json={"sql": sql}, headers=auth(world.alice))
    assert r.status_code == 422, r.text
    assert r.json()["error"] in (reason, "limit.memory")
    ok = client.post("/releases/r_rec/query", json={"sql": GOOD}, headers=auth(world.alice))
    assert ok.status_code == 200


def test_engine_settings_block_files_even_without_sandbox(shared_world):
    world = shared_world
    """Defence in depth: DuckDB itself refuses file access and config changes on duckdb 2.0."""
    import duckdb

    permit = world.gov.active_permit(user_name="alice", release_id="r_rec", at=world.now)
    engine = world.service.engines.get(permit)
    cur = engine.con.cursor()
    for stmt in (
        "SELECT * FROM read_csv('/etc/passwd')",
        "COPY (SELECT 1) TO '/tmp/hdp_x.csv'",
        "ATTACH '/tmp/hdp_x.duckdb' AS x",
        "INSTALL httpfs",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "SET memory_limit = '100GB'",
    ):
        with pytest.raises(duckdb.Error):
            cur.execute(stmt)


def test_runtime_errors_do_not_quote_data(shared_client, shared_world):
    client, world = shared_client, shared_world
    r = client.post(
        "/releases/r_rec/query",
        json={"sql": "SELECT CAST(person_id AS INTEGER) FROM register_visit"},
        headers=auth(world.alice),
    )
    assert r.status_code == 400 and r.json()["error"] == "sql.runtime_error"
    assert "person" not in r.json()["message"].lower() or "withheld" in r.json()["message"]
    for pid in [
        p
        for p in world.service.engines.get(
            world.gov.active_permit(user_name="alice", release_id="r_rec", at=world.now)
        )
        .con.cursor()
        .execute("SELECT person_id FROM register_visit LIMIT 3")
        .fetchall()
    ]:
        assert pid[0] not in r.text
