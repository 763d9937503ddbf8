"""Values the gate produces: per-check outcomes and the gate's verdict. Counts only, never values.

These travel into logs, XComs, Airflow exceptions, the results history and Data Docs, so
they hold check ids, table/column names, counts and thresholds, and nothing from a row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PASS, WARN, FAIL, SKIPPED, ERROR = "pass", "warn", "fail", "skipped", "error"
VERDICTS = (PASS, WARN, FAIL, SKIPPED, ERROR)


@dataclass(frozen=True)
class CheckResult:
    id: str
    zone: str
    table: str
    column: str | None
    kind: str
    category: str
    subcategory: str
    severity: str
    failed_rows: int
    total_rows: int
    max_failed_share: float
    max_failed_count: int | None
    verdict: str
    #: why a check was skipped or errored ("column missing: bmi", "DuckDB ConversionException"):
    #: names and exception types only
    reason: str = ""
    quarantined_rows: int = 0

    @property
    def failed_share(self) -> float:
        return self.failed_rows / self.total_rows if self.total_rows else 0.0

    @property
    def threshold(self) -> dict[str, float | int | None]:
        return {"max_failed_share": self.max_failed_share, "max_failed_count": self.max_failed_count}

    @property
    def blocks(self) -> bool:
        """Fail closed: a blocking check that failed, or could not run, stops the release."""
        return self.severity == "blocking" and self.verdict in (FAIL, ERROR)

    def describe(self) -> str:
        """One line for operators: id, verdict and counts (no values)."""
        text = f"{self.id} [{self.severity}] {self.verdict}: {self.failed_rows}/{self.total_rows} rows failed"
        text += f" ({self.failed_share:.2%}; tolerated <= {self.max_failed_share:.2%}"
        if self.max_failed_count is not None:
            text += f" and <= {self.max_failed_count} rows"
        text += ")"
        if self.reason:
            text += f" - {self.reason}"
        return text


@dataclass(frozen=True)
class GateResult:
    run_id: str
    zone: str
    #: holder id (raw, research) or release id (release)
    scope: str
    passed: bool
    checks: tuple[CheckResult, ...]
    started_at: str
    duration_s: float
    library_version: str
    docs_path: str | None = None
    quarantined_rows: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def blocking_failures(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if c.blocks)

    def counts(self) -> dict[str, int]:
        out = {v: 0 for v in (PASS, WARN, FAIL, SKIPPED, ERROR)}
        for c in self.checks:
            out[c.verdict] += 1
        return out

    def summary(self) -> dict[str, Any]:
        """Small, value-free dict for XComs and run metrics."""
        return {
            "run_id": self.run_id,
            "zone": self.zone,
            "scope": self.scope,
            "passed": self.passed,
            "checks": self.counts(),
            "failed": [c.id for c in self.checks if c.verdict == FAIL],
            "warned": [c.id for c in self.checks if c.verdict == WARN],
            "errored": [c.id for c in self.checks if c.verdict == ERROR],
            "quarantined_rows": self.quarantined_rows,
            "docs_path": self.docs_path,
            "duration_s": round(self.duration_s, 3),
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["checks"] = [asdict(c) for c in self.checks]
        return d


class QualityGateFailed(RuntimeError):
    """A blocking check failed (or could not run). The message lists check ids and counts only."""

    def __init__(self, result: GateResult) -> None:
        self.result = result
        lines = [c.describe() for c in result.blocking_failures]
        where = f"{result.zone} zone, {result.scope}"
        docs = f"; Data Docs: {result.docs_path}" if result.docs_path else ""
        super().__init__(
            f"quality gate blocked ({where}, run {result.run_id}): {len(lines)} blocking check(s) failed: "
            + "; ".join(lines)
            + docs
        )


def raise_for_blocking(result: GateResult) -> None:
    """Raise QualityGateFailed when the gate did not pass; downstream release tasks then do not run."""
    if not result.passed:
        raise QualityGateFailed(result)
