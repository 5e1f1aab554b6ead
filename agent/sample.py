"""Sampling stage: decoded values onto a fixed grid, on a time base that never runs backwards.

Grid: tick ``n`` is at ``n / rate`` seconds. A signal's value at a tick is its last decoded value at or
before that time (in arrival order), held for at most the signal's *hold*; it is absent (``None``,
never 0) before its first frame and once its hold has passed. A tick at which no signal is present is
not emitted, so a silence costs nothing however long it is (a day's gap, a year's clock step: O(1)
CPU, memory, disk and wire). Time is compared in integers (microseconds x the rate's numerator)
against the exact rational rate, so a frame stamped exactly on a tick counts for that tick everywhere.

Time base: the source's clock plus an offset, 0 at first.
- A jump forward changes nothing: held values expire, then the ticks without any value are skipped.
- A step back within ``reorder_s`` (default 1 s) of the newest frame is jitter (two buses, one feed):
  the frame is *late* when a tick at or after its time was already processed; it still updates its
  signals for the ticks that follow, and is counted in ``stats.late``.
- A step back of more than ``reorder_s`` (a log made of two drives, a clock set back) starts a new
  *segment*: the current one is finished (its ticks up to its newest frame), every value becomes absent
  (a signal's measured period is kept), and the offset moves by a whole number of ticks so that the
  frame's first tick is the one after the previous segment's last. The log's phase to the grid is
  kept, so a drive followed by itself samples twice exactly as it does alone. Ticks keep increasing,
  so the receiver stores the second drive after the first as chunks of their own, never as an overlap
  of the first. Counted in ``stats.jumps_back``.
- The source's end: the last tick is the one at or before the newest frame (:meth:`Sampler.finish`);
  nothing is held past the end of the source.

Hold: ``max_hold_s`` given, every value is held that long at most. ``None`` (auto): each signal's hold
is ``max(1 s, 10 x period)``, at most 60 s, where the period is the longest interval between two of the
signal's consecutive frames that came within its hold; until it is measured (the second frame), the
period is the DBC's cycle time (``periods``, seconds) or else 1 s, a hold of 10 s.

Accounting: every frame fed is counted in ``stats.frames`` and is either on time or counted in
``stats.late``; none is dropped. Contract: used by one thread (the pipeline's); not thread-safe.
``feed`` calls ``emit(tick, values)`` synchronously for every tick its frame's time has passed (ticks
strictly increase over the sampler's life); ``values`` is the sampler's own list, valid only during the
call (copy it to keep it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from agent.wire.values import RawValue

Emit = Callable[[int, list[RawValue | None]], None]

MICROS = 1_000_000
REORDER_S = 1.0  # a step back within this is jitter (late frames); beyond it, a new segment
MIN_HOLD_S = 1.0  # auto hold: max(MIN_HOLD_S, HOLD_PERIODS x period), at most MAX_AUTO_HOLD_S
HOLD_PERIODS = 10
MAX_AUTO_HOLD_S = 60.0
DEFAULT_PERIOD_S = 1.0  # the period of a signal whose DBC declares none, until it is measured
_NEVER = 1 << 256  # a position after every real one (positions are micros x the rate's numerator)


def to_micros(timestamp: float) -> int:
    return round(timestamp * MICROS)


@dataclass
class SampleStats:
    """What happened to the frames fed (``frames = on_time + late``) and to the ticks."""

    frames: int = 0
    late: int = 0  # older than a tick already processed: their values count from the next tick on
    jumps_back: int = 0  # steps back beyond reorder_s: each started a new segment
    largest_jump_back_s: float = 0.0
    gaps: int = 0  # runs of ticks skipped, after a tick was emitted, because no signal was present
    ticks_emitted: int = 0
    ticks_skipped: int = 0

    @property
    def on_time(self) -> int:
        return self.frames - self.late


class Sampler:
    def __init__(
        self,
        rate: Fraction,
        signal_count: int,
        emit: Emit,
        *,
        max_hold_s: float | None = None,
        periods: Sequence[float | None] = (),
        reorder_s: float = REORDER_S,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"sampling rate must be > 0, got {rate}")
        if max_hold_s is not None and not max_hold_s > 0:
            raise ValueError(f"max_hold_s must be > 0, got {max_hold_s}")
        self.emit = emit
        self.values: list[RawValue | None] = [None] * signal_count
        self._stats = SampleStats()
        self._frames = 0
        self._num = rate.numerator
        self._scale = MICROS * rate.denominator  # tick n is at position n * _scale
        self._second = MICROS * self._num  # one second in positions (micros x num)
        self._window = round(reorder_s * self._second)
        self._min_hold = round(MIN_HOLD_S * self._second)
        self._max_hold = round(MAX_AUTO_HOLD_S * self._second)
        given = [*periods, *([None] * signal_count)][:signal_count]
        initial = [round((p or DEFAULT_PERIOD_S) * self._second) for p in given]
        fixed = None if max_hold_s is None else round(max_hold_s * self._second)
        self._hold = [self._auto_hold(p) if fixed is None else fixed for p in initial]
        self._shortest_hold = self._min_hold if fixed is None else fixed  # no hold is ever shorter
        # The longest interval measured (0: none yet); _NEVER: nothing is measured (a fixed hold).
        self._longest = [0 if fixed is None else _NEVER] * signal_count
        self._at = [_NEVER] * signal_count  # position of each signal's latest frame (_NEVER: none)
        self._expires = _NEVER  # no present value expires before this; _NEVER: none is present
        self._offset = 0
        self._newest = 0  # the newest frame's position on the current time base
        self.next_tick: int | None = None  # the first tick not processed yet

    @property
    def stats(self) -> SampleStats:
        self._stats.frames = self._frames
        return self._stats

    def _auto_hold(self, period: int) -> int:
        return min(self._max_hold, max(self._min_hold, HOLD_PERIODS * period))

    def feed(self, micros: int, updates: list[tuple[int, RawValue]]) -> None:
        """One frame at ``micros`` on the source clock, with its (column, value) updates."""
        self._frames += 1
        at = micros * self._num + self._offset
        if self.next_tick is None:
            self.next_tick = -(-at // self._scale)  # the first tick at or after the first frame
            self._newest = at
        elif at > self._newest:
            end = -(-at // self._scale)
            if end > self.next_tick:
                self._advance(end)  # every tick before the frame
            self._newest = at
        elif at < self._newest - self._window:
            at = self._new_segment(at)
        elif -(-at // self._scale) < self.next_tick:
            self._stats.late += 1
        values, stamps, longest = self.values, self._at, self._longest
        for column, value in updates:
            values[column] = value
            interval = at - stamps[column]  # negative for the first frame of a segment, or a late one
            stamps[column] = at
            if interval > longest[column]:
                self._measure(column, interval)
        if self._expires > at + self._shortest_hold:  # else none of these values can expire sooner
            holds, soonest = self._hold, self._expires
            for column, _ in updates:
                expires = at + holds[column]
                if expires < soonest:
                    soonest = expires
            self._expires = soonest

    def _measure(self, column: int, interval: int) -> None:
        """A longer interval than any before between two frames of ``column``: its period, if within
        its hold (a longer one is a gap, not a period)."""
        if interval <= self._hold[column]:
            self._longest[column] = interval
            self._hold[column] = self._auto_hold(interval)

    def _advance(self, end: int) -> None:
        """Process every tick before tick ``end``: emit those at which a value is present."""
        tick = self.next_tick
        assert tick is not None
        scale, values, emit, stats = self._scale, self.values, self.emit, self._stats
        while tick < end:
            if self._expires == _NEVER:  # nothing present until the next frame: skip to the end
                if stats.ticks_emitted:
                    stats.gaps += 1
                stats.ticks_skipped += end - tick
                tick = end
                break
            if tick * scale > self._expires:
                self._expire(tick * scale)
                continue
            stop = min(end, self._expires // scale + 1)  # the ticks before any value expires
            for n in range(tick, stop):
                emit(n, values)
            stats.ticks_emitted += stop - tick
            tick = stop
        self.next_tick = tick

    def _expire(self, now: int) -> None:
        """Make absent every value whose hold ended before position ``now``; find the next expiry."""
        soonest = _NEVER
        for column, value in enumerate(self.values):
            if value is None:
                continue
            expires = self._at[column] + self._hold[column]
            if expires < now:
                self.values[column] = None
            elif expires < soonest:
                soonest = expires
        self._expires = soonest

    def _new_segment(self, at: int) -> int:
        """Finish the current segment; return the frame's position on the new time base."""
        self.finish()
        assert self.next_tick is not None
        self.values[:] = [None] * len(self.values)
        self._at[:] = [_NEVER] * len(self._at)
        self._expires = _NEVER
        # A whole number of ticks, so that the frame's first tick is the one after the last segment's.
        shift = (self.next_tick - -(-at // self._scale)) * self._scale
        back = self._newest - at
        self._stats.jumps_back += 1
        self._stats.largest_jump_back_s = max(self._stats.largest_jump_back_s, back / self._second)
        self._offset += shift
        self._newest = at + shift
        return at + shift

    def finish(self) -> None:
        """Process the remaining ticks up to and including the newest frame's time."""
        if self.next_tick is not None:
            self._advance(self._newest // self._scale + 1)
