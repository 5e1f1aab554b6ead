"""The read side's pure helpers: the merges behind :meth:`receiver.store.Store.rows` and ``stats``, the CSV.

Contract
- Pure functions over iterators, no I/O but the text stream handed to :func:`write_csv`; no shared state,
  safe from any thread. Nothing is materialized: memory is bounded by the chunks whose ticks overlap.
- The caller (the store, the CLI) owns the cursors it hands in; these functions only iterate them.
- The CSV is the one ``edge-agent sample`` prints for the same data, byte for byte, because both use the
  same two helpers: :meth:`agent.wire.values.Schema.tick_seconds` for the first cell (exact, 6 decimals) and
  :func:`agent.wire.values.format_value` for each value (empty cell when absent). Lines end with ``\\n``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TextIO

from agent.wire.values import PhysicalValue, Schema, format_value
from receiver import column, table

Row = tuple[int, list[PhysicalValue | None]]
Chunk = tuple[int, Sequence[int], Sequence[Sequence[PhysicalValue | None]]]  # start, ticks, columns
Runs = Iterable[tuple[int, int]]


@dataclass
class VinStats:
    """What ``edge-receiver stats`` prints for one vin."""

    vin: str
    chunks: int = 0
    samples: int = 0  # ticks received (the chunks' sample counts)
    values: int = 0  # values stored
    overlaps: int = 0  # values skipped: another boot's chunk held that (signal, tick) first
    evicted: int = 0  # chunks the agent reported evicted by its buffer cap
    expired: int = 0  # chunks the receiver's retention deleted (store.retention_days)
    missing: list[tuple[bytes, int, int]] = field(default_factory=list)  # (boot, first, last) unexplained


def _rows(chunk: Chunk) -> Iterator[Row]:
    _, ticks, columns = chunk
    if not columns:
        return ((tick, []) for tick in ticks)
    return zip(ticks, map(list, zip(*columns, strict=True)), strict=True)


def _clip(ticks: Sequence[int], cells: list[Sequence[PhysicalValue | None]], low: int, high: int) -> Chunk:
    """A chunk's ticks in [low, high] and its columns cut alike; it keeps its first tick as its start."""
    if ticks[0] >= low and ticks[-1] <= high:
        return ticks[0], ticks, cells
    start, end = bisect_left(ticks, low), bisect_right(ticks, high)
    return ticks[0], ticks[start:end], [column[start:end] for column in cells]


def group_chunks(
    joined: Iterable[Sequence[Any]], wanted: Mapping[int, Sequence[int]], width: int, low: int, high: int
) -> Iterator[Chunk]:
    """The store's joined rows (chunk id, first tick, last tick, packed ticks, then signal id, kind,
    presence, data or four ``None``), one per stored column, as chunks of ``width`` columns: ``wanted``
    maps a signal id to its places; a place no stored column fills is absent throughout; only the ticks in
    [low, high] are kept."""
    current: int | None = None
    ticks: Sequence[int] = ()
    cells: list[Sequence[PhysicalValue | None]] = []
    for chunk_id, first, last, packed, signal_id, kind, present, data in joined:
        if chunk_id != current:
            if current is not None:
                yield _clip(ticks, cells, low, high)
            current, ticks = chunk_id, table.chunk_ticks(first, last, packed)
            cells = [(None,) * len(ticks)] * width
        if signal_id is not None:
            decoded = column.decode(kind, present, data, len(ticks))
            for place in wanted[signal_id]:
                cells[place] = decoded
    if current is not None:
        yield _clip(ticks, cells, low, high)


def scaled(chunks: Iterable[Chunk], factor: int) -> Iterator[Chunk]:
    """The chunks with their ticks (and start) multiplied by ``factor``: put on a finer grid."""
    for start, ticks, cells in chunks:
        if isinstance(ticks, range):
            yield start * factor, range(ticks.start * factor, ticks.stop * factor, ticks.step * factor), cells
        else:
            yield start * factor, [tick * factor for tick in ticks], cells


