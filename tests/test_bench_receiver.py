"""The receiver's bench (:mod:`tests.harness.bench_receiver`) runs end to end on a short drive."""

from __future__ import annotations

from pathlib import Path

from agent.sim import simulate, write_log
from tests.harness import bench_receiver


def test_the_receiver_bench_runs_on_a_short_drive(tmp_path: Path) -> None:
    log = tmp_path / "short.log.gz"
    write_log(log, simulate("city", 3.0, 5, bench_receiver.DBC))
    hour = bench_receiver.build_hour(log, repeats=2)
    assert hour.last_tick - hour.first_tick + 1 == hour.samples  # the boots follow each other, no gap
    measures, digest = bench_receiver.measure(hour, tmp_path, with_digest=True)
    assert [m[0] for m in measures][:2] == ["receiver ingest, one hour", "receiver ingest rate"]
    assert all(value > 0 for _, value, _, _ in measures) and digest
