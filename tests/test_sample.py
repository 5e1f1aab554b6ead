"""The sampler: ticks on a time base that never runs back, values held a bounded time, gaps free.

The hypothesis test drives it with arbitrary timestamp sequences (repeated, jittering back, jumping
back days, jumping forward a year) against a reference written from the module's definition with
exact fractions and brute force, and checks that every frame is accounted for (on time or late).
"""

from __future__ import annotations

import argparse
import bisect
import time
from collections.abc import Sequence
from fractions import Fraction
from math import ceil, floor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.commands import sample as sample_command
from agent.sample import Sampler

Frame = tuple[int, Sequence[tuple[int, int]]]  # (micros, [(column, value)])
Row = tuple[int, list[int | None]]
DAY = 86_400 * 1_000_000
YEAR = 365 * DAY


def run(
    rate: Fraction, frames: Sequence[Frame], signals: int = 1, **options: object
) -> tuple[list[Row], Sampler]:
    out: list[Row] = []
    sampler = Sampler(rate, signals, lambda tick, values: out.append((tick, list(values))), **options)  # type: ignore[arg-type]
    for micros, updates in frames:
        sampler.feed(micros, list(updates))
    sampler.finish()
    return out, sampler


def single(events: Sequence[tuple[int, int]]) -> list[Frame]:
    return [(micros, [(0, value)]) for micros, value in events]


class Reference:
    """The definition, brute force: no code shared with the sampler, every time an exact Fraction."""

    def __init__(self, rate: Fraction, signals: int, hold_s: float | None, periods: Sequence[float | None]):
        self.rate, self.signals = rate, signals
        self.fixed = None if hold_s is None else Fraction(hold_s)
        self.period = [Fraction(p or 1) for p in [*periods, *([None] * signals)][:signals]]
        self.measured = [False] * signals
        self.hold = [self.fixed if self.fixed is not None else self.auto(p) for p in self.period]

    @staticmethod
    def auto(period: Fraction) -> Fraction:
        return min(Fraction(60), max(Fraction(1), 10 * period))

    def run(self, frames: Sequence[Frame]) -> tuple[list[Row], int, int]:
        segments: list[list[tuple[Fraction, Sequence[tuple[int, int]]]]] = []
        offset, newest, late = Fraction(0), Fraction(0), 0
        for micros, updates in frames:
            at = Fraction(micros, 1_000_000) + offset
            if not segments or at < newest - 1:
                if segments:  # moved by whole ticks into the first tick after the last one's newest frame
                    shift = Fraction(floor(newest * self.rate) + 1 - ceil(at * self.rate)) / self.rate
                    offset, at = offset + shift, at + shift
                segments.append([])
                newest = at
            elif ceil(at * self.rate) < ceil(newest * self.rate):
                late += 1  # a tick at or after it was processed when the newest frame came
            newest = max(newest, at)
            segments[-1].append((at, updates))
        rows: list[Row] = []
        for segment in segments:
            rows += self.segment_rows(segment)
        return rows, late, len(segments) - 1 if segments else 0

    def segment_rows(self, frames: list[tuple[Fraction, Sequence[tuple[int, int]]]]) -> list[Row]:
        states = []  # after each frame, per signal: (value, time of its frame, hold) or None
        state: list[tuple[int, Fraction, Fraction] | None] = [None] * self.signals
        previous: list[Fraction | None] = [None] * self.signals
        for at, updates in frames:
            for column, value in updates:
                before = previous[column]
                interval = None if before is None or self.fixed is not None else at - before
                within = interval is not None and 0 < interval <= self.hold[column]
                if (
                    interval is not None
                    and within
                    and (not self.measured[column] or interval > self.period[column])
                ):
                    self.period[column], self.measured[column] = interval, True
                    self.hold[column] = self.auto(interval)
                previous[column] = at
                state[column] = (value, at, self.hold[column])
            states.append(list(state))
        highest: list[Fraction] = []  # the newest frame time after each frame
        for at, _ in frames:
            highest.append(max(highest[-1], at) if highest else at)
        first, last = ceil(frames[0][0] * self.rate), floor(highest[-1] * self.rate)
        candidates: set[int] = set()
        for index, (at, _) in enumerate(frames):
            longest = max((s[2] for s in states[index] if s is not None), default=Fraction(0))
            candidates.update(range(max(first, ceil(at * self.rate)), floor((at + longest) * self.rate) + 1))
        rows = []
        for tick in sorted(t for t in candidates if first <= t <= last):
            time_ = Fraction(tick) / self.rate
            processed_by = bisect.bisect_right(
                highest, time_
            )  # frames that came before the tick was processed
            cells: list[int | None] = [None] * self.signals
            for column, held in enumerate(states[processed_by - 1]):
                if held is not None and held[1] <= time_ and time_ - held[1] <= held[2]:
                    cells[column] = held[0]
            if any(cell is not None for cell in cells):
                rows.append((tick, cells))
        return rows


