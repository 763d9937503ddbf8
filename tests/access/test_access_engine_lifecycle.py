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

    threads = [threading.Thread(target=run, args=(alice, "r_rec", 6)),
               threading.Thread(target=run, args=(bob, "r_bob", 6))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
