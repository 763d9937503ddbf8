"""Names in researchers' SQL: readable result column names, and where a name sits in the query.

Readable names. DuckDB names an unaliased expression after its text (``count_star()``,
``sum(hba1c_mmol_mol)``, ``CAST(x AS INTEGER)``): awkward in pandas and R, and not a valid
identifier to refer back to. ``alias_projections`` gives every unaliased, non-column projection
of every SELECT in a checked tree a readable alias (``count``, ``sum_hba1c_mmol_mol``,
``year_visit_date``) before the SQL is regenerated, so both tiers (the record tier runs the
regenerated SQL, the aggregate grammar takes its output names from the aliases) return the same
names. A name never contains a literal string (it could hold an identifier the query filtered
on), never repeats another output name of its SELECT and never equals a permitted column
name (an alias that shadows a column would change what ORDER BY or GROUP BY refer to).

Positions. The SQL DuckDB runs is regenerated from the checked tree, so its error positions do
not point into what the researcher wrote. ``remember_source`` keeps, per regenerated text, the
text it came from (bounded, process memory, like the prepared-query cache), and ``locate``
finds a name in it by token, so an error can say ``at line 2, col 3`` of the researcher's query.
Pure: sqlglot trees and strings in and out; nothing is logged.
"""

from __future__ import annotations

import difflib
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable

from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import TokenError
from sqlglot.tokens import TokenType

#: Longest generated name (PostgreSQL's identifier limit: portable to the tools researchers use).
MAX_NAME = 63
#: Regenerated texts whose source is kept for error positions (a working session's queries).
SOURCES_KEPT = 512

_BINARY_WORDS: dict[type[exp.Expr], str] = {
    exp.Add: "plus",
    exp.Sub: "minus",
    exp.Mul: "times",
    exp.Div: "div",
    exp.IntDiv: "div",
    exp.Mod: "mod",
    exp.DPipe: "concat",
    exp.EQ: "eq",
    exp.NEQ: "ne",
    exp.GT: "gt",
    exp.GTE: "ge",
    exp.LT: "lt",
    exp.LTE: "le",
    exp.And: "and",
    exp.Or: "or",
    exp.Is: "is",
    exp.Like: "like",
    exp.ILike: "ilike",
}
_NOT_WORD = re.compile(r"[^\w]+", re.UNICODE)
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


def _function_word(node: exp.Func) -> str:
    """The function's name as the researcher knows it: DuckDB's spelling (``date_trunc``,
    ``strftime``, ``epoch``), not sqlglot's dialect-neutral class name (``timestamp_trunc``,
    ``time_to_str``, ``time_to_unix``); sqlglot's name where DuckDB's is no identifier."""
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    duckdb_name = node.sql(dialect="duckdb").split("(", 1)[0].strip().lower()
    return duckdb_name if _IDENTIFIER.fullmatch(duckdb_name) else node.sql_name().lower()


def _words(node: exp.Expr) -> list[str]:
    """The words a readable name is made of: function names, column names, numbers, operators."""
    if isinstance(node, exp.Column):
        return [node.name] if not isinstance(node.this, exp.Star) else []
    if isinstance(node, exp.Star | exp.DataType):
        return []
    if isinstance(node, exp.Null):
        return ["null"]
    if isinstance(node, exp.Boolean):
        return ["true" if node.this else "false"]
    if isinstance(node, exp.In):
        return [*_words(node.this), "in", *[w for e in node.expressions for w in _words(e)]]
    if isinstance(node, exp.Between):
        return [*_words(node.this), "between", *_words(node.args["low"]), *_words(node.args["high"])]
    if isinstance(node, exp.Literal):
        # Numbers only: a string literal may be the identifier or value the query filtered on.
        return [str(node.this)] if not node.is_string and len(str(node.this)) <= 12 else []
    if isinstance(node, exp.Window):
        return _words(node.this)  # the OVER clause is not part of the name
    if isinstance(node, exp.Paren | exp.Alias):
        return _words(node.this)
    if isinstance(node, exp.Distinct):
        return ["distinct", *[w for e in node.expressions for w in _words(e)]]
    if isinstance(node, exp.Case):
        columns = dict.fromkeys(c.name for c in node.find_all(exp.Column))
        return ["case", *columns]
    if isinstance(node, exp.Cast):
        return [*_words(node.this), str(node.to.this.value).lower() if node.to else ""]
    if isinstance(node, exp.Neg):
        return ["minus", *_words(node.this)]
    if isinstance(node, exp.Not):
        return ["not", *_words(node.this)]
    if isinstance(node, exp.Binary):
        word = _BINARY_WORDS.get(type(node), type(node).__name__.lower())
        return [*_words(node.left), word, *_words(node.right)]
    if isinstance(node, exp.Count) and isinstance(node.this, exp.Star):
        return ["count"]
    words = [_function_word(node)] if isinstance(node, exp.Func) else []
    for child in node.iter_expressions():
        words.extend(_words(child))
    return words