STEPS = st.one_of(
    st.integers(0, 70_000),  # a periodic bus, repeated timestamps included
    st.integers(-900_000, 0),  # jitter back, within the reorder window
    st.integers(-5 * DAY, -1_000_001),  # a jump back: a log of two drives, a clock set back
    st.integers(1_000_000, 20_000_000),  # a pause: values expire
    st.integers(DAY, YEAR),  # a day's gap, a year's clock step
)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(STEPS, min_size=1, max_size=40),
    columns=st.lists(st.sets(st.integers(0, 2), max_size=3), min_size=40, max_size=40),
    start=st.integers(0, 10**12),
    rate=st.sampled_from([Fraction(50), Fraction(10), Fraction(1), Fraction(25, 2)]),
    hold_s=st.sampled_from([None, None, 0.05, 0.5, 3.0]),
    periods=st.sampled_from([(), (0.01, None, 2.0)]),
    grid=st.sampled_from([1, 10_000]),  # microseconds, or on a 10 ms grid: frames exactly on ticks and holds
)
def test_every_frame_is_sampled_or_counted_as_the_definition_says(
    steps: list[int],
    columns: list[set[int]],
    start: int,
    rate: Fraction,
    hold_s: float | None,
    periods: tuple[float | None, ...],
    grid: int,
) -> None:
    micros, frames = start - start % grid, []
    for index, step in enumerate(steps):
        micros = max(0, micros + step - step % grid)
        frames.append((micros, [(column, index) for column in sorted(columns[index])]))
    rows, sampler = run(rate, frames, 3, max_hold_s=hold_s, periods=periods)
    expected, late, jumps = Reference(rate, 3, hold_s, periods).run(frames)
    assert rows == expected
    stats = sampler.stats
    assert (stats.frames, stats.late, stats.jumps_back) == (len(frames), late, jumps)
    assert stats.on_time + stats.late == len(frames)  # every frame accounted for
    assert stats.ticks_emitted == len(rows)
    ticks = [tick for tick, _ in rows]
    assert ticks == sorted(set(ticks))  # strictly increasing across segments
    assert all(any(v is not None for v in values) for _, values in rows)  # no all-absent tick


def test_frame_exactly_on_a_tick_counts_for_that_tick() -> None:
    rows, _ = run(Fraction(50), single([(1_000_000, 1), (1_020_000, 2), (1_030_000, 3), (1_040_000, 4)]))
    assert rows == [(50, [1]), (51, [2]), (52, [4])]


def test_absent_before_the_first_frame_never_zero() -> None:
    rows, _ = run(Fraction(50), [(1_000_000, [(0, 7)]), (1_100_000, [(1, 9)])], signals=2)
    assert rows[0] == (50, [7, None])
    assert rows[-1] == (55, [7, 9])


