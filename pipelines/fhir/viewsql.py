"""ViewDefinitions compiled to DuckDB SQL over the ``fhir_resource.resource`` JSON column.

The Python evaluator (:mod:`pipelines.fhir.viewdef`) stays the conformance reference (the
SQL on FHIR v2 suite runs against it). This compiler turns a ViewDefinition into one
``INSERT ... SELECT`` that DuckDB runs in C on all its threads, for the subset of FHIRPath whose
meaning it can pin down exactly *on resources the fast validator accepted*:

* navigation, with the cardinality of every element taken from the same R4B-derived schema
  the validator enforces (so a single element is known to be an object, a list a non-empty array);
* ``first()``, ``where(<member> = <literal or %constant> [and/or ...])``, ``ofType(T)`` on a
  choice element, ``(A | B).first()``, a union of ``ofType`` branches of one choice group
  (at most one is present: the validator enforces choice exclusivity), ``getResourceKey()``,
  ``getReferenceKey([T])``, ``toInteger()`` on an ASCII-validated code;
* ``iif(<criterion>, <integer> [, <integer>])`` with integer literals, integer-valued paths or
  nested ``iif`` as results, the criterion built from ``exists()``, ``startsWith(<literal>)``,
  ``<element> = <literal>`` and ``and``/``or`` (the EQ-5D view maps answer codes to levels so);
* view-level ``where`` of the same kind; ``select`` elements with ``column`` and nested
  ``select`` (no ``forEach`` / ``forEachOrNull`` / ``repeat`` / ``unionAll`` yet).

Anything else raises :class:`Unsupported`; the caller then evaluates that view in Python for
every resource (``ingest`` reports which views). Every column of a compiled view is proved
to hold at most one value, so the Python evaluator's "more than one value" error cannot arise.
``tests/fhir/test_viewsql_differential.py`` checks that both give identical rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pipelines.fhir import validation as v
from pipelines.fhir.fhirpath import FhirPathError, parse_path
from pipelines.fhir.viewdef import CompiledView

__all__ = ["SQL_MACROS", "Unsupported", "compile_view_sql"]

# Strings are compared and output as VARCHAR; these FHIR primitive checks are string-valued.
_STRING_CHECKS = {
    "_p_string",
    "_p_code",
    "_p_id",
    "_p_uri",
    "_p_url",
    "_p_oid",
    "_p_uuid",
    "_p_date",
    "_p_datetime",
    "_p_instant",
    "_p_time",
}
# Checks whose patterns admit ASCII digits only and no newline (so FHIRPath's \d and $ are exact).
_ASCII_CHECKS = {"_p_code", "_p_id", "_p_uri", "_p_url", "_p_oid", "_p_uuid"}
_INT_CHECKS = {"_p_integer", "_p_unsigned", "_p_positive"}
_OUT_TYPES = {
    "boolean": "bool",
    "integer": "int",
    "positiveInt": "int",
    "unsignedInt": "int",
    "integer64": "int",
    "decimal": "decimal",
}

#: Macros the compiled SQL uses; create them once per connection.
SQL_MACROS = (
    # _reference_key in fhirpath.py, line for line.
    """CREATE OR REPLACE TEMP MACRO _fhir_ref_parts(p) AS
         CASE WHEN len(p) >= 4 AND p[-2] = '_history' THEN p[1:len(p) - 2] ELSE p END""",
    """CREATE OR REPLACE TEMP MACRO _fhir_ref_key(ref, t) AS
         CASE WHEN ref IS NULL OR ref = '' OR starts_with(ref, '#') OR contains(ref, '?') THEN NULL
              WHEN starts_with(ref, 'urn:uuid:') OR starts_with(ref, 'urn:oid:')
                THEN CASE WHEN t IS NULL THEN string_split(ref, ':')[-1] END
              ELSE list_transform([_fhir_ref_parts(string_split(ref, '/'))],
                     lambda q: CASE WHEN len(q) >= 2 AND (t IS NULL OR q[-2] = t) THEN q[-1] END)[1]
         END""",
)


class Unsupported(ValueError):
    """The view uses something this compiler does not translate (the Python evaluator runs it)."""


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


@dataclass
class _Coll:
    """A compiled FHIRPath collection.

    ``sql`` is a JSON expression (``many`` False: 0..1 item, NULL when empty) or a JSON[]
    expression (``many`` True). ``path`` is the JSONPath from the resource root when the
    collection is pure navigation (kept so consecutive steps fold into one extraction).
    ``ftype`` is the FHIR type of the items: a complex type name, or a primitive check name
    (``_p_code`` ...). ``choice`` identifies the choice group an item came from, so that a
    union of branches of one group can be proved to hold at most one value.
    """

    sql: str
    many: bool
    ftype: str
    path: str | None = None
    choice: tuple[str, str] | None = None
    shadow: tuple[str, ...] = field(default_factory=tuple)  # types of longer same-prefix elements
    #: The same 0..1 primitive as VARCHAR, when it can be had straight from the shared extraction
    #: of leaf strings (no JSON fragment to re-parse).
    str_sql: str | None = None


def _ftype(el: Any) -> str:
    return el.check.name if type(el.check) is v.LazyType else el.check.__name__


class _Compiler:
    def __init__(self, resource: str, root: str, constants: dict[str, Any]) -> None:
        self.resource = resource
        self.root = root
        # Wildcard-free JSONPaths from the root, extracted together in one parse per resource
        # (json_extract with a list of paths); ``_p[i]`` refers to the i-th (1-based). The same
        # for leaf values as strings (json_extract_string): ``_s[i]``.
        self.paths: list[str] = []
        self.str_paths: list[str] = []
        self.constants = constants

    # -- collections -------------------------------------------------------------------
    def at(self, path: str) -> str:
        """SQL for the JSON at a root path (shared extraction when it has no wildcard)."""
        if "[*]" in path:
            return f"json_extract({self.root}, {_q(path)})"
        # A placeholder: only paths that end up in the SQL are extracted (see ``finish``).
        return f"t._p[\x00{path}\x00]"

    def at_str(self, path: str) -> str | None:
        """SQL for the leaf value at a wildcard-free root path as VARCHAR (None: has a wildcard)."""
        return None if "[*]" in path else f"t._s[\x01{path}\x01]"

    def finish(self, sql: str) -> str:
        """Number the extracted paths that ``sql`` uses (in order of first use)."""

        def number(m: re.Match[str], paths: list[str]) -> str:
            path = m.group(1)
            if path not in paths:
                paths.append(path)
            return str(paths.index(path) + 1)

        sql = re.sub("\x00([^\x00]*)\x00", lambda m: number(m, self.paths), sql)
        return re.sub("\x01([^\x01]*)\x01", lambda m: number(m, self.str_paths), sql)

    def root_coll(self) -> _Coll:
        return _Coll(self.root, False, self.resource, path="$")

    def _extract(self, coll: _Coll, step: str, many_step: bool) -> _Coll:
        """Navigate one JSON key (``step``) from ``coll``."""
        if coll.path is not None:
            path = coll.path + "." + step + ("[*]" if many_step else "")
            many = coll.many or many_step
            return _Coll(self.at(path), many, "", path=path)
        if not coll.many:
            if many_step:
                return _Coll(f"CAST(json_extract({coll.sql}, {_q('$.' + step)}) AS JSON[])", True, "")
            return _Coll(f"json_extract({coll.sql}, {_q('$.' + step)})", False, "")
        inner = (
            f"CAST(json_extract(x, {_q('$.' + step)}) AS JSON[])"
            if many_step
            else f"json_extract(x, {_q('$.' + step)})"
        )
        if many_step:
            return _Coll(
                f"flatten(list_transform({coll.sql}, lambda x: coalesce({inner}, []::JSON[])))", True, ""
            )
        return _Coll(
            f"list_filter(list_transform({coll.sql}, lambda x: {inner}), lambda y: y IS NOT NULL)", True, ""
        )

    def member(self, coll: _Coll, name: str) -> _Coll:
        if coll.ftype.startswith("_p_"):
            raise Unsupported(f"navigation '{name}' into a primitive")
        spec = v.type_spec(coll.ftype)
        for st in coll.shadow:
            # The previous element was absent -> the Python evaluator navigates a longer element
            # with that prefix instead. Exact only if that one cannot produce ``name``.
            if st.startswith("_p_"):
                continue
            if any(
                k == name or (k.startswith(name) and k[len(name) :][:1].isupper())
                for k in v.type_spec(st).elements
            ):
                raise Unsupported("element name shadowed by a longer element name")
        el = spec.elements.get(name)
        if el is None or el.check is None:
            raise Unsupported(f"element {coll.ftype}.{name} unknown to the schema")
        out = self._extract(coll, name, el.is_list)
        out.ftype = _ftype(el)
        out.choice = coll.choice if not el.is_list else None
        if not out.many and out.path is not None and out.ftype.startswith("_p_"):
            out.str_sql = self.at_str(out.path)
        # (Elements the fast path does not model cannot be present in the resources SQL sees;
        # a required element is present whenever its owner is, so nothing can shadow it.)
        out.shadow = (
            ()
            if name in spec.required
            else tuple(
                _ftype(e)
                for k, e in spec.elements.items()
                if e.check is not None
                and len(k) > len(name)
                and k.startswith(name)
                and k[len(name)].isupper()
            )
        )
        return out

    def choice(self, coll: _Coll, name: str, tname: str) -> _Coll:
        """``name.ofType(tname)`` where ``name`` is a choice element (``value[x]``)."""
        if coll.ftype.startswith("_p_"):
            raise Unsupported("ofType() on a primitive")
        spec = v.type_spec(coll.ftype)
        key = name + tname[:1].upper() + tname[1:]
        group = spec.element_of_key.get(key)
        el = spec.elements.get(key)
        if el is None or el.check is None or group != name:
            raise Unsupported(f"{coll.ftype}.{name} has no choice type {tname}")
        # Python navigation picks the first key starting with the name; the validator allows at
        # most one key of the group, and no non-choice element of these types shares the prefix.
        if any(
            k.startswith(name) and k[len(name) :][:1].isupper() and spec.element_of_key.get(k) != name
            for k in spec.elements
        ):
            raise Unsupported("choice name shadowed by another element")
        if el.is_list:
            raise Unsupported("repeating choice element")
        out = self._extract(coll, key, False)
        out.ftype = _ftype(el)
        out.choice = None if coll.many else (coll.sql, name)
        if not out.many and out.path is not None and out.ftype.startswith("_p_"):
            out.str_sql = self.at_str(out.path)
        return out

    def first(self, coll: _Coll) -> _Coll:
        if not coll.many:
            return coll
        if coll.path is not None and coll.path.count("[*]") == 1 and coll.path.endswith("[*]"):
            path = coll.path[:-3] + "[0]"
            return _Coll(
                self.at(path),
                False,
                coll.ftype,
                path=path,
                str_sql=self.at_str(path) if coll.ftype.startswith("_p_") else None,
            )
        return _Coll(f"({coll.sql})[1]", False, coll.ftype)

    # -- expressions -------------------------------------------------------------------
    def expr(self, node: tuple, focus: _Coll) -> _Coll:
        kind = node[0]
        if kind == "member":
            return self.member(focus, node[1])
        if kind == "invoke":
            base_node, inv = node[1], node[2]
            if inv == ("call", "first", []) and base_node[0] == "bin" and base_node[1] == "|":
                # (A | B).first(): the first item of the concatenation (de-duplication cannot
                # change which item comes first).
                return self.union([base_node], focus, first=True)
            if inv[0] == "call" and inv[1] == "ofType" and base_node[0] in ("member", "invoke"):
                # name.ofType(T): resolve the choice element directly from the name's owner.
                if base_node[0] == "member":
                    owner, name = focus, base_node[1]
                elif base_node[2][0] == "member":
                    owner, name = self.expr(base_node[1], focus), base_node[2][1]
                else:
                    raise Unsupported("ofType() after a function")
                if len(inv[2]) != 1 or inv[2][0][0] != "member":
                    raise Unsupported("ofType() needs a type name")
                return self.choice(owner, name, inv[2][0][1])
            base = self.expr(base_node, focus)
            if inv[0] == "member":
                return self.member(base, inv[1])
            if inv[0] == "call":
                return self.call(base, inv[1], inv[2])
            raise Unsupported(f"invocation {inv[0]}")
        if kind == "call":
            return self.call(focus, node[1], node[2])
        if kind == "lit" and type(node[1]) is int:
            return _Coll(str(node[1]), False, "_int_value")
        if kind == "bin" and node[1] == "|":
            return self.union([node[2], node[3]], focus, first=False)
        raise Unsupported(f"expression kind {kind}")

    def _branches(self, node: tuple) -> list[tuple]:
        if node[0] == "bin" and node[1] == "|":
            return self._branches(node[2]) + self._branches(node[3])
        return [node]

    def union(self, nodes: list[tuple], focus: _Coll, *, first: bool) -> _Coll:
        branches = [b for n in nodes for b in self._branches(n)]
        colls = [self.expr(b, focus) for b in branches]
        types = {c.ftype for c in colls}
        if first:
            if len(types) != 1 and not types <= _STRING_CHECKS:
                raise Unsupported("union of different types")
            parts = [
                c.sql if c.many else f"CASE WHEN {c.sql} IS NULL THEN []::JSON[] ELSE [{c.sql}] END"
                for c in colls
            ]
            out = _Coll(f"list_concat({', '.join(parts)})[1]", False, colls[0].ftype)
            if all(c.str_sql for c in colls):
                # Single-valued branches: the first of the concatenation is the first non-empty one.
                out.str_sql = f"coalesce({', '.join(c.str_sql for c in colls)})"  # type: ignore[misc]
            return out
        # Without first(): only branches of one choice group on one base (at most one present).
        origins = {c.choice for c in colls}
        if any(c.many for c in colls) or len(origins) != 1 or None in origins:
            raise Unsupported("union that may hold more than one value")
        if len({t for t in types}) != 1 and not all(t in _STRING_CHECKS for t in types):
            raise Unsupported("union of different types")
        out = _Coll(
            f"coalesce({', '.join(c.sql for c in colls)})", False, colls[0].ftype, choice=colls[0].choice
        )
        if all(c.str_sql for c in colls):
            out.str_sql = f"coalesce({', '.join(c.str_sql for c in colls)})"  # type: ignore[misc]
        return out

    def call(self, focus: _Coll, name: str, args: list[tuple]) -> _Coll:
        if name == "first" and not args:
            return self.first(focus)
        if name == "where" and len(args) == 1:
            if focus.ftype.startswith("_p_"):
                raise Unsupported("where() on primitives")
            cond = self.condition(args[0], "x", focus.ftype)
            items = (
                focus.sql
                if focus.many
                else f"CASE WHEN {focus.sql} IS NULL THEN []::JSON[] ELSE [{focus.sql}] END"
            )
            return _Coll(f"list_filter({items}, lambda x: {cond})", True, focus.ftype)
        if name == "getResourceKey" and not args:
            if focus.path != "$":
                raise Unsupported("getResourceKey() not on the resource")
            return _Coll(self.at("$.id"), False, "_key", path="$.id", str_sql=self.at_str("$.id"))
        if name == "getReferenceKey" and len(args) <= 1:
            if focus.many or focus.ftype != "Reference":
                raise Unsupported("getReferenceKey() on a collection")
            t = "NULL"
            if args:
                if args[0][0] != "member":
                    raise Unsupported("getReferenceKey() needs a type name")
                t = _q(args[0][1])
            ref = (
                self.at_str(focus.path + ".reference") if focus.path is not None else None
            ) or f"json_extract_string({focus.sql}, '$.reference')"
            return _Coll(f"_fhir_ref_key({ref}, {t})", False, "_key")
        if name == "toInteger" and not args:
            if focus.many or focus.ftype not in _ASCII_CHECKS:
                raise Unsupported("toInteger() on something other than one ASCII code")
            s = focus.str_sql or f"json_extract_string({focus.sql}, '$')"
            # ``s`` bound once by a one-element lambda: written twice, DuckDB evaluates it twice
            # when the whole sits inside a CASE (an ``iif`` branch), which tripled the EQ-5D view.
            return _Coll(
                f"list_transform([{s}], lambda z: CASE WHEN regexp_full_match(z, '[+-]?[0-9]{{1,18}}') "
                "THEN CAST(z AS BIGINT) END)[1]",
                False,
                "_int_value",
            )
        if name == "exists" and not args:
            if focus.many:
                return _Coll(f"(coalesce(len({focus.sql}), 0) > 0)", False, "_bool_value")
            return _Coll(f"({focus.sql} IS NOT NULL)", False, "_bool_value")
        if name == "startsWith" and len(args) == 1:
            if focus.many or focus.ftype not in _STRING_CHECKS:
                raise Unsupported("startsWith() on something other than one string")
            s = focus.str_sql or f"json_extract_string({focus.sql}, '$')"
            return _Coll(f"starts_with({s}, {_q(self.literal(args[0]))})", False, "_bool_value")
        if name == "iif" and len(args) in (2, 3):
            # CASE WHEN: an empty (NULL) criterion takes the otherwise branch, as in FHIRPath.
            crit = self.boolean(args[0], focus)
            then = self.integer(self.expr(args[1], focus))
            other = self.integer(self.expr(args[2], focus)) if len(args) == 3 else "NULL"
            return _Coll(f"CASE WHEN {crit} THEN {then} ELSE {other} END", False, "_int_value")
        raise Unsupported(f"function {name}()")

    def integer(self, coll: _Coll) -> str:
        """SQL BIGINT for a 0..1 integer-valued collection (an ``iif`` result)."""
        if coll.many:
            raise Unsupported("iif() result may hold more than one value")
        if coll.ftype == "_int_value":
            return coll.sql
        if coll.ftype in _INT_CHECKS:
            return f"CAST({coll.str_sql or coll.sql} AS BIGINT)"
        raise Unsupported(f"iif() result of type {coll.ftype}")

    def boolean(self, node: tuple, focus: _Coll) -> str:
        """SQL for an ``iif`` criterion (NULL where FHIRPath gives empty)."""
        if node[0] == "bin" and node[1] in ("and", "or"):
            return f"({self.boolean(node[2], focus)} {node[1].upper()} {self.boolean(node[3], focus)})"
        if node[0] == "bin" and node[1] == "=":
            left, right = node[2], node[3]
            if right[0] not in ("lit", "const"):
                left, right = right, left
            coll = self.expr(left, focus)
            if coll.many or coll.ftype not in _STRING_CHECKS:
                raise Unsupported("iif() comparison of something other than one string")
            s = coll.str_sql or f"json_extract_string({coll.sql}, '$')"
            return f"({s} = {_q(self.literal(right))})"
        coll = self.expr(node, focus)
        if coll.ftype != "_bool_value":
            raise Unsupported("iif() criterion")
        return coll.sql

    def condition(self, node: tuple, var: str, ftype: str) -> str:
        if node[0] == "bin" and node[1] in ("and", "or"):
            return (
                f"({self.condition(node[2], var, ftype)} {node[1].upper()} "
                f"{self.condition(node[3], var, ftype)})"
            )
        if node[0] == "bin" and node[1] == "=":
            left, right = node[2], node[3]
            if left[0] != "member":
                left, right = right, left
            if left[0] != "member":
                raise Unsupported("where() comparison without an element")
            el = v.type_spec(ftype).elements.get(left[1])
            if (
                el is None
                or el.is_list
                or el.check is None
                or getattr(el.check, "__name__", "") not in _STRING_CHECKS
            ):
                raise Unsupported("where() on a non-string element")
            if any(
                k.startswith(left[1]) and k[len(left[1]) :][:1].isupper() for k in v.type_spec(ftype).elements
            ):
                raise Unsupported("where() element name shadowed")
            lit = self.literal(right)
            return f"({self._string_at(var, left[1])} = {_q(lit)})"
        if node[0] == "invoke" and node[1][0] == "member" and node[2][0] == "call":
            name, fn, args = node[1][1], node[2][1], node[2][2]
            self._string_element(ftype, name)
            if fn == "startsWith" and len(args) == 1:
                lit = self.literal(args[0])
                return f"starts_with({self._string_at(var, name)}, {_q(lit)})"
            if fn == "empty" and not args:
                return f"(json_extract({var}, {_q('$.' + name)}) IS NULL)"
        raise Unsupported("where() condition")

    def _string_at(self, var: str, name: str) -> str:
        # On the resource itself (a view-level where): the shared one-parse extraction, not a
        # parse of the whole resource per comparison.
        if var == self.root:
            return self.at_str("$." + name) or ""
        return f"json_extract_string({var}, {_q('$.' + name)})"

    def _string_element(self, ftype: str, name: str) -> None:
        """Refuse anything but a single, unshadowed string element of ``ftype``."""
        spec = v.type_spec(ftype)
        el = spec.elements.get(name)
        if (
            el is None
            or el.is_list
            or el.check is None
            or getattr(el.check, "__name__", "") not in _STRING_CHECKS
        ):
            raise Unsupported("where() on a non-string element")
        if any(k.startswith(name) and k[len(name) :][:1].isupper() for k in spec.elements):
            raise Unsupported("where() element name shadowed")

    def literal(self, node: tuple) -> str:
        if node[0] == "lit" and type(node[1]) is str:
            return node[1]
        if node[0] == "const" and node[1] in self.constants and type(self.constants[node[1]]) is str:
            return self.constants[node[1]]
        raise Unsupported("comparison with something other than a string literal or constant")

    def column(self, path: str, col_type: str | None) -> str:
        try:
            node = parse_path(path)
        except FhirPathError as exc:
            raise Unsupported(str(exc)) from None
        coll = self.expr(node, self.root_coll())
        if coll.shadow:
            raise Unsupported("column ends on an element shadowed by a longer element name")
        if coll.many:
            raise Unsupported("column may hold more than one value")
        out = _OUT_TYPES.get(col_type or "", "string")
        ft = coll.ftype
        if ft == "_int_value":
            if out != "int":
                raise Unsupported("integer value in a non-integer column")
            return coll.sql
        if ft == "_key" or ft in _STRING_CHECKS:
            if out != "string":
                raise Unsupported("string value in a non-string column")
            if coll.str_sql:
                return coll.str_sql
            if ft == "_key" and coll.path is None:
                return coll.sql  # already a VARCHAR (_fhir_ref_key)
            return f"json_extract_string({coll.sql}, '$')"
        # A JSON number's text is a valid DuckDB numeric literal: cast the string when we have it.
        if ft in _INT_CHECKS and out == "int":
            return f"CAST({coll.str_sql or coll.sql} AS BIGINT)"
        if ft == "_p_decimal" and out == "decimal":
            return f"CAST({coll.str_sql or coll.sql} AS DOUBLE)"
        if ft == "_p_bool" and out == "bool":
            return f"CAST({coll.sql} AS BOOLEAN)"
        raise Unsupported(f"value of type {ft} in a {col_type} column")


def _columns(select: list[Any], out: list[tuple[str, str, str | None]]) -> None:
    for sel in select:
        if not isinstance(sel, dict) or set(sel) - {"column", "select"}:
            raise Unsupported("select with forEach / forEachOrNull / repeat / unionAll")
        for c in sel.get("column") or []:
            if c.get("collection"):
                raise Unsupported("collection column")
            out.append((c["name"], c["path"], c.get("type")))
        _columns(sel.get("select") or [], out)


def compile_view_sql(view: dict[str, Any], compiled: CompiledView, *, source: str = "fhir_resource") -> str:
    """``INSERT INTO <view> SELECT ...`` for one ViewDefinition (raises :class:`Unsupported`).

    ``source`` is a table or view with columns ``resource_type`` and ``resource`` (JSON text).
    """
    if compiled.resource not in v.RESOURCE_TYPES:
        raise Unsupported("resource type outside the validated set")
    constants = {}
    for name, vals in compiled._constants.items():
        constants[name] = vals[0] if len(vals) == 1 and type(vals[0]) is str else None
    comp = _Compiler(compiled.resource, "t.resource", constants)
    cols: list[tuple[str, str, str | None]] = []
    _columns(view.get("select") or [], cols)
    if [c[0] for c in cols] != compiled.column_names:
        raise Unsupported("column order")
    exprs = [comp.finish(f'{comp.column(path, ctype)} AS "{name}"') for name, path, ctype in cols]
    wheres = []
    for w in view.get("where") or []:
        try:
            node = parse_path(w["path"])
        except FhirPathError as exc:
            raise Unsupported(str(exc)) from None
        if not (node[0] == "bin" and node[1] in ("=", "and", "or")) and node[0] != "invoke":
            raise Unsupported("view where other than comparisons")
        cond = comp.finish(comp.condition(node, "t.resource", compiled.resource))
        wheres.append(f"coalesce({cond}, false)")
    extracted = ""
    if comp.paths:
        extracted += f", json_extract(t.resource, [{', '.join(_q(p) for p in comp.paths)}]) AS _p"
    if comp.str_paths:
        extracted += f", json_extract_string(t.resource, [{', '.join(_q(p) for p in comp.str_paths)}]) AS _s"
    inner = (
        f"SELECT t.resource_type, t.id, t.resource{extracted} "
        f"FROM {source} AS t WHERE t.resource_type = {_q(compiled.resource)}"
    )
    return f'INSERT INTO "{compiled.name}" SELECT {", ".join(exprs)} FROM ({inner}) AS t' + (
        f" WHERE {' AND '.join(wheres)}" if wheres else ""
    )
