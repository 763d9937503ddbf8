"""Wake-ups inside the hub's event loop: a long poll or a query waiting for answers is woken as soon
as something arrives for it, from whichever worker thread recorded it."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator


class Wakeups:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)

    def notify(self, key: str) -> None:
        """Thread-safe: called from worker threads as messages are queued or answers recorded."""
        loop = self.loop
        if loop is not None:
            loop.call_soon_threadsafe(self._set, key)

    def _set(self, key: str) -> None:
        for event in self._events.get(key, ()):
            event.set()

    @contextlib.contextmanager
    def subscription(self, key: str) -> Iterator[asyncio.Event]:
        """An event set by every :meth:`notify` of ``key`` while the block runs. Subscribe *before*
        looking for work, and clear it before each look: a notification that lands between the look
        and the wait then still wakes the waiter (none is lost)."""
        self.loop = self.loop or asyncio.get_running_loop()
        event = asyncio.Event()
        self._events[key].add(event)
        try:
            yield event
        finally:
            self._events[key].discard(event)
            if not self._events[key]:
                del self._events[key]


async def woken(event: asyncio.Event, timeout: float) -> None:
    """Wait until ``event`` is set or ``timeout`` seconds pass."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
