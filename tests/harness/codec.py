"""Small helpers for the codec's tests (``tests/test_wire_*.py``): schemas, chunks and round trips.

:func:`round_trip` sends one chunk the way the agent does (sealed, then in a batch) and decodes it the
way the receiver does; :func:`batch_body` opens a payload's envelope without the codec, to look at the
layout; :func:`drive` makes chunks of a noisy speed with absent values and a steady signal (``SPECS``).
Pure functions, no I/O; every call returns new objects.
"""

from __future__ import annotations

import random
import zlib
from fractions import Fraction

import zstandard

from agent import wire
from agent.wire import telemetry_pb2 as pb
from agent.wire.values import ChunkData, RawValue, Schema, SignalSpec

BOOT = bytes(range(16))
SPECS = (SignalSpec("M.s", bound_raw=3, predictor="linear"), SignalSpec("M.t"))


def schema_of(*specs: SignalSpec) -> Schema:
    return Schema(Fraction(50), tuple(specs))


def round_trip(schema: Schema, chunk: ChunkData, compress: bool | str = True) -> ChunkData:
    """``chunk`` sealed, sent alone in a batch and decoded."""
    payload = wire.encode_batch("VIN1", schema, [wire.encode_chunk(schema, chunk)], compress=compress)
    decoded = wire.decode_batch(payload)
    assert decoded.vin == "VIN1"
    assert decoded.schema.digest == schema.digest
    return decoded.chunks[0]


def batch_body(payload: bytes) -> pb.Batch:
    """The batch inside a payload, read with protobuf, zlib and zstandard alone."""
    envelope = pb.Envelope.FromString(payload)
    raw = envelope.body
    if envelope.compression == pb.COMPRESSION_ZSTD:
        raw = zstandard.ZstdDecompressor().decompress(raw)
    elif envelope.compression == pb.COMPRESSION_ZLIB:
        raw = zlib.decompress(raw)
    return pb.Batch.FromString(raw)


def drive(seed: int, count: int, size: int = 50) -> list[ChunkData]:
    """``count`` chunks of ``size`` samples of the two ``SPECS`` signals: a noisy speed (5 % absent), 7."""
    rng = random.Random(seed)
    speed, chunks = 5000, []
    for seq in range(count):
        column: list[RawValue | None] = []
        for _ in range(size):
            speed = max(0, speed + rng.randint(-40, 45))
            column.append(None if rng.random() < 0.05 else speed)
        steady: list[RawValue | None] = [7] * size
        chunks.append(ChunkData(BOOT, seq, list(range(seq * size, seq * size + size)), [column, steady]))
    return chunks
