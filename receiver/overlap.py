"""The overlap rule of :class:`receiver.store.Store`, at write time: which instants of a new chunk other
chunks of its vin already hold (two boots replaying one log), so that the first value written wins.

Contract: functions over a :class:`receiver.backend.Backend`, called by ``Store.store_batch`` inside its
transaction, on its thread; they block on the database and raise what it raises. Instants, not tick
numbers, are compared: tick ``n`` of a segment of rate ``r`` is at ``n / r`` seconds. :func:`quiet` is a
shortcut with the same answer: one query per batch instead of one per chunk when nothing overlaps (every
batch of a vehicle that never replays), which is what makes a remote database's round trips affordable.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from agent.wire import DecodedBatch
from receiver import column, table
from receiver.backend import Backend


def quiet(backend: Backend, batch: DecodedBatch, span: int, rates: Sequence[Fraction]) -> bool:
    """Whether no chunk of the batch can overlap another one's instants: its chunks do not overlap each
    other, and no stored chunk (of spans up to ``span``) overlaps their whole range; then :func:`held`
    would answer ``None`` for each of them."""
    spans = sorted((c.ticks[0], c.ticks[-1]) for c in batch.chunks if c.ticks)
    if not spans:
        return True
    last = spans[0][1]
    for start, end in spans[1:]:
        if start <= last:
            return False  # two chunks of the batch overlap (two boots in one batch)
        last = max(last, end)
    first, rate = spans[0][0], batch.schema.rate
    for other in rates:
        low, high = math.floor(first * other / rate), math.ceil(last * other / rate)
        sql, params = backend.sql.overlapping(batch.vin, -1, (low, high), span, other)
        if backend.db.fetch(f"SELECT 1 FROM ({sql}) AS o LIMIT 1", params):
            return False
    return True


def held(
    backend: Backend,
    vin: str,
    chunk_id: int,
    bounds: tuple[int, int, Fraction, Sequence[Fraction], int],
    pending: list[Any],
) -> defaultdict[int, set[int]] | None:
    """Per signal id, the ticks in [first, last] (of ``rate``) at whose instants other chunks of the vin,
    of its segments of ``rates`` (spans up to ``span``), hold a value, or ``None`` when no other chunk
    overlaps those instants; stores the ``pending`` column rows first when one does."""
    first, last, rate, rates, span = bounds
    sql, db = backend.sql, backend.db
    earlier: list[tuple[Any, Fraction]] = []
    for other in rates:  # [first, last] in the other rate's ticks, widened to whole ticks
        low, high = math.floor(first * other / rate), math.ceil(last * other / rate)
        query, params = sql.overlapping(vin, chunk_id, (low, high), span, other)
        earlier += ((row, other) for row in db.fetch(query, params))
    if not earlier:
        return None
    db.insert("chunk_columns", sql.COLUMNS, pending)
    pending.clear()
    found: defaultdict[int, set[int]] = defaultdict(set)
    for (other_id, other_first, other_last, packed), other in earlier:
        ticks = table.chunk_ticks(other_first, other_last, packed)
        factor = rate / other  # tick t of the other segment is tick t * factor of this one
        for signal_id, present in db.fetch(sql.CHUNK_COLUMNS, (other_id, *sql.key(other_last, other))):
            at = (ticks[index] for index in column.positions(present, len(ticks)))
            if factor == 1:
                found[signal_id].update(at)
            else:
                up, down = factor.numerator, factor.denominator
                found[signal_id].update(tick * up // down for tick in at if tick * up % down == 0)
    return found
