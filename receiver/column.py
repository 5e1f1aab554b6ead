"""The codec of one stored column: a chunk's physical values of one signal, as the store keeps them.

Contract
- Pure functions and coders whose only state is a cache of constant columns' stored forms (a value
  depends on the spec and the raw alone; dict writes atomic under the GIL), no I/O: safe from any thread.
- Physical values are exactly :meth:`agent.wire.values.SignalSpec.to_physical` of the raw ones: the fast paths
  compute the same expression on a whole column (``int(raw) * int(scale) + int(offset)`` for
  integer-scaled signals, ``raw * scale + offset`` otherwise) and fall back to ``to_physical`` value by
  value whenever a column has an absent value, a float where ints were expected, or an int past 64 bits.
- :func:`decode` returns what :meth:`ColumnCoder.encode` was given, converted: the same types (ints stay
  ints, floats stay floats, ``3.0`` is not ``3``), NaN and ``-0.0`` included, ``None`` where absent.
- The stored form (``kind``, ``present``, ``data``) is the ``chunk_columns`` row of :mod:`receiver.table`:
  ``kind`` is :data:`INT64` (int64 little-endian), :data:`FLOAT64` (IEEE double little-endian) or
  :data:`JSON` (a JSON array: ints past 64 bits, or a column mixing types), plus :data:`CONSTANT` when
  ``data`` holds one value that every present tick of the chunk has (sample-and-hold makes 45 % of the
  reference drive's 1-second columns constant). ``present`` is ``None`` when every tick of the chunk
  has a value, else a bitmap, little-endian, bit ``i`` set when the chunk's ``i``-th tick has one.
  ``data`` holds the present values only, in tick order.
"""

from __future__ import annotations

import json
import struct
import sys
from array import array
from collections.abc import Iterator, Sequence
from typing import Any

from agent.errors import StorageCorruptError
from agent.wire.values import PhysicalValue, RawValue, SignalSpec

INT64, FLOAT64, JSON, CONSTANT = 0, 1, 2, 4
INT64_RANGE = (-(2**63), 2**63 - 1)
_SWAP = sys.byteorder != "little"  # the file is little-endian on every machine
_LONG, _DOUBLE = struct.Struct("<q").pack, struct.Struct("<d").pack

Encoded = tuple[int, bytes | None, bytes, int]  # kind, presence bitmap, data, number of values


def _pack(typecode: str, values: Sequence[PhysicalValue] | Iterator[PhysicalValue]) -> bytes:
    packed = array(typecode, values)  # TypeError for a wrong type, OverflowError past int64
    if _SWAP:  # pragma: no cover - big-endian machines
        packed.byteswap()
    return packed.tobytes()


def _unpack(kind: int, data: bytes) -> list[Any]:
    if kind == JSON:
        values = json.loads(data)
        if not isinstance(values, list) or not all(isinstance(v, int | float) for v in values):
            raise ValueError("not a list of numbers")
        return values
    if kind not in (INT64, FLOAT64) or len(data) % 8:
        raise ValueError(f"kind {kind} with {len(data)} bytes")
    packed: array[Any] = array("q" if kind == INT64 else "d", data)
    if _SWAP:  # pragma: no cover - big-endian machines
        packed.byteswap()
    return packed.tolist()


def _typed(values: list[PhysicalValue]) -> tuple[int, bytes]:
    if all(type(v) is int for v in values):
        try:
            return INT64, _pack("q", values)
        except OverflowError:  # an int past 64 bits: rare, kept exact as JSON
            pass
    elif all(type(v) is float for v in values):
        return FLOAT64, _pack("d", values)
    return JSON, json.dumps(values).encode()


