"""Cell-key perturbation: the ptable's laws, and agreement with the ONS reference package."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.cellkey import (
    KEY_RANGE,
    PerturbationSettings,
    PerturbationSettingsError,
    build_ptable,
    cell_key,
    perturb_count,
    perturb_table,
    strictest,
)

SETTINGS = [
    PerturbationSettings(threshold=5, rounding_base=5, max_noise=4, variance=0.0),
    PerturbationSettings(threshold=5, rounding_base=5, max_noise=7, variance=6.0),
    PerturbationSettings(threshold=10, rounding_base=10, max_noise=19, variance=40.0),
    PerturbationSettings(threshold=3, rounding_base=5, max_noise=9, variance=100.0),
]


@pytest.mark.parametrize("s", SETTINGS, ids=lambda s: f"t{s.threshold}b{s.rounding_base}d{s.max_noise}")
def test_ptable_laws(s):
    table = build_ptable(s)
    for n in range(1, 751):
        noise = [table[(n, k)] for k in range(KEY_RANGE)]
        published = [n + e for e in noise]
        assert all(v % s.rounding_base == 0 for v in published), n
        assert all(abs(e) <= s.max_noise for e in noise), n
        assert all(v >= 0 for v in published), n
        if n >= s.threshold:
            assert all(v >= s.threshold for v in published), n  # a cell that qualifies never vanishes
        # Unbiased up to the 1/256 granularity of the keys (except threshold <= n < base,
        # where the base is the only value that keeps the cell).
        if not s.threshold <= n < s.rounding_base:
            assert abs(statistics.fmean(noise)) <= s.max_noise / KEY_RANGE * 2 + 1e-9, n
    # Far from zero the variance is the asked one where feasible (random rounding is the floor).
    for n in range(100, 120):
        var = statistics.pvariance([table[(n, k)] for k in range(KEY_RANGE)])
        r = n % s.rounding_base
        floor = r * (s.rounding_base - r)
        assert var >= floor - 1.0
        b, d = s.rounding_base, s.max_noise
        ceiling = (n - -(-(n - d) // b) * b) * ((n + d) // b * b - n)  # all mass on the extremes
        assert var == pytest.approx(min(max(s.variance, floor), ceiling), abs=1.5)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"threshold": 10, "rounding_base": 5}, "threshold"),
        ({"rounding_base": 7, "threshold": 5}, "divide"),
        ({"rounding_base": 10, "threshold": 10, "max_noise": 5}, "max_noise"),
        ({"variance": -1.0}, "negative"),
    ],
)
def test_inconsistent_settings_are_refused(kwargs, word):
    with pytest.raises(PerturbationSettingsError, match=word):
        PerturbationSettings(**kwargs)


def test_strictest_combines_parameter_by_parameter():
    s = strictest(
        [
            PerturbationSettings(threshold=5, rounding_base=5, max_noise=4, variance=1.0),
            PerturbationSettings(threshold=10, rounding_base=10, max_noise=9, variance=0.0, magnitude=1.0),
        ]
    )
    assert (s.threshold, s.rounding_base, s.max_noise, s.variance, s.magnitude) == (10, 10, 9, 1.0, 1.0)


@given(st.integers(1, 100_000), st.integers(0, 255))
@settings(max_examples=300, deadline=None)
def test_same_cell_same_noise_and_grid(n, key):
    s = SETTINGS[1]
    table = _table(s)
    a, b = perturb_count(n, key, table), perturb_count(n, key, table)
    assert a == b
    assert a % s.rounding_base == 0 and abs(a - n) <= s.max_noise


_TABLES: dict[PerturbationSettings, dict] = {}


def _table(s):
    if s not in _TABLES:
        _TABLES[s] = build_ptable(s)
    return _TABLES[s]


# -- agreement with the ONS package ---------------------------------------------------


def _ons_ptable_frame(table: dict) -> pd.DataFrame:
    rows = [(pcv, key, value) for (pcv, key), value in table.items()]
    return pd.DataFrame(rows, columns=["pcv", "ckey", "pvalue"])


def _microdata(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "county": rng.choice(["03", "12", "18", "20"], rows),
            "sex": rng.choice(["F", "M"], rows),
            "band": rng.choice(["0-17", "18-64", "65+"], rows, p=[0.05, 0.55, 0.40]),
            "diabetes": rng.choice(["typ1", "typ2", "other"], rows, p=[0.1, 0.85, 0.05]),
            "record_key": rng.integers(0, 256, rows),
        }
    )


def _ours(data: pd.DataFrame, dims: list[str], table: dict, threshold: int) -> dict[tuple, int | None]:
    grouped = data.groupby(dims).agg(n=("record_key", "size"), keys=("record_key", "sum")).reset_index()
    published = perturb_table(
        grouped["n"].tolist(), [cell_key([k]) for k in grouped["keys"]], table, threshold
    )
    return {
        tuple(row[d] for d in dims): value
        for (_, row), value in zip(grouped.iterrows(), published, strict=True)
    }


def _theirs(
    data: pd.DataFrame, dims: list[str], ptable: pd.DataFrame, threshold: int
) -> dict[tuple, int | None]:
    from cell_key_perturbation.create_perturbed_table import create_perturbed_table

    out = create_perturbed_table(
        data=data,
        ptable=ptable,
        geog=[dims[0]],
        tab_vars=dims[1:],
        record_key="record_key",
        threshold=threshold,
    )
    out = out[out["pre_sdc_count"] > 0]  # the ONS table also lists empty combinations
    return {
        tuple(row[d] for d in dims): (None if pd.isna(row["count"]) else int(row["count"]))
        for _, row in out.iterrows()
    }


@pytest.mark.parametrize("ptable_source", ["ons_10_5_rule", "ours_t5_b5", "ours_t10_b10"])
def test_agrees_with_ons_package_cell_for_cell(ptable_source, capsys):
    """Same microdata, same record keys, same ptable: every cell's published count is equal.

    Run both ways: our implementation with the ptable the ONS package ships (threshold 10,
    rounding to 5), and the ONS package with ptables generated here. Cells span every pcv
    regime: tiny counts, 1..750, and above 750 where rows 501..750 are reused.
    """
    if ptable_source == "ons_10_5_rule":
        ptable = pd.read_csv(_ons_ptable_file())
        table = {(int(r.pcv), int(r.ckey)): int(r.pvalue) for r in ptable.itertuples()}
        threshold = 10
    else:
        s = SETTINGS[1] if ptable_source == "ours_t5_b5" else SETTINGS[2]
        table = _table(s)
        ptable = _ons_ptable_frame(table)
        threshold = s.threshold
    agree = cells = 0
    for seed, rows in ((1, 400), (2, 9_000), (3, 60_000)):
        data = _microdata(rows, seed)
        dims = ["county", "sex", "band", "diabetes"] if rows < 60_000 else ["sex", "diabetes"]
        ours, theirs = _ours(data, dims, table, threshold), _theirs(data, dims, ptable, threshold)
        assert ours.keys() == theirs.keys()
        for key in ours:
            cells += 1
            agree += ours[key] == theirs[key]
        assert ours == theirs
    with capsys.disabled():
        print(f"\n  ONS agreement ({ptable_source}): {agree}/{cells} cells identical")


def _ons_ptable_file() -> Path:
    """The ptable the ONS wheel ships as data (pip installs it at the environment's root)."""
    path = Path(sys.prefix) / "ptable_10_5_rule.csv"
    assert path.is_file(), f"{path} missing: is cell-key-perturbation installed (requirements.lock)?"
    return path
