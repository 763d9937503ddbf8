"""Runner for the official SQL on FHIR v2 conformance suite (FHIR/sql-on-fhir-v2 ``tests/*.json``).

Each test file holds fixture resources and tests of a view against them: ``expect``
(rows, compared as a multiset: the specification does not order rows), ``expectColumns``
(column names in order) or ``expectError`` (the view must be rejected, at validation or
at evaluation). The report follows the suite's test-report format
(``test_report/test-report.schema.json``): ``{file: {"tests": [{"name", "result":
{"passed", "error"?}}]}}``; a failing test also carries ``reason`` (the README's name).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipelines.fhir.viewdef import ViewDefinitionError, compile_view


@dataclass(frozen=True)
class TestOutcome:
    file: str
    name: str
    tags: tuple[str, ...]
    passed: bool
    error: str | None = None


def _freeze(v: Any) -> Any:
    """Hashable, type-normalised form of a cell so rows compare as a multiset."""
    if isinstance(v, list):
        return ("list", tuple(_freeze(x) for x in v))
    if isinstance(v, dict):
        return ("dict", tuple(sorted((k, _freeze(x)) for k, x in v.items())))
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int | float | Decimal):
        return ("num", Decimal(str(v)).normalize())
    return v


def _row_key(row: dict[str, Any]) -> Any:
    return tuple(sorted((k, _freeze(v)) for k, v in row.items()))


def run_test(test: dict[str, Any], resources: list[dict[str, Any]]) -> tuple[bool, str | None]:
    """Run one conformance test; returns (passed, reason)."""
    view = test.get("view")
    expect_error = bool(test.get("expectError"))
    try:
        cv = compile_view(view)
        rows = list(cv.evaluate(resources))
    except ViewDefinitionError as exc:
        if expect_error:
            return True, None
        return False, f"view rejected: {exc}"
    if expect_error:
        return False, "expected an error, but the view was accepted and evaluated"
    if "expectColumns" in test:
        if cv.column_names != test["expectColumns"]:
            return False, f"columns {cv.column_names} != expected {test['expectColumns']}"
    if "expect" in test:
        expected = test["expect"]
        got = Counter(_row_key(r) for r in rows)
        want = Counter(_row_key(r) for r in expected)
        if got != want:
            return False, f"rows differ: got {len(rows)}, expected {len(expected)} (multiset comparison)"
    return True, None


def run_file(path: Path) -> list[TestOutcome]:
    suite = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    resources = suite.get("resources") or []
    out = []
    for test in suite.get("tests") or []:
        name = test.get("title") or test.get("name") or "?"
        try:
            passed, reason = run_test(test, resources)
        except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
            passed, reason = False, f"runner error: {type(exc).__name__}: {exc}"
        out.append(TestOutcome(path.name, name, tuple(test.get("tags") or ()), passed, reason))
    return out


def run_suite(directory: Path) -> list[TestOutcome]:
    """Run every ``*.json`` test file in ``directory`` (or its ``tests/`` subfolder)."""
    files = sorted(directory.glob("*.json"))
    if not files and (directory / "tests").is_dir():
        files = sorted((directory / "tests").glob("*.json"))
    files = [f for f in files if not f.name.endswith(".schema.json")]
    outcomes: list[TestOutcome] = []
    for f in files:
        outcomes.extend(run_file(f))
    return outcomes


def report(outcomes: list[TestOutcome]) -> dict[str, Any]:
    """The suite's test-report JSON structure."""
    rep: dict[str, Any] = {}
    for o in outcomes:
        result: dict[str, Any] = {"passed": o.passed}
        if not o.passed:
            result["error"] = o.error or "failed"
            result["reason"] = o.error or "failed"
        rep.setdefault(o.file, {"tests": []})["tests"].append({"name": o.name, "result": result})
    return rep


def summary(outcomes: list[TestOutcome]) -> dict[str, int]:
    shareable = [o for o in outcomes if "shareable" in o.tags]
    return {
        "tests": len(outcomes),
        "passed": sum(o.passed for o in outcomes),
        "shareable": len(shareable),
        "shareable_passed": sum(o.passed for o in shareable),
    }
