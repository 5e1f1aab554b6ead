"""The wire codec: bounds hold, absent stays absent, batches decode alone, garbage is a WireError."""

from __future__ import annotations

import contextlib
import random
import zlib
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import telemetry_pb2 as pb
from agent import wire
from agent.errors import WireError
from agent.model import ChunkData, ChunkId, Schema, SignalSpec

BOOT = bytes(range(16))


def schema_of(*specs: SignalSpec) -> Schema:
    return Schema(Fraction(50), tuple(specs))


def round_trip(schema: Schema, chunk: ChunkData) -> ChunkData:
    payload = wire.encode_batch("VIN1", schema, [wire.encode_chunk(schema, chunk)])
    decoded = wire.decode_batch(payload)
    assert decoded.vin == "VIN1"
    assert decoded.schema.digest == schema.digest
    return decoded.chunks[0]


column_values = st.lists(st.one_of(st.none(), st.integers(-(2**40), 2**40)), min_size=1, max_size=120)


@settings(max_examples=300, deadline=None)
@given(
    values=column_values,
    bound=st.integers(0, 1000),
    predictor=st.sampled_from(["hold", "linear", "smoothing"]),
)
def test_every_reconstruction_is_within_the_bound(
    values: list[int | None], bound: int, predictor: str
) -> None:
    schema = schema_of(SignalSpec("M.s", 0.5, 0.0, False, False, bound, predictor))
    chunk = ChunkData(BOOT, 0, list(range(1000, 1000 + len(values))), [values])
    out = round_trip(schema, chunk).columns[0]
    assert [v is None for v in out] == [v is None for v in values]
    for truth, got in zip(values, out, strict=True):
        if truth is not None:
            assert got is not None and abs(got - truth) <= bound
            if bound == 0:
                assert got == truth


@settings(max_examples=100, deadline=None)
@given(ticks=st.lists(st.integers(1, 500), min_size=1, max_size=60), start=st.integers(-(2**40), 2**40))
def test_ticks_survive_exactly_with_jitter_and_gaps(ticks: list[int], start: int) -> None:
    absolute = [start]
    for step in ticks[1:]:
        absolute.append(absolute[-1] + step)
    schema = schema_of(SignalSpec("M.s"))
    chunk = ChunkData(BOOT, 7, absolute, [[1] * len(absolute)])
    assert round_trip(schema, chunk).ticks == absolute


def test_regular_grid_and_steady_signal_cost_next_to_nothing() -> None:
    schema = schema_of(SignalSpec("M.s"))
    steady = ChunkData(BOOT, 0, list(range(50)), [[4200] * 50])
    blob = wire.encode_chunk(schema, steady)
    message = pb.Chunk.FromString(blob)
    assert list(message.tick_dod) == [] and list(message.columns[0].residuals) == [4200]
    assert len(blob) < 30


def test_float_signals_round_trip_bit_exact_including_nan() -> None:
    schema = schema_of(SignalSpec("F.x", 1.0, 0.0, True, False))
    values: list[int | float | None] = [1.5, float("nan"), None, -0.0, 1e300]
    out = round_trip(schema, ChunkData(BOOT, 0, list(range(5)), [values])).columns[0]
    assert out[0] == 1.5 and out[1] != out[1] and out[2] is None and str(out[3]) == "-0.0" and out[4] == 1e300


def test_physical_values_match_cantools_conventions() -> None:
    assert SignalSpec("a", 1, -40, integer_scaled=True).to_physical(100) == 60
    assert isinstance(SignalSpec("a", 1, -40, integer_scaled=True).to_physical(100), int)
    assert SignalSpec("b", 0.01, 0.0, integer_scaled=False).to_physical(12345) == 12345 * 0.01


def test_batches_decode_alone_and_in_any_order() -> None:
    schema = schema_of(SignalSpec("M.s", bound_raw=3, predictor="linear"))
    rng = random.Random(5)
    chunks = [
        ChunkData(
            BOOT, seq, list(range(seq * 50, seq * 50 + 50)), [[rng.randint(0, 1000) for _ in range(50)]]
        )
        for seq in range(6)
    ]
    payloads = [wire.encode_batch("V", schema, [wire.encode_chunk(schema, c)]) for c in chunks]
    order = list(range(6))
    rng.shuffle(order)
    for index in order:
        got = wire.decode_batch(payloads[index]).chunks[0]
        assert got.seq == index
        assert all(abs(a - b) <= 3 for a, b in zip(got.columns[0], chunks[index].columns[0], strict=True))  # type: ignore[operator]


def test_ack_ranges_fold_and_round_trip() -> None:
    ids = [ChunkId(b"a", 1), ChunkId(b"a", 2), ChunkId(b"a", 3), ChunkId(b"b", 0), ChunkId(b"a", 9)]
    vin, ranges = wire.decode_ack(wire.encode_ack("V", ids))
    assert vin == "V" and ranges == [(b"a", 1, 3), (b"b", 0, 0), (b"a", 9, 9)]


GOOD = wire.encode_batch(
    "V",
    schema_of(SignalSpec("M.s")),
    [wire.encode_chunk(schema_of(SignalSpec("M.s")), ChunkData(BOOT, 0, [1, 2], [[1, 2]]))],
)


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"", "wire version 0"),
        (pb.Envelope(version=1, kind=pb.BODY_KIND_BATCH).SerializeToString(), "no VIN"),
        (b"\xff\xff\xff", "not an envelope"),
        (pb.Envelope(version=99, kind=pb.BODY_KIND_BATCH).SerializeToString(), "version 99"),
        (pb.Envelope(version=1, kind=pb.BODY_KIND_ACK).SerializeToString(), "expected a BODY_KIND_BATCH"),
        (
            pb.Envelope(
                version=1, kind=pb.BODY_KIND_BATCH, compression=pb.COMPRESSION_ZLIB, body=b"nope"
            ).SerializeToString(),
            "does not decompress",
        ),
        (
            pb.Envelope(
                version=1,
                kind=pb.BODY_KIND_BATCH,
                compression=pb.COMPRESSION_ZLIB,
                body=zlib.compress(b"\x00" * (wire.MAX_BODY_BYTES + 10)),
            ).SerializeToString(),
            "inflates past",
        ),
        (GOOD[: len(GOOD) // 2], "."),
    ],
)
def test_garbage_is_a_wire_error_never_a_crash(payload: bytes, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        wire.decode_batch(payload)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_escape_as_another_exception(payload: bytes) -> None:
    with contextlib.suppress(WireError):
        wire.decode_batch(payload)


def test_inconsistent_columns_are_refused() -> None:
    schema = schema_of(SignalSpec("M.s"))
    message = pb.Chunk(boot_id=BOOT, seq=0, sample_count=3)
    message.columns.add(presence_runs=[0, 5])
    body = pb.Batch(
        vin="V",
        schema=pb.Schema(rate_num=50, rate_den=1, signals=[pb.SignalDef(name="M.s")]),
        chunks=[message],
    )
    payload = pb.Envelope(
        version=1, kind=pb.BODY_KIND_BATCH, body=body.SerializeToString()
    ).SerializeToString()
    with pytest.raises(WireError, match="presence runs cover 5"):
        wire.decode_batch(payload)
    assert schema.names == ("M.s",)
