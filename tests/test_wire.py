"""The wire codec: bounds hold, absent stays absent, batches pack and decode alone, garbage is a WireError."""

from __future__ import annotations

import contextlib
import random
import zlib
from fractions import Fraction

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import wire
from agent.errors import WireError
from agent.wire import chunks as sealed
from agent.wire import telemetry_pb2 as pb
from agent.wire.values import ChunkData, ChunkId, RawValue, Schema, SignalSpec

BOOT = bytes(range(16))


def schema_of(*specs: SignalSpec) -> Schema:
    return Schema(Fraction(50), tuple(specs))


def round_trip(schema: Schema, chunk: ChunkData, compress: bool | str = True) -> ChunkData:
    payload = wire.encode_batch("VIN1", schema, [wire.encode_chunk(schema, chunk)], compress=compress)
    decoded = wire.decode_batch(payload)
    assert decoded.vin == "VIN1"
    assert decoded.schema.digest == schema.digest
    return decoded.chunks[0]


def body(payload: bytes) -> pb.Batch:
    envelope = pb.Envelope.FromString(payload)
    raw = envelope.body
    if envelope.compression == pb.COMPRESSION_ZSTD:
        raw = zstandard.ZstdDecompressor().decompress(raw)
    elif envelope.compression == pb.COMPRESSION_ZLIB:
        raw = zlib.decompress(raw)
    return pb.Batch.FromString(raw)


column_values = st.lists(st.one_of(st.none(), st.integers(-(2**40), 2**40)), min_size=1, max_size=120)


@settings(max_examples=300, deadline=None)
@given(
    values=column_values,
    bound=st.integers(0, 1000),
    predictor=st.sampled_from(["hold", "linear", "smoothing", "swing"]),
)
def test_every_reconstruction_is_within_the_bound(
    values: list[int | None], bound: int, predictor: str
) -> None:
    schema = schema_of(SignalSpec("M.s", 0.5, 0.0, False, False, bound, predictor))
    chunk = ChunkData(BOOT, 0, list(range(1000, 1000 + len(values))), [values])  # type: ignore[list-item]
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


def test_ticks_must_increase() -> None:
    with pytest.raises(ValueError, match="ticks must increase: 5 then 5"):
        wire.encode_chunk(schema_of(SignalSpec("M.s")), ChunkData(BOOT, 0, [4, 5, 5], [[1, 2, 3]]))


def test_regular_grid_and_steady_signal_cost_next_to_nothing() -> None:
    schema = schema_of(SignalSpec("M.s"))
    steady = ChunkData(BOOT, 0, list(range(50)), [[4200] * 50])
    blob = wire.encode_chunk(schema, steady)
    message = pb.Chunk.FromString(blob)
    assert list(message.tick_dod) == [] and list(message.residuals) == [4200]
    assert list(message.residual_counts) == [1] and not message.extras
    assert len(blob) < 30


def test_float_signals_round_trip_bit_exact_including_nan() -> None:
    schema = schema_of(SignalSpec("F.x", 1.0, 0.0, True, False))
    values: list[RawValue | None] = [1.5, float("nan"), None, -0.0, 1e300, float("inf"), 2.5]
    out = round_trip(schema, ChunkData(BOOT, 0, list(range(7)), [values])).columns[0]
    assert out[0] == 1.5 and out[1] != out[1] and out[2] is None and str(out[3]) == "-0.0"
    assert out[4:] == [1e300, float("inf"), 2.5]  # NaN did not poison what followed


def test_physical_values_match_cantools_conventions() -> None:
    assert SignalSpec("a", 1, -40, integer_scaled=True).to_physical(100) == 60
    assert isinstance(SignalSpec("a", 1, -40, integer_scaled=True).to_physical(100), int)
    assert SignalSpec("b", 0.01, 0.0, integer_scaled=False).to_physical(12345) == 12345 * 0.01


