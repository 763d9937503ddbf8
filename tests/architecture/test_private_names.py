"""No private name crosses a module boundary.

A name with a leading underscore (not a dunder) belongs to its module. Another module of the
project that needs it gets a public name instead, so what a module offers is what it names
publicly. Checked on the source (tests excluded: a test may reach into the module it tests):

* ``from pkg.mod import _name`` (absolute or relative) from another module;
* ``import pkg._mod`` / ``from pkg import _mod``: a private module imported from outside;
* ``alias._name`` where ``alias`` is bound to another project module by an import.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("hdp", "privacy", "governance", "pipelines", "synthetic_data", "access", "edge", "dags")


@dataclass(frozen=True)
class Crossing:
    """One private name used across a module boundary."""

    path: str
    line: int
    name: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.name}"


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_project_module(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def is_module(dotted: str) -> bool:
    """Whether ``dotted`` names a module or package of the project (not a name inside one)."""
    base = REPO.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or base.is_dir()


def absolute(node: ast.ImportFrom, importer: str, importer_is_package: bool) -> str:
    """The absolute module a ``from ... import`` reads from, relative imports resolved."""
    if node.level == 0:
        return node.module or ""
    package = importer.split(".") if importer_is_package else importer.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def dotted_attribute(node: ast.Attribute) -> list[str] | None:
    """``a.b.c`` as ["a", "b", "c"]; None when the chain does not start at a plain name."""
    parts: list[str] = []
    current: ast.expr = node
    while isinstance(current, ast.Attribute):
        parts.append(current.attr)
        current = current.value
    if not isinstance(current, ast.Name):
        return None
    return [current.id, *reversed(parts)]


def crossings_in(path: Path) -> list[Crossing]:
    return crossings_in_source(
        path.read_text(encoding="utf-8"),
        importer=module_name(path),
        importer_is_package=path.name == "__init__.py",
        shown=str(path.relative_to(REPO)),
    )


def crossings_in_source(text: str, *, importer: str, importer_is_package: bool, shown: str) -> list[Crossing]:
    tree = ast.parse(text, filename=shown)
    found: list[Crossing] = []
    # local name -> the project module it is bound to by an import
    module_aliases: dict[str, str] = {}

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not is_project_module(alias.name):
                    continue
                if any(is_private(part) for part in alias.name.split(".")):
                    found.append(Crossing(shown, node.lineno, alias.name))
                if alias.asname:
                    module_aliases[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    module_aliases[root] = root
        elif isinstance(node, ast.ImportFrom):
            source = absolute(node, importer, importer_is_package)
            if not is_project_module(source) or source == importer:
                continue
            for alias in node.names:
                if is_private(alias.name) or any(is_private(part) for part in source.split(".")):
                    found.append(Crossing(shown, node.lineno, f"{source}.{alias.name}"))
                if is_module(f"{source}.{alias.name}"):
                    module_aliases[alias.asname or alias.name] = f"{source}.{alias.name}"

    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not is_private(node.attr):
            continue
        chain = dotted_attribute(node)
        if chain is None or chain[0] not in module_aliases:
            continue
        # Walk down the chain while it names modules: the private name is the first part that is
        # not a submodule, read off the module before it.
        owner = module_aliases[chain[0]]
        for part in chain[1:]:
            if is_private(part):
                if owner != importer:
                    found.append(Crossing(shown, node.lineno, f"{owner}.{part}"))
                break
            if not is_module(f"{owner}.{part}"):
                break
            owner = f"{owner}.{part}"
    return found


def source_files() -> list[Path]:
    return sorted(
        p for package in PACKAGES for p in (REPO / package).rglob("*.py") if "migrations" not in p.parts
    )


def test_no_private_name_is_imported_from_another_module() -> None:
    crossings = sorted(
        (c for path in source_files() for c in crossings_in(path)), key=lambda c: (c.path, c.line)
    )
    assert not crossings, "private names used across modules (make them public or move them):\n" + "\n".join(
        map(str, crossings)
    )


def test_the_check_sees_each_form() -> None:
    """The checker itself: each form of crossing is found; a module's own private names, private
    parameters and locals, and dunders are not."""
    text = (
        "from privacy.keys import _hidden, __version__\n"
        "from privacy import pseudonym as pseudo\n"
        "from . import _sibling\n"
        "import privacy.keys\n"
        "from edge.probe import _mine\n"
        "def f(_local):\n"
        "    _own = 1\n"
        "    return pseudo._helper, privacy.keys._other, privacy.keys.__name__, _local, _own, _mine\n"
    )
    crossings = crossings_in_source(
        text, importer="edge.probe", importer_is_package=False, shown="edge/probe.py"
    )
    assert sorted(c.name for c in crossings) == [
        "edge._sibling",
        "privacy.keys._hidden",
        "privacy.keys._other",
        "privacy.pseudonym._helper",
    ]
