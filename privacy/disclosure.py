"""Disclosure control for record-level releases: k-anonymity.

Pure functions over plain values (no DuckDB, no HTTP), so the laws can be tested directly.
The aggregate tier's disclosure control (thresholds, dominance, cell-key perturbation) is in
``access.aggregate`` and ``privacy.cellkey``: perturbed margins make the linear-programming
secondary suppression this module used to do unnecessary, as in ABS TableBuilder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

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
