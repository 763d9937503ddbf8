"""Cell-key perturbation (the ABS TableBuilder method, as in ONS ``cell-key-perturbation``).

Pure functions over plain values, so the laws can be tested directly.

How it works:

* every record of a release carries a random **record key** in ``0..255`` and every person a
  random **person key**, drawn once when the release is built and fixed for it (they live in
  the restricted zone, never in a researcher's view);
* a cell's **cell key** is the sum of its contributors' keys modulo 256: row counts use the
  record keys of the rows in the cell, person counts the person keys of its persons;
* the noise added to a count ``n`` is read from a **perturbation table** (ptable) at
  ``(pcv, cell key)``, where ``pcv`` is ``n`` for ``n <= 750`` and ``((n - 1) % 250) + 501``
  above (the ONS convention, so a ptable written for the ONS package works here unchanged).

The same contributors always give the same cell key and so the same noise: repeating a
query, or averaging many, recovers nothing; a difference of two queries carries the noise
of both.

**The ptable this platform generates** (``build_ptable``) from a holder's settings
(``rounding_base`` b, ``max_noise`` D, ``variance`` V, ``threshold`` t):

* every published count is a multiple of b and within D of the true count, and a count that
  meets the threshold t is never published below it;
* it is unbiased (mean noise 0, up to the 1/256 granularity of the cell key);
* its variance is V where that is feasible, else the nearest feasible value: the smallest is
  that of random rounding to b, the largest puts all mass on the two extreme multiples;
* the distribution is a mixture of those two (both have mean n, so any mixture does).

Why multiples of b with b >= t: a cell is withheld when it has fewer than t persons, so its
true person count is 1..t-1 and never a multiple of b. Any sum or difference of published
counts is a multiple of b, so *no* combination of published cells, from any number of
queries, equals a withheld cell's true count. That is the differencing law the property
tests check.

Sums, means and variances are perturbed consistently with their counts: the mean gets
noise scaled to the largest single person's influence on it (``magnitude`` times the
largest per-person contribution divided by the count), and the published sum is the
published mean times the published count of values, so the three published figures agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

KEY_RANGE = 256  # record, person and cell keys are 0..255
MAX_PCV = 750  # ptable rows 1..750; larger counts reuse rows 501..750 (ONS convention)
_PCV_PERIOD = 250


class PerturbationSettingsError(ValueError):
    """A holder's perturbation settings are inconsistent (the layer refuses to start)."""


@dataclass(frozen=True)
class PerturbationSettings:
    """One holder's (or a release's strictest combined) disclosure settings.

    ``threshold``: cells with fewer persons, or whose perturbed count is below it, are withheld.
    ``rounding_base``: published counts are multiples of it (must be >= threshold, and
    divide 250 so that the ONS row reuse above 750 keeps counts on the grid).
    ``max_noise``: the largest change to a count (>= rounding_base - 1).
    ``variance``: the target variance of the noise on a count.
    ``magnitude``: noise on a mean, as a fraction of the largest single person's influence.
    """

    threshold: int = 5
    rounding_base: int = 5
    max_noise: int = 7
    variance: float = 6.0
    magnitude: float = 0.5

    def __post_init__(self) -> None:
        b, t, d = self.rounding_base, self.threshold, self.max_noise
        if t < 1 or b < 1:
            raise PerturbationSettingsError("threshold and rounding_base must be at least 1")
        if b < t:
            raise PerturbationSettingsError(
                f"rounding_base ({b}) must be at least the threshold ({t}): otherwise a difference of "
                "published counts can equal a withheld cell's count"
            )
        if _PCV_PERIOD % b:
            raise PerturbationSettingsError(f"rounding_base ({b}) must divide {_PCV_PERIOD}")
        if d < b - 1:
            raise PerturbationSettingsError(f"max_noise ({d}) must be at least rounding_base - 1 ({b - 1})")
        if self.variance < 0 or self.magnitude < 0:
            raise PerturbationSettingsError("variance and magnitude cannot be negative")

    @classmethod
    def for_holder(cls, threshold: int, declared: Mapping[str, float]) -> PerturbationSettings:
        """A holder's settings from its ``min_cell_count`` and declared ``perturbation``; what it
        leaves out defaults to the strict side (the smallest base >= threshold that divides 250,
        noise up to two bases)."""
        base = int(declared.get("rounding_base", 0)) or next(
            b for b in (1, 2, 5, 10, 25, 50, 125, 250) if b >= threshold
        )
        return cls(
            threshold=int(threshold),
            rounding_base=base,
            max_noise=int(declared.get("max_noise", 2 * base - 1)),
            variance=float(declared.get("variance", base * base / 2)),
            magnitude=float(declared.get("magnitude", 0.5)),
        )

    def public(self) -> dict[str, float | int]:
        """What stewards and researchers may read (never a key)."""
        return {
            "threshold": self.threshold,
            "rounding_base": self.rounding_base,
            "max_noise": self.max_noise,
            "variance": self.variance,
            "magnitude": self.magnitude,
        }


def strictest(settings: Iterable[PerturbationSettings]) -> PerturbationSettings:
    """Parameter by parameter the strictest of several holders' settings (one release, one
    ptable: mixing grids inside one table would break the multiple-of-base law)."""
    items = list(settings)
    if not items:
        return PerturbationSettings()
    base = max(s.rounding_base for s in items)
    return PerturbationSettings(
        threshold=max(s.threshold for s in items),
        rounding_base=base,
        max_noise=max(max(s.max_noise for s in items), base - 1),
        variance=max(s.variance for s in items),
        magnitude=max(s.magnitude for s in items),
    )


