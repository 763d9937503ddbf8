"""A node's guard against differencing its own re-published PROM key figures.

The problem. A node re-publishes its holder's key figures by year every few minutes (with its
catalogue). Each publication passes the static rule (:mod:`pipelines.outcomes.keyfigures`), but
two publications of one year a few late responders apart disclose that small group: the counts'
difference says how many, the difference of n·mean their summed index or VAS (one person: the
value), the improved counts' difference their improvement. An attacker holding every message the
node ever sent can also combine more than two publications.

The options weighed.

* **Cell-key perturbation** (``privacy/cellkey.py``, the ONS method) gives the same noise to the
  same set of persons, but two sets a person apart get independent noise whose difference is
  small against a count and says nothing about means: it protects counts, not means or
  intervals, and it would make the federation's exact pooling inexact.
* **Publishing only closed, frozen periods** stops the current year from being seen at all until
  it closes, and a closed year still receives late responders and corrections; freezing alone
  either hides them for ever or re-opens the hole.
* **A differencing guard** (chosen): the node keeps what it has published and lets a new version
  of a cell out only if no combination of everything it has ever published isolates fewer than
  ``min_cell_count`` persons; otherwise it re-sends the earlier version unchanged (sticky). It
  protects every statistic at once (counts, shares, means, intervals, improvement), because any
  difference the hub can form is over at least ``k`` persons, it keeps the hub's pooling exact,
  and the current year stays visible. Its price: a cell can lag the data until enough has
  changed, and a figure re-sent from an earlier version may still include a person removed since
  (it is withheld only when the new data itself falls under the static rule).

The rule. A period's six figures form five *families*, each a set of persons and what they
contribute (:data:`FAMILIES`): the responders (persons count; responses rows per person), the
response-rate denominator (each person: in it, responded or not), the index values, the VAS
values and the improvement pairs (paired, improved or not). Every number published for a family
is a linear functional of its contributions: a count of persons in a subset, or a sum (and a sum of
squares, behind the interval) of their values. So the node keeps, per family, the *columns* of
everything it published: one per person (a bit per published version and count, e.g. "in the
denominator of version 3, responded in version 3") and one per (person, value) pair (a bit per
version: a changed value is a new column, so a corrected value counts as a change too). Columns
with the same bits form an *atom*; any combination of published numbers involves whole atoms. A
new version is published only if, with it added, every atom of fewer than ``k`` columns lies in
the span of the atoms of at least ``k`` (``rank(all atoms) == rank(big atoms)``): then no
combination of the published numbers, of any number of versions and with any coefficients, is
supported on small atoms only, so none isolates a group of fewer than ``k`` persons. This implies
the pairwise rule (two versions differ by 0 or at least ``k`` columns) and also closes what the
pairwise rule leaves open: versions {a,b,c}, {d,e,f} and {a..g} differ pairwise by at least 3,
yet the third minus the first two is g alone. Ranks are taken modulo two 31-bit primes; a prime
can only lower a rank, so a rare unlucky prime can only hold a version back, except in the
unlikely case that both primes hide the same dependence (see :func:`_leaks`).

A share is audited on both sides (counted and not counted) because both are columns of its family;
a share's change with one side unchanged (e.g. k new persons, none improved) passes, the same
group-level homogeneity the static rule cannot see within a cell either. Families are audited
separately, and a combination across families is not checked. A value, an improvement or a
response within the denominator is published in one family only; what two families' numbers
combined give (e.g. persons minus the persons behind the mean index, or responders minus
responders in the denominator) is a count of persons who lack a value or a visit, which the
single table has always published too. That residual is not closed here.

State and failure. The node keeps the state owner-only (0600) in its private state directory,
outside the warehouse: column keys are 128-bit keyed BLAKE2b hashes of (period, family,
person[, value]) under a sub-key of a random node key kept beside it (also 0600), so the file holds
no identifier or value and cannot be linked across periods or families. Each period's entry is
JSON text under an HMAC-SHA-256 with another sub-key. A missing state (when the key exists), a missing or damaged key, an unreadable file or a
period whose MAC fails closes the guard: those periods' shown cells go out withheld
(``keyfigures.guard_unavailable``) and a reason code is logged, until the state is restored
(deleting both files is a deliberate reset that forgets what was published). A family that has
published :data:`MAX_VERSIONS` versions keeps its last one.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hdp.settings import open_private
from pipelines.outcomes.keyfigures import (
    GUARD_UNAVAILABLE,
    Contributions,
    Figure,
    KeyFigures,
    PeriodFigures,
)

log = logging.getLogger(__name__)

STATE_FILE = "keyfigures_guard.json"
KEY_FILE = "keyfigures_guard.key"
LOCK_FILE = "keyfigures_guard.lock"
FORMAT = "hdp.keyfigures_guard/1"
KEY_BYTES = 32
#: Versions a family may publish per period; then its last one is re-sent (bounds the audit).
MAX_VERSIONS = 64
#: Two primes below 2**31, so that products of residues fit in int64.
_PRIMES = (2_147_483_647, 2_147_483_629)

# Reason codes in the node's log (never a person, a value or a count of persons).
INITIALISED = "keyfigures.guard.initialised"
NEW_VERSION = "keyfigures.guard.new_version"
HELD = "keyfigures.guard.small_difference"  # the earlier version is re-sent
FROZEN = "keyfigures.guard.max_versions"
STATE_MISSING = "keyfigures.guard.state_missing"
STATE_CORRUPT = "keyfigures.guard.state_corrupt"
KEY_MISSING = "keyfigures.guard.key_missing"
PERIOD_CORRUPT = "keyfigures.guard.period_corrupt"


@dataclass(frozen=True)
class Family:
    """Persons behind some figures and the numbers published about them."""

    name: str
    figures: tuple[str, ...]  # the PeriodFigures fields computed from this family
    counts: tuple[str, ...]  # count functionals: which subsets of the family are counted
    valued: bool  # whether a per-person value is summed (means, intervals, response rows)


FAMILIES = (
    Family("responders", ("responses", "persons"), ("persons",), valued=True),  # value: rows
    Family("rate", ("response_rate",), ("denominator", "responded"), valued=False),
    Family("index", ("mean_index",), ("persons",), valued=True),
    Family("vas", ("mean_vas",), ("persons",), valued=True),
    Family("improvement", ("improved_share",), ("paired", "improved"), valued=False),
)


def family_members(
    family: Family, c: Contributions
) -> tuple[dict[Any, tuple[int, ...]], dict[Any, float]] | None:
    """Each person's membership of the family's counted subsets, and their value; None when the
    family does not apply (no denominator)."""
    if family.name == "responders":
        return {p: (1,) for p in c.responders}, {p: float(n) for p, n in c.responders.items()}
    if family.name == "rate":
        if c.denominator is None:
            return None
        return {p: (1, int(p in c.responders)) for p in c.denominator}, {}
    if family.name in ("index", "vas"):
        values = c.index if family.name == "index" else c.vas
        return {p: (1,) for p in values}, dict(values)
    if family.name == "improvement":
        return {p: (1, int(better)) for p, better in c.improved.items()}, {}
    raise ValueError(f"unknown family {family.name!r}")


# -- keyed columns ------------------------------------------------------------------------------


class Keys:
    """Column keys and MACs under the node's guard key (separate sub-keys for each use)."""

    def __init__(self, key: bytes) -> None:
        # keyed BLAKE2b is a MAC by construction, and several times faster than HMAC per column
        column_key = hmac.new(key, b"hdp.keyfigures_guard.columns", hashlib.sha256).digest()
        self._columns = hashlib.blake2b(key=column_key, digest_size=16)
        self._mac = hmac.new(key, b"hdp.keyfigures_guard.mac", hashlib.sha256).digest()

    def columns(self, prefix: str, items: Iterable[str]) -> list[str]:
        """128-bit keyed hashes of ``prefix`` + each item (hex)."""
        base = self._columns.copy()
        base.update(prefix.encode())
        out = []
        for item in items:
            h = base.copy()
            h.update(item.encode())
            out.append(h.hexdigest())
        return out

    def mac(self, text: str) -> str:
        return hmac.new(self._mac, text.encode(), hashlib.sha256).hexdigest()