def test_ticks_before_any_signal_is_present_are_not_emitted() -> None:
    rows, sampler = run(Fraction(50), [(1_000_000, []), (1_100_000, [(0, 3)]), (1_140_000, [(0, 4)])])
    assert rows == [(55, [3]), (56, [3]), (57, [4])]
    assert sampler.stats.ticks_skipped == 5 and sampler.stats.gaps == 0


def test_first_tick_is_at_or_after_the_first_frame() -> None:
    rows, _ = run(Fraction(50), single([(1_000_001, 1), (1_100_000, 2)]))
    assert rows[0][0] == 51


def test_non_integer_rate_is_exact() -> None:
    rate = Fraction(1, 3)  # one tick every 3 s
    rows, _ = run(rate, single([(0, 1), (3_000_000, 2), (8_999_999, 3), (9_000_000, 4)]))
    assert rows == [(0, [1]), (1, [2]), (2, [2]), (3, [4])]


def test_late_frame_updates_following_ticks_and_is_counted() -> None:
    events = [(1_000_000, 1), (1_250_000, 2), (1_150_000, 3), (1_400_000, 4)]  # 3: 100 ms late
    rows, sampler = run(Fraction(10), single(events))
    assert sampler.stats.late == 1
    assert rows == [(10, [1]), (11, [1]), (12, [1]), (13, [3]), (14, [4])]


def test_an_older_frame_before_the_next_tick_is_not_late() -> None:
    rows, sampler = run(
        Fraction(10), single([(1_000_000, 1), (1_250_000, 2), (1_220_000, 3), (1_300_000, 4)])
    )
    assert sampler.stats.late == 0
    assert rows == [(10, [1]), (11, [1]), (12, [1]), (13, [4])]


def drive(start: int, seconds: float, period_us: int = 10_000) -> list[Frame]:
    count = round(seconds * 1_000_000 / period_us)
    return [(start + i * period_us, [(0, i), (1, 1000 + i)]) for i in range(count)]


def test_a_drive_followed_by_itself_gives_both_drives_one_after_the_other() -> None:
    once = drive(5_000_000_000, 3.0)
    first, _ = run(Fraction(50), once, 2)
    rows, sampler = run(Fraction(50), once + once, 2)
    assert len(rows) == 2 * len(first)
    assert [v for _, v in rows] == [v for _, v in first] * 2  # the second drive starts with nothing held
    last_of_first, first_of_second = rows[len(first) - 1][0], rows[len(first)][0]
    assert first_of_second == last_of_first + 1  # right after, never on the first drive's ticks
    assert sampler.stats.jumps_back == 1 and sampler.stats.late == 0
    assert sampler.stats.largest_jump_back_s == 2.99


def test_a_jump_back_of_180_s_loses_nothing() -> None:
    frames = drive(10_000_000, 200.0, 100_000)  # 10.0 s to 209.9 s
    back = [(micros + 30_000_000, updates) for micros, updates in drive(0, 10.0, 100_000)]  # 180 s back
    rows, sampler = run(Fraction(10), frames + back, 2)
    assert len(rows) == 2000 + 100 and sampler.stats.jumps_back == 1
    assert [tick for tick, _ in rows] == list(range(100, 2200))


def test_a_held_value_expires_and_the_gap_costs_nothing() -> None:
    frames = drive(0, 1.0) + drive(DAY, 1.0)  # 100 Hz, then a day's silence, then 100 Hz again
    started = time.perf_counter()
    rows, sampler = run(Fraction(50), frames, 2)
    assert time.perf_counter() - started < 2  # a tick-by-tick loop over the day would take minutes
    hold = 50  # max(1 s, 10 x 10 ms) = 1 s of ticks held after the last frame
    assert len(rows) == 50 + hold + 50
    assert rows[49][1] == [98, 1098] and rows[50][1] == rows[50 + hold - 1][1] == [99, 1099]  # held
    assert rows[50 + hold][0] == DAY // 20_000  # the next row is the first tick after the gap
    assert sampler.stats.gaps == 1 and sampler.stats.ticks_skipped == DAY // 20_000 - 100


