"""The rollups' arithmetic: chunks cut into tumbling windows of 60 s, merged into 300 and 900 s, as rows.

Contract
- Pure Python, no I/O; a :class:`Windows` belongs to the one caller that fills it (one batch, one step
  of a backfill). :mod:`receiver.rollups` stores its rows; what a row means is said there.
- The vehicle's clock: tick ``n`` at ``num / den`` Hz is at ``n * den / num`` s, exactly (integers);
  its 60 s window starts at ``floor(n * den / (num * 60)) * 60``; an instant is kept as whole nanoseconds
  after its window's start, floored. A coarser window merges the 60 s ones it holds (60 divides 300
  divides 900), so the three widths agree to the value.
- Values stay raw while a batch is gathered (the count, min, max and sum of raw values; a first and a
  last value with their instants); :meth:`Windows.rows` makes each 60 s window physical once, with the
  signal's :class:`~agent.wire.values.SignalSpec` (min and max through the conversion, which is
  monotone: a negative scale swaps them; the sum as ``scale * sum + n * offset``, exact for
  integer-scaled signals before it becomes a double, to rounding otherwise), then merges those into the
  300 and 900 s windows. ``None`` (absent) and NaN are skipped.
- Cost: a batch's chunks are gathered per window, so each signal costs one ``sum``/``min``/``max`` per
  window of the batch (C loops over the concatenated values), not per chunk.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any

from agent.wire.values import SignalSpec

WIDTHS = (60, 300, 900)
BASE = WIDTHS[0]  # the windows that chunks are cut into; the others are merged from them
NS = 10**9
LIMIT = 2**62  # windows that start past it are not rolled up (int64 columns)
Part = list[Any]  # n, lo, hi, total, first_at, first, last_at, last: raw values, ns after the start
Piece = tuple[Sequence[Sequence[Any]], Sequence[int], int, int, int, int]  # columns, ticks, i, j, at i, j-1
Chunk = tuple[Sequence[int], Sequence[Sequence[Any]]]  # ticks, columns


class Windows:
    """Partial 60 s windows, per (key, window start), of raw values; :meth:`rows` converts them."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: dict[tuple[Any, int], Part] = {}

    def add(self, chunks: Sequence[Chunk], rate: tuple[int, int], keys: Sequence[Any]) -> None:
        """Chunks sampled at ``rate`` (numerator, denominator) Hz, each its ascending ticks and its
        ``columns[i]`` of ``keys[i]`` aligned with them (``None`` where absent)."""
        num, den = rate
        per = num * BASE
        windows: dict[int, list[Piece]] = {}
        for ticks, columns in chunks:
            count, i = len(ticks), 0
            while i < count:  # the runs of ticks in one window: usually the whole chunk
                bucket = ticks[i] * den // per
                last = ticks[-1] * den // per == bucket
                j = count if last else bisect_left(ticks, -(-(bucket + 1) * per // den), i)
                start = bucket * BASE
                at_i = (ticks[i] * den - start * num) * NS // num
                at_j = (ticks[j - 1] * den - start * num) * NS // num
                windows.setdefault(start, []).append((columns, ticks, i, j, at_i, at_j))
                i = j
        for start, pieces in windows.items():
            pieces.sort(key=lambda piece: piece[4])
            latest = max(pieces, key=lambda piece: piece[5])
            for place, key in enumerate(keys):
                part = _gather(pieces, latest, place)
                if part is None:  # an absent value or a NaN somewhere: piece by piece
                    for piece in pieces:
                        alone = _gather([piece], piece, place) if len(pieces) > 1 else None
                        self._merge(key, start, alone or _sparse(piece, place, start, rate))
                else:
                    self._merge(key, start, part)

    def _merge(self, key: Any, start: int, part: Part | None) -> None:
        if part is None:
            return
        held = self.parts.get((key, start))
        if held is None:
            self.parts[key, start] = part
        else:
            merge(held, part, 0)

    def rows(self, convert: Callable[[Any], tuple[int, SignalSpec | None]]) -> list[tuple[Any, ...]]:
        """The rows (signal id, width, start, n, lo, hi, total, first_at, first, last_at, last) of every
        width; ``convert(key)`` gives the key's signal id and the spec that makes its raw values physical
        (``None``: they are physical already). Each 60 s part is made physical once, then merged."""
        out: list[tuple[Any, ...]] = []
        coarse: dict[tuple[int, int, int], Part] = {}
        for (key, start), part in self.parts.items():
            if not -LIMIT < start < LIMIT:
                continue
            signal_id, spec = convert(key)
            physical = _physical(spec, part)
            out.append((signal_id, BASE, start, *physical))
            for width in WIDTHS[1:]:
                begin = start // width * width
                shift = (start - begin) * NS
                held = coarse.get((signal_id, width, begin))
                if held is None:
                    coarse[signal_id, width, begin] = [
                        *physical[:4],
                        physical[4] + shift,
                        physical[5],
                        physical[6] + shift,
                        physical[7],
                    ]
                else:
                    merge(held, physical, shift)
        out += ((signal_id, width, begin, *part) for (signal_id, width, begin), part in coarse.items())
        return [row if row[6] == row[6] else (*row[:6], None, *row[7:]) for row in out]  # NaN sum: NULL


def _gather(pieces: list[Piece], latest: Piece, place: int) -> Part | None:
    """The window's part of one column when no value is absent or NaN, else ``None``."""
    if len(pieces) == 1:
        columns, ticks, i, j, _, _ = pieces[0]
        values = columns[place] if j - i == len(ticks) else columns[place][i:j]
    else:
        values = []
        for columns, ticks, i, j, _, _ in pieces:
            values += columns[place] if j - i == len(ticks) else columns[place][i:j]
    try:
        total = sum(values)
    except TypeError:  # an absent value
        return None
    if total != total:  # a NaN (or inf - inf: the slow path finds no NaN and keeps it)
        return None
    first, n = values[0], len(values)
    if first == values[-1] and values.count(first) == n:  # a constant (held) column
        lo = hi = first
    else:
        lo, hi = min(values), max(values)
    last_columns, _, _, last_j, _, at_last = latest
    return [n, lo, hi, total, pieces[0][4], first, at_last, last_columns[place][last_j - 1]]


def _sparse(piece: Piece, place: int, start: int, rate: tuple[int, int]) -> Part | None:
    """One piece's part of one column, skipping absent values and NaN; ``None`` if it has none."""
    columns, ticks, i, j, _, _ = piece
    values = columns[place][i:j]
    kept = [k for k, v in enumerate(values) if v is not None and v == v]
    if not kept:
        return None
    present = [values[k] for k in kept]
    num, den = rate
    first_at = (ticks[i + kept[0]] * den - start * num) * NS // num
    last_at = (ticks[i + kept[-1]] * den - start * num) * NS // num
    return [
        len(present),
        min(present),
        max(present),
        sum(present),
        first_at,
        present[0],
        last_at,
        present[-1],
    ]


def merge(into: Part, part: Part, shift: int) -> None:
    """Merge ``part`` into ``into``; ``shift``: ns from ``into``'s window start to ``part``'s."""
    into[0] += part[0]
    if part[1] < into[1]:
        into[1] = part[1]
    if part[2] > into[2]:
        into[2] = part[2]
    into[3] += part[3]
    if part[4] + shift < into[4]:
        into[4], into[5] = part[4] + shift, part[5]
    if part[6] + shift > into[6]:
        into[6], into[7] = part[6] + shift, part[7]


def _physical(spec: SignalSpec | None, part: Part) -> Part:
    """A part of raw values made physical (doubles): min and max through the monotone conversion."""
    n, lo, hi, total, first_at, first, last_at, last = part
    if spec is not None:
        physical = spec.to_physical
        lo, hi, first, last = physical(lo), physical(hi), physical(first), physical(last)
        if hi < lo:  # a negative scale
            lo, hi = hi, lo
        if spec.integer_scaled and not spec.is_float:
            total = total * int(spec.scale) + n * int(spec.offset)
        else:
            total = total * spec.scale + n * spec.offset
    return [n, float(lo), float(hi), float(total), first_at, float(first), last_at, float(last)]
