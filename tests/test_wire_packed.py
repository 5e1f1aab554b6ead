"""agent.wire.packed: batches are laid out signal by signal and decode exactly like their stored chunks."""

from __future__ import annotations

import random

import pytest

from agent import wire
from agent.errors import WireError
from agent.wire import chunks, packed
from agent.wire import telemetry_pb2 as pb
from agent.wire.values import ChunkData, SignalSpec
from tests.harness.codec import BOOT, SPECS, batch_body, drive, schema_of


def test_batches_are_packed_signal_by_signal_and_decode_like_the_stored_chunks() -> None:
    schema = schema_of(*SPECS)
    stored = drive(1, 45)  # 45 s: the chunk at 30 s starts from absolute values again
    blobs = [wire.encode_chunk(schema, chunk) for chunk in stored]
    payload = wire.encode_batch("V", schema, blobs)
    message = batch_body(payload)
    assert message.HasField("packed") and not message.chunks
    assert len(message.packed.columns) == 2 and list(message.packed.sample_count) == [50] * 45
    one_by_one = [chunks.decode_chunk(schema, pb.Chunk.FromString(blob)) for blob in blobs]
    assert wire.decode_batch(payload).chunks == one_by_one
    steady = list(message.packed.columns[1].residuals)  # 7 throughout: absolute at 0 s and at 30 s only
    assert [i for i, r in enumerate(steady) if r] == [0, 30 * 50] and steady[0] == steady[1500] == 7


def test_chunk_headers_are_differences_from_the_previous_chunks() -> None:
    schema = schema_of(SignalSpec("M.s"))
    other = bytes(range(16, 32))
    stored = [
        ChunkData(BOOT, 4, [100, 101], [[1, 2]]),
        ChunkData(BOOT, 5, [102, 104, 105], [[3, 4, 5]]),
        ChunkData(other, 0, [7], [[6]]),
    ]
    layout = packed.pack(schema, [wire.encode_chunk(schema, chunk) for chunk in stored])
    assert layout is not None
    assert list(layout.boot_id) == [BOOT, b"", other] and list(layout.seq) == [4, 1, -5]
    assert list(layout.first_tick) == [100, 2, -95] and list(layout.sample_count) == [2, 3, 1]
    assert list(layout.tick_dod_count) == [0, 2, 0] and list(layout.tick_dod) == [1, -1]
    assert packed.unpack(schema, layout) == stored


def test_batches_decode_alone_and_in_any_order() -> None:
    schema = schema_of(*SPECS)
    stored = drive(5, 12)
    payloads = [
        wire.encode_batch("V", schema, [wire.encode_chunk(schema, c) for c in stored[i : i + 3]])
        for i in range(0, 12, 3)
    ]
    rng = random.Random(5)
    order = list(range(4))
    rng.shuffle(order)
    for index in order:
        got = wire.decode_batch(payloads[index]).chunks
        assert [c.seq for c in got] == [3 * index, 3 * index + 1, 3 * index + 2]
        for want, have in zip(stored[3 * index : 3 * index + 3], got, strict=True):
            for a, b in zip(want.columns[0], have.columns[0], strict=True):
                assert (a is None and b is None) or abs(a - b) <= 3  # type: ignore[operator]


def test_chunks_that_do_not_fit_the_schema_travel_as_they_are_and_are_refused() -> None:
    narrow, wide = schema_of(SPECS[0]), schema_of(*SPECS)
    chunk = drive(3, 1)[0]
    blob = wire.encode_chunk(narrow, ChunkData(BOOT, 0, chunk.ticks, chunk.columns[:1]))
    assert packed.pack(wide, [blob]) is None and packed.pack(wide, [b"\xff"]) is None
    payload = wire.encode_batch("V", wide, [blob])
    assert not batch_body(payload).HasField("packed") and len(batch_body(payload).chunks) == 1
    with pytest.raises(WireError, match="1 columns, schema has 2"):
        wire.decode_batch(payload)


