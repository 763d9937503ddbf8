"""SQL on FHIR v2 ViewDefinitions: validated once, compiled, then evaluated per resource.

Design: a ViewDefinition compiles into a tree of closures (``CompiledView``) whose
``rows(resource)`` yields tuples in the view's column order. Rows are loaded into DuckDB
in Arrow batches by :mod:`pipelines.fhir.ingest`; the evaluation itself runs in the
ingest worker processes next to validation, so the resource is decoded only once.

Semantics follow the specification's processing algorithm: a ``select`` element takes
its focus from ``forEach`` / ``forEachOrNull`` / ``repeat`` (or its parent), produces
the cross product of its own columns, its nested ``select``\\ s and the concatenation of
its ``unionAll`` branches; ``%rowIndex`` is the 0-based position in the iterated collection.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.fhir.fhirpath import Env, FhirPathError, Typed, compile_path, unwrap

__all__ = ["Column", "CompiledView", "ViewDefinitionError", "compile_view", "load_view", "load_views"]

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_SELECT_KEYS = {"column", "select", "forEach", "forEachOrNull", "repeat", "unionAll"}


class ViewDefinitionError(ValueError):
    """A ViewDefinition that is not valid, or that cannot be evaluated on a resource."""


#: SQL types a column may ask for with the SQL on FHIR ``ansi/type`` tag, and how its delivered
#: text becomes one (see ``pipelines.fhir.ingest.apply_column_types``).
SQL_TYPE_TAG = "ansi/type"
SQL_TYPES = frozenset({"DATE"})


@dataclass(frozen=True)
class Column:
    name: str
    path: str
    type: str | None
    collection: bool
    #: the database type of the flattened table (``ansi/type`` tag), None: by the FHIR type
    sql_type: str | None = None


def _sql_type(tags: Any, where: str) -> str | None:
    """The column's ``ansi/type`` tag (SQL on FHIR v2), one of ``SQL_TYPES``, or None."""
    if tags is None:
        return None
    if not isinstance(tags, list) or not all(isinstance(t, dict) for t in tags):
        raise ViewDefinitionError(f"{where}.tag: must be a list of {{name, value}} objects")
    values = [t.get("value") for t in tags if t.get("name") == SQL_TYPE_TAG]
    if not values:
        return None
    if len(values) > 1 or str(values[0]).upper() not in SQL_TYPES:
        raise ViewDefinitionError(f"{where}.tag: {SQL_TYPE_TAG} must be one of {sorted(SQL_TYPES)}")
    return str(values[0]).upper()


Row = tuple[Any, ...]
RowsFn = Callable[[Any, Env], list[Row]]


def _value_of_constant(c: dict[str, Any]) -> Any:
    keys = [k for k in c if k.startswith("value") and len(k) > 5]
    if len(keys) != 1:
        raise ViewDefinitionError("constant needs exactly one value[x]")
    suffix = keys[0][5:]
    t = suffix[0].lower() + suffix[1:]
    v = c[keys[0]]
    return Typed(v, t) if t in ("date", "dateTime", "instant", "time") else v


def _compile_fhirpath(path: Any, where: str) -> PathFn:
    if not isinstance(path, str):
        raise ViewDefinitionError(f"{where}: a FHIRPath expression must be a string")
    try:
        return compile_path(path)
    except FhirPathError as exc:
        raise ViewDefinitionError(f"{where}: {exc}") from None


def _output(v: Any) -> Any:
    v = unwrap(v)
    return v


#: The nodes a select iterates over (``forEach`` / ``forEachOrNull`` / ``repeat``), from its parent's.
FocusFn = Callable[[Any, Env], list[Any]]
PathFn = Callable[[list[Any], Env], list[Any]]


def _compile_select(sel: Any, where: str) -> tuple[RowsFn, list[Column]]:
    """Compile one select element; returns its row function and its columns in order."""
    _check_select(sel, where)
    focus_fn = _compile_focus(sel, where)
    parts: list[RowsFn] = []
    columns: list[Column] = []
    if sel.get("column") is not None:
        cols = _compile_columns(sel["column"], where)
        parts.append(_column_part(cols))
        columns.extend(col for col, _ in cols)
    for i, sub in enumerate(sel.get("select") or []):
        fn, sub_cols = _compile_select(sub, f"{where}.select[{i}]")
        parts.append(fn)
        columns.extend(sub_cols)
    if "unionAll" in sel:
        fn, union_cols = _compile_union_all(sel["unionAll"], f"{where}.unionAll")
        parts.append(fn)
        columns.extend(union_cols)
    rows_at = _cross_product(parts)
    if focus_fn is None:
        return rows_at, columns
    return _iterate(focus_fn, rows_at, or_null="forEachOrNull" in sel, n_cols=len(columns)), columns


