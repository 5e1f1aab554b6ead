"""The fleet bench (:mod:`tests.harness.bench_fleet`) runs end to end on a small fleet, with two receivers."""

from __future__ import annotations

import pytest

from tests.harness import bench_fleet


@pytest.mark.slow
def test_a_small_fleet_is_acked_whole_through_two_receivers() -> None:
    fleet = bench_fleet.build_fleet(vehicles=4, seconds=30.0)
    assert (
        fleet.chunks == 30 and 1490 <= fleet.samples <= 1500
    )  # 30 s at 50 Hz (the first ticks may be empty)
    assert all(len(batches) == 3 for batches in fleet.batches.values())
    run = bench_fleet.one_run(fleet, 2)
    assert run.samples == 4 * fleet.samples and len(run.latencies) == run.batches == 12
    assert sum(run.split) == 12  # every batch stored once, by one of the two
    assert 0 < run.percentile(50) <= run.percentile(95) <= run.seconds
    rows = bench_fleet.rows_of([run], fleet)
    assert [row[0] for row in rows] == [
        "4 vehicles, 2 receivers: ingest",
        "4 vehicles, 2 receivers: P95 publish to ack",
    ]
    assert rows[0][1] == run.samples / run.seconds and rows[0][3].startswith(f"{run.samples:,} samples in ")
