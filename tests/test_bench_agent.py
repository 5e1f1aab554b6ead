"""The agent-cost rows of `make bench` measure what they say: the repeated log, the floor, /proc reads."""

from __future__ import annotations

import os
from itertools import pairwise
from pathlib import Path

import can
import pytest

from tests.harness import bench_agent as ba


@pytest.fixture
def drive() -> ba.Drive:
    drives = [d for d in ba.real_drives() if d.name.startswith("Kona")]
    if not drives:
        pytest.skip(f"the real recordings are absent ({ba.REALDATA} not found)")
    return drives[0]


def test_the_repeated_log_has_the_frames_asked_for_in_time_order(drive: ba.Drive, tmp_path: Path) -> None:
    out = tmp_path / "x.log"
    assert ba.repeated_log(drive.log, drive.channel, out, 60_000) == 60_000
    stamps = [frame.timestamp for frame in can.LogReader(str(out))]
    assert len(stamps) == 60_000 and all(a < b for a, b in pairwise(stamps))
    decoded, fps = ba.floor_fps(out, drive.dbc)
    assert 0 < decoded <= 60_000 and fps > 0


def test_proc_reads_are_this_process_s_own() -> None:
    before, ran_before = ba.cpu_seconds(os.getpid()), ba.run_ns(os.getpid())
    sum(range(3_000_000))  # some CPU: tens of milliseconds
    assert ba.cpu_seconds(os.getpid()) >= before
    assert ba.run_ns(os.getpid()) - ran_before > 1_000_000  # > 1 ms, to the nanosecond
    assert ba.hwm_kib(os.getpid()) > 10_000  # a Python with the project imported: more than 10 MB
