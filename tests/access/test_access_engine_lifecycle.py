"""Engines evicted from the cache while a query runs on them stay open until it ends."""

from __future__ import annotations

import threading

from access.engine import EngineCache


def _permit(world, release):
    return next(p for p in world.gov.permits if p.release_id == release)


def test_evicted_engine_stays_open_for_its_running_query(world):
    cache = EngineCache(world.settings.releases_dir, world.settings.limits, capacity=1)
    a, b = _permit(world, "r_rec"), _permit(world, "r_bob")
    with cache.lease(a) as engine_a:
        cache.get(b)  # capacity 1: evicts r_rec's engine while we hold it
        assert not engine_a.closed and engine_a.leases == 1
        (t,) = engine_a.run(["SELECT count(*) AS n FROM register_visit"])
        assert t.column("n")[0].as_py() > 0
        assert not engine_a.acquire()  # retired: no new leases
    assert engine_a.closed  # the last lease closed it
    with cache.lease(a) as fresh:  # the next query gets a fresh engine
        assert fresh is not engine_a and not fresh.closed
    cache.close()


def test_idle_evicted_engine_is_closed_at_once(world):
    cache = EngineCache(world.settings.releases_dir, world.settings.limits, capacity=1)
    engine_a = cache.get(_permit(world, "r_rec"))
    cache.get(_permit(world, "r_bob"))
    assert engine_a.closed
    cache.close()


def test_concurrent_queries_survive_eviction_churn(world):
    """Two researchers' releases through a one-engine cache: every query still answers."""
    world.service.engines.capacity = 1
    alice, bob = world.gov.users["alice"], world.gov.users["bob"]
    errors: list[BaseException] = []

    def run(user, release, n):
        try:
            for _ in range(n):
                r = world.service.query(user, release, "SELECT count(*) AS n FROM register_visit")
                assert r.rows == 1
        except BaseException as err:  # noqa: BLE001 - collected and re-raised by the test
            errors.append(err)

    threads = [
        threading.Thread(target=run, args=(alice, "r_rec", 6)),
        threading.Thread(target=run, args=(bob, "r_bob", 6)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors


# -- generations: the consent-filtered tables are rebuilt per excluded set -------------------


def _generations(engine) -> list[str]:
    cur = engine.con.cursor()
    try:
        return sorted(
            r[0]
            for r in cur.execute(
                "SELECT database_name FROM duckdb_databases() WHERE database_name LIKE 'hdp_gen_%'"
            ).fetchall()
        )
    finally:
        cur.close()


def _consent_keys(engine, n: int) -> list[str]:
    cur = engine.con.cursor()
    try:
        return [
            r[0]
            for r in cur.execute(
                "SELECT consent_key FROM hdp_sys.consent_link WHERE consent_key IS NOT NULL "
                f"ORDER BY consent_key LIMIT {n}"
            ).fetchall()
        ]
    finally:
        cur.close()


def _count(engine) -> int:
    (t,) = engine.run(["SELECT count(DISTINCT person_id) AS n FROM register_visit"])
    return t.column("n")[0].as_py()


def test_each_change_of_the_excluded_set_replaces_the_generation(world):
    cache = EngineCache(world.settings.releases_dir, world.settings.limits)
    engine = cache.get(_permit(world, "r_rec"))
    before = _count(engine)
    keys = _consent_keys(engine, 3)
    for i in range(1, 4):
        engine.refresh_exclusions(frozenset(keys[:i]))
        assert _count(engine) == before - i
        assert _generations(engine) == [f"hdp_gen_{i + 1}"]  # the replaced one is gone: no memory leak
    engine.refresh_exclusions(frozenset())
    assert _count(engine) == before
    cache.close()


def test_text_columns_of_a_generation_are_stored_compressed(world):
    """Grouping by uncompressed in-memory text is 2-3x slower than on the release file."""
    cache = EngineCache(world.settings.releases_dir, world.settings.limits)
    engine = cache.get(_permit(world, "r_rec"))
    (gen,) = _generations(engine)
    cur = engine.con.cursor()
    rows = dict(
        cur.execute(
            "SELECT column_name, list(DISTINCT compression ORDER BY compression) "
            f"FROM pragma_storage_info('{gen}.main.register_visit') WHERE segment_type <> 'VALIDITY' GROUP BY ALL"
        ).fetchall()
    )
    cur.close()
    assert rows["county"] != ["Uncompressed"], rows
    assert rows["person_id"] == ["Uncompressed"], rows  # random hex: point lookups stay fast
    cache.close()


def test_a_stream_open_across_a_refresh_keeps_its_snapshot(world, monkeypatch):
    import access.engine as engine_module

    monkeypatch.setattr(engine_module, "FETCH_BATCH_ROWS", 10)
    cache = EngineCache(world.settings.releases_dir, world.settings.limits)
    engine = cache.get(_permit(world, "r_rec"))
    before = _count(engine)
    rs = engine.open_stream("SELECT person_id FROM register_visit")
    first = rs.next_batch()
    engine.refresh_exclusions(frozenset(_consent_keys(engine, 5)))
    assert len(_generations(engine)) == 2  # the stream may still read the old one
    seen = {*first.column("person_id").to_pylist()}
    while (batch := rs.next_batch()) is not None:
        seen.update(batch.column("person_id").to_pylist())
    rs.close()
    assert len(seen) == before  # the whole old snapshot, not a mix
    assert _generations(engine) == ["hdp_gen_2"]  # detached when the last reader ended
    assert _count(engine) == before - 5
    cache.close()
