"""PROM key figures across the federation: each node's published figures, pooled at the hub.

A node computes its holder's key figures under its own ``min_cell_count``
(:func:`pipelines.outcomes.keyfigures.key_figures`) and publishes only those: withheld cells as
their reason, shown cells as value, interval and persons. The hub never sees a response or a
person. :func:`pool_key_figures` combines the published tables per period, exactly where the
published numbers allow it:

* counts (responses, persons) are summed. **Persons are summed, not linked**: a person who
  answered at two holders counts at each, so the pooled ``persons`` is an upper bound (note
  :data:`PERSONS_SUMMED`), as for a federated aggregate query;
* a share (response rate, improved share) is pooled from its parts: each node's counted persons
  are recovered as ``round(share * persons)`` and summed over the summed denominators;
* a mean is weighted by persons, and its t-based interval is exact: each node's standard
  deviation follows from its published interval (``s = half-width * sqrt(n) / t(0.975, n - 1)``)
  and the pooled variance of parts ``(n_i, mean_i, s_i)`` is
  ``(sum (n_i - 1) s_i^2 + sum n_i (mean_i - mean)^2) / (N - 1)``.

**A figure any contributing node withheld is withheld in the pool** (:data:`PARTIAL`): a total
without one node's part would pass for the whole, and the pooled value minus the other nodes'
published values would give back the cell that node withheld. Only ``keyfigures.no_values``
(nothing to count at that node) lets the others pool. The pooled cells then go through the
strictest threshold of all contributing nodes again. Improved shares pool only when every node
used the same pairing rule and improvement measure (:data:`RULES_DIFFER`).

:func:`key_figures_document` / :func:`key_figures_from_document` are the JSON form a node sends
and the hub stores; the reader checks every field, so a malformed or hostile document is refused
whole (:class:`ValueError`), never half read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scipy import stats

from pipelines.outcomes.change import PairingRule
from pipelines.outcomes.keyfigures import (
    NO_VALUES,
    REASONS,
    TOO_FEW_PERSONS,
    Figure,
    Improvement,
    KeyFigures,
    PeriodFigures,
)

#: A node behind this cell withheld its part, so the pooled cell is withheld too.
PARTIAL = "keyfigures.partial"
#: The nodes paired or judged improvement differently: their improved shares do not add up.
RULES_DIFFER = "keyfigures.rules_differ"
#: Pooled persons are a sum over holders (a person at two holders counts twice).
PERSONS_SUMMED = "keyfigures.persons_summed"
POOLED_REASONS = (*REASONS, PARTIAL, RULES_DIFFER)
#: Notes a document may carry about its whole table (a node's, or the pool's).
NOTES = (*REASONS, PERSONS_SUMMED)

FEDERATION = "federation"
FORMAT = "hdp.prom_key_figures/1"
FIGURE_NAMES = ("responses", "persons", "response_rate", "mean_index", "mean_vas", "improved_share")
_COUNTS = ("responses", "persons")
_SHARES = ("response_rate", "improved_share")
_MEANS = ("mean_index", "mean_vas")


# -- the document a node publishes ---------------------------------------------------------------


def key_figures_document(kf: KeyFigures, *, confidence: float = 0.95) -> dict[str, Any]:
    """The JSON form of one holder's published key figures (aggregates only)."""
    return {
        "format": FORMAT,
        "holder": kf.holder,
        "threshold": kf.threshold,
        "period": kf.period,
        "confidence": confidence,
        "improvement": asdict(kf.improvement),
        "rule": asdict(kf.rule),
        "notes": list(kf.notes),
        "rows": [
            {"period": r.period, **{name: _figure_document(f) for name, f in r.figures().items()}}
            for r in kf.rows
        ],
    }


def _figure_document(f: Figure) -> dict[str, Any]:
    if not f.shown:
        return {"withheld": f.withheld}
    return {"value": f.value, "low": f.low, "high": f.high, "persons": f.persons}