def _check_select(sel: Any, where: str) -> None:
    if not isinstance(sel, dict):
        raise ViewDefinitionError(f"{where}: a select must be an object")
    unknown = set(sel) - _SELECT_KEYS
    if unknown:
        raise ViewDefinitionError(f"{where}: unknown select keys {sorted(unknown)}")
    iterators = [k for k in ("forEach", "forEachOrNull", "repeat") if k in sel]
    if len(iterators) > 1:
        raise ViewDefinitionError(f"{where}: only one of forEach, forEachOrNull, repeat")


def _compile_focus(sel: dict[str, Any], where: str) -> FocusFn | None:
    """The select's own iteration, or None: its rows are made at its parent's focus."""
    if "forEach" in sel or "forEachOrNull" in sel:
        key = "forEach" if "forEach" in sel else "forEachOrNull"
        fp = _compile_fhirpath(sel[key], f"{where}.{key}")
        return lambda node, env: fp([node], env)
    if "repeat" in sel:
        return _compile_repeat(sel["repeat"], f"{where}.repeat")
    return None


def _compile_repeat(paths: Any, where: str) -> FocusFn:
    """``repeat``: every node reached by following the paths again and again, depth first."""
    if not isinstance(paths, list) or not paths:
        raise ViewDefinitionError(f"{where}: needs a non-empty list of expressions")
    fps = [_compile_fhirpath(p, where) for p in paths]

    def repeat(node: Any, env: Env) -> list[Any]:
        out: list[Any] = []

        def visit(n: Any) -> None:
            for fp in fps:
                for child in fp([n], env):
                    out.append(child)
                    visit(child)

        visit(node)
        return out

    return repeat


def _compile_columns(col_defs: Any, where: str) -> list[tuple[Column, PathFn]]:
    if not isinstance(col_defs, list) or not col_defs:
        raise ViewDefinitionError(f"{where}.column: needs a non-empty list")
    cols: list[tuple[Column, PathFn]] = []
    for i, c in enumerate(col_defs):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or "path" not in c:
            raise ViewDefinitionError(f"{where}.column[{i}]: needs a name and a path")
        if not _NAME_RE.match(c["name"]):
            raise ViewDefinitionError(f"{where}.column[{i}]: name is not database-friendly")
        coll = c.get("collection", False)
        if not isinstance(coll, bool):
            raise ViewDefinitionError(f"{where}.column[{i}].collection must be a boolean")
        col = Column(
            c["name"], c["path"], c.get("type"), coll, _sql_type(c.get("tag"), f"{where}.column[{i}]")
        )
        cols.append((col, _compile_fhirpath(c["path"], f"{where}.column[{i}].path")))
    return cols


def _compile_union_all(branches: Any, where: str) -> tuple[RowsFn, list[Column]]:
    """``unionAll``: the rows of every branch, one after the other (same columns in each)."""
    if not isinstance(branches, list) or not branches:
        raise ViewDefinitionError(f"{where}: needs a non-empty list")
    fns: list[RowsFn] = []
    union_cols: list[Column] | None = None
    for i, b in enumerate(branches):
        fn, bcols = _compile_select(b, f"{where}[{i}]")
        names = [c.name for c in bcols]
        if union_cols is not None and names != [c.name for c in union_cols]:
            raise ViewDefinitionError(f"{where}[{i}]: columns differ from the first branch")
        union_cols = union_cols if union_cols is not None else bcols
        fns.append(fn)
    return (lambda node, env: [r for f in fns for r in f(node, env)]), union_cols or []


def _cross_product(parts: list[RowsFn]) -> RowsFn:
    """The rows of a select at one node: the cross product of its parts' rows."""

    def rows_at(node: Any, env: Env) -> list[Row]:
        if len(parts) == 1:
            return parts[0](node, env)
        produced = [p(node, env) for p in parts]
        if not all(produced):
            return []
        return [tuple(itertools.chain.from_iterable(combo)) for combo in itertools.product(*produced)]

    return rows_at


