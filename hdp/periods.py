"""When a period starts, as operators type it: ``30m``, ``24h``, ``7d``, ``2w`` back from now, or
an ISO date/time (UTC when it names no zone). One reader for ``hdp status --since`` and the access
follow-up (CLI and API); each caller turns the ValueError into its own kind of error."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_SPAN = re.compile(r"^(\d{1,6})([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
HINT = "give a duration such as 30m, 24h, 7d, 2w or an ISO date like 2026-11-21"


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """The moment ``text`` names; ValueError (with :data:`HINT`) when it names none."""
    now = now or datetime.now(UTC)
    m = _SPAN.match(text.strip())
    if m:
        return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r}: {HINT}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