def key_figures_from_document(doc: Any) -> tuple[KeyFigures, float]:
    """A published document back as :class:`KeyFigures` and its confidence level; ValueError if
    anything in it is not what :func:`key_figures_document` writes."""
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} document")
    holder = doc.get("holder")
    if not isinstance(holder, str) or not holder or len(holder) > 80:
        raise ValueError("holder must be a non-empty id")
    threshold = doc.get("threshold")
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
        raise ValueError("threshold must be a positive integer")
    period = doc.get("period")
    if period not in ("year", "quarter"):
        raise ValueError("period must be year or quarter")
    confidence = _number(doc.get("confidence"), "confidence")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    try:
        improvement = Improvement(**_mapping(doc.get("improvement"), "improvement"))
        rule = PairingRule(**_mapping(doc.get("rule"), "rule"))
    except TypeError as exc:
        raise ValueError(f"improvement or rule: {exc}") from None
    notes = doc.get("notes")
    if not isinstance(notes, list) or not all(n in NOTES for n in notes):
        raise ValueError("notes must be reason codes")
    rows_doc = doc.get("rows")
    if not isinstance(rows_doc, list):
        raise ValueError("rows must be a list")
    rows = []
    for row in rows_doc:
        if not isinstance(row, Mapping) or set(row) != {"period", *FIGURE_NAMES}:
            raise ValueError("each row has a period and the six figures")
        label = row["period"]
        if not isinstance(label, str) or not _valid_label(label, period):
            raise ValueError(f"bad period label {label!r}")
        figures = {name: _figure_from_document(row[name], threshold) for name in FIGURE_NAMES}
        rows.append(PeriodFigures(period=label, **figures))
    labels = [r.period for r in rows]
    if len(set(labels)) != len(labels):
        raise ValueError("a period appears twice")
    kf = KeyFigures(
        holder=holder,
        threshold=threshold,
        period=period,
        rows=tuple(sorted(rows, key=lambda r: r.period)),
        improvement=improvement,
        rule=rule,
        notes=tuple(notes),
    )
    return kf, confidence