def _iterate(focus_fn: FocusFn, rows_at: RowsFn, *, or_null: bool, n_cols: int) -> RowsFn:
    """Rows at each node of the focus, ``%rowIndex`` set to its position."""
    null_row = (None,) * n_cols

    def iterate(node: Any, env: Env) -> list[Row]:
        foci = focus_fn(node, env) if node is not None else []
        out: list[Row] = []
        saved = env.row_index
        try:
            for i, f in enumerate(foci):
                env.row_index = i
                out.extend(rows_at(unwrap(f), env))
        finally:
            env.row_index = saved
        if not foci and or_null:
            # The null row still evaluates its columns (on an empty focus), so that
            # %rowIndex is 0 and constants/literals keep their value.
            env.row_index = 0
            try:
                out.extend(rows_at(None, env) or [null_row])
            finally:
                env.row_index = saved
        return out

    return iterate


def _column_part(cols: list[tuple[Column, PathFn]]) -> RowsFn:
    def part(node: Any, env: Env) -> list[Row]:
        focus = [] if node is None else [node]
        values: list[Any] = []
        for col, fp in cols:
            try:
                result = fp(focus, env)
            except FhirPathError as exc:
                raise ViewDefinitionError(f"column {col.name}: {exc}") from None
            if col.collection:
                values.append([_output(x) for x in result])
            elif not result:
                values.append(None)
            elif len(result) == 1:
                values.append(_output(result[0]))
            else:
                raise ViewDefinitionError(
                    f"column {col.name}: more than one value and collection is not true"
                )
        return [tuple(values)]

    return part


@dataclass(frozen=True)
class CompiledView:
    """A compiled ViewDefinition: ``rows(resource)`` gives its rows as tuples."""

    name: str
    resource: str
    columns: tuple[Column, ...]
    _rows: RowsFn
    _where: tuple[PathFn, ...]
    _constants: dict[str, list[Any]]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def rows(self, resource: dict[str, Any]) -> list[Row]:
        if type(resource) is not dict or resource.get("resourceType") != self.resource:
            return []
        env = Env(resource, self._constants, 0)
        for w in self._where:
            try:
                r = w([resource], env)
            except FhirPathError as exc:
                raise ViewDefinitionError(f"where: {exc}") from None
            if not r:
                return []
            if len(r) != 1 or type(unwrap(r[0])) is not bool:
                raise ViewDefinitionError("where: the path must evaluate to a boolean")
            if unwrap(r[0]) is not True:
                return []
        try:
            return self._rows(resource, env)
        except FhirPathError as exc:
            raise ViewDefinitionError(str(exc)) from None

    def evaluate(self, resources: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Rows as dicts, for tests and the conformance runner."""
        names = self.column_names
        for r in resources:
            for row in self.rows(r):
                yield dict(zip(names, row, strict=True))


def compile_view(view: Any) -> CompiledView:
    """Validate and compile a ViewDefinition (a dict as in the JSON file)."""
    if not isinstance(view, dict):
        raise ViewDefinitionError("a ViewDefinition must be a JSON object")
    resource = view.get("resource")
    if not isinstance(resource, str) or not resource:
        raise ViewDefinitionError("resource is required")
    select = view.get("select")
    if not isinstance(select, list) or not select:
        raise ViewDefinitionError("select is required and must be a non-empty list")
    constants: dict[str, list[Any]] = {}
    for c in view.get("constant") or []:
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise ViewDefinitionError("constant needs a name")
        constants[c["name"]] = [_value_of_constant(c)]
    where_fns = []
    for i, w in enumerate(view.get("where") or []):
        if not isinstance(w, dict) or "path" not in w:
            raise ViewDefinitionError(f"where[{i}]: needs a path")
        where_fns.append(_compile_fhirpath(w["path"], f"where[{i}]"))
    rows_fn, columns = _compile_select({"select": select}, "view")
    names = [c.name for c in columns]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ViewDefinitionError(f"duplicate column names: {sorted(dupes)}")
    return CompiledView(
        name=str(view.get("name") or resource.lower()),
        resource=resource,
        columns=tuple(columns),
        _rows=rows_fn,
        _where=tuple(where_fns),
        _constants=constants,
    )


def load_view(path: Path) -> tuple[dict[str, Any], CompiledView]:
    view = json.loads(path.read_text(encoding="utf-8"))
    try:
        return view, compile_view(view)
    except ViewDefinitionError as exc:
        raise ViewDefinitionError(f"{path.name}: {exc}") from None


def load_views(directory: Path) -> dict[str, CompiledView]:
    """Every ``*.json`` ViewDefinition in a directory, keyed by the view's ``name``."""
    out: dict[str, CompiledView] = {}
    for p in sorted(directory.glob("*.json")):
        _, cv = load_view(p)
        out[cv.name] = cv
    return out
