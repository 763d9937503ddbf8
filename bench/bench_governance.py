"""Benchmark: consent exclusion set at release/query time (``excluded_consent_keys``).

Every release build and every access-layer query asks governance for the consent keys excluded
for a purpose at that moment, so this runs against the whole consent register. The register is
filled with ``BENCH_GOV_PERSONS`` persons (default 200,000; a fifth opted out of secondary use, some
with purpose-specific opt-ins/opt-outs and closed periods), on SQLite (default) or the URL in
``BENCH_GOV_URL``.

Baseline, side by side in the same run: the straightforward implementation that loads the valid
records as ORM objects and resolves them per person in Python (the first version); the shipped one
resolves in the database with one window-function query.
Prints medians of ``BENCH_GOV_RUNS`` (default 5) runs; last line:
``BENCH governance persons=<n> records=<n> excluded=<n> sql_s=<s> orm_baseline_s=<s> ratio=<x>``.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, or_, select  # noqa: E402

from governance import consent  # noqa: E402
from governance.models import ConsentRow  # noqa: E402
from governance.purposes import SECONDARY_USE  # noqa: E402
from governance.store import session_scope, upgrade  # noqa: E402

PERSONS = int(os.environ.get("BENCH_GOV_PERSONS", "200000"))
RUNS = int(os.environ.get("BENCH_GOV_RUNS", "5"))
T0 = datetime(2025, 1, 1, tzinfo=UTC)
AT = T0 + timedelta(days=200)
PURPOSE = "scientific_research"


def fill(url: str) -> int:
    rnd = random.Random(5)
    rows = []
    for i in range(PERSONS):
        key = f"{i:064x}"
        r = rnd.random()
        if r < 0.20:
            rows.append((key, SECONDARY_USE, "opt_out", T0 + timedelta(days=rnd.randrange(300)), None))
        if 0.15 < r < 0.25:
            rows.append(
                (
                    key,
                    PURPOSE,
                    rnd.choice(["opt_in", "opt_out"]),
                    T0 + timedelta(days=rnd.randrange(300)),
                    T0 + timedelta(days=300 + rnd.randrange(300)),
                )
            )
        if 0.25 < r < 0.30:
            rows.append((key, "education", "opt_out", T0, None))
    with session_scope(url) as s:
        for start in range(0, len(rows), 50_000):
            s.execute(
                insert(ConsentRow),
                [
                    {
                        "consent_key": k,
                        "scope": sc,
                        "choice": c,
                        "valid_from": vf,
                        "valid_to": vt,
                        "source_ref": "bench",
                        "recorded_at": T0,
                        "recorded_by": "bench",
                    }
                    for k, sc, c, vf, vt in rows[start : start + 50_000]
                ],
            )
    return len(rows)


def baseline(session) -> frozenset[str]:  # type: ignore[no-untyped-def]
    """ORM objects, then the same resolution rule."""
    q = select(ConsentRow).where(
        ConsentRow.scope.in_([SECONDARY_USE, PURPOSE]),
        ConsentRow.valid_from <= AT,
        or_(ConsentRow.valid_to.is_(None), ConsentRow.valid_to > AT),
    )
    by_key: dict[str, list[ConsentRow]] = {}
    for r in session.execute(q).scalars():
        by_key.setdefault(r.consent_key, []).append(r)
    return frozenset(k for k, recs in by_key.items() if consent._resolve(recs, PURPOSE))


def timed(fn) -> tuple[float, frozenset[str]]:  # type: ignore[no-untyped-def]
    times, result = [], frozenset()
    for _ in range(RUNS):
        with session_scope(URL) as s:
            t = time.perf_counter()
            result = fn(s)
            times.append(time.perf_counter() - t)
    return statistics.median(times), result


if __name__ == "__main__":
    tmp = tempfile.mkdtemp(prefix="hdp_bench_gov_")
    os.environ.setdefault("HDP_HOME", tmp)
    URL = os.environ.get("BENCH_GOV_URL") or f"sqlite:///{tmp}/gov.sqlite"
    upgrade(URL)
    records = fill(URL)
    t_new, got = timed(lambda s: consent.excluded_consent_keys(s, purpose=PURPOSE, at=AT))
    t_old, expected = timed(baseline)
    assert got == expected, "the two implementations disagree"
    print(f"persons {PERSONS}, consent records {records}, excluded {len(got)}; median of {RUNS}")
    print(f"  excluded_consent_keys (SQL window)   : {t_new:.3f} s")
    print(f"  baseline (ORM objects):                {t_old:.3f} s")
    print(
        f"BENCH governance persons={PERSONS} records={records} excluded={len(got)} "
        f"sql_s={t_new:.3f} orm_baseline_s={t_old:.3f} ratio={t_old / t_new:.2f}"
    )