def _mapping(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be an object")
    return dict(value)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number")
    return float(value)


def _valid_label(label: str, period: str) -> bool:
    year, _, quarter = label.partition("-Q")
    if not (len(year) == 4 and year.isdigit()):
        return False
    return (
        quarter == ""
        if period == "year"
        else quarter in ("1", "2", "3", "4") and label == f"{year}-Q{quarter}"
    )


def _figure_from_document(doc: Any, threshold: int) -> Figure:
    if not isinstance(doc, Mapping):
        raise ValueError("a figure must be an object")
    if "withheld" in doc:
        if set(doc) != {"withheld"} or doc["withheld"] not in POOLED_REASONS:
            raise ValueError("a withheld figure carries only its reason code")
        return Figure.withhold(doc["withheld"])
    if set(doc) != {"value", "low", "high", "persons"}:
        raise ValueError("a shown figure has value, low, high and persons")
    persons = doc["persons"]
    if not isinstance(persons, int) or isinstance(persons, bool) or persons < threshold:
        # a node never shows a cell below its own threshold; a document that does is refused
        raise ValueError("a shown figure needs persons at or above the node's threshold")
    value = _number(doc["value"], "value")
    low = None if doc["low"] is None else _number(doc["low"], "low")
    high = None if doc["high"] is None else _number(doc["high"], "high")
    if (low is None) != (high is None) or (low is not None and high is not None and not low <= value <= high):
        raise ValueError("an interval needs both ends around the value")
    return Figure(value=value, low=low, high=high, persons=persons)


# -- pooling ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One node's published key figures and the confidence level of its intervals."""

    figures: KeyFigures
    confidence: float = 0.95


def pool_key_figures(parts: Sequence[Part]) -> KeyFigures:
    """The federation's key figures from the nodes' published tables (see the module docstring)."""
    if not parts:
        raise ValueError("nothing to pool")
    kinds = {p.figures.period for p in parts}
    if len(kinds) != 1:
        raise ValueError("every part must have the same period kind")
    levels = {p.confidence for p in parts}
    if len(levels) != 1:
        raise ValueError("every part must have the same confidence level")
    confidence = levels.pop()
    threshold = max(p.figures.threshold for p in parts)
    same_rules = len({(p.figures.improvement, p.figures.rule) for p in parts}) == 1
    labels = sorted({r.period for p in parts for r in p.figures.rows})
    rows = []
    for label in labels:
        present = [r for p in parts for r in p.figures.rows if r.period == label]
        pooled: dict[str, Figure] = {}
        for name in FIGURE_NAMES:
            cells = [r.figures()[name] for r in present]
            if name == "improved_share" and not same_rules:
                pooled[name] = Figure.withhold(RULES_DIFFER)
            elif any(not c.shown and c.withheld != NO_VALUES for c in cells):
                pooled[name] = Figure.withhold(PARTIAL)
            else:
                shown = [c for c in cells if c.shown]
                if not shown:
                    pooled[name] = Figure.withhold(NO_VALUES)
                elif name in _COUNTS:
                    pooled[name] = _pool_count(shown, threshold)
                elif name in _SHARES:
                    pooled[name] = _pool_share(shown, threshold)
                else:
                    pooled[name] = _pool_mean(shown, threshold, confidence)
        rows.append(PeriodFigures(period=label, **pooled))
    first = parts[0].figures
    notes = sorted({n for p in parts for n in p.figures.notes} | {PERSONS_SUMMED})
    return KeyFigures(
        holder=FEDERATION,
        threshold=threshold,
        period=first.period,
        rows=tuple(rows),
        improvement=first.improvement,
        rule=first.rule,
        notes=tuple(notes),
    )


def _pool_count(cells: Sequence[Figure], threshold: int) -> Figure:
    value = sum(c.value or 0.0 for c in cells)
    persons = sum(c.persons or 0 for c in cells)
    if persons < threshold:
        return Figure.withhold(TOO_FEW_PERSONS)
    return Figure(value=value, persons=persons)


def _pool_share(cells: Sequence[Figure], threshold: int) -> Figure:
    whole = sum(c.persons or 0 for c in cells)
    part = sum(round((c.value or 0.0) * (c.persons or 0)) for c in cells)
    if whole < threshold or part < threshold or whole - part < threshold:
        # cannot happen for parts that each passed their node's rule; kept so the pool fails closed
        return Figure.withhold(TOO_FEW_PERSONS)
    return Figure(value=part / whole, persons=whole)


def _t(confidence: float, df: int) -> float:
    return float(stats.t.ppf(0.5 + confidence / 2, df))


def _pool_mean(cells: Sequence[Figure], threshold: int, confidence: float) -> Figure:
    n = [c.persons or 0 for c in cells]
    total = sum(n)
    if total < threshold:
        return Figure.withhold(TOO_FEW_PERSONS)
    means = [c.value or 0.0 for c in cells]
    mean = sum(ni * mi for ni, mi in zip(n, means, strict=True)) / total
    if total < 2:
        return Figure(value=mean, persons=total)
    within = 0.0
    for c, ni in zip(cells, n, strict=True):
        if ni >= 2 and c.high is not None and c.value is not None:
            s = (c.high - c.value) * math.sqrt(ni) / _t(confidence, ni - 1)
            within += (ni - 1) * s * s
    between = sum(ni * (mi - mean) ** 2 for ni, mi in zip(n, means, strict=True))
    sd = math.sqrt((within + between) / (total - 1))
    half = _t(confidence, total - 1) * sd / math.sqrt(total)
    return Figure(value=mean, low=mean - half, high=mean + half, persons=total)
