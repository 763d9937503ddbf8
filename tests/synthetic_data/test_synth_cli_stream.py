"""``hdp generate`` and the streaming FHIR generator."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from datetime import date

from click.testing import CliRunner
from fhir.resources.R4B import get_fhir_model_class
from synth_helpers import file_lines

from edge.cli import main
from synthetic_data.fhir import iter_fhir_resources


def test_cli_generates_and_prints_counts_only(hdp_home):
    result = CliRunner().invoke(
        main,
        [
            "generate",
            "--persons",
            "40",
            "--seed",
            "3",
            "--defect-rate",
            "0.05",
            "--extract-date",
            "2026-06-30",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "persons: 40" in result.output and "defects:" in result.output
    assert "file.not_utf8" in result.output
    assert not re.search(r"\d{8,}", result.output)  # no identifiers
    meta = json.loads((hdp_home.landing_dir("ndr") / "delivery.json").read_text())
    assert meta["extract_date"] == "2026-06-30"
    assert hdp_home.defect_manifest.stat().st_size > 0


def test_cli_rejects_bad_rate(hdp_home):
    result = CliRunner().invoke(main, ["generate", "--defect-rate", "0.9"])
    assert result.exit_code == 2
    assert "defect-rate" in result.output


def test_stream_equals_clean_delivery(clean):
    """iter_fhir_resources yields exactly the resources a clean run writes, in file order per type."""
    delivery, _ = clean
    for region in ("region_orebro",):
        streamed: dict[str, list[str]] = {}
        for r in iter_fhir_resources(seed=5, persons=300, region=region, extract_date=date(2026, 11, 1)):
            streamed.setdefault(r["resourceType"], []).append(
                json.dumps(r, ensure_ascii=False, separators=(",", ":"))
            )
        for rtype, path in delivery.fhir_files(region).items():
            assert file_lines(path) == streamed.get(rtype, [])


def test_stream_all_regions_is_valid_and_mixed():
    sample = list(itertools.islice(iter_fhir_resources(seed=8, persons=40), 3000))
    types = Counter(r["resourceType"] for r in sample)
    assert len(types) == 7
    for r in sample[::10]:
        get_fhir_model_class(r["resourceType"]).model_validate(r)