def test_a_year_s_forward_clock_step_is_O1() -> None:
    frames = [(i * 20_000 + (YEAR if i >= 50 else 0), [(0, i)]) for i in range(100)]
    started = time.perf_counter()
    rows, sampler = run(Fraction(50), frames)
    assert time.perf_counter() - started < 2
    assert len(rows) < 200 and sampler.stats.ticks_skipped > 1_500_000_000


def test_each_signal_is_held_ten_of_its_periods_or_one_second() -> None:
    fast = [(i * 10_000, [(0, i)]) for i in range(10)]  # 100 Hz, stops at 90 ms
    slow = [(i * 1_000_000, [(1, i)]) for i in range(3)]  # 1 Hz, stops at 2 s
    rows, _ = run(Fraction(10), [*sorted(fast + slow), (15_000_000, [])], 2)  # the log ends at 15 s
    by_tick = dict(rows)
    assert by_tick[10][0] == 9 and by_tick[11][0] is None  # 90 ms + 1 s: held; then absent
    assert by_tick[120] == [None, 2] and 121 not in by_tick  # 2 s + 10 s
    assert max(by_tick) == 120


def test_a_dbc_cycle_time_sets_the_hold_before_the_second_frame() -> None:
    rows, _ = run(Fraction(10), single([(0, 1), (3_000_000, 2)]), periods=[0.1])
    assert [tick for tick, _ in rows] == [*range(0, 11), 30]  # held 1 s, not the default 10 s
    rows, _ = run(Fraction(10), single([(0, 1), (3_000_000, 2)]))
    assert [tick for tick, _ in rows] == list(range(0, 31))


def test_a_value_is_present_at_exactly_its_hold() -> None:
    frames = [(0, [(0, 1)]), (100_000, [(1, 2)]), (1_000_000, [])]
    rows, _ = run(Fraction(10), frames, 2, max_hold_s=0.3)
    assert rows == [(0, [1, None]), (1, [1, 2]), (2, [1, 2]), (3, [1, 2]), (4, [None, 2])]


def test_max_hold_s_applies_to_every_signal() -> None:
    rows, _ = run(Fraction(10), [*single([(0, 1), (100_000, 2)]), (1_000_000, [])], max_hold_s=0.25)
    assert rows == [(0, [1]), (1, [2]), (2, [2]), (3, [2])]


def test_a_rate_or_hold_that_is_not_positive_is_refused() -> None:
    for rate, hold in ((Fraction(0), None), (Fraction(1), 0.0)):
        try:
            Sampler(rate, 1, lambda tick, values: None, max_hold_s=hold)
        except ValueError:
            continue
        raise AssertionError(f"accepted rate {rate}, hold {hold}")


def test_sample_prints_no_row_for_a_silence_and_reports_jumps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def lines(start: float) -> list[str]:
        return [f"({start + i * 0.01:.6f}) can0 101#{i:02X}00000000000000" for i in range(50)]

    log = tmp_path / "odd.log"
    log.write_text("\n".join([*lines(1000.0), *lines(1000.0 + 86_400), *lines(1000.0)]) + "\n")
    dbc = Path(__file__).resolve().parent.parent / "dbc" / "reference_ev.dbc"
    args = argparse.Namespace(log=str(log), dbc=[str(dbc)], signals="DriveSpeed.VehicleSpeed", rate_hz=50.0)
    assert sample_command.run(args) == 0
    out, err = capsys.readouterr()
    rows = out.splitlines()[1:]
    assert len(rows) == 25 + 50 + 25 + 25  # a drive and its hold, the drive a day later, then again
    assert rows[24].startswith("1000.480000,") and rows[25].startswith("1000.500000,")
    assert rows[74] == "1001.480000,0.49" and rows[75].startswith("87400.000000,")
    assert rows[100].startswith("87400.500000,")  # the third drive, stepped back a day: right after
    assert "150 frames, 125 ticks" in err and "1 jumps back in time (largest 86400.49 s" in err
    assert "1 gaps with no signal present (no rows)" in err
