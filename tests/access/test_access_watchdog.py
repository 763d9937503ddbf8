"""The query watchdog fires overdue actions in deadline order and never fires cancelled ones."""

from __future__ import annotations

import threading
import time

from access.watchdog import Watchdog


def test_fires_in_deadline_order_and_skips_cancelled():
    dog = Watchdog()
    fired: list[str] = []
    done = threading.Event()
    dog.watch(0.15, lambda: (fired.append("late"), done.set()))
    cancelled = dog.watch(0.05, lambda: fired.append("cancelled"))
    dog.watch(0.02, lambda: fired.append("early"))
    dog.cancel(cancelled)
    assert done.wait(5)
    assert fired == ["early", "late"]
    assert cancelled[2] is None  # the action (a cursor's interrupt) is not kept alive


def test_a_failing_action_does_not_stop_it():
    dog = Watchdog()
    done = threading.Event()
    dog.watch(0.01, lambda: 1 / 0)
    dog.watch(0.03, done.set)
    assert done.wait(5)


def test_a_later_earlier_deadline_re_arms_the_wait():
    dog = Watchdog()
    done = threading.Event()
    dog.watch(30, lambda: None)  # the thread now sleeps towards +30 s
    t0 = time.monotonic()
    dog.watch(0.02, done.set)
    assert done.wait(5) and time.monotonic() - t0 < 2
