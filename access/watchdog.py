"""One thread that interrupts queries running past their time limit.

A ``threading.Timer`` per query costs a thread start and a thread exit on every query (and
their GIL hand-offs), on the path every researcher's query takes; one long-lived thread with a
deadline heap costs a lock and a heap push. Cancelled deadlines drop their action at once (so
a closed cursor is not kept alive until its deadline) and leave only a small tombstone.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable


class Watchdog:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[list] = []  # [deadline, seq, action or None]
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def watch(self, seconds: float, action: Callable[[], object]) -> list:
        """Call ``action`` in ``seconds`` unless the returned handle is cancelled first."""
        entry = [time.monotonic() + seconds, next(self._seq), action]
        with self._cond:
            heapq.heappush(self._heap, entry)
            # (a forked child inherits the object but not the thread)
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="hdp-query-watchdog", daemon=True)
                self._thread.start()
            if self._heap[0] is entry:
                self._cond.notify()  # the new deadline is the earliest: re-arm the wait
        return entry

    def cancel(self, entry: list) -> None:
        with self._cond:
            entry[2] = None

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2] is None:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                entry = heapq.heappop(self._heap)
                action, entry[2] = entry[2], None
                self._cond.release()
                try:
                    action()
                except Exception:  # noqa: BLE001 - a failed interrupt must not stop the watchdog
                    pass
                finally:
                    action = None  # drop the cursor now, not at the next deadline
                    self._cond.acquire()


#: The process's watchdog for query time limits.
WATCHDOG = Watchdog()
