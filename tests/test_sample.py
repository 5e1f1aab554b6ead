"""The sampler: tick n at n / rate on the source clock, last value at or before, absent before the first."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sample import Sampler


def run(
    rate: Fraction, events: list[tuple[int, int, int]], signals: int = 1
) -> list[tuple[int, list[int | None]]]:
    out: list[tuple[int, list[int | None]]] = []
    sampler = Sampler(rate, signals, lambda tick, values: out.append((tick, list(values))))
    for micros, column, value in events:
        sampler.feed(micros, [(column, value)])
    sampler.finish()
    return out


def reference(rate: Fraction, events: list[tuple[int, int, int]]) -> list[tuple[int, list[int | None]]]:
    """Straight from the definition, with exact fractions (no shared code with the sampler)."""
    first = Fraction(events[0][0], 1_000_000)
    last = Fraction(events[-1][0], 1_000_000)
    tick = -(-first * rate // 1)
    rows = []
    while Fraction(tick) / rate <= last:
        at = Fraction(tick) / rate
        seen = [value for micros, _, value in events if Fraction(micros, 1_000_000) <= at]
        rows.append((int(tick), [seen[-1] if seen else None]))
        tick += 1
    return rows


def test_frame_exactly_on_a_tick_counts_for_that_tick() -> None:
    rows = run(Fraction(50), [(1_000_000, 0, 1), (1_020_000, 0, 2), (1_030_000, 0, 3), (1_040_000, 0, 4)])
    assert rows == [(50, [1]), (51, [2]), (52, [4])]


def test_absent_before_the_first_frame_never_zero() -> None:
    rows = run(Fraction(50), [(1_000_000, 0, 7), (1_100_000, 1, 9)], signals=2)
    assert rows[0] == (50, [7, None])
    assert rows[-1] == (55, [7, 9])


def test_first_tick_is_at_or_after_the_first_frame() -> None:
    rows = run(Fraction(50), [(1_000_001, 0, 1), (1_100_000, 0, 2)])
    assert rows[0][0] == 51


def test_non_integer_rate_is_exact() -> None:
    rate = Fraction(1, 3)  # one tick every 3 s
    rows = run(rate, [(0, 0, 1), (3_000_000, 0, 2), (8_999_999, 0, 3), (9_000_000, 0, 4)])
    assert rows == [(0, [1]), (1, [2]), (2, [2]), (3, [4])]


def test_late_frame_updates_following_ticks_and_is_counted() -> None:
    out: list[tuple[int, list[int | None]]] = []
    sampler = Sampler(Fraction(10), 1, lambda t, v: out.append((t, list(v))))
    sampler.feed(1_000_000, [(0, 1)])
    sampler.feed(1_250_000, [(0, 2)])
    sampler.feed(1_150_000, [(0, 3)])  # 100 ms late, from another bus
    sampler.feed(1_400_000, [(0, 4)])
    sampler.finish()
    assert sampler.late_frames == 1
    assert out == [(10, [1]), (11, [1]), (12, [1]), (13, [3]), (14, [4])]


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.integers(0, 70_000), min_size=1, max_size=40),
    start=st.integers(0, 10**12),
    rate=st.sampled_from([Fraction(50), Fraction(100), Fraction(1), Fraction(25, 2), Fraction(1000)]),
)
def test_matches_the_definition(gaps: list[int], start: int, rate: Fraction) -> None:
    micros = start
    events = []
    for index, gap in enumerate(gaps):
        micros += gap
        events.append((micros, 0, index))
    assert run(rate, events) == reference(rate, events)
