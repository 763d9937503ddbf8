"""Turn a task's returned counts dict into the figures the run-metrics table keeps.

Pure logic, no I/O. Every stage function in ``edge.stages`` returns a small dict of
counts and ids (ingest: ``holder, source, files, lines_read, rows_loaded, quarantined
{reason_code: n}``; the other stages their own names). This module maps the names each
stage uses onto four headline figures (rows in, rows out, rows quarantined, checks
failed) and keeps every other *number* as an extra figure.

Privacy is enforced here rather than trusted: only numbers, and ids/labels that look
like codes (``[a-z0-9_.:/-]``, bounded length), survive. A string that could be a value
from a record (a name, a personnummer, free text) is dropped, never stored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Labels and ids we keep must look like codes: start with a lower-case letter, no spaces,
#: bounded. That refuses personnummer, dates, names as written, free text and numbers as
#: labels. (A lower-case single word still passes: the stages' contract is that their dict
#: keys are codes, and this is the second line of defence, not the first.)
_CODE = re.compile(r"^[a-z][a-z0-9_.:/-]{0,79}$")

# Names the stages use for the headline figures, in order of preference.
ROWS_IN_KEYS = ("rows_in", "lines_read", "rows_read", "records_read", "resources_read", "rows_checked")
ROWS_OUT_KEYS = ("rows_out", "rows_loaded", "rows_written", "rows_released", "resources_loaded", "rows")
QUARANTINE_KEYS = ("quarantined", "rows_quarantined", "quarantined_rows", "quarantine")
# The quality gate's summary lists the ids of failed checks under "failed".
CHECKS_FAILED_KEYS = ("checks_failed", "failed_checks", "blocking_failed", "failed")

#: Keys that identify rather than count; never stored as figures.
ID_KEYS = frozenset({"holder", "source", "zone", "scope", "run_id", "release_id", "request_id", "stage"})


def is_code(value: object) -> bool:
    """True for a short lower-case code such as ``csv.bad_date`` or ``region_skane``.

    >>> is_code("csv.bad_date"), is_code("Anna Svensson"), is_code("19121212-1212")
    (True, False, False)
    """
    return isinstance(value, str) and bool(_CODE.match(value))


def _number(value: object) -> float | None:
    # bool is an int subclass; True is not a count.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class TaskFigures:
    """What one task run reports, privacy-checked."""

    holder: str | None = None
    source: str | None = None
    rows_in: int | None = None
    rows_out: int | None = None
    #: reason code (or check id) → rows quarantined for it
    quarantined: Mapping[str, int] = field(default_factory=dict)
    checks_failed: int | None = None
    #: every other numeric figure: (name, label) → value; label "" when the figure has none
    extra: Mapping[tuple[str, str], float] = field(default_factory=dict)

    @property
    def rows_quarantined(self) -> int | None:
        return sum(self.quarantined.values()) if self.quarantined else None


def _first(counts: Mapping[str, Any], keys: Iterable[str]) -> tuple[str | None, Any]:
    for key in keys:
        if key in counts:
            return key, counts[key]
    return None, None


def _quarantine_breakdown(value: object) -> dict[str, int]:
    """``{reason: n}`` or a plain total (kept under reason ``unspecified``)."""
    if isinstance(value, Mapping):
        out: dict[str, int] = {}
        for reason, n in value.items():
            num = _number(n)
            if num is None:
                continue
            label = reason if is_code(reason) else "other"
            out[label] = out.get(label, 0) + int(num)
        return out
    num = _number(value)
    return {"unspecified": int(num)} if num is not None and num else {}


def _count_of(value: object) -> int | None:
    """A count given as a number, or as a list/dict of failed items (their number)."""
    num = _number(value)
    if num is not None:
        return int(num)
    if isinstance(value, list | tuple | set | frozenset | Mapping):
        return len(value)
    return None


def _flatten(prefix: str, value: object, out: dict[tuple[str, str], float], depth: int = 0) -> None:
    """Numbers anywhere in nested dicts → (name, label). The innermost key becomes the label."""
    if depth > 3:  # counts dicts are shallow; stop before anything pathological
        return
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if not is_code(key):
                continue
            num = _number(inner)
            if num is None and depth == 0 and isinstance(inner, list | tuple):
                num = len(inner)  # e.g. the ids of warned checks: keep how many, not which
            if num is not None:
                out[(prefix, key) if prefix else (key, "")] = float(num)
            elif isinstance(inner, Mapping):
                _flatten(f"{prefix}.{key}" if prefix else key, inner, out, depth + 1)


def figures_from_counts(counts: object) -> TaskFigures:
    """Map a stage's returned dict onto :class:`TaskFigures`; anything else gives empty figures."""
    if not isinstance(counts, Mapping):
        return TaskFigures()
    holder = counts.get("holder") if is_code(counts.get("holder")) else None
    source = counts.get("source") if is_code(counts.get("source")) else None

    in_key, rows_in = _first(counts, ROWS_IN_KEYS)
    out_key, rows_out = _first(counts, ROWS_OUT_KEYS)
    q_key, quarantined = _first(counts, QUARANTINE_KEYS)
    c_key, checks_failed = _first(counts, CHECKS_FAILED_KEYS)
    used = {in_key, out_key, q_key, c_key}

    extra: dict[tuple[str, str], float] = {}
    _flatten("", {k: v for k, v in counts.items() if k not in used and k not in ID_KEYS}, extra)
    rows_in_n = _number(rows_in)
    rows_out_n = _number(rows_out)
    return TaskFigures(
        holder=holder,
        source=source,
        rows_in=int(rows_in_n) if rows_in_n is not None else None,
        rows_out=int(rows_out_n) if rows_out_n is not None else None,
        quarantined=_quarantine_breakdown(quarantined) if q_key else {},
        checks_failed=_count_of(checks_failed) if c_key else None,
        extra=extra,
    )


@dataclass(frozen=True)
class TaskIdentity:
    """Which task run a set of figures belongs to (Airflow's ids, no Airflow import)."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
    try_number: int = 1

    @property
    def stage(self) -> str:
        """``ingest``, ``pseudonymise``, ``release``: the DAG family."""
        return self.dag_id.split("__", 1)[0]

    @property
    def dag_holder(self) -> str | None:
        """Per-holder DAGs are named ``<stage>__<holder>``."""
        _, sep, holder = self.dag_id.partition("__")
        return holder if sep and is_code(holder) else None

    @property
    def task_source(self) -> str | None:
        """``ingest_<source>`` tasks name their source."""
        prefix, sep, source = self.task_id.partition("_")
        return source if prefix == "ingest" and sep and is_code(source) else None


def identity_from_context(context: Mapping[str, Any]) -> TaskIdentity:
    """Airflow's task context → :class:`TaskIdentity`, by attribute names only (duck typing),
    so this package never imports Airflow (docs/ARCHITECTURE.md)."""
    ti = context.get("ti") or context.get("task_instance")
    if ti is None:
        raise ValueError("task context has no task instance ('ti'); is this an Airflow task callback?")
    dag_run = context.get("dag_run")
    dag_id = getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", None)
    run_id = getattr(ti, "run_id", None) or context.get("run_id") or getattr(dag_run, "run_id", None)
    map_index = getattr(ti, "map_index", -1)
    try_number = getattr(ti, "try_number", 1)
    if not dag_id or not run_id:
        raise ValueError("task context lacks dag_id or run_id")
    return TaskIdentity(
        dag_id=str(dag_id),
        run_id=str(run_id),
        task_id=str(ti.task_id),
        map_index=int(map_index) if map_index is not None else -1,
        try_number=int(try_number) if try_number is not None else 1,
    )