HEADING = SignalSpec("Navigation.Heading", 0.01, 0.0, False, False, 500, "hold angle 36000 0")


@pytest.mark.parametrize("predictor", ["hold", "linear", "smoothing", "swing"])
def test_an_angle_wraps_the_short_way_and_stays_in_its_range(predictor: str) -> None:
    spec = HEADING._replace(predictor=f"{predictor} angle 36000 0")
    truth = [35900, 35990, 10, 50, 35950, 20, 35999, 0, 18000, 100] * 5
    out = round_trip(schema_of(spec), ChunkData(BOOT, 0, list(range(50)), [truth])).columns[0]  # type: ignore[list-item]
    for want, got in zip(truth, out, strict=True):
        assert got is not None and 0 <= got < 36000
        distance = abs(got - want) % 36000
        assert min(distance, 36000 - distance) <= 500


def test_an_angle_noisy_around_north_costs_what_a_steady_one_does() -> None:
    rng = random.Random(3)
    north = [(rng.randint(-150, 150)) % 36000 for _ in range(50)]  # 358.5° .. 1.5°, crossing 0 often
    east = [9000 + rng.randint(-150, 150) for _ in range(50)]
    sizes = [
        len(wire.encode_chunk(schema_of(HEADING), ChunkData(BOOT, 0, list(range(50)), [column])))
        for column in (north, east)
    ]
    assert sizes[0] <= sizes[1] + 4


def test_an_angles_out_of_range_values_are_sent_exactly_and_do_not_poison_the_rest() -> None:
    truth = [100, 200, 65535, 300, 65535, 65535, 400, 35999]  # 0xFFFF: "not available" in a 16-bit field
    out = round_trip(schema_of(HEADING), ChunkData(BOOT, 0, list(range(8)), [truth])).columns[0]  # type: ignore[list-item]
    assert out[2] == out[4] == out[5] == 65535
    assert all(
        v is not None and min(abs(v - t) % 36000, 36000 - abs(v - t) % 36000) <= 500
        for v, t in zip(out, truth, strict=True)
    )
    lossless = HEADING._replace(bound_raw=0)
    assert round_trip(schema_of(lossless), ChunkData(BOOT, 0, list(range(8)), [truth])).columns[0] == truth  # type: ignore[comparison-overlap]


@pytest.mark.parametrize("predictor", ["hold", "linear", "smoothing", "swing"])
def test_64_bit_raw_values_survive_exactly(predictor: str) -> None:
    unsigned = [0, 2**64 - 1, 2**63, 5, 2**64 - 1, 7]
    signed = [-(2**63), 2**63 - 1, 0, -(2**63), 1, 2**62]
    schema = schema_of(SignalSpec("U.u", predictor=predictor), SignalSpec("S.s", predictor=predictor))
    got = round_trip(schema, ChunkData(BOOT, 0, list(range(6)), [unsigned, signed]))  # type: ignore[list-item]
    assert got.columns == [unsigned, signed]


def test_a_value_that_is_not_a_raw_can_value_is_refused() -> None:
    with pytest.raises(ValueError, match="not a raw CAN value"):
        wire.encode_chunk(schema_of(SignalSpec("U.u")), ChunkData(BOOT, 0, [0, 1], [[0, 2**64]]))


def drive(seed: int, count: int, size: int = 50) -> list[ChunkData]:
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


SPECS = (SignalSpec("M.s", bound_raw=3, predictor="linear"), SignalSpec("M.t"))


def test_batches_are_packed_signal_by_signal_and_decode_like_the_stored_chunks() -> None:
    schema = schema_of(*SPECS)
    chunks = drive(1, 45)  # 45 s: the chunk at 30 s starts from absolute values again
    blobs = [wire.encode_chunk(schema, chunk) for chunk in chunks]
    payload = wire.encode_batch("V", schema, blobs)
    message = body(payload)
    assert message.HasField("packed") and not message.chunks
    assert len(message.packed.columns) == 2 and list(message.packed.sample_count) == [50] * 45
    one_by_one = [sealed.decode_chunk(schema, pb.Chunk.FromString(blob)) for blob in blobs]
    assert wire.decode_batch(payload).chunks == one_by_one
    steady = list(message.packed.columns[1].residuals)  # 7 throughout: absolute at 0 s and at 30 s only
    assert [i for i, r in enumerate(steady) if r] == [0, 30 * 50] and steady[0] == steady[1500] == 7