def candidate_columns(
    keys: Keys,
    period: str,
    family: Family,
    members: Mapping[Any, tuple[int, ...]],
    values: Mapping[Any, float],
) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """The candidate version's person columns (key -> membership bits) and value columns."""
    sep = "\x1f"
    person_keys = keys.columns(f"{period}{sep}{family.name}{sep}p{sep}", [str(p) for p in members])
    counts = dict(zip(person_keys, members.values(), strict=True))
    valued = keys.columns(
        f"{period}{sep}{family.name}{sep}v{sep}", [f"{p}{sep}{float(v).hex()}" for p, v in values.items()]
    )
    return counts, set(valued)


# -- one family's state and decision --------------------------------------------------------------


@dataclass
class FamilyState:
    """What one family of one period has published: its versions (digest and figures) and, per
    column, a bitmask of the versions it is in (one per count functional for person columns)."""

    versions: list[dict[str, Any]] = field(default_factory=list)
    current: int | None = None
    counts: dict[str, list[int]] = field(default_factory=dict)
    values: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "versions": self.versions,
            "current": self.current,
            "counts": self.counts,
            "values": self.values,
        }

    @staticmethod
    def from_json(doc: Any, family: Family) -> FamilyState:
        if not isinstance(doc, Mapping) or set(doc) != {"versions", "current", "counts", "values"}:
            raise ValueError("family state")
        versions, current, counts, values = doc["versions"], doc["current"], doc["counts"], doc["values"]
        if not isinstance(versions, list) or len(versions) > MAX_VERSIONS:
            raise ValueError("versions")
        for v in versions:
            if not isinstance(v, Mapping) or not isinstance(v.get("digest"), str):
                raise ValueError("version")
            _figures_from_json(v.get("figures"), family)
        if current is not None and not (isinstance(current, int) and 0 <= current < len(versions)):
            raise ValueError("current")
        if not isinstance(counts, dict) or not isinstance(values, dict):
            raise ValueError("columns")
        # the columns themselves are not checked one by one: the period's MAC proves this node
        # wrote them, and the audit only reads them
        return FamilyState(versions, current, counts, values)