class ColumnCoder:
    """Encodes the raw columns of one signal into stored columns; one per signal of a batch's schema."""

    __slots__ = ("_constants", "_float", "_identity", "_integer", "_offset", "_scale", "spec")

    def __init__(self, spec: SignalSpec) -> None:
        self.spec = spec
        self._integer = spec.integer_scaled and not spec.is_float
        self._scale: int | float = int(spec.scale) if self._integer else spec.scale
        self._offset: int | float = int(spec.offset) if self._integer else spec.offset
        self._identity = self._integer and self._scale == 1 and self._offset == 0
        # raw * (a float) is a float for any int or float raw, and so is that plus the offset.
        self._float = not self._integer and type(spec.scale) is float
        # The stored form (kind, data) of a constant column, by its int raw value: sample-and-hold
        # repeats the same constant chunk after chunk (ints only: 0 == -0.0 and NaN have no safe key).
        self._constants: dict[int, tuple[int, bytes]] = {}

    def encode(self, column: Sequence[RawValue | None]) -> Encoded | None:
        """The stored form of one chunk's raw column, or ``None`` when every value is absent."""
        count = len(column)
        if not count:
            return None
        first = column[0]
        # Raws that compare equal give the same physical value and type on both fast paths, but for
        # 0 == -0.0 in float arithmetic (the sign of a zero result follows the raw's): zeros go the long way.
        if (
            first is not None
            and (self._integer or (self._float and first != 0))
            and (column[-1] is first or column[-1] == first)  # as count() compares: a cheap first look
            and column.count(first) == count
        ):
            if type(first) is int:
                known = self._constants.get(first)
                if known is None:
                    if len(self._constants) >= 256:
                        self._constants.clear()
                    known = self._constants[first] = self._constant(first)
                return known[0], None, known[1], count
            kind, data = self._constant(first)
            return kind, None, data, count
        scale, offset = self._scale, self._offset
        try:
            if self._identity:
                return INT64, None, _pack("q", column), count  # type: ignore[arg-type]
            if self._integer:  # an int raw: int(raw) is raw; a float raw makes a float: TypeError
                return INT64, None, _pack("q", [r * scale + offset for r in column]), count  # type: ignore[operator]
            if self._float:
                return FLOAT64, None, _pack("d", [r * scale + offset for r in column]), count  # type: ignore[operator]
        except (TypeError, OverflowError):  # None, a float raw of an integer signal, past int64
            pass
        return self._general(column)

    def _constant(self, raw: RawValue) -> tuple[int, bytes]:
        """The kind and data of a column whose every value is ``raw``."""
        value = self.spec.to_physical(raw)
        if type(value) is float:
            return FLOAT64 | CONSTANT, _DOUBLE(value)
        if type(value) is int and INT64_RANGE[0] <= value <= INT64_RANGE[1]:
            return INT64 | CONSTANT, _LONG(value)
        kind, data = _typed([value])
        return kind | CONSTANT, data

    def _general(self, column: Sequence[RawValue | None]) -> Encoded | None:
        to_physical = self.spec.to_physical
        mask = 0
        values: list[PhysicalValue] = []
        for index, raw in enumerate(column):
            if raw is not None:
                mask |= 1 << index
                values.append(to_physical(raw))
        if not values:
            return None
        present = None if len(values) == len(column) else mask.to_bytes((len(column) + 7) // 8, "little")
        kind, data = _typed(values)
        return kind, present, data, len(values)


def without(
    ticks: Sequence[int], raw_columns: Sequence[Sequence[RawValue | None]], held: Sequence[set[int]]
) -> tuple[list[Sequence[RawValue | None]], int]:
    """First write wins: each column with its values at the ``held`` ticks of its signal made absent,
    and how many values that took away."""
    kept: list[Sequence[RawValue | None]] = []
    skipped = 0
    for column, taken in zip(raw_columns, held, strict=True):
        if taken.isdisjoint(ticks):
            kept.append(column)
            continue
        masked: list[RawValue | None]
        if taken.issuperset(ticks):  # another boot replayed this stretch whole: the usual overlap
            masked = [None] * len(column)
        else:
            masked = [None if tick in taken else raw for tick, raw in zip(ticks, column, strict=True)]
        skipped += masked.count(None) - column.count(None)
        kept.append(masked)
    return kept, skipped


def positions(present: bytes | None, count: int) -> Sequence[int]:
    """The indexes of a stored column's present values among its chunk's ``count`` ticks."""
    if present is None:
        return range(count)
    mask = int.from_bytes(present, "little")
    return [index for index in range(count) if mask >> index & 1]


def decode(kind: int, present: bytes | None, data: bytes, count: int) -> list[PhysicalValue | None]:
    """One stored column as ``count`` values aligned with its chunk's ticks, ``None`` where absent."""
    try:
        values = _unpack(kind & ~CONSTANT, data)
    except ValueError as error:
        raise StorageCorruptError(f"a stored column does not decode: {error}") from error
    at = positions(present, count)
    if kind & CONSTANT and len(values) == 1:
        values = values * len(at)
    if len(values) != len(at):
        raise StorageCorruptError(f"a stored column has {len(values)} values for {len(at)} present ticks")
    if present is None:
        return values
    aligned: list[PhysicalValue | None] = [None] * count
    for index, value in zip(at, values, strict=True):
        aligned[index] = value
    return aligned