def test_batches_decode_alone_and_in_any_order() -> None:
    schema = schema_of(*SPECS)
    chunks = drive(5, 12)
    payloads = [
        wire.encode_batch("V", schema, [wire.encode_chunk(schema, c) for c in chunks[i : i + 3]])
        for i in range(0, 12, 3)
    ]
    rng = random.Random(5)
    order = list(range(4))
    rng.shuffle(order)
    for index in order:
        got = wire.decode_batch(payloads[index]).chunks
        assert [c.seq for c in got] == [3 * index, 3 * index + 1, 3 * index + 2]
        for want, have in zip(chunks[3 * index : 3 * index + 3], got, strict=True):
            for a, b in zip(want.columns[0], have.columns[0], strict=True):
                assert (a is None and b is None) or abs(a - b) <= 3  # type: ignore[operator]


@pytest.mark.parametrize("compress", [True, False, "zlib", "zstd", "none"])
def test_every_compression_round_trips(compress: bool | str) -> None:
    schema = schema_of(*SPECS)
    chunk = drive(2, 1)[0]
    envelope = pb.Envelope.FromString(
        wire.encode_batch("V", schema, [wire.encode_chunk(schema, chunk)], compress=compress)
    )
    expected = {True: pb.COMPRESSION_ZSTD, False: pb.COMPRESSION_NONE, "zlib": pb.COMPRESSION_ZLIB}
    assert envelope.compression == expected.get(compress, pb.COMPRESSION_ZSTD if compress == "zstd" else 0)
    assert round_trip(schema, chunk, compress) == round_trip(schema, chunk, "none")
    with pytest.raises(ValueError, match="unknown compression 'lz4'"):
        wire.encode_batch("V", schema, [], compress="lz4")


def test_chunks_that_do_not_fit_the_schema_travel_as_they_are_and_are_refused() -> None:
    narrow, wide = schema_of(SPECS[0]), schema_of(*SPECS)
    chunk = drive(3, 1)[0]
    blob = wire.encode_chunk(narrow, ChunkData(BOOT, 0, chunk.ticks, chunk.columns[:1]))
    payload = wire.encode_batch("V", wide, [blob])
    assert not body(payload).HasField("packed") and len(body(payload).chunks) == 1
    with pytest.raises(WireError, match="1 columns, schema has 2"):
        wire.decode_batch(payload)


def test_ack_ranges_fold_and_round_trip() -> None:
    ids = [ChunkId(b"a", 1), ChunkId(b"a", 2), ChunkId(b"a", 3), ChunkId(b"b", 0), ChunkId(b"a", 9)]
    vin, ranges = wire.decode_ack(wire.encode_ack("V", ids))
    assert vin == "V" and ranges == [(b"a", 1, 3), (b"b", 0, 0), (b"a", 9, 9)]


def test_schema_carries_predictors_angles_and_bounds() -> None:
    schema = schema_of(
        HEADING, SignalSpec("A.b", 0.1, -40.0, False, False, 7, "swing"), SignalSpec("F.f", is_float=True)
    )
    assert wire.schema_from_bytes(wire.schema_bytes(schema)) == schema


GOOD = wire.encode_batch(
    "V",
    schema_of(SignalSpec("M.s")),
    [wire.encode_chunk(schema_of(SignalSpec("M.s")), ChunkData(BOOT, 0, [1, 2], [[1, 2]]))],
    compress="zlib",
)


