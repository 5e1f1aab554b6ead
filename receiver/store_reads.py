"""The read half of :class:`receiver.store.Store`: vins, rates, signals, declared codings, rows, stats.

Contract: the same as the store's (one connection, one thread at a time; every call blocks). What the
reads guarantee is written in :mod:`receiver.store`; this mixin holds them so that each module stays one
screenful of logic. It reads through ``self._backend`` (:class:`receiver.backend.Backend`), the same on
SQLite and PostgreSQL; names are sorted here (by code point), not by a database's collation.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import Any

from agent.errors import EdgeError
from agent.service.schema import suggest
from agent.wire.values import SignalSpec
from receiver import column, table
from receiver.backend import Backend
from receiver.timeline import Row, VinStats, group_chunks, merge_chunks, scaled, summarize


class RateConflictError(EdgeError):
    """A batch's sampling rate differs from the rate already stored for its boot."""


class NotFoundError(EdgeError):
    """A vin or a signal that the store does not hold."""


class Reads:
    """What :class:`receiver.store.Store` reads; see :mod:`receiver.store` for the contract."""

    _backend: Backend
    path: str

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._backend.guard("read"):
            return self._backend.db.fetch(sql, params)

    def vins(self) -> list[str]:
        return sorted(row[0] for row in self._query(self._backend.sql.VINS))

    def rate(self, vin: str) -> Fraction:
        """The rate in Hz of the grid that :meth:`rows` gives the vin's ticks on: tick ``n`` is at
        ``n / rate`` seconds. Its sampling rate when all its segments share one; else the least rate that
        every segment's rate divides (1 Hz and 50 Hz: 50 Hz; 2 Hz and 3 Hz: 6 Hz)."""
        return _grid(self._rates(vin))

    def _rates(self, vin: str) -> list[Fraction]:
        """The rates of the vin's segments (its first batch's alone when it has none, or in a v3 file)."""
        sql = self._backend.sql
        row = self._query(sql.VIN_RATE, (vin,))
        if not row:
            raise NotFoundError(f"unknown vin {vin!r} in {self.path}{suggest(vin, self.vins())}")
        rates = self._query(sql.VIN_RATES, (vin,)) if self._backend.segments else []
        return sorted(Fraction(num, den) for num, den in rates) or [Fraction(row[0][0], row[0][1])]

    def signals(self, vin: str) -> list[str]:
        return sorted(name for name, _ in self._query(self._backend.sql.SIGNAL_IDS, (vin,)))

    def declared(self, vin: str) -> dict[str, SignalSpec]:
        """Per signal of ``vin``, the coding declared by the latest batch naming it (if any, in a v2 store)."""
        self.rate(vin)  # raises for an unknown vin
        rows = self._query(self._backend.sql.SELECT_DECLARED, (vin,)) if self._backend.declares else []
        return {spec.name: spec for spec in map(table.spec_of, sorted(rows)) if spec is not None}

    def rows(
        self, vin: str, names: Sequence[str], start_tick: int | None = None, end_tick: int | None = None
    ) -> Iterator[Row]:
        """Every stored tick of ``vin`` in [start, end], in tick order, with the values of ``names``.

        A tick appears once even when several boots' chunks cover it; a value absent there is ``None``.
        An unknown vin or signal raises :class:`NotFoundError` at once. Streams: one statement per
        segment rate reads the chunks overlapping the range, joined with their columns of ``names``;
        memory is one chunk plus the chunks that overlap it.
        """
        rates = self._rates(vin)  # raises for an unknown vin
        known = dict(self._query(self._backend.sql.SIGNAL_IDS, (vin,)))
        for name in names:
            if name not in known:
                raise NotFoundError(f"vin {vin!r} has no signal {name!r}{suggest(name, known)}")
        wanted: dict[int, list[int]] = {}  # signal id -> its places in ``names``
        for place, name in enumerate(names):
            wanted.setdefault(known[name], []).append(place)
        low = column.INT64_RANGE[0] if start_tick is None else start_tick
        high = column.INT64_RANGE[1] if end_tick is None else end_tick
        return self._segmented(vin, wanted, len(names), (low, high), rates)

    def _segmented(
        self, vin: str, ids: dict[int, list[int]], width: int, bounds: tuple[int, int], rates: list[Fraction]
    ) -> Iterator[Row]:
        """One cursor per segment rate, its ticks put on the grid of :meth:`rate`, the chunks merged by
        their start on it (a vin of one rate: one cursor, as it is)."""
        grid, sql, db = _grid(rates), self._backend.sql, self._backend.db
        with self._backend.snapshot(), self._backend.guard("read"):
            span = (len(rates) > 1, int(db.fetch(sql.VIN_SPAN, (vin,))[0][0]))
            streams = []
            for rate in rates:
                factor = int(grid / rate)
                low, high = -(-bounds[0] // factor), bounds[1] // factor  # whole ticks of this rate
                query, params = sql.range_query(vin, list(ids), (low, high), rate, span)
                chunks = group_chunks(db.stream(query, params), ids, width, low, high)
                streams.append(scaled(chunks, factor) if factor != 1 else chunks)
            merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=lambda chunk: chunk[0])
            yield from merge_chunks(merged)

    def stats(self) -> list[VinStats]:
        """Per vin: chunks, samples, values, overlaps, evicted and expired chunks, and seq runs missing."""
        sql = self._backend.sql
        totals, runs = self._query(sql.STATS_TOTALS), self._query(sql.STATS_RUNS)
        return summarize(self.vins(), totals, runs, self._query(sql.STATS_GAPS))


def _grid(rates: Sequence[Fraction]) -> Fraction:
    """The least rate that every one of ``rates`` divides (so that each of their ticks is a whole tick)."""
    return Fraction(math.lcm(*(r.numerator for r in rates)), math.gcd(*(r.denominator for r in rates)))
