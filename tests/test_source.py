"""Acquisition: python-can's readers for every format, malformed lines named and skipped, pacing."""

from __future__ import annotations

import gzip
import threading
import time
from pathlib import Path

import can
import pytest

from agent.clock import LiveClock
from agent.decode import build_decoder
from agent.errors import LogFormatError, SourceError
from agent.source import MAX_LINE_CHARS, FrameFeed, LogStats, paced, read_log

ROOT = Path(__file__).resolve().parent.parent


def frames(count: int = 50) -> list[can.Message]:
    return [
        can.Message(
            timestamp=1000.0 + i * 0.01,
            arbitration_id=0x100 + i % 3,
            data=bytes([i % 256] * 8),
            channel="can0",
            is_extended_id=False,
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("suffix", [".log", ".asc", ".blf", ".csv", ".trc", ".log.gz", ".asc.gz", ".csv.gz"])
def test_every_format_reads_back_the_same_frames(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"drive{suffix}"
    with can.Logger(path) as writer:
        for message in frames():
            writer.on_message_received(message)
    got = list(read_log(path))
    assert [(m.arbitration_id, bytes(m.data)) for m in got] == [
        (m.arbitration_id, bytes(m.data)) for m in frames()
    ]
    assert all(isinstance(m.channel, str) for m in got)
    if suffix.startswith((".log", ".csv")):
        assert [round(m.timestamp, 6) for m in got] == [round(m.timestamp, 6) for m in frames()]


def test_malformed_candump_lines_are_named_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "bad.log.gz"
    with gzip.open(path, "wt") as out:
        out.write(
            "(1.000000) can0 101#0102\nthis is not a frame\n(1.010000) can0 101#01ZZ\n(1.020000) can0 101#0103\n"
        )
    stats = LogStats()
    got = list(read_log(path, stats))
    assert [bytes(m.data) for m in got] == [b"\x01\x02", b"\x01\x03"]
    assert stats.bad_lines == 2 and stats.first_bad.startswith(f"{path}:2: ")


def test_a_50_kb_line_is_skipped_and_named_and_a_12_byte_classic_frame_is_not_decoded(tmp_path: Path) -> None:
    path = tmp_path / "odd.log"
    huge = "(1.010000) can0 101#" + "00" * 25_000
    path.write_text(
        f"(1.000000) can0 101#0000000000000000\n{huge}\n(1.020000) can0 101#001122334455667788990011\n"
        "(1.030000) can0 101#1027000000000000\n"
    )
    stats = LogStats()
    got = list(read_log(path, stats))
    assert [len(m.data) for m in got] == [8, 12, 8]
    assert stats.bad_lines == 1
    assert (
        stats.first_bad
        == f"{path}:2: a line of {len(huge) + 1} characters, longer than any CAN frame: skipped"
    )
    decoder = build_decoder(
        [("can0", [ROOT / "dbc" / "reference_ev.dbc"], "auto")], ["DriveSpeed.VehicleSpeed"]
    )
    assert [bool(decoder.decode(m)) for m in got] == [True, False, True]
    assert decoder.stats.oversize == {("can0", 0x101): 1}


def test_a_line_just_at_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "long.log"
    line = "(1.000000) can0 101#0000000000000000"
    path.write_text(line + " " * (MAX_LINE_CHARS - len(line) - 1) + "\n" + line + "\n")
    stats = LogStats()
    assert len(list(read_log(path, stats))) == 2 and stats.bad_lines == 0


def test_other_formats_stop_at_a_bad_line_and_name_it(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "timestamp,arbitration_id,extended,remote,error,dlc,data\n1.0,0x101,0,0,0,2,AQI=\n1.1,zz,0,0,0\n"
    )
    with pytest.raises(LogFormatError, match=r"bad.csv:3: "):
        list(read_log(path))


def test_unknown_format_and_missing_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"unknown log format '.txt'"):
        list(read_log(tmp_path / "drive.txt"))
    with pytest.raises(SourceError, match=r"missing.log: cannot open"):
        list(read_log(tmp_path / "missing.log"))


def test_paced_replay_follows_the_log_clock_at_speed() -> None:
    stop = threading.Event()
    start = time.monotonic()
    list(paced(frames(21), 2.0, stop))  # 0.2 s of log at 2x
    elapsed = time.monotonic() - start
    assert 0.08 < elapsed < 0.5
    start = time.monotonic()
    list(paced(frames(1000), None, stop))
    assert time.monotonic() - start < 0.5


def test_pacing_restarts_after_a_jump_back_and_skips_long_silences() -> None:
    stop = threading.Event()
    drive = frames(151)  # 1.5 s of log
    later = [can.Message(timestamp=m.timestamp + 86_400, arbitration_id=1, data=b"") for m in drive]
    start = time.monotonic()
    list(paced(drive + drive + later, 10.0, stop))  # a drive, itself again, then a day later, at 10x
    elapsed = time.monotonic() - start
    assert 0.35 < elapsed < 2.0  # three times 0.15 s (each up to PACE_STEP_S early): not rushed, no day


def test_live_clock_follows_steps_forward_and_absorbs_steps_back() -> None:
    wall, mono = [1000.0], [50.0]
    clock = LiveClock(wall=lambda: wall[0], monotonic=lambda: mono[0])
    assert clock.stamp(1000.0) == 1000.0
    wall[0], mono[0] = 1001.0, 51.0
    assert clock.stamp(1000.99) == 1000.99  # no step: the wall clock's time
    wall[0], mono[0] = 1002.0 - 180, 52.0  # NTP steps the clock 180 s back
    assert clock.stamp(1002.0 - 180) == 1002.0  # absorbed: times go on, nothing sampled twice
    wall[0], mono[0] = 1003.0 + 86_400 - 180, 53.0  # then a day forward (a Pi's first NTP sync)
    assert clock.stamp(1003.0 + 86_400 - 180) == 1003.0 + 86_400  # followed: a gap, never a step back
    assert [(round(s.seconds), s.followed) for s in clock.steps] == [(-180, False), (86_400, True)]
    assert clock.step_count == 2


def test_feed_ends_only_when_every_producer_ended() -> None:
    feed = FrameFeed(producers=2, list_size=4)
    stop = threading.Event()
    threads = [threading.Thread(target=feed.pump, args=(iter(frames(10)), stop)) for _ in range(2)]
    for thread in threads:
        thread.start()
    received = 0
    while (item := feed.get(1.0)) is not None:
        received += len(item)
    assert received == 20
    for thread in threads:
        thread.join()


def test_live_feed_hands_over_on_quiet_periods() -> None:
    feed = FrameFeed(producers=1, list_size=256)
    stop = threading.Event()
    first = frames(1)[0]
    thread = threading.Thread(target=feed.pump, args=(iter([first, None]), stop))
    thread.start()
    assert feed.get(1.0) == [first]
    thread.join()


def test_a_closed_feed_ends_after_what_was_queued_though_a_producer_still_runs() -> None:
    feed = FrameFeed(producers=2, list_size=2)
    stop = threading.Event()
    first = frames(4)
    thread = threading.Thread(target=feed.pump, args=(iter(first), stop))  # one producer ends
    thread.start()
    thread.join()
    feed.close()  # the other never does (a reader blocked in its bus's receive)
    got: list[can.Message] = []
    while (item := feed.get(1.0)) is not None:
        got.extend(item)
    assert got == first
    assert feed.get(0.01) is None  # and stays ended
