"""``hdp quality history`` never cuts silently: past --limit it says how many rows exist and how to see them."""

from __future__ import annotations

from click.testing import CliRunner

from edge.commands import quality as quality_cmd


def _rows(n: int) -> list[dict]:
    return [
        {
            "started_at": f"2026-11-{1 + i // 100:02d}T00:00:{i % 60:02d}",
            "run_id": f"run-{i:04d}",
            "zone": "raw",
            "scope": "ndr",
            "check_id": "register.bmi.range",
            "verdict": "pass",
            "failed_rows": i % 3,
            "total_rows": 100,
            "failed_share": (i % 3) / 100,
        }
        for i in range(n)
    ]


def _history(monkeypatch, n: int, *args: str) -> list[str]:
    monkeypatch.setattr(quality_cmd.store, "history", lambda *a, **k: _rows(n))
    result = CliRunner().invoke(quality_cmd.quality, ["history", *args])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_history_past_the_limit_says_so_with_the_total_and_how_to_see_more(hdp_home, monkeypatch):
    lines = _history(monkeypatch, 250)
    rows = [ln for ln in lines if "register.bmi.range" in ln]
    assert len(rows) == 200 and "run-0249" in rows[-1] and "run-0049" not in "".join(rows)
    assert lines[-1].startswith("showing the 200 most recent of 250 rows")
    assert "--limit" in lines[-1] and "--all" in lines[-1]

    lines = _history(monkeypatch, 250, "--limit", "10")
    assert len([ln for ln in lines if "register.bmi.range" in ln]) == 10 and "of 250 rows" in lines[-1]


def test_history_within_the_limit_or_with_all_shows_everything_without_a_notice(hdp_home, monkeypatch):
    lines = _history(monkeypatch, 250, "--all")
    assert len([ln for ln in lines if "register.bmi.range" in ln]) == 250
    assert not any("most recent of" in ln for ln in lines)
    lines = _history(monkeypatch, 5)
    assert len([ln for ln in lines if "register.bmi.range" in ln]) == 5
    assert not any("most recent of" in ln for ln in lines)