def readable_name(node: exp.Expr) -> str:
    """A lower-case identifier for ``node``'s result column: ``count(*)`` -> ``count``,
    ``sum(x)`` -> ``sum_x``, ``avg(hba1c)`` -> ``avg_hba1c``, ``x + 1`` -> ``x_plus_1``."""
    if isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
        return node.name
    text = "_".join(w for w in _words(node) if w)
    name = _NOT_WORD.sub("_", text.lower()).strip("_")
    name = re.sub(r"_+", "_", name)[:MAX_NAME].rstrip("_")
    if not name:
        return "col"
    return name if not name[0].isdigit() else f"col_{name}"[:MAX_NAME]


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    n = 2
    while f"{name}_{n}"[:MAX_NAME] in taken:
        n += 1
    return f"{name}_{n}"[:MAX_NAME]


def alias_projections(tree: exp.Expr, reserved: Iterable[str] = ()) -> exp.Expr:
    """Give every unaliased projection (not a plain column or star) of every SELECT in ``tree``
    a readable alias, in place; ``reserved``: names an alias must not take (the permitted
    columns). Returns ``tree``."""
    reserved_lower = {r.lower() for r in reserved}
    for select in list(tree.find_all(exp.Select)):
        outputs = select.expressions
        taken = {
            e.alias_or_name.lower()
            for e in outputs
            if isinstance(e, exp.Alias) or (isinstance(e, exp.Column) and not isinstance(e.this, exp.Star))
        }
        for i, item in enumerate(outputs):
            if isinstance(item, exp.Alias | exp.Star | exp.Column):
                continue  # named already (a column keeps its own name)
            name = _unique(readable_name(item), taken | reserved_lower)
            taken.add(name)
            outputs[i] = exp.alias_(item, name, quoted=False)
            outputs[i].parent = select
    return tree


# -- where a name sits in the researcher's query ----------------------------------------------
_sources: OrderedDict[str, str] = OrderedDict()
_sources_lock = threading.Lock()


def remember_source(run_sql: str, source_sql: str) -> None:
    """Remember that ``run_sql`` was regenerated from ``source_sql`` (for error positions)."""
    with _sources_lock:
        _sources[run_sql] = source_sql
        _sources.move_to_end(run_sql)
        while len(_sources) > SOURCES_KEPT:
            _sources.popitem(last=False)


def source_of(run_sql: str) -> str | None:
    """The researcher's text that ``run_sql`` was regenerated from (None: SQL the layer compiled
    itself, or forgotten; then an error gives no position rather than one in the wrong text)."""
    with _sources_lock:
        return _sources.get(run_sql)


def locate(sql: str, name: str) -> tuple[int, int] | None:
    """(line, column), 1-based, of the first identifier token ``name`` (case-insensitive) in ``sql``."""
    try:
        tokens = DuckDB().tokenize(sql)
    except TokenError:
        return None
    want = name.lower()
    for tok in tokens:
        if tok.token_type in (TokenType.VAR, TokenType.IDENTIFIER) and tok.text.lower() == want:
            # A token's ``col`` is the column of its last character; quoted ones add the quotes.
            width = len(tok.text) + (2 if tok.token_type == TokenType.IDENTIFIER else 0)
            return tok.line, tok.col - width + 1
    return None


def close_matches(name: str, candidates: Iterable[str], n: int = 3, cutoff: float = 0.4) -> list[str]:
    """Up to ``n`` candidates closest to ``name`` (difflib ratio at least ``cutoff``), best first."""
    pool = list(dict.fromkeys(candidates))
    found = difflib.get_close_matches(name.lower(), [c.lower() for c in pool], n=n, cutoff=cutoff)
    by_lower = {c.lower(): c for c in pool}
    return [by_lower[f] for f in found]


def where(sql: str, name: str) -> str:
    """`` at line L, col C`` when ``name`` is found in ``sql``, else the empty string."""
    pos = locate(sql, name)
    return f" at line {pos[0]}, col {pos[1]}" if pos else ""


def where_node(node: exp.Expr) -> str:
    """`` at line L, col C`` of a parsed identifier (sqlglot keeps its place in the text parsed)."""
    ident = node.this if isinstance(node, exp.Column) else node
    meta = getattr(ident, "meta", None) or {}
    if not {"line", "col", "start", "end"} <= set(meta):
        return ""
    return f" at line {meta['line']}, col {meta['col'] - (meta['end'] - meta['start'])}"


def did_you_mean(name: str, candidates: Iterable[str], cutoff: float = 0.4) -> str:
    """``; did you mean a or b?`` with the closest candidates (empty when there are none)."""
    found = close_matches(name, candidates, cutoff=cutoff)
    return f"; did you mean {' or '.join(found)}?" if found else ""