def envelope(compression: pb.Compression, data: bytes) -> bytes:
    return pb.Envelope(
        version=1, kind=pb.BODY_KIND_BATCH, compression=compression, body=data
    ).SerializeToString()


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"", "wire version 0"),
        (pb.Envelope(version=1, kind=pb.BODY_KIND_BATCH).SerializeToString(), "no VIN"),
        (b"\xff\xff\xff", "not an envelope"),
        (pb.Envelope(version=99, kind=pb.BODY_KIND_BATCH).SerializeToString(), "version 99"),
        (pb.Envelope(version=1, kind=pb.BODY_KIND_ACK).SerializeToString(), "expected a BODY_KIND_BATCH"),
        (envelope(pb.COMPRESSION_ZLIB, b"nope"), "does not decompress"),
        (envelope(pb.COMPRESSION_ZLIB, zlib.compress(b"\x00" * (wire.MAX_BODY_BYTES + 10))), "inflates past"),
        (envelope(pb.COMPRESSION_ZLIB, zlib.compress(b"\x0a\x01V" * 50)[:-6]), "truncated"),
        (envelope(pb.COMPRESSION_ZSTD, b"nope"), "does not decompress"),
        (
            envelope(
                pb.COMPRESSION_ZSTD, zstandard.ZstdCompressor().compress(b"\x00" * (wire.MAX_BODY_BYTES + 1))
            ),
            "inflates past",
        ),
        (
            envelope(
                pb.COMPRESSION_ZSTD, zstandard.ZstdCompressor(write_content_size=False).compress(b"\x0a\x01V")
            ),
            "does not say its size",
        ),
        (
            envelope(pb.COMPRESSION_ZSTD, zstandard.ZstdCompressor().compress(b"\x0a\x01V") + b"tail"),
            "decompress",
        ),
        (
            envelope(pb.COMPRESSION_ZSTD, zstandard.ZstdCompressor().compress(b"\x0a\x01V" * 40)[:-5]),
            "decompress",
        ),
        (envelope(7, b""), "unknown compression 7"),  # type: ignore[arg-type]
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


def packed_payload(packed: pb.Packed, *names: str) -> bytes:
    schema = pb.Schema(rate_num=50, rate_den=1, signals=[pb.SignalDef(name=n) for n in names])
    message = pb.Batch(vin="V", schema=schema, packed=packed)
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
    "packed, reason",
    [
        (pb.Packed(**heads([3]), columns=[pb.Column(presence_runs=[0, 5])]), "presence runs cover 5"),  # type: ignore[arg-type]
        (pb.Packed(**heads([3]), columns=[pb.Column(residuals=[1, 2, 3, 4])]), "4 residuals for 3"),  # type: ignore[arg-type]
        (pb.Packed(**heads([3]), columns=[]), "0 columns, schema has 1"),  # type: ignore[arg-type]
        (pb.Packed(**{**heads([3, 3]), "seq": [0]}, columns=[pb.Column()]), "headers of different lengths"),  # type: ignore[arg-type]
        (pb.Packed(**heads([2_000_000]), columns=[pb.Column()]), "more than"),  # type: ignore[arg-type]
        (pb.Packed(**heads([3]), columns=[pb.Column(exact_gaps=[5], exact=[1])]), "exact value past"),  # type: ignore[arg-type]
        (pb.Packed(**heads([3]), columns=[pb.Column(exact_gaps=[0])]), "unpaired"),  # type: ignore[arg-type]
        (pb.Packed(**heads([3]), columns=[pb.Column(floats=[1.0])]), "floats"),  # type: ignore[arg-type]
    ],
)
def test_inconsistent_packed_batches_are_refused(packed: pb.Packed, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        wire.decode_batch(packed_payload(packed, "M.s"))


def test_inconsistent_stored_chunks_are_refused() -> None:
    message = pb.Chunk(boot_id=BOOT, seq=0, sample_count=3, residual_counts=[1], residuals=[1])
    message.extras.add(signal=0, presence_runs=[0, 5])
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
