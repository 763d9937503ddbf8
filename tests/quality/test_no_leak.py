"""No identifier or health value reaches Data Docs, the results history, GX's files or the logs."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import duckdb
import pytest

from pipelines.quality.gate import run_gate
from pipelines.quality.results import QualityGateFailed, raise_for_blocking

# Distinctive health values planted by builders.py (HbA1c 913.37 and 6.837 %, HbA1c 7.137 % in FHIR,
# EQ VAS 151/157) and codes that exist in no code list.
# Three decimals: the docs print shares and rates with two, so a sentinel cannot collide with them.
HEALTH_VALUES = ("913.37", "913,37", "6.837", "6,837", "7.137", "7,137", "E19.9", "C99ZZ01")


def _identifiers(settings) -> set[str]:
    found: set[str] = set()
    with duckdb.connect(str(settings.raw_db("ndr")), read_only=True) as con:
        found |= {r[0] for r in con.execute("SELECT personnummer FROM register_visit").fetchall()}
    with duckdb.connect(str(settings.raw_db("region_uppsala")), read_only=True) as con:
        found |= {r[0] for r in con.execute("SELECT personnummer FROM fhir_patient").fetchall()}
    forms = set()
    for pnr in found:
        digits = "".join(ch for ch in pnr if ch.isdigit())
        forms |= {pnr, digits, digits[-10:], f"{digits[-10:-4]}-{digits[-4:]}", f"{digits[:8]}-{digits[-4:]}"}
    return forms


@pytest.mark.slow
def test_docs_results_and_logs_hold_no_identifier_or_health_value(zones, caplog):
    s = zones["settings"]
    caplog.set_level(logging.DEBUG)
    results = []
    for zone, h in (("raw", "ndr"), ("raw", "region_uppsala"), ("research", "region_uppsala")):
        results.append(run_gate(zone, holder_id=h, run_id=f"leak-{zone}", render_docs=True))
    results.append(run_gate("release", release_dir=zones["release_dir"], run_id="leak-release"))
    messages = []
    for r in results:
        try:
            raise_for_blocking(r)
        except QualityGateFailed as exc:
            messages.append(str(exc))
    assert messages, "the defective region must block"

    html = list((s.quality_dir / "docs").rglob("*.html"))
    assert len(html) >= 20
    index = s.quality_dir / "docs" / "leak-raw" / "index.html"
    assert index.exists()
    page = next(p for p in html if p.name == "register_visit.html" and "leak-raw" in str(p)).read_text()
    assert "register.hba1c_mmol_mol.range" in page and "2 of 400 rows failed" in page

    identifiers = _identifiers(s)
    assert len(identifiers) > 100
    # GX's own static assets (logos, fonts, CSS) are copied verbatim from the package: check that, then skip them
    import great_expectations

    static = Path(great_expectations.__file__).parent / "render" / "view" / "static"
    outputs = []
    for p in s.quality_dir.rglob("*"):
        if not p.is_file():
            continue
        parts = p.relative_to(s.quality_dir).parts
        if parts[0] == "docs" and len(parts) > 2 and parts[2] == "static":
            assert (static / Path(*parts[3:])).read_bytes() == p.read_bytes()
            continue
        outputs.append(p)
    assert any(p.suffix == ".parquet" for p in outputs) and any(p.suffix == ".json" for p in outputs)
    texts = {str(p): p.read_bytes().decode("utf-8", errors="replace") for p in outputs}
    texts["<log>"] = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    texts["<exceptions>"] = "\n".join(messages)
    texts["<results>"] = "\n".join(repr(r.to_dict()) for r in results)
    # a health value counts as a number of its own, not as digits inside another one (a run's
    # timestamp "...:07.137512" holds "7.137" by chance, about once in a thousand runs)
    numbers = [re.compile(r"(?<![\d.,:])" + re.escape(v) + r"(?![\d])") for v in HEALTH_VALUES]
    leaks = sorted({(where, n) for where, text in texts.items() for n in identifiers if n in text})
    leaks += sorted({(where, p.pattern) for where, text in texts.items() for p in numbers if p.search(text)})
    assert not leaks, leaks[:10]
    # the checks that saw these values did fail: the values were there to leak
    raw_region = next(r for r in results if r.zone == "raw" and r.scope == "region_uppsala")
    assert {c.id for c in raw_region.checks if c.failed_rows} >= {
        "fhir.observation.hba1c.unit",
        "fhir.condition.code.known",
    }


def test_gx_analytics_are_off_after_rendering(zones, monkeypatch):
    import os

    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "true")
    run_gate("raw", holder_id="ndr", run_id="analytics")
    assert os.environ["GX_ANALYTICS_ENABLED"] == "false"
    gx_files = list((zones["settings"].quality_dir / "gx").rglob("great_expectations.yml"))
    assert gx_files and all("analytics_enabled: false" in p.read_text() for p in gx_files)
