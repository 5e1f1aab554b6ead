"""agent.wire.quantizer: the bound holds, absent stays absent, and the fast paths agree with the loop.

The closed loop is spelled out here with the predictor classes (:func:`reference_quantize`); the
quantizer's inlined and vectorized paths must give the same integers, bit for bit.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import wire
from agent.errors import WireError
from agent.wire import predictors, quantizer
from agent.wire.values import ChunkData, RawValue, SignalSpec
from tests.harness.codec import BOOT, round_trip, schema_of

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


@settings(max_examples=200, deadline=None)
@given(values=column_values, bound=st.sampled_from([0, 0, 2, 50]))
def test_decode_inverts_encode_for_one_column(values: list[int | None], bound: int) -> None:
    spec = SignalSpec("M.s", bound_raw=bound)
    out = quantizer.decode(quantizer.encode(values, spec), len(values), spec)  # type: ignore[arg-type]
    assert [v is None for v in out] == [v is None for v in values]
    assert all(t is None or abs(g - t) <= bound for t, g in zip(values, out, strict=True))  # type: ignore[operator]


def test_the_fast_path_is_for_lossless_hold_and_linear_integers_only() -> None:
    assert quantizer.fast_path(SignalSpec("a")) == "hold"
    assert quantizer.fast_path(SignalSpec("a", predictor="linear")) == "linear"
    for spec in (
        SignalSpec("a", bound_raw=1),
        SignalSpec("a", is_float=True),
        SignalSpec("a", predictor="swing"),
        SignalSpec("a", predictor="hold angle 360 0"),
    ):
        assert quantizer.fast_path(spec) is None
    with pytest.raises(WireError, match="nope: unknown predictor"):
        quantizer.fast_path(SignalSpec("nope", predictor="magic"))


def reference_quantize(values: list[int], bound: int, code: predictors.Coding) -> list[int]:
    """The closed loop spelled out with the predictor classes (no fast path)."""
    predictor, step, out = predictors.make(code.predictor), 2 * bound + 1, []
    for value in values:
        guess = predictor.predict()
        delta = value - guess
        if code.period:
            delta = (delta + code.period // 2) % code.period - code.period // 2
        quantum = (delta + bound) // step
        predictor.update(guess + quantum * step)
        out.append(quantum)
    return out


def reference_reconstruct(residuals: list[int], bound: int, code: predictors.Coding) -> list[int]:
    predictor, step, out = predictors.make(code.predictor), 2 * bound + 1, []
    for quantum in residuals:
        value = predictor.predict() + quantum * step
        predictor.update(value)
        out.append(code.low + (value - code.low) % code.period if code.period else value)
    return out


@settings(max_examples=400, deadline=None)
@given(
    values=st.lists(st.integers(-(2**40), 2**40), max_size=80),
    bound=st.sampled_from([0, 0, 1, 7, 500]),
    predictor=st.sampled_from(sorted(predictors.PREDICTORS)),
    steady=st.booleans(),
)
def test_fast_paths_agree_with_the_predictor_classes(
    values: list[int], bound: int, predictor: str, steady: bool
) -> None:
    if steady and values:
        values = [values[0]] * len(values)
    code = predictors.Coding(predictor)
    spec = SignalSpec("M.s", bound_raw=bound, predictor=str(code))
    coded = quantizer.encode(values, spec)  # type: ignore[arg-type]
    expected = reference_quantize(values, bound, code)
    assert quantizer.trim(coded.residuals) == quantizer.trim(expected)
    assert quantizer.reconstruct(
        quantizer.trim(coded.residuals), len(values), spec, code
    ) == reference_reconstruct(expected, bound, code)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.integers(0, 35999), max_size=80),
    bound=st.sampled_from([0, 3, 500, 17999]),
    predictor=st.sampled_from(sorted(predictors.PREDICTORS)),
)
def test_angle_paths_agree_with_the_predictor_classes(values: list[int], bound: int, predictor: str) -> None:
    code = predictors.Coding(predictor, 36000, 0)
    spec = SignalSpec("N.h", bound_raw=bound, predictor=str(code))
    coded = quantizer.encode(values, spec)  # type: ignore[arg-type]
    expected = reference_quantize(values, bound, code)
    assert coded.residuals == expected
    assert quantizer.reconstruct(coded.residuals, len(values), spec, code) == reference_reconstruct(
        expected, bound, code
    )


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


def test_a_value_that_is_not_a_raw_can_value_is_refused() -> None:
    with pytest.raises(ValueError, match="not a raw CAN value"):
        wire.encode_chunk(schema_of(SignalSpec("U.u")), ChunkData(BOOT, 0, [0, 1], [[0, 2**64]]))


def test_float_columns_keep_their_values_bit_for_bit() -> None:
    spec = SignalSpec("F.x", is_float=True)
    values: list[RawValue | None] = [1.5, None, -0.0, float("inf")]
    coded = quantizer.encode(values, spec)
    assert coded.floats == [1.5, -0.0, float("inf")] and coded.runs == [0, 1, 1, 2] and not coded.residuals
    assert str(quantizer.decode(coded, 4, spec)[2]) == "-0.0"
