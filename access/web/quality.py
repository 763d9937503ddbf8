"""Quality information for the steward's request page: counts and check ids only.

* The release's quality label, from ``releases/<release_id>/manifest.json`` ("quality"), once
  the request has been released.
* At approval time: the latest research-zone quality gate run of each holder in scope, read
  through ``pipelines.quality.store.latest`` (the results history). If that module is not
  there or holds no run for the holder, the page says "no quality results yet".
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.quality.store import latest

log = logging.getLogger(__name__)

VERDICTS = ("pass", "warn", "fail", "error", "skipped")


@dataclass(frozen=True)
class CheckLine:
    check_id: str
    table: str
    column: str | None
    severity: str
    verdict: str
    failed_rows: int
    total_rows: int
    max_failed_share: float | None


@dataclass(frozen=True)
class GateSummary:
    """The latest gate run of one (zone, scope), or why there is none."""

    scope: str
    zone: str
    run_id: str | None = None
    started_at: str | None = None
    counts: dict[str, int] | None = None
    not_passed: tuple[CheckLine, ...] = ()
    unavailable: str = ""  # reason the results could not be read (exception type), "" if read

    @property
    def has_results(self) -> bool:
        return self.run_id is not None

    @property
    def blocking(self) -> tuple[CheckLine, ...]:
        return tuple(
            c for c in self.not_passed if c.severity == "blocking" and c.verdict in ("fail", "error")
        )

    @property
    def verdict(self) -> str:
        """The gate's verdict for people: fail (a blocking check failed), warn (a check did not
        pass but none blocks) or pass; "" without results."""
        if not self.has_results:
            return ""
        if self.blocking:
            return "fail"
        counts = self.counts or {}
        return "warn" if any(counts.get(v, 0) for v in ("warn", "fail", "error")) else "pass"

    @property
    def day(self) -> str:
        """The run's date (YYYY-MM-DD), the readable part of when it ran."""
        return (self.started_at or "")[:10]

    @property
    def passed(self) -> int:
        return (self.counts or {}).get("pass", 0)

    @property
    def failed(self) -> int:
        """Checks that did not pass (failed, errored or warned); skipped ones are not counted."""
        counts = self.counts or {}
        return sum(counts.get(v, 0) for v in ("warn", "fail", "error"))


def summarise(rows: list[dict[str, Any]], *, zone: str, scope: str) -> GateSummary:
    """Fold the rows of one stored gate run into a summary (pure)."""
    if not rows:
        return GateSummary(scope=scope, zone=zone)
    counts = {v: 0 for v in VERDICTS}
    lines = []
    for r in rows:
        verdict = str(r.get("verdict") or "")
        counts[verdict] = counts.get(verdict, 0) + 1
        if verdict != "pass":
            lines.append(
                CheckLine(
                    check_id=str(r.get("check_id")),
                    table=str(r.get("table_name") or ""),
                    column=r.get("column_name"),
                    severity=str(r.get("severity") or ""),
                    verdict=verdict,
                    failed_rows=int(r.get("failed_rows") or 0),
                    total_rows=int(r.get("total_rows") or 0),
                    max_failed_share=r.get("max_failed_share"),
                )
            )
    # Most serious first: blocking before warning, fail/error before warn/skipped.
    order = {"error": 0, "fail": 1, "warn": 2, "skipped": 3}
    lines.sort(key=lambda c: (c.severity != "blocking", order.get(c.verdict, 9), c.check_id))
    first = rows[0]
    return GateSummary(
        scope=scope,
        zone=zone,
        run_id=str(first.get("run_id")),
        started_at=str(first.get("started_at") or ""),
        counts=counts,
        not_passed=tuple(lines),
    )


def latest_gate(quality_dir: Path, *, zone: str, scope: str) -> GateSummary:
    """The latest stored gate run for (zone, scope); never raises (the page must still render)."""
    try:
        rows = latest(quality_dir, zone=zone, scope=scope)
    except Exception as exc:  # noqa: BLE001 - any reader failure degrades to "unavailable", logged by type
        log.warning("quality history unreadable for %s/%s: %s", zone, scope, type(exc).__name__)
        return GateSummary(scope=scope, zone=zone, unavailable=type(exc).__name__)
    return summarise(rows, zone=zone, scope=scope)


def release_label(releases_dir: Path, release_id: str | None) -> dict[str, Any] | None:
    """The "quality" entry of a release's manifest, or None when there is no release (yet)."""
    if not release_id:
        return None
    path = releases_dir / release_id / "manifest.json"
    # The release id comes from the governance store (validated there); stay inside releases_dir anyway.
    if path.resolve().parent.parent != releases_dir.resolve() or not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("release manifest unreadable for %s: %s", release_id, type(exc).__name__)
        return None
    quality = manifest.get("quality")
    if quality is None:
        return None
    return quality if isinstance(quality, dict) else {"label": quality}


@dataclass(frozen=True)
class ReleaseQuality:
    """A release's quality label (``pipelines.quality.label``) as a steward reads it."""

    passed: bool
    checks: dict[str, int]  # evaluated, passed, warned, failed, errored, skipped
    failed: tuple[str, ...]  # check ids that failed or errored
    warned: tuple[str, ...]


def release_quality(label: dict[str, Any]) -> ReleaseQuality | None:
    """The label's verdict, counts and failing check ids; None for a label of another shape
    (the page then lists its fields with :func:`flatten_label`).

    >>> release_quality({"passed": True, "checks": {"passed": 3, "failed": 0}, "failed": []}).passed
    True
    """
    checks = label.get("checks")
    if not isinstance(label.get("passed"), bool) or not isinstance(checks, dict):
        return None

    def ids(key: str) -> tuple[str, ...]:
        entries = label.get(key) or []
        return tuple(str(e.get("id")) for e in entries if isinstance(e, dict))

    return ReleaseQuality(
        passed=label["passed"],
        checks={str(k): int(v) for k, v in checks.items() if isinstance(v, int)},
        failed=ids("failed") + ids("errored"),
        warned=ids("warned"),
    )


def flatten_label(label: dict[str, Any], *, max_items: int = 40) -> list[tuple[str, str]]:
    """Scalar leaves of a quality label as (dotted key, text) rows for a table.

    >>> flatten_label({"grade": "A", "checks": {"pass": 3, "fail": 0}})
    [('grade', 'A'), ('checks.pass', '3'), ('checks.fail', '0')]
    """
    out: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if len(out) >= max_items:
            return
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, list):
            out.append((prefix, ", ".join(str(v) for v in value[:20]) + (" …" if len(value) > 20 else "")))
        else:
            out.append((prefix, str(value)))

    walk("", label)
    return out