def _noise_distribution(n: int, s: PerturbationSettings) -> list[tuple[int, float]]:
    """(published value, probability) for true count ``n`` (see the module docstring)."""
    b, d = s.rounding_base, s.max_noise
    # A count that meets the threshold is never published below it (the cell would vanish,
    # and then its true count, a multiple of the base, could be recovered by differencing).
    lo_end = max(s.threshold if n >= s.threshold else 0, n - d)
    support = [v for v in range(math.ceil(lo_end / b) * b, n + d + 1, b)]
    below = [v for v in support if v <= n]
    above = [v for v in support if v >= n]
    if not below and above:
        # threshold <= n < base: the only value on the grid that keeps the cell is the base
        # (biased upwards, for counts a holder with threshold < base accepts)
        return [(above[0], 1.0)]
    if not below or not above:  # cannot happen for d >= b - 1; fail loudly if it does
        raise PerturbationSettingsError(f"no unbiased perturbation for count {n}")
    lo, hi = below[-1], above[0]  # random rounding: the two nearest multiples
    lo_x, hi_x = below[0], above[-1]  # the two extremes

    def two_point(a: int, c: int) -> dict[int, float]:
        if a == c:
            return {a: 1.0}
        p_c = (n - a) / (c - a)
        return {a: 1.0 - p_c, c: p_c}

    near, far = two_point(lo, hi), two_point(lo_x, hi_x)
    v_min = (n - lo) * (hi - n)
    v_max = (n - lo_x) * (hi_x - n)
    w = 0.0 if v_max <= v_min else min(1.0, max(0.0, (s.variance - v_min) / (v_max - v_min)))
    mix: dict[int, float] = {}
    for dist, weight in ((near, 1.0 - w), (far, w)):
        for v, p in dist.items():
            mix[v] = mix.get(v, 0.0) + weight * p
    return sorted((v, p) for v, p in mix.items() if p > 0)


@lru_cache(maxsize=16)
def build_ptable(s: PerturbationSettings) -> dict[tuple[int, int], int]:
    """(pcv, cell key) -> noise, for pcv 1..750 and cell keys 0..255 (cached per settings:
    building it takes about 0.1 s; callers must not modify it).

    Cell key k stands for the quantile (k + 0.5) / 256 of the noise distribution, so the 256
    keys split it into equal-probability slices.
    """
    table: dict[tuple[int, int], int] = {}
    for pcv in range(1, MAX_PCV + 1):
        dist = _noise_distribution(pcv, s)
        cumulative: list[tuple[float, int]] = []
        acc = 0.0
        for v, p in dist:
            acc += p
            cumulative.append((acc, v))
        for key in range(KEY_RANGE):
            u = (key + 0.5) / KEY_RANGE
            value = next((v for c, v in cumulative if u <= c + 1e-12), cumulative[-1][1])
            table[(pcv, key)] = value - pcv
    return table


def pcv_of(n: int) -> int:
    """The ptable row for a count (ONS convention: rows 501..750 repeat above 750)."""
    return n if n <= MAX_PCV else ((n - 1) % _PCV_PERIOD) + 501


def perturb_count(n: int, cell_key: int, ptable: Mapping[tuple[int, int], int]) -> int:
    """The published value of a true count ``n`` >= 0 with ``cell_key`` (0 stays 0)."""
    if n <= 0:
        return 0
    return n + ptable.get((pcv_of(n), cell_key % KEY_RANGE), 0)


def cell_key(keys: Iterable[int]) -> int:
    """The cell key of contributors with these record (or person) keys."""
    return sum(keys) % KEY_RANGE


def unit_noise(cell_key_: int, salt: int) -> float:
    """A value in (-1, 1) fixed by the cell key and a salt (what the measure measures), so the
    same cell always gets the same noise on each of its measures, and measures differ."""
    mixed = (cell_key_ * 167 + (salt % KEY_RANGE + 1) * 97) % KEY_RANGE  # 167 is odd: a bijection on 0..255
    return (mixed + 0.5) / (KEY_RANGE / 2) - 1.0


def perturb_mean(
    mean: float, count: int, largest_contribution: float, cell_key_: int, salt: int, magnitude: float
) -> float:
    """A mean with noise of the size of one person's largest possible influence on it."""
    if count <= 0:
        return mean
    return mean + unit_noise(cell_key_, salt) * magnitude * abs(largest_contribution) / count


def perturb_variance(
    variance: float, count: int, largest_contribution: float, cell_key_: int, salt: int, magnitude: float
) -> float:
    """A variance with noise of the size of one person's largest influence on it (>= 0)."""
    if count <= 1:
        return variance
    noisy = variance + unit_noise(cell_key_, salt) * magnitude * abs(largest_contribution) / (count - 1)
    return max(0.0, noisy)


def perturb_table(
    counts: Sequence[int], cell_keys: Sequence[int], ptable: Mapping[tuple[int, int], int], threshold: int
) -> list[int | None]:
    """Perturb a column of counts; None where the perturbed count is below ``threshold``.

    The same computation as ``create_perturbed_table`` of the ONS package (whose output the
    tests compare with this), for the counts of an already tabulated table.
    """
    out: list[int | None] = []
    for n, k in zip(counts, cell_keys, strict=True):
        value = perturb_count(n, k, ptable)
        out.append(None if value < threshold else value)
    return out