def test_a_stream_that_would_overflow_64_bits_travels_as_stored_and_decodes() -> None:
    schema = schema_of(SignalSpec("Big.Value"))
    stored = [ChunkData(BOOT, 0, [0, 1], [[2**62, -(2**62)]]), ChunkData(BOOT, 1, [2, 3], [[2**62, 2**62]])]
    blobs = [wire.encode_chunk(schema, chunk) for chunk in stored]
    assert packed.pack(schema, blobs) is None  # 2^62 - (-2^62) does not fit a sint64
    assert wire.decode_batch(wire.encode_batch("V", schema, blobs)).chunks == stored


def packed_payload(layout: pb.Packed, *names: str) -> bytes:
    schema = pb.Schema(rate_num=50, rate_den=1, signals=[pb.SignalDef(name=n) for n in names])
    message = pb.Batch(vin="V", schema=schema, packed=layout)
    return pb.Envelope(
        version=1, kind=pb.BODY_KIND_BATCH, body=message.SerializeToString()
    ).SerializeToString()


def heads(counts: list[int]) -> dict[str, list[int] | list[bytes]]:
    return {
        "boot_id": [BOOT] + [b""] * (len(counts) - 1),
        "seq": [0] + [1] * (len(counts) - 1),
        "first_tick": [0, *counts[:-1]],
        "sample_count": counts,
        "tick_dod_count": [0] * len(counts),
    }


@pytest.mark.parametrize(
    "layout, reason",
    [
        (pb.Packed(**heads([3]), columns=[pb.Column(presence_runs=[0, 5])]), "presence runs cover 5"),  # type: ignore[arg-type]
        (pb.Packed(**heads([3]), columns=[pb.Column(residuals=[1, 2, 3, 4])]), "4 residuals for 3"),  # type: ignore[arg-type]
        (pb.Packed(**heads([3]), columns=[]), "0 columns, schema has 1"),  # type: ignore[arg-type]
        (pb.Packed(**{**heads([3, 3]), "seq": [0]}, columns=[pb.Column()]), "headers of different lengths"),  # type: ignore[arg-type]
        (pb.Packed(**heads([2_000_000]), columns=[pb.Column()]), "more than"),  # type: ignore[arg-type]
        (
            pb.Packed(**{**heads([3]), "tick_dod_count": [3]}, tick_dod=[1, 1, 1], columns=[pb.Column()]),
            "3 tick deltas",
        ),  # type: ignore[arg-type]
        (pb.Packed(**heads([3]), columns=[pb.Column(exact_gaps=[5], exact=[1])]), "exact value past"),  # type: ignore[arg-type]
        (pb.Packed(**heads([3]), columns=[pb.Column(exact_gaps=[0])]), "unpaired"),  # type: ignore[arg-type]
        (pb.Packed(**heads([3]), columns=[pb.Column(floats=[1.0])]), "floats"),  # type: ignore[arg-type]
    ],
)
def test_inconsistent_packed_batches_are_refused(layout: pb.Packed, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        wire.decode_batch(packed_payload(layout, "M.s"))


def test_seal_times_travel_as_differences_and_decode_as_stored() -> None:
    schema = schema_of(SignalSpec("M.s"))
    stamps = [1_700_000_000_000, 1_700_000_001_000, 1_699_999_999_999, 0]  # a step back; an unstamped one
    stored = [ChunkData(BOOT, n, [n], [[n]], stamp) for n, stamp in enumerate(stamps)]
    blobs = [wire.encode_chunk(schema, chunk) for chunk in stored]
    layout = packed.pack(schema, blobs)
    assert layout is not None and list(layout.sealed_at_ms) == [stamps[0], 1000, -1001, -stamps[2]]
    assert wire.decode_batch(wire.encode_batch("V", schema, blobs)).chunks == stored
    unstamped = [ChunkData(BOOT, n, [n], [[n]]) for n in range(3)]
    layout = packed.pack(schema, [wire.encode_chunk(schema, chunk) for chunk in unstamped])
    assert layout is not None and not layout.sealed_at_ms  # none stamped: nothing on the wire


@pytest.mark.parametrize("stamps", [[5], [5, 6, 7], [5, -6]])
def test_seal_times_of_another_length_or_negative_are_refused(stamps: list[int]) -> None:
    layout = pb.Packed(**heads([1, 1]), columns=[pb.Column()], sealed_at_ms=stamps)  # type: ignore[arg-type]
    with pytest.raises(WireError, match="seal times"):
        wire.decode_batch(packed_payload(layout, "M.s"))
