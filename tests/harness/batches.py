"""Telemetry for the receiver's tests: one vehicle, one schema, three chunks, and batches of them.

``SCHEMA`` holds an integer-scaled signal (physical ints), a scaled float and an IEEE float; ``C0``,
``C1`` and ``C2`` are chunks 0..2 of boot ``BOOT`` with absent values in each column. :func:`payload`
encodes chunks into one batch as an agent sends it; :func:`batch` decodes it as the receiver does.
Pure data and functions: no I/O, safe from any thread; every call returns new objects.
"""

from __future__ import annotations

from fractions import Fraction

from agent import wire
from agent.wire.values import ChunkData, RawValue, Schema, SignalSpec

BOOT = bytes(range(16))
OTHER_BOOT = bytes(range(16, 32))
VIN = "WVWZZZ1JZXW000001"
SCHEMA = Schema(
    Fraction(50),
    (
        SignalSpec("Engine.Rpm", scale=2, offset=-40),  # integer-scaled: physical ints
        SignalSpec("Engine.Temp", scale=0.5, integer_scaled=False),  # physical floats
        SignalSpec("Imu.Accel", is_float=True, integer_scaled=False),  # IEEE float signal
    ),
)


def chunk(seq: int, ticks: list[int], *columns: list[RawValue | None], boot: bytes = BOOT) -> ChunkData:
    return ChunkData(boot, seq, ticks, [list(column) for column in columns])


def payload(chunks: list[ChunkData], vin: str = VIN, schema: Schema = SCHEMA, **kwargs: object) -> bytes:
    """The batch of ``chunks`` as it goes on the wire (``kwargs``: :func:`agent.wire.encode_batch`'s)."""
    blobs = [wire.encode_chunk(schema, c) for c in chunks]
    return wire.encode_batch(vin, schema, blobs, **kwargs)  # type: ignore[arg-type]


def batch(
    chunks: list[ChunkData], vin: str = VIN, schema: Schema = SCHEMA, **kwargs: object
) -> wire.DecodedBatch:
    """The batch of ``chunks`` as the receiver decodes it."""
    return wire.decode_batch(payload(chunks, vin, schema, **kwargs))


C0 = chunk(0, [0, 1, 2, 3], [10, 11, None, 13], [None, 6, 6, 7], [0.25, None, None, -1.5])
C1 = chunk(1, [4, 5, 6], [14, None, None], [8, 8, None], [None, None, None])
C2 = chunk(2, [7, 9, 12], [None, None, 20], [1, 2, 3], [2.0, None, 1e300])
