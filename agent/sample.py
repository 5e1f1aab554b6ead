"""Sampling stage: decoded values onto a fixed grid on the source's clock.

Tick ``n`` is at ``n / rate`` seconds. Every tick from the first frame's time to the last frame's is
emitted; a signal's value at a tick is its last decoded value at or before that time, and absent
(``None``, never 0) before its first frame. Time is compared in integer microseconds against an exact
rational rate, so a frame stamped exactly on a tick counts for that tick on every platform.

Contract: used by the pipeline thread only; not thread-safe. ``feed`` calls ``emit(tick, values)``
synchronously for every tick the frame's time has passed; ``values`` is the sampler's own list,
valid only during the call (copy it to keep it). A frame older than the last emitted tick (cross-bus
jitter) still updates the values, for the ticks that follow, and is counted in ``late_frames``.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

from agent.wire.values import RawValue

Emit = Callable[[int, list[RawValue | None]], None]

MICROS = 1_000_000


def to_micros(timestamp: float) -> int:
    return round(timestamp * MICROS)


class Sampler:
    def __init__(self, rate: Fraction, signal_count: int, emit: Emit) -> None:
        if rate <= 0:
            raise ValueError(f"sampling rate must be > 0, got {rate}")
        self.values: list[RawValue | None] = [None] * signal_count
        self.emit = emit
        self._num = rate.numerator
        self._tick_scale = MICROS * rate.denominator  # tick n is at n * _tick_scale / _num micros
        self.next_tick: int | None = None
        self.last_micros: int | None = None
        self.late_frames = 0
        self.ticks_emitted = 0

    def _advance(self, limit: int, inclusive: bool) -> None:
        """Emit every tick whose time is before (or at, when ``inclusive``) ``limit`` micros x num."""
        first = tick = self.next_tick
        assert tick is not None and first is not None
        scale, values, emit = self._tick_scale, self.values, self.emit
        while tick * scale < limit or (inclusive and tick * scale == limit):
            emit(tick, values)
            tick += 1
        self.ticks_emitted += tick - first
        self.next_tick = tick

    def feed(self, micros: int, updates: list[tuple[int, RawValue]]) -> None:
        """One frame at ``micros`` on the source clock, with its (column, value) updates."""
        if self.next_tick is None:
            # The first tick at or after the first frame: -(-a // b) is the ceiling of a / b.
            self.next_tick = -(-(micros * self._num) // self._tick_scale)
        else:
            self._advance(micros * self._num, inclusive=False)
        if self.last_micros is not None and micros < self.last_micros:
            self.late_frames += 1
        else:
            self.last_micros = micros
        for column, value in updates:
            self.values[column] = value

    def finish(self) -> None:
        """Emit the remaining ticks up to and including the last frame's time."""
        if self.next_tick is not None and self.last_micros is not None:
            self._advance(self.last_micros * self._num, inclusive=True)
