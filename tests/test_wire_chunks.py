"""agent.wire.chunks: a sealed chunk and its schema, as the buffer stores them; each decodes alone."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import wire
from agent.errors import WireError
from agent.wire import chunks
from agent.wire import telemetry_pb2 as pb
from agent.wire.values import ChunkData, RawValue, SignalSpec
from tests.harness.codec import BOOT, round_trip, schema_of

HEADING = SignalSpec("Navigation.Heading", 0.01, 0.0, False, False, 500, "hold angle 36000 0")


@settings(max_examples=100, deadline=None)
@given(ticks=st.lists(st.integers(1, 500), min_size=1, max_size=60), start=st.integers(-(2**40), 2**40))
def test_ticks_survive_exactly_with_jitter_and_gaps(ticks: list[int], start: int) -> None:
    absolute = [start]
    for step in ticks[1:]:
        absolute.append(absolute[-1] + step)
    schema = schema_of(SignalSpec("M.s"))
    chunk = ChunkData(BOOT, 7, absolute, [[1] * len(absolute)])
    assert round_trip(schema, chunk).ticks == absolute
    assert chunks.ticks_from(start, len(absolute), chunks.tick_dods(absolute)) == absolute


def test_ticks_must_increase() -> None:
    with pytest.raises(ValueError, match="ticks must increase: 5 then 5"):
        wire.encode_chunk(schema_of(SignalSpec("M.s")), ChunkData(BOOT, 0, [4, 5, 5], [[1, 2, 3]]))


def test_a_chunk_of_another_shape_is_refused() -> None:
    schema = schema_of(SignalSpec("M.s"), SignalSpec("M.t"))
    with pytest.raises(ValueError, match="chunk has 1 columns, schema 2"):
        wire.encode_chunk(schema, ChunkData(BOOT, 0, [1, 2], [[1, 2]]))
    with pytest.raises(ValueError, match=r"M\.t: 1 values for 2 ticks"):
        wire.encode_chunk(schema, ChunkData(BOOT, 0, [1, 2], [[1, 2], [3]]))


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


@pytest.mark.parametrize("predictor", ["hold", "linear", "smoothing", "swing"])
def test_64_bit_raw_values_survive_exactly(predictor: str) -> None:
    unsigned = [0, 2**64 - 1, 2**63, 5, 2**64 - 1, 7]
    signed = [-(2**63), 2**63 - 1, 0, -(2**63), 1, 2**62]
    schema = schema_of(SignalSpec("U.u", predictor=predictor), SignalSpec("S.s", predictor=predictor))
    got = round_trip(schema, ChunkData(BOOT, 0, list(range(6)), [unsigned, signed]))  # type: ignore[list-item]
    assert got.columns == [unsigned, signed]
    message = pb.Chunk.FromString(wire.encode_chunk(schema, ChunkData(BOOT, 0, list(range(6)), got.columns)))
    assert list(message.extras[0].exact_unsigned) == [2**64 - 1, 2**63, 2**64 - 1]


def test_a_chunk_decodes_alone() -> None:
    schema = schema_of(SignalSpec("M.s", bound_raw=2, predictor="swing"), SignalSpec("G.g"))
    chunk = ChunkData(BOOT, 3, [10, 11, 13], [[100, 110, 130], [1, None, 2]])
    got = chunks.decode_chunk(schema, pb.Chunk.FromString(wire.encode_chunk(schema, chunk)))
    assert (got.boot_id, got.seq, got.ticks, got.columns[1]) == (BOOT, 3, [10, 11, 13], [1, None, 2])
    assert all(abs(a - b) <= 2 for a, b in zip(got.columns[0], chunk.columns[0], strict=True))  # type: ignore[operator]


def test_schema_carries_predictors_angles_and_bounds() -> None:
    schema = schema_of(
        HEADING, SignalSpec("A.b", 0.1, -40.0, False, False, 7, "swing"), SignalSpec("F.f", is_float=True)
    )
    assert wire.schema_from_bytes(wire.schema_bytes(schema)) == schema


@pytest.mark.parametrize(
    "message, reason",
    [
        (pb.Schema(rate_num=0, rate_den=1), "invalid rate 0/1"),
        (pb.Schema(rate_num=50, rate_den=1, signals=[pb.SignalDef(name="A.a", predictor=9)]), "A.a: unknown"),  # type: ignore[list-item]
        (
            pb.Schema(rate_num=50, rate_den=1, signals=[pb.SignalDef(name="A.a", scale=float("nan"))]),
            "finite",
        ),
        (
            pb.Schema(rate_num=50, rate_den=1, signals=[pb.SignalDef(name="A.a", angle_period=1)]),
            "period of 1",
        ),
    ],
)
def test_a_schema_that_makes_no_sense_is_refused(message: pb.Schema, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        wire.schema_from_bytes(message.SerializeToString())
    with pytest.raises(WireError, match="schema does not parse"):
        wire.schema_from_bytes(b"\xff\xff")


@pytest.mark.parametrize(
    "fields, reason",
    [
        (
            {
                "sample_count": 3,
                "residual_counts": [1],
                "residuals": [1],
                "extras": [{"presence_runs": [0, 5]}],
            },
            "presence runs cover 5",
        ),
        ({"sample_count": 2_000_000, "residual_counts": [0]}, "more than 1000000"),
        ({"sample_count": 2, "tick_dod": [1, 2], "residual_counts": [0]}, "2 tick deltas for 2 samples"),
        ({"sample_count": 2, "residual_counts": [0, 0]}, "2 columns, schema has 1"),
        ({"sample_count": 2, "residual_counts": [2], "residuals": [1]}, "do not add up"),
        ({"sample_count": 2, "residual_counts": [0], "extras": [{"signal": 4}]}, "unknown or repeated"),
    ],
)
def test_inconsistent_stored_chunks_are_refused(fields: dict[str, object], reason: str) -> None:
    extras = fields.pop("extras", [])
    message = pb.Chunk(boot_id=BOOT, seq=0, **fields)  # type: ignore[arg-type]
    for extra in extras:  # type: ignore[attr-defined]
        message.extras.add(**extra)
    schema = schema_of(SignalSpec("M.s"))
    with pytest.raises(WireError, match=reason):
        chunks.decode_chunk(schema, message)
    batch = pb.Batch(vin="V", schema=chunks.schema_message(schema), chunks=[message])
    payload = pb.Envelope(version=1, kind=pb.BODY_KIND_BATCH, body=batch.SerializeToString())
    with pytest.raises(WireError, match=reason):
        wire.decode_batch(payload.SerializeToString())
