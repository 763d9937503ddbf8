"""Readers for generated deliveries (test helpers)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hdp.settings import Settings
from synthetic_data import identifiers as ids

REGIONS = ("region_uppsala", "region_orebro", "region_skane")


def read_text(path: Path) -> str:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    return raw.decode("utf-8")


def file_lines(path: Path) -> list[str]:
    """Lines of a delivered file; a missing trailing newline leaves the last line as is."""
    text = read_text(path)
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return lines


def normalise(identifier: str) -> str | None:
    """12-digit form of a delivered identifier (any form); None when not parseable."""
    s = identifier.strip()
    if len(s) == 12 and s.isdigit():
        return s
    if len(s) == 13 and s[8] == "-":
        return s[:8] + s[9:]
    if len(s) == 11 and s[6] in "-+":
        yy, rest = s[:6], s[7:]
        # century from the separator, relative to the extract year 2026
        century = 20 if int(yy[:2]) <= 26 else 19
        if s[6] == "+":
            century -= 1
        return f"{century}{yy}{rest}"
    return None


def identifier_ok(twelve: str) -> bool:
    if not ids.is_valid_luhn(twelve):
        return False
    try:
        ids.birth_date(twelve)
    except ValueError:
        return False
    return True


@dataclass
class Delivery:
    settings: Settings

    def landing(self, holder: str) -> Path:
        return self.settings.landing_dir(holder)

    def manifest(self) -> list[dict]:
        path = self.settings.defect_manifest
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    def fhir_files(self, region: str) -> dict[str, Path]:
        out = {}
        for p in sorted((self.landing(region) / "fhir").iterdir()):
            if p.is_file():
                out[p.name.split(".")[0]] = p
        return out

    def resources(self, region: str) -> Iterator[tuple[str, int, dict | None, str]]:
        """(file type, line number, resource or None when malformed, raw line) for a region."""
        for rtype, path in self.fhir_files(region).items():
            for n, line in enumerate(file_lines(path), start=1):
                try:
                    yield rtype, n, json.loads(line), line
                except json.JSONDecodeError:
                    yield rtype, n, None, line
