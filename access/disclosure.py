"""Statistical disclosure control: cell suppression, dominance, rounding, k-anonymity.

Pure functions over plain values (no DuckDB, no HTTP), so the laws can be tested directly.

Attacker model for aggregate results (conservative): the attacker sees every published cell
of the result and also knows every *margin* of the table (the sum over any subset of the
grouping dimensions, down to the grand total) whose value reaches its threshold, because
such a margin could be published by another query. Absent cells are known to be zero and
present cells to hold at least one person. Suppression is done so that no suppressed cell is
determined by those facts:

1. primary: a cell with fewer persons than the strictest threshold of the data holders that
   contribute to it, or whose sum is dominated by its top contributors;
2. secondary, by lines: in every line (cells differing in one dimension) whose margin is known,
   a lone suppressed cell gets a partner (the smallest other cell), so the margin minus the
   published cells does not give it away;
3. secondary, exact: for each suppressed cell, linear programs over "known margins = sums of
   cells, every present cell >= 1" give its smallest and largest possible value; a cell whose
   range collapses to one value gets another partner, until none is pinned down.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Beyond this many suppressed cells the exact check (two small linear programs per cell)
#: gets slow; the layer refuses instead of publishing an unchecked table.
MAX_EXACT_SUPPRESSED = 400
_TOL = 1e-9


class DisclosureTooComplex(ValueError):
    """The table is too large to check exactly; the caller must refuse the result."""


@dataclass(frozen=True)
class Cell:
    key: tuple[Hashable, ...]  # values of the grouping dimensions
    n: int  # distinct persons contributing
    threshold: int  # strictest min_cell_count of the holders contributing
    dominated: bool = False  # a sum in this cell is dominated by its top contributors


@dataclass(frozen=True)
class Suppression:
    primary: frozenset[int]
    secondary: frozenset[int]
    #: primary cells still determined after all partners were used up: the result must not
    #: be published (the caller refuses it)
    unprotected: frozenset[int] = frozenset()

    @property
    def all(self) -> frozenset[int]:
        return self.primary | self.secondary


def is_dominated(total_abs: float | None, top_abs: float | None, *, k: float) -> bool:
    """(n, k) dominance: the top ``n`` contributors (already summed in ``top_abs``) hold more
    than fraction ``k`` of the cell's total. A cell whose contributions cannot be evaluated
    counts as dominated (fail closed)."""
    if total_abs is None or top_abs is None:
        return True
    if total_abs <= 0:
        return False  # all contributions zero: the sum reveals nothing about anyone
    return top_abs / total_abs > k


def _margins(cells: Sequence[Cell]) -> list[list[int]]:
    """Every known margin as the list of cell indices it sums (proper subsets of dims)."""
    if not cells:
        return []
    dims = len(cells[0].key)
    out: list[list[int]] = []
    for size in range(dims):
        for subset in itertools.combinations(range(dims), size):
            groups: dict[tuple, list[int]] = defaultdict(list)
            for i, c in enumerate(cells):
                groups[tuple(c.key[d] for d in subset)].append(i)
            for members in groups.values():
                total = sum(cells[i].n for i in members)
                if total >= max(cells[i].threshold for i in members):
                    out.append(members)
    return out


def _lines(cells: Sequence[Cell]) -> list[list[int]]:
    """Lines: groups of cells that agree on all dimensions but one."""
    if not cells:
        return []
    dims = len(cells[0].key)
    out: list[list[int]] = []
    for free in range(dims):
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, c in enumerate(cells):
            groups[tuple(v for d, v in enumerate(c.key) if d != free)].append(i)
        out.extend(groups.values())
    return out


def exposed_cells(cells: Sequence[Cell], suppressed: frozenset[int] | set[int]) -> set[int]:
    """Suppressed cells that the attacker model can determine exactly.

    For each suppressed cell a pair of linear programs gives the smallest and largest value
    it can take given the known margins and that every present cell holds at least one
    person; when the two meet, the cell is determined. (Linear algebra alone misses
    recoveries that go through the lower bound, e.g. a remainder of 2 over two present
    cells; the property tests found exactly such tables.)
    """
    sup = sorted(suppressed)
    if not sup:
        return set()
    if len(sup) > MAX_EXACT_SUPPRESSED:
        raise DisclosureTooComplex(f"{len(sup)} suppressed cells exceed the exact-check limit")
    try:
        from scipy.optimize import linprog
    except ImportError:  # cannot check: the caller must refuse rather than publish unchecked
        raise DisclosureTooComplex("the exact disclosure check needs scipy") from None
    col = {cell: j for j, cell in enumerate(sup)}
    rows = [hidden for members in _margins(cells) if (hidden := [i for i in members if i in col])]
    if not rows:
        return set()
    a = np.zeros((len(rows), len(sup)))
    b = np.zeros(len(rows))
    for r, hidden in enumerate(rows):
        for i in hidden:
            a[r, col[i]] = 1.0
        b[r] = sum(cells[i].n for i in hidden)
    # Only cells that appear in some equation can be pinned down.
    involved = sorted({i for hidden in rows for i in hidden})
    bounds = [(1, None)] * len(sup)
    exposed: set[int] = set()
    for cell in involved:
        c = np.zeros(len(sup))
        c[col[cell]] = 1.0
        lo = linprog(c, A_eq=a, b_eq=b, bounds=bounds, method="highs")
        hi = linprog(-c, A_eq=a, b_eq=b, bounds=bounds, method="highs")
        if lo.status != 0 or hi.status != 0:
            exposed.add(cell)  # cannot evaluate: treat as exposed (fail closed)
        elif (-hi.fun) - lo.fun < 0.5:
            exposed.add(cell)
    return exposed


def suppress(cells: Sequence[Cell]) -> Suppression:
    """Primary and secondary suppression for one aggregate result (see module docstring)."""
    primary = frozenset(i for i, c in enumerate(cells) if c.n < c.threshold or c.dominated)
    suppressed = set(primary)
    if not cells or not cells[0].key or not suppressed:
        return Suppression(primary, frozenset())
    lines = _lines(cells)
    lines_of: dict[int, list[list[int]]] = defaultdict(list)
    for line in lines:
        for i in line:
            lines_of[i].append(line)

    def smallest_partner(candidates: list[int]) -> int | None:
        free = [i for i in candidates if i not in suppressed]
        return min(free, key=lambda i: (cells[i].n, i)) if free else None

    while True:
        changed = False
        for line in lines:
            hidden = [i for i in line if i in suppressed]
            if len(hidden) != 1 or len(line) < 2:
                continue
            if sum(cells[i].n for i in line) < max(cells[i].threshold for i in line):
                continue  # that margin is itself unpublishable
            partner = smallest_partner(line)
            if partner is not None:
                suppressed.add(partner)
                changed = True
        if changed:
            continue
        exposed = exposed_cells(cells, suppressed)
        if not exposed:
            break
        for cell in sorted(exposed):
            near = [i for line in lines_of[cell] for i in line]
            partner = smallest_partner(near) if near else None
            if partner is None:
                partner = smallest_partner(list(range(len(cells))))
            if partner is None:
                break  # everything is suppressed already
            suppressed.add(partner)
            changed = True
        if not changed:
            return Suppression(primary, frozenset(suppressed) - primary, frozenset(exposed) & primary)
    return Suppression(primary, frozenset(suppressed) - primary)


def round_to_base(value: int | float | None, base: int) -> int | float | None:
    """Round a count to the nearest multiple of ``base`` (halves up); ``base`` <= 1 is a no-op."""
    if value is None or base <= 1:
        return value
    return int((int(value) + base // 2) // base * base)


# -- k-anonymity for record-level releases --------------------------------------------


@dataclass(frozen=True)
class KAnonymityResult:
    ok: bool
    k: int
    quasi_identifiers: tuple[str, ...]
    rows: int
    classes: int  # equivalence classes (distinct QI combinations)
    smallest_class: int  # size of the smallest class (0 for an empty table)
    violating_classes: int  # classes smaller than k
    violating_rows: int  # rows in those classes


def check_k_anonymity(table: pa.Table, quasi_identifiers: Sequence[str], k: int) -> KAnonymityResult:
    """Is every combination of quasi-identifier values shared by at least ``k`` rows?

    ``table`` is a pyarrow Table (a pandas DataFrame is converted). Nulls count as a value of
    their own. An empty table is trivially k-anonymous; an unknown column raises KeyError.

    >>> t = pa.table({"sex": ["F", "F", "M"], "birth_year": [1950, 1950, 1960]})
    >>> r = check_k_anonymity(t, ["sex", "birth_year"], 2)
    >>> (r.ok, r.smallest_class, r.violating_rows)
    (False, 1, 1)
    """
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    if k < 1:
        raise ValueError("k must be at least 1")
    qis = tuple(quasi_identifiers)
    missing = [q for q in qis if q not in table.column_names]
    if missing:
        raise KeyError(f"quasi-identifiers not in the table: {missing}")
    if table.num_rows == 0:
        return KAnonymityResult(True, k, qis, 0, 0, 0, 0, 0)
    if not qis:
        n = table.num_rows
        return KAnonymityResult(n >= k, k, qis, n, 1, n, int(n < k), n if n < k else 0)
    counts = table.select(list(qis)).group_by(list(qis), use_threads=False).aggregate([([], "count_all")])
    sizes = counts.column("count_all")
    small = pc.less(sizes, k)
    violating_classes = int(pc.sum(small).as_py() or 0)
    violating_rows = int(pc.sum(pc.if_else(small, sizes, 0)).as_py() or 0)
    return KAnonymityResult(
        ok=violating_classes == 0,
        k=k,
        quasi_identifiers=qis,
        rows=table.num_rows,
        classes=counts.num_rows,
        smallest_class=int(pc.min(sizes).as_py()),
        violating_classes=violating_classes,
        violating_rows=violating_rows,
    )
