from __future__ import annotations

import base64
import secrets
import shutil
from pathlib import Path

import pytest

HOLDERS = ("ndr", "region_uppsala")


@pytest.fixture
def kek_env(monkeypatch):
    monkeypatch.setenv("HDP_KEK", base64.b64encode(secrets.token_bytes(32)).decode())
    monkeypatch.delenv("HDP_KEK_FILE", raising=False)


def _build(home: Path, *, defects: bool) -> dict:
    """Raw + research zones of ndr and region_uppsala and a release, under ``home``."""
    from quality import builders as b

    raw = {h: home / "restricted" / h / "raw.duckdb" for h in HOLDERS}
    research = {h: home / "research" / f"{h}.duckdb" for h in HOLDERS}
    for h in HOLDERS:
        raw[h].parent.mkdir(parents=True)
        b.write_delivery(home / "restricted" / h / "landing", h)
    ndr_lines = b.build_ndr_raw(raw["ndr"], defects=defects)
    region_keys = b.build_region_raw(raw["region_uppsala"], defects=defects)
    for h in HOLDERS:
        b.build_research(research[h], raw[h])
    b.build_release(home / "releases" / "rel-test", research)
    return {"ndr_lines": ndr_lines, "region_keys": region_keys}


@pytest.fixture(scope="session")
def _templates(tmp_path_factory):
    """Built once per session; each test gets its own copy (building takes seconds, copying milliseconds)."""
    out = {}
    for name, defects in (("defects", True), ("clean", False)):
        home = tmp_path_factory.mktemp(f"zones_{name}")
        out[name] = (home, _build(home, defects=defects))
    return out


def _copy(template: Path, settings) -> None:
    for child in template.iterdir():
        shutil.copytree(child, settings.home / child.name, dirs_exist_ok=True)


@pytest.fixture
def zones(hdp_home, _templates):
    """Zones with known defects (see builders.py) in this test's own $HDP_HOME."""
    home, info = _templates["defects"]
    _copy(home, hdp_home)
    return {"settings": hdp_home, "release_dir": hdp_home.releases_dir / "rel-test", **info}


@pytest.fixture
def clean_zones(hdp_home, _templates):
    home, _ = _templates["clean"]
    _copy(home, hdp_home)
    return {"settings": hdp_home, "release_dir": hdp_home.releases_dir / "rel-test"}
