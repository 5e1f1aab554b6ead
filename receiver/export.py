"""The read side's pure helpers: the merges behind :meth:`receiver.store.Store.rows` and ``stats``, the CSV.

Contract
- Pure functions over iterators, no I/O but the text stream handed to :func:`write_csv`; no shared state,
  safe from any thread. Nothing is materialized: memory is bounded by the chunks whose ticks overlap.
- The caller (the store, the CLI) owns the cursors it hands in; these functions only iterate them.
- The CSV is the one ``edge-agent sample`` prints for the same data, byte for byte, because both use the
  same two helpers: :meth:`agent.model.Schema.tick_seconds` for the first cell (exact, 6 decimals) and
  :func:`agent.model.format_value` for each value (empty cell when absent). Lines end with ``\\n``.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TextIO

from agent.model import PhysicalValue, Schema, format_value

Row = tuple[int, list[PhysicalValue | None]]
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
    missing: list[tuple[bytes, int, int]] = field(default_factory=list)  # (boot, first, last) unexplained


def pack_ticks(ticks: Sequence[int]) -> bytes | None:
    """A chunk's ticks for storage: ``None`` when they are consecutive, else int64 little-endian each."""
    if not ticks or ticks[-1] - ticks[0] == len(ticks) - 1:
        return None
    return struct.pack(f"<{len(ticks)}q", *ticks)


def chunk_ticks(first: int, last: int, packed: bytes | None) -> Iterator[int]:
    """The ticks of a stored chunk, ascending (the inverse of :func:`pack_ticks`)."""
    if packed is None:
        return iter(range(first, last + 1))
    return iter(struct.unpack(f"<{len(packed) // 8}q", packed))


def merge_ticks(chunks: Iterable[tuple[int, int, bytes | None]]) -> Iterator[int]:
    """The union of the chunks' ticks, ascending, each once.

    ``chunks`` are (first_tick, last_tick, packed ticks) ordered by first tick; they may overlap (two
    boots that replayed the same log). A chunk joins the merge only when its first tick is due, so the
    heap holds the chunks that overlap the current tick, not the whole vin.
    """
    source = iter(chunks)
    pending: list[tuple[int, int, Iterator[int]]] = []  # (next tick, arrival order, rest of the chunk)
    upcoming = next(source, None)
    order = 0
    last: int | None = None
    while pending or upcoming is not None:
        while upcoming is not None and (not pending or upcoming[0] <= pending[0][0]):
            ticks = chunk_ticks(*upcoming)
            first = next(ticks, None)
            if first is not None:
                heapq.heappush(pending, (first, order, ticks))
                order += 1
            upcoming = next(source, None)
        if not pending:
            break
        tick, key, rest = heapq.heappop(pending)
        if tick != last:
            yield tick
            last = tick
        following = next(rest, None)
        if following is not None:
            heapq.heappush(pending, (following, key, rest))


def merge_rows(ticks: Iterable[int], streams: Sequence[Iterable[tuple[int, PhysicalValue]]]) -> Iterator[Row]:
    """Join per-signal (tick, value) streams onto the tick stream; all ascending. Absent: ``None``."""
    sources = [iter(stream) for stream in streams]
    heads = [next(source, None) for source in sources]
    for tick in ticks:
        values: list[PhysicalValue | None] = []
        for index, source in enumerate(sources):
            head = heads[index]
            while head is not None and head[0] < tick:  # a value off the grid: cannot happen, skip it
                head = next(source, None)
            if head is not None and head[0] == tick:
                values.append(head[1])
                head = next(source, None)
            else:
                values.append(None)
            heads[index] = head
        yield tick, values


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
    vins: Iterable[str], totals: Iterable[Any], runs: Iterable[Any], evicted: Iterable[Any]
) -> list[VinStats]:
    """Per-vin stats from the store's rows: (vin, chunks, samples, values, overlaps) totals, (vin, boot,
    first, last) runs of stored seqs and (vin, boot, first, last) eviction notices."""
    result = {vin: VinStats(vin) for vin in vins}
    for vin, chunks, samples, values, overlaps in totals:
        entry = result.setdefault(vin, VinStats(vin))
        entry.chunks, entry.samples, entry.values, entry.overlaps = chunks, samples, values, overlaps
    explained: dict[tuple[str, bytes], list[tuple[int, int]]] = {}
    for vin, boot, first, last in evicted:
        explained.setdefault((vin, boot), []).append((first, last))
    for (vin, _), ranges in explained.items():
        result.setdefault(vin, VinStats(vin)).evicted += sum(b - a + 1 for a, b in merge_runs(ranges))
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


def write_csv(out: TextIO, rate: Fraction, names: Sequence[str], rows: Iterable[Row]) -> int:
    """Write the header and one line per row to ``out``; return the number of rows written."""
    grid = Schema(rate, ())  # only its tick_seconds is used: the same helper as edge-agent sample
    out.write(csv_header(names))
    count = 0
    for tick, values in rows:
        out.write(csv_line(grid, tick, values))
        count += 1
    return count
