"""Only hdp/settings.py reads HDP_* variables from the environment; everything else asks
``get_settings()``, so every variable is typed, checked and described in one place.

An AST scan of the source tree (tests and benchmarks excepted: their own variables, such as
``HDP_BENCH_CACHE``, are not the platform's). It flags ``os.environ[...]``, ``os.environ.get``,
``pop`` and ``setdefault``, ``os.getenv``, ``... in os.environ`` and ``os.putenv``/``unsetenv``
(also through a name bound to ``os.environ``, or to a copy of it), and ``.get``/``[...]`` of an
``HDP_*`` key on any mapping (an environment handed around as a dict), when the key is an
``HDP_*`` string or a module constant holding one. Click's ``envvar="HDP_..."`` options of the
CLI clients are not reads of this kind and stay allowed.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

from hdp.settings import REPO_ROOT

ALLOWED = {
    Path("hdp/settings.py"),
    # the thin researcher client is its own package and must not import the server's settings
    Path("client/hdp_client/cli.py"),
    # a tool, like the tests: it sets up the environment of the throwaway app it photographs
    Path("docs/screenshots/make_screenshots.py"),
}
SKIPPED_DIRS = {"tests", "bench", "var", "node_modules", "__pycache__"}
MAPPING_METHODS = {"get", "pop", "setdefault"}
ENV_FUNCTIONS = {"getenv", "putenv", "unsetenv"}


def _is_hdp(value: str | None) -> bool:
    return value is not None and value.startswith("HDP_")


class EnvironmentReads(ast.NodeVisitor):
    """Collects ``(line, variable)`` of every ``HDP_*`` environment access in one module."""

    def __init__(self, tree: ast.Module) -> None:
        self.constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        self.environ_names = {"environ"}  # `from os import environ`
        self.found: list[tuple[int, str]] = []
        for node in ast.walk(tree):  # names bound to os.environ or a copy of it: env = dict(os.environ)
            if isinstance(node, ast.Assign) and self._mentions_environ(node.value):
                self.environ_names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        self.visit(tree)

    def _mentions_environ(self, node: ast.AST) -> bool:
        return any(
            (isinstance(n, ast.Attribute) and n.attr == "environ")
            or (isinstance(n, ast.Name) and n.id in self.environ_names)
            for n in ast.walk(node)
        )

    def _key(self, node: ast.AST | None) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return self.constants.get(node.id)
        return None

    def _flag(self, node: ast.AST, key: str | None) -> None:
        if _is_hdp(key):
            assert key is not None
            self.found.append((getattr(node, "lineno", 0), key))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        first = node.args[0] if node.args else None
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ENV_FUNCTIONS or (name in MAPPING_METHODS and isinstance(func, ast.Attribute)):
            self._flag(node, self._key(first))
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        self._flag(node, self._key(node.slice))
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        if any(isinstance(op, ast.In | ast.NotIn) for op in node.ops) and any(
            self._mentions_environ(c) for c in node.comparators
        ):
            self._flag(node, self._key(node.left))
        self.generic_visit(node)


def environment_reads(source: str) -> list[tuple[int, str]]:
    return EnvironmentReads(ast.parse(source)).found


def source_files() -> Iterator[Path]:
    """Every .py file of the checkout (relative), hidden folders (.venv, .git) and SKIPPED_DIRS pruned."""
    for folder, subfolders, names in os.walk(REPO_ROOT):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and d not in SKIPPED_DIRS)
        for name in sorted(names):
            if name.endswith(".py"):
                yield (Path(folder) / name).relative_to(REPO_ROOT)


def test_the_scan_finds_every_kind_of_read():
    source = """
import os
from os import environ, getenv
VARIABLE = "HDP_CONSTANT"
a = os.environ.get("HDP_A")
b = os.environ["HDP_B"]
c = getenv("HDP_C", "x")
d = "HDP_D" in os.environ
env = dict(os.environ)
e = env.get(VARIABLE)
os.environ["HDP_F"] = "1"
g = environ.pop("HDP_G", None)
def f(mapping):
    return mapping.get("HDP_H")
fine = os.environ.get("AIRFLOW_HOME"), {"HDP_I": 1}, click_option(envvar="HDP_TOKEN")
"""
    assert [v for _, v in environment_reads(source)] == [
        "HDP_A",
        "HDP_B",
        "HDP_C",
        "HDP_D",
        "HDP_CONSTANT",
        "HDP_F",
        "HDP_G",
        "HDP_H",
    ]


def test_no_module_but_the_settings_reads_hdp_variables_from_the_environment():
    files = list(source_files())
    assert Path("hdp/settings.py") in files and Path("access/service.py") in files  # the scan looks
    offenders = [
        f"{path}:{line}: {variable}"
        for path in files
        if path not in ALLOWED
        for line, variable in environment_reads((REPO_ROOT / path).read_text(encoding="utf-8"))
    ]
    assert offenders == [], "read these through hdp.settings.get_settings():\n" + "\n".join(offenders)