def merge_chunks(chunks: Iterable[Chunk]) -> Iterator[Row]:
    """The rows of chunks given in order of start: every tick once, ascending.

    A chunk is (start, ticks ascending, one column per signal aligned with them, ``None`` where absent);
    no tick is before its start (the first tick of the stored chunk, before it was cut to a range). Chunks
    may overlap (two boots that replayed the same log): a tick that several hold is one row, each value
    taken from the first chunk (in the order given) that has one. A chunk that overlaps no other streams
    straight through; overlapping ticks wait in a dict until the next chunk's start has passed them,
    so memory is bounded by the chunks that overlap, not by the range.
    """
    source = (chunk for chunk in chunks if len(chunk[1]))
    pending: dict[int, list[PhysicalValue | None]] = {}
    current = next(source, None)
    while current is not None:
        following = next(source, None)
        horizon = None if following is None else following[0]  # no later chunk has a tick before it
        if not pending and (horizon is None or current[1][-1] < horizon):
            yield from _rows(current)
        else:
            for tick, values in _rows(current):
                held = pending.setdefault(tick, values)
                if held is not values:
                    for index, value in enumerate(held):
                        if value is None:
                            held[index] = values[index]
            for tick in sorted(t for t in pending if horizon is None or t < horizon):
                yield tick, pending.pop(tick)
        current = following


def merge_runs(runs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive (first, last) ranges merged where they overlap or touch, ascending."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(runs):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def missing_runs(stored: Runs, explained: Runs) -> list[tuple[int, int]]:
    """Sequence numbers from 0 to the last stored one that are neither stored nor explained."""
    held = list(stored)
    if not held:
        return []
    end = max(last for _, last in held)
    missing: list[tuple[int, int]] = []
    expected = 0
    for first, last in merge_runs([*held, *explained]):
        if expected > end:
            break
        if first > expected:
            missing.append((expected, first - 1))
        expected = max(expected, last + 1)
    return missing


def summarize(
    vins: Iterable[str], totals: Iterable[Any], runs: Iterable[Any], gaps: Iterable[Any]
) -> list[VinStats]:
    """Per-vin stats from the store's rows: (vin, chunks, samples, values, overlaps) totals, (vin, boot,
    first, last) runs of stored seqs and (vin, boot, first, last, reason) gap notices: ``evicted`` by the
    agent's buffer cap, ``expired`` by the receiver's retention; both explain a run not stored."""
    result = {vin: VinStats(vin) for vin in vins}
    for vin, chunks, samples, values, overlaps in totals:
        entry = result.setdefault(vin, VinStats(vin))
        entry.chunks, entry.samples, entry.values, entry.overlaps = chunks, samples, values, overlaps
    explained: dict[tuple[str, bytes], list[tuple[int, int]]] = {}
    by_reason: dict[tuple[str, str], dict[bytes, list[tuple[int, int]]]] = {}
    for vin, boot, first, last, reason in gaps:
        explained.setdefault((vin, boot), []).append((first, last))
        by_reason.setdefault((vin, reason), {}).setdefault(boot, []).append((first, last))
    for (vin, reason), boots in by_reason.items():
        count = sum(b - a + 1 for ranges in boots.values() for a, b in merge_runs(ranges))
        entry = result.setdefault(vin, VinStats(vin))
        if reason == "evicted":
            entry.evicted += count
        elif reason == "expired":
            entry.expired += count
    stored: dict[tuple[str, bytes], list[tuple[int, int]]] = {}
    for vin, boot, first, last in runs:
        stored.setdefault((vin, boot), []).append((first, last))
    for (vin, boot), held in sorted(stored.items()):
        missing = missing_runs(held, explained.get((vin, boot), []))
        result.setdefault(vin, VinStats(vin)).missing.extend((boot, first, last) for first, last in missing)
    return [result[vin] for vin in sorted(result)]


def csv_header(names: Sequence[str]) -> str:
    return ",".join(("timestamp", *names)) + "\n"


def csv_line(schema: Schema, tick: int, values: Sequence[PhysicalValue | None]) -> str:
    return ",".join((str(schema.tick_seconds(tick)), *map(format_value, values))) + "\n"


def csv_lines(rate: Fraction, names: Sequence[str], rows: Iterable[Row]) -> Iterator[str]:
    """The header, then one line per row, lazily."""
    grid = Schema(rate, ())  # only its tick_seconds is used: the same helper as edge-agent sample
    yield csv_header(names)
    for tick, values in rows:
        yield csv_line(grid, tick, values)


def write_csv(out: TextIO, rate: Fraction, names: Sequence[str], rows: Iterable[Row]) -> int:
    """Write the header and one line per row to ``out``; return the number of rows written."""
    lines = csv_lines(rate, names, rows)
    out.write(next(lines))
    count = 0
    for line in lines:
        out.write(line)
        count += 1
    return count
