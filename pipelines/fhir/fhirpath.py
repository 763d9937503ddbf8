"""The FHIRPath subset that SQL on FHIR v2 requires, compiled to Python closures.

An expression is parsed once (``compile_path``) into a tree of closures; evaluating it
on a resource is then a few dict look-ups and list comprehensions per step, which is
what makes per-resource flattening of a million resources affordable.

Values are FHIR JSON as decoded (dicts, lists, str, int, float/Decimal, bool). An
element reached through a choice type (``valueQuantity`` for ``value``) or a typed
constant is wrapped in :class:`Typed` so that ``ofType()`` and the boundary functions
know its FHIR type; every operator unwraps it.

Supported: path navigation (with choice types), indexer ``[n]``, literals (string,
integer, decimal, boolean, ``{}``, ``@date``), ``$this``, ``%constant``, ``%rowIndex``,
operators ``. [] unary- * / div mod + - & | < <= > >= = != ~ !~ in contains and or xor
implies is as``, and the functions ``where exists empty first last tail skip take count
not ofType as is extension join select distinct hasValue getResourceKey getReferenceKey
lowBoundary highBoundary toString toInteger toDecimal iif startsWith``.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from pipelines.fhir.primitives import FHIRPATH_DATE_RE, FHIRPATH_DATE_TIME_RE, FHIRPATH_TIME_RE

__all__ = ["Env", "FhirPathError", "Node", "Typed", "compile_path", "parse_path", "unwrap"]


class FhirPathError(ValueError):
    """An expression that cannot be parsed or evaluated (never carries a data value)."""


class Typed:
    """A value together with its FHIR type name (e.g. ``Typed("2010", "dateTime")``)."""

    __slots__ = ("value", "type")

    def __init__(self, value: Any, type_: str) -> None:
        self.value = value
        self.type = type_

    def __eq__(self, other: object) -> bool:
        return unwrap(other) == self.value

    def __hash__(self) -> int:
        return hash(self.value) if not isinstance(self.value, dict | list) else id(self.value)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid only
        return f"Typed({self.type})"


def unwrap(v: Any) -> Any:
    return v.value if type(v) is Typed else v


class Env:
    """Evaluation context: the resource, constants and the current ``%rowIndex``."""

    __slots__ = ("resource", "constants", "row_index")

    def __init__(self, resource: Any, constants: dict[str, list[Any]] | None = None, row_index: int = 0):
        self.resource = resource
        self.constants = constants or {}
        self.row_index = row_index


Fn = Callable[[list[Any], Env], list[Any]]

PRIMITIVE_TYPES = {
    "boolean",
    "integer",
    "integer64",
    "string",
    "decimal",
    "uri",
    "url",
    "canonical",
    "base64Binary",
    "instant",
    "date",
    "dateTime",
    "time",
    "code",
    "oid",
    "id",
    "markdown",
    "unsignedInt",
    "positiveInt",
    "uuid",
    "xhtml",
}
_PRIMITIVE_BY_SUFFIX = {t[0].upper() + t[1:]: t for t in PRIMITIVE_TYPES}
# FHIR primitive types that are specialisations of string / integer in FHIRPath's type system.
_STRING_LIKE = {"string", "code", "id", "markdown", "uri", "url", "canonical", "oid", "uuid", "base64Binary"}
_INTEGER_LIKE = {"integer", "unsignedInt", "positiveInt"}


# --------------------------------------------------------------------------- lexer
_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<datetime>@T?[0-9:\-T.+Z]+)
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<delimited>`(?:[^`\\]|\\.)*`)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<special>\$this|\$index|\$total|%[A-Za-z_][A-Za-z0-9_]*|%`(?:[^`\\]|\\.)*`|%'(?:[^'\\]|\\.)*')
  | (?P<op><=|>=|!=|!~|[-+*/&|<>=~(),.\[\]{}])
    """,
    re.VERBOSE | re.DOTALL,
)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/"}


