"""The rollups' bench (:mod:`tests.harness.bench_history`) runs end to end on a few minutes of data."""

from __future__ import annotations

from pathlib import Path

from tests.harness import bench_history


def test_the_history_bench_runs_on_a_short_day(tmp_path: Path) -> None:
    measures = bench_history.history_rows(tmp_path / "day.sqlite", hours=0.1)
    assert [m[0] for m in measures] == [
        "history, 1 day, 1,000 points (SQLite)",
        "history via the API, 1 day, 1,000 points (SQLite)",
        "export, the same day (SQLite)",
    ]
    assert all(value > 0 for _, value, _, _ in measures)
    assert "--points 1000: 2880 buckets of 0.5 s" in measures[0][3]  # 6 minutes: raw 0.5 s buckets
    assert ": 2880 buckets, best of" in measures[1][3]  # the API answers the same buckets
