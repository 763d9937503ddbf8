"""The import contract: the layers table in the docs, the contract in pyproject.toml and the code
agree, and imports point down the layers.

`make check` runs `lint-imports` too; these tests make `make test` fail on the same breach, and
hold the two things `lint-imports` cannot: the table in docs/ARCHITECTURE.md equals the contract's
layers, and the contract's list of store-backed governance modules is complete.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"
TABLE_SECTION = "## Packages and what they may import"
#: external packages whose reach makes a governance module store-backed
STORE_LIBRARIES = ("sqlalchemy", "alembic")


def importlinter_config() -> dict[str, Any]:
    with (REPO / "pyproject.toml").open("rb") as f:
        config: dict[str, Any] = tomllib.load(f)["tool"]["importlinter"]
    return config


def contract(contract_id: str) -> dict[str, Any]:
    (found,) = [c for c in importlinter_config()["contracts"] if c["id"] == contract_id]
    return found


def contract_layers() -> list[set[str]]:
    """The layers contract, top to bottom; each layer the set of its (independent) packages."""
    return [{name.strip() for name in layer.split("|")} for layer in contract("layers")["layers"]]


def documented_layers() -> list[set[str]]:
    """The first table under TABLE_SECTION, top to bottom: the packages named in backticks in
    each row's first cell (several in one row are independent of each other)."""
    section = ARCHITECTURE.read_text(encoding="utf-8").split(TABLE_SECTION, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    body = rows[2:]  # header row and separator row
    assert body, f"no table under {TABLE_SECTION!r} in {ARCHITECTURE}"
    return [set(re.findall(r"`([a-z_]+)`", row.split("|")[1])) for row in body]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    # cache_dir=None: build in memory, write no cache into the checkout.
    return grimp.build_graph(
        *importlinter_config()["root_packages"], include_external_packages=True, cache_dir=None
    )


def test_docs_table_is_the_contract() -> None:
    assert documented_layers() == contract_layers(), (
        "docs/ARCHITECTURE.md's layers table and pyproject.toml's [tool.importlinter] layers contract "
        "differ: change both together"
    )


def test_every_root_package_is_a_layer() -> None:
    layered = set().union(*contract_layers())
    assert layered == set(importlinter_config()["root_packages"])


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_pipelines_contract_names_every_store_backed_governance_module(graph: grimp.ImportGraph) -> None:
    """A governance module is store-backed if it reaches SQLAlchemy or Alembic, directly or through
    another module; the contract that keeps pipelines away from the store must name each one, so a
    module split off governance.service is covered the day it appears."""
    store_backed = {
        module
        for module in graph.find_descendants("governance")
        if any(graph.chain_exists(importer=module, imported=lib) for lib in STORE_LIBRARIES)
    }
    forbidden = set(contract("pipelines-no-governance-store")["forbidden_modules"])
    missing, stale = sorted(store_backed - forbidden), sorted(forbidden - store_backed)
    assert not missing, f"store-backed, add to the contract pipelines-no-governance-store: {missing}"
    assert not stale, f"pure now (or gone), take off the contract pipelines-no-governance-store: {stale}"