def _unescape(s: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            if n == "u" and i + 5 < len(s):
                out.append(chr(int(s[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(n, n))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _tokenize(src: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(src):
        m = _TOKEN_RE.match(src, pos)
        if not m:
            raise FhirPathError(f"unexpected character at offset {pos}")
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append((kind, m.group()))
        pos = m.end()
    tokens.append(("eof", ""))
    return tokens


# --------------------------------------------------------------------------- AST
# Nodes are tuples: (kind, ...). Kept as plain tuples: the tree lives only until compiled
# (here, or to SQL by pipelines.fhir.viewsql).
Node = tuple[Any, ...]

_BINARY_PRECEDENCE: list[set[str]] = [
    {"implies"},
    {"or", "xor"},
    {"and"},
    {"in", "contains"},
    {"=", "~", "!=", "!~"},
    {"<", ">", "<=", ">="},
    {"|"},
    {"is", "as"},
    {"+", "-", "&"},
    {"*", "/", "div", "mod"},
]


class _Parser:
    def __init__(self, src: str) -> None:
        self.toks = _tokenize(src)
        self.i = 0

    def peek(self) -> tuple[str, str]:
        return self.toks[self.i]

    def next(self) -> tuple[str, str]:
        t = self.toks[self.i]
        self.i += 1
        return t

    def expect(self, value: str) -> None:
        kind, v = self.next()
        if v != value or kind in ("string", "delimited"):
            raise FhirPathError(f"expected {value!r}")

    def parse(self) -> Node:
        node = self.expr(0)
        if self.peek()[0] != "eof":
            raise FhirPathError("unexpected trailing input")
        return node

    def _is_op(self, level: int) -> str | None:
        kind, v = self.peek()
        if kind in ("op", "ident") and v in _BINARY_PRECEDENCE[level]:
            return v
        return None

    def expr(self, level: int) -> Node:
        if level == len(_BINARY_PRECEDENCE):
            return self.unary()
        left = self.expr(level + 1)
        while (op := self._is_op(level)) is not None:
            self.next()
            if op in ("is", "as"):
                left = ("typeop", op, left, self.type_specifier())
            else:
                left = ("bin", op, left, self.expr(level + 1))
        return left

    def type_specifier(self) -> str:
        kind, v = self.next()
        if kind not in ("ident", "delimited"):
            raise FhirPathError("expected a type name")
        name = v.strip("`")
        if self.peek()[1] == "." and self.toks[self.i + 1][0] == "ident":
            self.next()
            name = self.next()[1]  # FHIR.Quantity / System.String -> the bare type name
        return name

    def unary(self) -> Node:
        kind, v = self.peek()
        if kind == "op" and v in ("-", "+"):
            self.next()
            return ("neg", self.unary()) if v == "-" else self.unary()
        return self.postfix()

    def postfix(self) -> Node:
        node = self.term()
        while True:
            kind, v = self.peek()
            if kind == "op" and v == ".":
                self.next()
                node = ("invoke", node, self.invocation())
            elif kind == "op" and v == "[":
                self.next()
                idx = self.expr(0)
                self.expect("]")
                node = ("index", node, idx)
            else:
                return node

    def invocation(self) -> Node:
        kind, v = self.next()
        if kind == "delimited":
            return ("member", _unescape(v[1:-1]))
        if kind != "ident":
            raise FhirPathError("expected a name after '.'")
        if self.peek()[1] == "(" and self.peek()[0] == "op":
            return self.call(v)
        return ("member", v)

    def call(self, name: str) -> Node:
        self.expect("(")
        args: list[Node] = []
        if self.peek()[1] != ")":
            while True:
                args.append(self.expr(0))
                if self.peek()[1] == ",":
                    self.next()
                    continue
                break
        self.expect(")")
        return ("call", name, args)

    def term(self) -> Node:
        kind, v = self.next()
        if kind == "number":
            return ("lit", Decimal(v) if "." in v else int(v))
        if kind == "string":
            return ("lit", _unescape(v[1:-1]))
        if kind == "datetime":
            body = v[1:]
            if body.startswith("T"):
                return ("lit", Typed(body[1:], "time"))
            return ("lit", Typed(body, "dateTime" if "T" in body else "date"))
        if kind == "special":
            if v == "$this":
                return ("this",)
            if v in ("$index", "$total"):
                raise FhirPathError(f"{v} is not supported")
            name = v[1:]
            if name[:1] in ("`", "'"):
                name = _unescape(name[1:-1])
            return ("const", name)
        if kind == "delimited":
            return ("member", _unescape(v[1:-1]))
        if kind == "ident":
            if v in ("true", "false"):
                return ("lit", v == "true")
            if self.peek()[1] == "(" and self.peek()[0] == "op":
                return self.call(v)
            return ("member", v)
        if kind == "op" and v == "(":
            node = self.expr(0)
            self.expect(")")
            return node
        if kind == "op" and v == "{":
            self.expect("}")
            return ("empty",)
        raise FhirPathError("unexpected token" if kind != "eof" else "unexpected end of expression")


# --------------------------------------------------------------------------- helpers


def _navigate(items: list[Any], name: str) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if type(item) is Typed:
            item = item.value
        if type(item) is not dict:
            continue
        v = item.get(name)
        if v is None:
            # A choice element ("value" -> "valueQuantity"), or the resource's own type name.
            if name[:1].isupper() and item.get("resourceType") == name:
                out.append(item)
                continue
            n = len(name)
            for key, val in item.items():
                if len(key) > n and key.startswith(name) and key[n].isupper():
                    suffix = key[n:]
                    t = _PRIMITIVE_BY_SUFFIX.get(suffix, suffix)
                    if type(val) is list:
                        out.extend(Typed(x, t) for x in val)
                    else:
                        out.append(Typed(val, t))
                    break
            continue
        if type(v) is list:
            out.extend(v)
        else:
            out.append(v)
    return out


def _type_of(v: Any) -> str | None:
    if type(v) is Typed:
        return v.type
    if type(v) is bool:
        return "boolean"
    if type(v) is int:
        return "integer"
    if type(v) in (float, Decimal):
        return "decimal"
    if type(v) is str:
        return "string"
    if type(v) is dict:
        return v.get("resourceType")
    return None


def _is_type(v: Any, name: str) -> bool:
    t = _type_of(v)
    if t is None:
        return False
    if t == name:
        return True
    low = name[:1].lower() + name[1:]
    if t == low:  # System.String, System.Integer ... match the FHIR primitive
        return True
    if low == "string" and t in _STRING_LIKE and type(v) is not Typed:
        return True
    if low == "integer" and t in _INTEGER_LIKE and type(v) is not Typed:
        return True
    return False


def _singleton(items: list[Any], what: str) -> Any:
    if not items:
        return None
    if len(items) > 1:
        raise FhirPathError(f"{what} expects a single item, got a collection of {len(items)}")
    return unwrap(items[0])


def _to_bool(items: list[Any], what: str) -> bool | None:
    """FHIRPath singleton evaluation of collections in a boolean context."""
    if not items:
        return None
    v = _singleton(items, what)
    if type(v) is bool:
        return v
    return True  # a single non-boolean item counts as true (FHIRPath §4.5)


_NUM = (int, float, Decimal)


def _num(v: Any) -> Any:
    return Decimal(str(v)) if type(v) is float else v


def _date_like(a: Any) -> bool:
    return type(a) is Typed and a.type in ("date", "dateTime", "instant", "time")


def _eq(a: Any, b: Any) -> bool | None:
    av, bv = unwrap(a), unwrap(b)
    if type(av) is bool or type(bv) is bool:
        return type(av) is type(bv) and av == bv
    if isinstance(av, _NUM) and isinstance(bv, _NUM):
        return _num(av) == _num(bv)
    if type(av) is str and type(bv) is str:
        if (_date_like(a) or _date_like(b)) and av != bv:
            return _temporal_cmp_eq(av, bv)
        return av == bv
    return av == bv


def _temporal_cmp_eq(a: str, b: str) -> bool | None:
    """Equality of partial dates/times: different precision and equal prefix -> unknown."""
    n = min(len(a), len(b))
    if a[:n] != b[:n]:
        return False
    return None if len(a) != len(b) else True


def _collection_eq(left: list[Any], right: list[Any]) -> list[Any]:
    if not left or not right:
        return []
    if len(left) != len(right):
        return [False]
    result: bool | None = True
    for a, b in zip(left, right, strict=True):
        r = _eq(a, b)
        if r is None:
            return []
        if not r:
            result = False
    return [result]


def _equiv(a: Any, b: Any) -> bool:
    av, bv = unwrap(a), unwrap(b)
    if type(av) is str and type(bv) is str:
        return " ".join(av.lower().split()) == " ".join(bv.lower().split())
    if isinstance(av, _NUM) and isinstance(bv, _NUM) and type(av) is not bool and type(bv) is not bool:
        return _num(av) == _num(bv)
    return av == bv


def _compare(op: str, left: list[Any], right: list[Any]) -> list[Any]:
    if not left or not right:
        return []
    a, b = _singleton(left, op), _singleton(right, op)
    if isinstance(a, _NUM) and isinstance(b, _NUM) and type(a) is not bool and type(b) is not bool:
        a, b = _num(a), _num(b)
    elif type(a) is str and type(b) is str:
        if (_date_like(left[0]) or _date_like(right[0])) and len(a) != len(b):
            n = min(len(a), len(b))
            if a[:n] == b[:n]:
                return []
            a, b = a[:n], b[:n]
    else:
        raise FhirPathError(f"cannot compare these types with {op}")
    if op == "<":
        return [a < b]
    if op == "<=":
        return [a <= b]
    if op == ">":
        return [a > b]
    return [a >= b]


def _arith(op: str, left: list[Any], right: list[Any]) -> list[Any]:
    if not left or not right:
        return []
    a, b = _singleton(left, op), _singleton(right, op)
    if op == "&":
        return [("" if a is None else str(a)) + ("" if b is None else str(b))]
    if type(a) is str and type(b) is str and op == "+":
        return [a + b]
    if not (isinstance(a, _NUM) and isinstance(b, _NUM)) or type(a) is bool or type(b) is bool:
        raise FhirPathError(f"operator {op} needs numbers")
    a, b = _num(a), _num(b)
    try:
        if op == "+":
            return [a + b]
        if op == "-":
            return [a - b]
        if op == "*":
            return [a * b]
        if op == "/":
            if b == 0:
                return []
            return [Decimal(a) / Decimal(b)]
        if op == "div":
            return [] if b == 0 else [int(Decimal(a) // Decimal(b))]
        if op == "mod":
            return [] if b == 0 else [a % b]
    except InvalidOperation as exc:
        raise FhirPathError(f"arithmetic error in {op}") from exc
    raise FhirPathError(f"unknown operator {op}")


def _logic(op: str, left: list[Any], right: list[Any]) -> list[Any]:
    a, b = _to_bool(left, op), _to_bool(right, op)
    if op == "and":
        if a is False or b is False:
            return [False]
        return [True] if a is True and b is True else []
    if op == "or":
        if a is True or b is True:
            return [True]
        return [False] if a is False and b is False else []
    if op == "xor":
        return [] if a is None or b is None else [a != b]
    # implies
    if a is False:
        return [True]
    if a is True:
        return [] if b is None else [b]
    return [True] if b is True else []


def _union(left: list[Any], right: list[Any]) -> list[Any]:
    out: list[Any] = []
    for x in left + right:
        if not any(_eq(x, y) is True for y in out):
            out.append(x)
    return out


# --------------------------------------------------------------------------- boundaries
# The strings toInteger() / toDecimal() convert (the dates and times boundaries parse are
# pipelines.fhir.primitives.FHIRPATH_*).
_INT_RE = re.compile(r"^[+-]?\d{1,18}$")
_DEC_RE = re.compile(r"^[+-]?\d{1,28}(\.\d{1,28})?$")


def _decimal_boundary(v: Any, high: bool, precision: int | None) -> Any:
    d = Decimal(str(v)) if type(v) is float else Decimal(v)
    exp = d.as_tuple().exponent
    digits = -exp if isinstance(exp, int) and exp < 0 else 0
    half = Decimal(5).scaleb(-(digits + 1))
    out = d + half if high else d - half
    if precision is not None:
        if precision > 28:
            return None
        q = Decimal(1).scaleb(-precision)
        out = out.quantize(q)
    return out


def _date_boundary(s: str, high: bool) -> str | None:
    m = FHIRPATH_DATE_RE.match(s)
    if not m:
        return None
    y, mo, d = m.group(1), m.group(2), m.group(3)
    if mo is None:
        mo = "12" if high else "01"
    if d is None:
        d = f"{calendar.monthrange(int(y), int(mo))[1]:02d}" if high else "01"
    return f"{y}-{mo}-{d}"


def _datetime_boundary(s: str, high: bool) -> str | None:
    m = FHIRPATH_DATE_TIME_RE.match(s)
    if not m:
        return None
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
    date = _date_boundary("-".join(p for p in (y, mo, d) if p), high)
    if date is None:
        return None
    hh = hh or ("23" if high else "00")
    mi = mi or ("59" if high else "00")
    ss = ss or ("59" if high else "00")
    if frac is None:
        frac = "999" if high else "000"
    else:
        frac = (frac + ("9" if high else "0") * 3)[: max(3, len(frac))]
    if tz is None:
        # Unknown offset: the earliest instant is at +14:00, the latest at -12:00.
        tz = "-12:00" if high else "+14:00"
    return f"{date}T{hh}:{mi}:{ss}.{frac}{tz}"


def _time_boundary(s: str, high: bool) -> str | None:
    m = FHIRPATH_TIME_RE.match(s)
    if not m:
        return None
    hh, mi, ss, frac = m.groups()
    mi = mi or ("59" if high else "00")
    ss = ss or ("59" if high else "00")
    if frac is None:
        frac = "999" if high else "000"
    return f"{hh}:{mi}:{ss}.{frac}"


def _boundary(item: Any, high: bool, precision: int | None) -> Any:
    v = unwrap(item)
    t = _type_of(item)
    if type(v) is bool:
        return None
    if isinstance(v, _NUM):
        return _decimal_boundary(v, high, precision)
    if type(v) is not str:
        return None
    if t in ("dateTime", "instant") or (t == "string" and "T" in v):
        r = _datetime_boundary(v, high)
        return None if r is None else Typed(r, "dateTime")
    if t == "date" or (t == "string" and FHIRPATH_DATE_RE.match(v)):
        r = _date_boundary(v, high)
        return None if r is None else Typed(r, "date")
    if t == "time" or (t == "string" and FHIRPATH_TIME_RE.match(v)):
        r = _time_boundary(v, high)
        return None if r is None else Typed(r, "time")
    return None


def _reference_key(ref: Any, type_name: str | None) -> str | None:
    """Bare id of a reference ``Patient/abc`` / ``http://x/Patient/abc/_history/2`` -> ``abc``."""
    ref = unwrap(ref)
    if type(ref) is not dict:
        return None
    r = ref.get("reference")
    if type(r) is not str or not r:
        return None
    if r.startswith("#") or "?" in r:
        # A local (contained) reference names no resource here; a conditional reference
        # (``Practitioner?identifier=system|value``) names a search, not an id, and any part of
        # it would be a fragment of the identifier searched for.
        return None
    if r.startswith("urn:uuid:") or r.startswith("urn:oid:"):
        return None if type_name else r.rsplit(":", 1)[1]
    parts = r.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2:
        return None
    rtype, rid = parts[-2], parts[-1]
    if type_name is not None and rtype != type_name:
        return None
    return rid


# --------------------------------------------------------------------------- compiler


def parse_path(src: str) -> Node:
    """The syntax tree of a FHIRPath expression (raises :class:`FhirPathError`)."""
    return _Parser(src).parse()


def compile_path(src: str) -> Fn:
    """Compile a FHIRPath expression into ``fn(focus_collection, env) -> collection``."""
    if not isinstance(src, str) or not src.strip():
        raise FhirPathError("a FHIRPath expression must be a non-empty string")
    return _compile(parse_path(src))


def _compile(node: Node) -> Fn:
    kind = node[0]
    if kind == "lit":
        value = node[1]
        return lambda focus, env: [value]
    if kind == "empty":
        return lambda focus, env: []
    if kind == "this":
        return lambda focus, env: focus
    if kind == "const":
        return _compile_constant(node[1])
    if kind == "member":
        name = node[1]
        return lambda focus, env: _navigate(focus, name)
    if kind == "invoke":
        left = _compile(node[1])
        right = _compile_invocation(node[2])
        return lambda focus, env: right(left(focus, env), env)
    if kind == "call":
        return _compile_function(node[1], node[2])
    if kind == "index":
        return _compile_index(_compile(node[1]), _compile(node[2]))
    if kind == "neg":
        return _compile_negation(_compile(node[1]))
    if kind == "typeop":
        return _compile_type_operator(node[1], _compile(node[2]), node[3])
    if kind == "bin":
        return _compile_binary(node[1], _compile(node[2]), _compile(node[3]))
    raise FhirPathError(f"unsupported expression node {kind}")  # pragma: no cover


def _compile_constant(name: str) -> Fn:
    """``%name``: the environment's constants, ``%rowIndex`` and ``%resource``."""
    if name == "rowIndex":
        return lambda focus, env: [env.row_index]
    if name in ("resource", "rootResource", "context"):
        return lambda focus, env: [env.resource]

    def const(focus: list[Any], env: Env) -> list[Any]:
        try:
            return env.constants[name]
        except KeyError:
            raise FhirPathError(f"undefined constant %{name}") from None

    return const


def _compile_index(base: Fn, idx: Fn) -> Fn:
    def index(focus: list[Any], env: Env) -> list[Any]:
        items = base(focus, env)
        i = _singleton(idx(focus, env), "indexer")
        if type(i) is not int:
            raise FhirPathError("an indexer needs an integer")
        return [items[i]] if 0 <= i < len(items) else []

    return index


def _compile_negation(inner: Fn) -> Fn:
    def neg(focus: list[Any], env: Env) -> list[Any]:
        v = _singleton(inner(focus, env), "unary minus")
        if v is None:
            return []
        if not isinstance(v, _NUM) or type(v) is bool:
            raise FhirPathError("unary minus needs a number")
        return [-v]

    return neg


def _compile_type_operator(op: str, inner: Fn, tname: str) -> Fn:
    """``x is T`` (a boolean about one item) and ``x as T`` (the items of type T)."""
    if op == "as":
        return lambda focus, env: [x for x in inner(focus, env) if _is_type(x, tname)]

    def is_(focus: list[Any], env: Env) -> list[Any]:
        items = inner(focus, env)
        if not items:
            return []
        if len(items) > 1:
            raise FhirPathError("'is' expects a single item")
        return [_is_type(items[0], tname)]

    return is_


def _compile_invocation(node: Node) -> Fn:
    if node[0] == "member":
        name = node[1]
        return lambda focus, env: _navigate(focus, name)
    return _compile_function(node[1], node[2])


def _compile_binary(op: str, left: Fn, right: Fn) -> Fn:
    if op in ("and", "or", "xor", "implies"):
        return lambda focus, env: _logic(op, left(focus, env), right(focus, env))
    if op == "=":
        return lambda focus, env: _collection_eq(left(focus, env), right(focus, env))
    if op == "!=":

        def ne(focus: list[Any], env: Env) -> list[Any]:
            r = _collection_eq(left(focus, env), right(focus, env))
            return [not r[0]] if r else []

        return ne
    if op in ("~", "!~"):

        def equiv(focus: list[Any], env: Env) -> list[Any]:
            a, b = left(focus, env), right(focus, env)
            same = len(a) == len(b) and all(_equiv(x, y) for x, y in zip(a, b, strict=True))
            return [same if op == "~" else not same]

        return equiv
    if op in ("<", "<=", ">", ">="):
        return lambda focus, env: _compare(op, left(focus, env), right(focus, env))
    if op in ("+", "-", "*", "/", "div", "mod", "&"):
        return lambda focus, env: _arith(op, left(focus, env), right(focus, env))
    if op == "|":
        return lambda focus, env: _union(left(focus, env), right(focus, env))
    if op in ("in", "contains"):

        def membership(focus: list[Any], env: Env) -> list[Any]:
            a, b = left(focus, env), right(focus, env)
            item, coll = (a, b) if op == "in" else (b, a)
            if not item:
                return []
            x = item[0] if len(item) == 1 else _singleton(item, op)
            return [any(_eq(x, y) is True for y in coll)]

        return membership
    raise FhirPathError(f"unsupported operator {op}")


def _type_arg(args: list[Node], fname: str) -> str:
    if len(args) != 1:
        raise FhirPathError(f"{fname}() takes one type name")
    node = args[0]
    if node[0] == "member":
        return node[1]
    if node[0] == "invoke" and node[1][0] == "member" and node[2][0] == "member":
        return node[2][1]  # FHIR.Quantity
    raise FhirPathError(f"{fname}() takes a type name")


#: A function's compiler: (function name, argument nodes) -> the compiled call.
_FunctionCompiler = Callable[[str, list[Node]], Fn]
_FUNCTIONS: dict[str, _FunctionCompiler] = {}


def _function(*names: str) -> Callable[[_FunctionCompiler], _FunctionCompiler]:
    """Register a compiler for the FHIRPath functions ``names``."""

    def register(compiler: _FunctionCompiler) -> _FunctionCompiler:
        for name in names:
            _FUNCTIONS[name] = compiler
        return compiler

    return register


def _compile_function(name: str, args: list[Node]) -> Fn:
    compiler = _FUNCTIONS.get(name)
    if compiler is None:
        raise FhirPathError(f"unsupported function {name}()")
    return compiler(name, args)


def _arity(name: str, args: list[Node], *allowed: int) -> None:
    if len(args) not in allowed:
        raise FhirPathError(f"{name}() called with {len(args)} arguments")


@_function("where")
def _where(name: str, args: list[Node]) -> Fn:
    _arity(name, args, 1)
    crit = _compile(args[0])

    def where(focus: list[Any], env: Env) -> list[Any]:
        return [x for x in focus if _to_bool(crit([x], env), "where()") is True]

    return where


@_function("select")
def _select(name: str, args: list[Node]) -> Fn:
    _arity(name, args, 1)
    proj = _compile(args[0])
    return lambda focus, env: [y for x in focus for y in proj([x], env)]


@_function("exists")
def _exists(name: str, args: list[Node]) -> Fn:
    _arity(name, args, 0, 1)
    if args:
        crit = _compile(args[0])
        return lambda focus, env: [any(_to_bool(crit([x], env), "exists()") is True for x in focus)]
    return lambda focus, env: [bool(focus)]


@_function("empty")
def _empty(name: str, args: list[Node]) -> Fn:
    _arity(name, args, 0)
    return lambda focus, env: [not focus]


@_function("first")
def _first(name: str, args: list[Node]) -> Fn:
    _arity(name, args, 0)
    return lambda focus, env: focus[:1]


@_function("last")
def _last(name: str, args: list[Node]) -> Fn:
    _arity(name, args, 0)
    return lambda focus, env: focus[-1:]


@_function("tail")
def _tail(name: str, args: list[Node]) -> Fn:
    _arity(name, args, 0)
    return lambda focus, env: focus[1:]


@_function("skip", "take")
def _skip_take(name: str, args: list[Node]) -> Fn:
    _arity(name, args, 1)
    n_fn = _compile(args[0])
    skip = name == "skip"

    def skip_take(focus: list[Any], env: Env) -> list[Any]:
        n = _singleton(n_fn(focus, env), name)
        if type(n) is not int:
            raise FhirPathError(f"{name}() needs an integer")
        return focus[max(n, 0) :] if skip else focus[: max(n, 0)]

    return skip_take


@_function("count")
def _count(name: str, args: list[Node]) -> Fn:
    _arity(name, args, 0)
    return lambda focus, env: [len(focus)]


@_function("distinct")
def _distinct(name: str, args: list[Node]) -> Fn:
    _arity(name, args, 0)
    return lambda focus, env: _union(focus, [])


@_function("not")
def _not(name: str, args: list[Node]) -> Fn:
    _arity(name, args, 0)

    def not_(focus: list[Any], env: Env) -> list[Any]:
        b = _to_bool(focus, "not()")
        return [] if b is None else [not b]

    return not_


@_function("hasValue")
def _has_value(name: str, args: list[Node]) -> Fn:
    _arity(name, args, 0)
    return lambda focus, env: [len(focus) == 1 and not isinstance(unwrap(focus[0]), dict | list)]


@_function("ofType", "as")
def _of_type(name: str, args: list[Node]) -> Fn:
    tname = _type_arg(args, name)
    return lambda focus, env: [x for x in focus if _is_type(x, tname)]


@_function("is")
def _is(name: str, args: list[Node]) -> Fn:
    tname = _type_arg(args, name)
    return lambda focus, env: [] if not focus else [_is_type(_single_item(focus, "is()"), tname)]


@_function("extension")
def _extension(name: str, args: list[Node]) -> Fn:
    _arity(name, args, 1)
    url_fn = _compile(args[0])

    def extension(focus: list[Any], env: Env) -> list[Any]:
        url = _singleton(url_fn(focus, env), "extension()")
        return [e for e in _navigate(focus, "extension") if type(e) is dict and e.get("url") == url]

    return extension


@_function("join")
def _join(name: str, args: list[Node]) -> Fn:
    _arity(name, args, 0, 1)
    sep_fn = _compile(args[0]) if args else None

    def join(focus: list[Any], env: Env) -> list[Any]:
        sep = None if sep_fn is None else _singleton(sep_fn(focus, env), "join()")
        parts = [unwrap(x) for x in focus]
        if any(type(p) is not str for p in parts):
            raise FhirPathError("join() needs strings")
        return [sep.join(parts) if sep else "".join(parts)]

    return join


@_function("startsWith")
def _starts_with(name: str, args: list[Node]) -> Fn:
    """FHIRPath ``startsWith(prefix)``: empty for an empty input or prefix, an error on a non-string."""
    _arity(name, args, 1)
    prefix_fn = _compile(args[0])

    def starts_with(focus: list[Any], env: Env) -> list[Any]:
        s, prefix = _singleton(focus, "startsWith()"), _singleton(prefix_fn(focus, env), "startsWith()")
        if s is None or prefix is None:
            return []
        if type(s) is not str or type(prefix) is not str:
            raise FhirPathError("startsWith() needs strings")
        return [s.startswith(prefix)]

    return starts_with


@_function("toString")
def _to_string(name: str, args: list[Node]) -> Fn:
    _arity(name, args, 0)

    def to_string(focus: list[Any], env: Env) -> list[Any]:
        v = _singleton(focus, "toString()")
        if v is None:
            return []
        if type(v) is bool:
            return ["true" if v else "false"]
        return [str(v)] if not isinstance(v, dict | list) else []

    return to_string


@_function("getResourceKey")
def _get_resource_key(name: str, args: list[Node]) -> Fn:
    _arity(name, args, 0)

    def resource_key(focus: list[Any], env: Env) -> list[Any]:
        out = []
        for x in focus:
            x = unwrap(x)
            if type(x) is dict and type(x.get("id")) is str:
                out.append(x["id"])
        return out

    return resource_key


@_function("getReferenceKey")
def _get_reference_key(name: str, args: list[Node]) -> Fn:
    if len(args) > 1:
        raise FhirPathError("getReferenceKey() takes at most one type name")
    tname = _type_arg(args, name) if args else None

    def reference_key(focus: list[Any], env: Env) -> list[Any]:
        out = []
        for x in focus:
            k = _reference_key(x, tname)
            if k is not None:
                out.append(k)
        return out

    return reference_key


@_function("lowBoundary", "highBoundary")
def _boundary_function(name: str, args: list[Node]) -> Fn:
    _arity(name, args, 0, 1)
    prec_fn = _compile(args[0]) if args else None
    high = name == "highBoundary"

    def boundary(focus: list[Any], env: Env) -> list[Any]:
        if not focus:
            return []
        item = _single_item(focus, name)
        precision = None if prec_fn is None else _singleton(prec_fn(focus, env), name)
        r = _boundary(item, high, precision)
        return [] if r is None else [r]

    return boundary


@_function("toInteger", "toDecimal")
def _convert(name: str, args: list[Node]) -> Fn:
    _arity(name, args, 0)
    want_int = name == "toInteger"

    def convert(focus: list[Any], env: Env) -> list[Any]:
        v = _singleton(focus, name + "()")
        if v is None:
            return []
        if type(v) is bool:
            return [int(v)] if want_int else [Decimal(int(v))]
        if type(v) is int:
            return [v] if want_int else [Decimal(v)]
        if want_int:
            return [int(v)] if type(v) is str and _INT_RE.match(v) else []
        if type(v) in (float, Decimal):
            return [_num(v)]
        return [Decimal(v)] if type(v) is str and _DEC_RE.match(v) else []

    return convert


@_function("iif")
def _iif(name: str, args: list[Node]) -> Fn:
    _arity(name, args, 2, 3)
    cond, then = _compile(args[0]), _compile(args[1])
    other = _compile(args[2]) if len(args) == 3 else None

    def iif(focus: list[Any], env: Env) -> list[Any]:
        if _to_bool(cond(focus, env), "iif()") is True:
            return then(focus, env)
        return other(focus, env) if other else []

    return iif


def _single_item(items: list[Any], what: str) -> Any:
    if len(items) > 1:
        raise FhirPathError(f"{what} expects a single item, got a collection of {len(items)}")
    return items[0]
