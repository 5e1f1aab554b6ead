"""The latest sampled value of a few signals (``status.signals``), for the retained MQTT status.

While a backlog drains oldest first, the receiver stores the past; the retained status carries the
present: each configured signal's value at the last tick at which it was present, and that tick's time
(seconds on the vehicle's clock, as ``edge-agent sample`` prints it).

Contract (threads)
- The pipeline's thread alone writes: :meth:`LatestValues.wrap` puts a tracker between the sampler and
  the chunker (the tracker runs on every tick: it copies only the configured columns' raw values; with
  no signal configured there is no tracker at all, so nothing is spent per tick), and
  :meth:`LatestValues.publish` replaces the published snapshot, an immutable tuple, under a lock (once
  per turn of the pipeline, not per tick).
- Any other thread (the supervisor, about once a second) reads :meth:`LatestValues.snapshot`: the last
  published tuple, turned into physical values there (a handful of conversions, off the hot path).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from agent.errors import ConfigError
from agent.sample import Emit
from agent.service.schema import suggest
from agent.status import Latest
from agent.wire.values import RawValue, Schema


def check_sampled(names: Sequence[str], sampled: Sequence[str]) -> None:
    """Raise :class:`ConfigError` naming each of ``names`` (``status.signals``) that is not sampled."""
    missing = [name for name in names if name not in sampled]
    if missing:
        hints = [f"{n!r}{suggest(n, sampled) or ' (no similar name)'}" for n in missing]
        raise ConfigError("status.signals: not sampled: " + "; ".join(hints))


class LatestValues:
    def __init__(self, schema: Schema, names: Sequence[str]) -> None:
        check_sampled(names, schema.names)  # a config built in code; a parsed one was checked already
        index = {name: column for column, name in enumerate(schema.names)}
        self.schema = schema
        self.names = tuple(names)
        self.columns = tuple(index[name] for name in names)
        # The pipeline thread's own state: each signal's latest raw value and its tick (None: not yet).
        self._raw: list[RawValue | None] = [None] * len(names)
        self._ticks: list[int | None] = [None] * len(names)
        self._lock = threading.Lock()
        self._published: tuple[tuple[int, RawValue] | None, ...] = ()

    def wrap(self, emit: Emit) -> Emit:
        """``emit``, tracking the configured columns on each tick; ``emit`` itself when there are none."""
        if not self.columns:
            return emit
        tracked, raw, ticks = tuple(enumerate(self.columns)), self._raw, self._ticks

        def emit_and_track(tick: int, values: list[RawValue | None]) -> None:
            emit(tick, values)
            for slot, column in tracked:
                value = values[column]
                if value is not None:
                    raw[slot] = value
                    ticks[slot] = tick

        return emit_and_track

    def publish(self) -> None:
        """Make the values tracked so far visible to other threads (the pipeline's thread only)."""
        if not self.columns:
            return
        snapshot = tuple(
            None if tick is None or value is None else (tick, value)
            for tick, value in zip(self._ticks, self._raw, strict=True)
        )
        with self._lock:
            self._published = snapshot

    def snapshot(self) -> tuple[Latest, ...]:
        """The last published values, physical, with their ticks' times; a signal not seen yet is left
        out (any thread)."""
        with self._lock:
            published = self._published
        specs, schema = self.schema.signals, self.schema
        return tuple(
            Latest(name, specs[column].to_physical(entry[1]), float(schema.tick_seconds(entry[0])))
            for name, column, entry in zip(self.names, self.columns, published, strict=False)
            if entry is not None
        )