def _digest(counts: Mapping[str, tuple[int, ...]], values: set[str]) -> str:
    h = hashlib.sha256()
    keys = sorted(counts)
    h.update("\n".join(keys).encode())
    h.update(bytes(b for key in keys for b in counts[key]))  # membership bits are 0 or 1
    h.update(b"|")
    h.update("\n".join(sorted(values)).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Decision:
    outcome: str  # NEW_VERSION, HELD, FROZEN or "same" (the candidate equals a published version)
    version: int | None  # the version whose figures go out; None: none yet (the candidate is held)


def decide(
    state: FamilyState,
    counts: Mapping[str, tuple[int, ...]],
    values: set[str],
    figures: Mapping[str, Figure],
    threshold: int,
    n_counts: int,
) -> Decision:
    """Publish the candidate as a new version of the family (updating ``state``), re-send an
    identical earlier version, or hold it back and re-send the current one. Pure but for ``state``."""
    digest = _digest(counts, values)
    for i, version in enumerate(state.versions):
        if version["digest"] == digest:
            state.current = i
            return Decision("same", i)
    v = len(state.versions)
    if v >= MAX_VERSIONS:
        return Decision(FROZEN, state.current)
    # the atoms with the candidate as version v, without copying the state
    atoms: Counter[tuple[int | str, ...]] = Counter()
    for key, masks in state.counts.items():
        bits = counts.get(key)
        atoms[
            ("c", *masks)
            if bits is None
            else ("c", *(m | (b << v) for m, b in zip(masks, bits, strict=True)))
        ] += 1
    for key, bits in counts.items():
        if key not in state.counts:
            atoms[("c", *(b << v for b in bits))] += 1
    for key, mask in state.values.items():
        atoms[("v", mask | (1 << v)) if key in values else ("v", mask)] += 1
    atoms[("v", 1 << v)] += len(values - state.values.keys())
    if _leaks(atoms, v + 1, n_counts, threshold):
        return Decision(HELD, state.current)
    for key, bits in counts.items():
        masks = state.counts.setdefault(key, [0] * n_counts)
        for j, b in enumerate(bits):
            masks[j] |= b << v
    for key in values:
        state.values[key] = state.values.get(key, 0) | (1 << v)
    state.versions.append({"digest": digest, "figures": _figures_to_json(figures)})
    state.current = v
    return Decision(NEW_VERSION, v)


def _leaks(atoms: Counter[tuple[int | str, ...]], n_versions: int, n_counts: int, threshold: int) -> bool:
    """Whether some combination of the published numbers is supported on atoms of fewer than
    ``threshold`` columns only, i.e. whether the small atoms' columns are not all in the span of
    the big atoms' columns. Rows: (version, count functional) and (version, value sum).

    Modular ranks never exceed the rational rank; a version passes only when, for both primes,
    adding the small atoms raises no rank. It could wrongly pass only if both primes lowered the
    rank of the whole matrix below its rational rank, i.e. divided all of its maximal minors."""
    small = [a for a, size in atoms.items() if 0 < size < threshold]
    if not small:
        return False
    big = [a for a, size in atoms.items() if size >= threshold]  # ("c", *masks) or ("v", mask)
    rows = n_versions * (n_counts + 1)

    def column(atom: tuple[int | str, ...]) -> np.ndarray:
        col = np.zeros(rows, dtype=np.int64)
        masks = [int(m) for m in atom[1:]]
        for u in range(n_versions):
            if atom[0] == "c":
                for j, mask in enumerate(masks):
                    col[u * (n_counts + 1) + j] = (mask >> u) & 1
            else:
                col[u * (n_counts + 1) + n_counts] = (masks[0] >> u) & 1
        return col

    big_m = np.stack([column(a) for a in big], axis=1) if big else np.zeros((rows, 0), dtype=np.int64)
    all_m = np.concatenate([big_m, np.stack([column(a) for a in small], axis=1)], axis=1)
    return any(_rank_mod(all_m, p) != _rank_mod(big_m, p) for p in _PRIMES)


def _rank_mod(matrix: np.ndarray, p: int) -> int:
    """Rank of an integer matrix over GF(p), ``p`` < 2**31 (Gauss-Jordan on int64 residues)."""
    a = matrix.astype(np.int64) % p
    n_rows, n_cols = a.shape
    rank = 0
    for c in range(n_cols):
        if rank == n_rows:
            break
        nonzero = np.flatnonzero(a[rank:, c])
        if len(nonzero) == 0:
            continue
        pivot = rank + int(nonzero[0])
        a[[rank, pivot]] = a[[pivot, rank]]
        a[rank] = (a[rank] * pow(int(a[rank, c]), p - 2, p)) % p
        others = np.flatnonzero(a[:, c])
        others = others[others != rank]
        if len(others):
            a[others] = (a[others] - (a[others, c][:, None] * a[rank][None, :]) % p) % p
        rank += 1
    return rank


def _figures_to_json(figures: Mapping[str, Figure]) -> dict[str, Any]:
    return {
        name: {"value": f.value, "low": f.low, "high": f.high, "persons": f.persons}
        for name, f in figures.items()
    }


def _figures_from_json(doc: Any, family: Family) -> dict[str, Figure]:
    if not isinstance(doc, Mapping) or set(doc) != set(family.figures):
        raise ValueError("figures")
    out = {}
    for name, f in doc.items():
        if not isinstance(f, Mapping) or set(f) != {"value", "low", "high", "persons"}:
            raise ValueError("figure")
        if not isinstance(f["persons"], int) or not isinstance(f["value"], int | float):
            raise ValueError("figure")
        out[name] = Figure(value=float(f["value"]), low=f["low"], high=f["high"], persons=f["persons"])
    return out


# -- a period and the whole table -------------------------------------------------------------------


def guard_period(
    entry: dict[str, FamilyState],
    row: PeriodFigures,
    c: Contributions,
    keys: Keys,
    threshold: int,
) -> tuple[PeriodFigures, list[str]]:
    """The row to publish for one period (each family new, identical or sticky) and the outcome
    codes; updates ``entry`` (family name -> state)."""
    candidate = row.figures()
    published = dict(candidate)
    outcomes = []
    for family in FAMILIES:
        figures = {name: candidate[name] for name in family.figures}
        found = family_members(family, c)
        if found is None or not all(f.shown for f in figures.values()):
            continue  # withheld (or no denominator): nothing about the family leaves
        state = entry.setdefault(family.name, FamilyState())
        counts, values = candidate_columns(keys, row.period, family, *found)
        decision = decide(state, counts, values, figures, threshold, len(family.counts))
        outcomes.append(decision.outcome)
        if decision.outcome == NEW_VERSION:
            chosen = figures
        elif decision.version is None:
            # held with nothing published yet (a single version of shown cells always passes, so
            # this is a guard that knows no earlier version to fall back on): withhold
            chosen = {name: Figure.withhold(GUARD_UNAVAILABLE) for name in family.figures}
        else:
            chosen = _figures_from_json(state.versions[decision.version]["figures"], family)
        published.update(chosen)
    return PeriodFigures(period=row.period, **published), outcomes


def closed_row(row: PeriodFigures) -> PeriodFigures:
    """A period the guard cannot vouch for: every shown cell withheld."""
    return PeriodFigures(
        period=row.period,
        **{
            name: f if not f.shown else Figure.withhold(GUARD_UNAVAILABLE)
            for name, f in row.figures().items()
        },
    )


class GuardStore:
    """The guard's key and state files in the node's private state directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.state_path = self.directory / STATE_FILE
        self.key_path = self.directory / KEY_FILE

    def open(self, holder: str) -> tuple[Keys | None, dict[str, Any], str | None]:
        """(keys, raw period entries, reason the whole guard is closed or None). A directory with
        neither file is a first start: a key and an empty state are created."""
        has_key, has_state = self.key_path.exists(), self.state_path.exists()
        if not has_key and not has_state:
            key = secrets.token_bytes(KEY_BYTES)
            self._write(self.key_path, key)
            self.save(holder, {})
            log.info("PROM key figures guard: %s", INITIALISED)
            return Keys(key), {}, None
        if not has_key:
            return None, {}, KEY_MISSING
        if not has_state:
            return None, {}, STATE_MISSING
        try:
            key = self.key_path.read_bytes()
            doc = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None, {}, STATE_CORRUPT
        if len(key) != KEY_BYTES:
            return None, {}, KEY_MISSING
        if (
            not isinstance(doc, dict)
            or doc.get("format") != FORMAT
            or doc.get("holder") != holder
            or not isinstance(doc.get("periods"), dict)
        ):
            return None, {}, STATE_CORRUPT
        return Keys(key), doc["periods"], None

    def save(self, holder: str, periods: Mapping[str, Any]) -> None:
        data = json.dumps({"format": FORMAT, "holder": holder, "periods": periods}, separators=(",", ":"))
        self._write(self.state_path, data.encode())

    def _write(self, path: Path, data: bytes) -> None:
        """Owner-only, atomically (a crash leaves the old file or the new one, never half)."""
        tmp = path.with_name(path.name + ".tmp")
        with os.fdopen(open_private(tmp), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _load_entry(raw: Any, keys: Keys) -> dict[str, FamilyState]:
    """A period's entry: its families as JSON text and the MAC of that text."""
    if not isinstance(raw, Mapping) or set(raw) != {"families", "mac"}:
        raise ValueError("period entry")
    text, mac = raw["families"], raw["mac"]
    if not isinstance(text, str) or not isinstance(mac, str) or not hmac.compare_digest(mac, keys.mac(text)):
        raise ValueError("period MAC")
    doc = json.loads(text)
    families = {f.name: f for f in FAMILIES}
    if not isinstance(doc, dict) or not set(doc) <= set(families):
        raise ValueError("families")
    return {name: FamilyState.from_json(d, families[name]) for name, d in doc.items()}


def _entry_json(entry: Mapping[str, FamilyState], keys: Keys) -> dict[str, str]:
    text = json.dumps({name: state.to_json() for name, state in entry.items()}, separators=(",", ":"))
    return {"families": text, "mac": keys.mac(text)}


#: :func:`guard_status`: the guard has never run in this directory (it starts at the first publication)
NOT_STARTED = "keyfigures.guard.not_started"


def guard_status(directory: Path, holder: str) -> dict[str, Any]:
    """What the guard in ``directory`` holds, for the node's operator: whether it is open (and if
    not, the reason code every cell is withheld with), and per period each family's number of
    published versions and whether the period's MAC verifies. Reads only: creates no file, takes
    no lock. Holds no figure, no person and no key material, so it may be printed and logged."""
    store = GuardStore(directory)
    if not store.key_path.exists() and not store.state_path.exists():
        return {"holder": holder, "open": False, "reason": NOT_STARTED, "periods": []}
    keys, raw_periods, closed = store.open(holder)
    if keys is None:
        return {"holder": holder, "open": False, "reason": closed, "periods": []}
    periods = []
    for period in sorted(raw_periods):
        try:
            entry = _load_entry(raw_periods[period], keys)
        except ValueError:
            periods.append({"period": period, "verified": False, "reason": PERIOD_CORRUPT, "families": {}})
            continue
        families = {
            name: {"versions": len(state.versions), "full": len(state.versions) >= MAX_VERSIONS}
            for name, state in sorted(entry.items())
        }
        periods.append({"period": period, "verified": True, "reason": None, "families": families})
    return {"holder": holder, "open": True, "reason": None, "periods": periods}


def guard_key_figures(
    kf: KeyFigures, contributions: Mapping[str, Contributions], directory: Path
) -> KeyFigures:
    """``kf`` as the node may publish it, given everything it published before (kept in
    ``directory``); see the module docstring. The state is saved before the figures are returned,
    so a figure that leaves has always been recorded. Runs under an exclusive lock on the
    directory's lock file: two publishers reading the same state and each saving its own new
    version would forget one of them, and later versions would be audited without it."""
    fd = open_private(Path(directory) / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _guard_locked(kf, contributions, GuardStore(directory))
    finally:
        os.close(fd)  # closing releases the lock


def _guard_locked(
    kf: KeyFigures, contributions: Mapping[str, Contributions], store: GuardStore
) -> KeyFigures:
    keys, raw_periods, closed = store.open(kf.holder)
    if keys is None:
        log.warning("PROM key figures withheld, the guard is closed: %s", closed)
        return _with_rows(kf, tuple(closed_row(r) for r in kf.rows))
    periods = dict(raw_periods)
    rows = []
    outcomes: Counter[str] = Counter()
    changed = False
    for row in kf.rows:
        try:
            entry = _load_entry(periods[row.period], keys) if row.period in periods else {}
        except ValueError:
            log.warning("PROM key figures of one period withheld: %s", PERIOD_CORRUPT)
            rows.append(closed_row(row))
            continue  # the damaged entry is kept as it is, for whoever restores it
        before = {name: (len(state.versions), state.current) for name, state in entry.items()}
        guarded, codes = guard_period(entry, row, contributions[row.period], keys, kf.threshold)
        rows.append(guarded)
        outcomes.update(codes)
        if {name: (len(state.versions), state.current) for name, state in entry.items()} != before:
            periods[row.period] = _entry_json(entry, keys)
            changed = True
    if changed:
        store.save(kf.holder, periods)
    for code in (HELD, FROZEN):
        if outcomes[code]:
            log.info("PROM key figures: %d cell families re-sent unchanged (%s)", outcomes[code], code)
    return _with_rows(kf, tuple(rows))


def _with_rows(kf: KeyFigures, rows: tuple[PeriodFigures, ...]) -> KeyFigures:
    return KeyFigures(
        holder=kf.holder,
        threshold=kf.threshold,
        period=kf.period,
        rows=rows,
        improvement=kf.improvement,
        rule=kf.rule,
        notes=kf.notes,
    )
