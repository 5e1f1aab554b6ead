"""The predictors, and the vectorized column paths that must agree with them bit for bit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.wire import predictors as predict
from agent.wire import quantizer as columns
from agent.wire import telemetry_pb2 as pb
from agent.wire.values import SignalSpec


def run(name: str, values: list[int]) -> list[int]:
    """Predictions made before each value, fed the values themselves (lossless reconstructions)."""
    predictor, out = predict.make(name), []
    for value in values:
        out.append(predictor.predict())
        predictor.update(value)
    return out


def test_hold_predicts_the_last_value() -> None:
    assert run("hold", [5, 7, 7, 2]) == [0, 5, 7, 7]


def test_linear_extrapolates_the_last_two() -> None:
    assert run("linear", [10, 20, 30, 30]) == [0, 10, 30, 40]


def test_smoothing_is_seed_001s_exponential_smoothing_in_fixed_point() -> None:
    got = run("smoothing", [100, 200, 200, 200])
    assert got[:2] == [0, 100]
    assert got[2] == 130 and got[3] == 151  # 0.3 * 200 + 0.7 * 100 = 130; 0.3 * 200 + 0.7 * 130 = 151


def test_swing_follows_a_ramp_between_corrections() -> None:
    # Reconstructions of a lossy ramp: corrections at 0 and 10, the predictor then follows the line.
    predictor = predict.Swing()
    reconstructions = [0] * 10 + [100]
    for value in reconstructions:
        predictor.predict()
        predictor.update(value)
    assert [predictor.predict() for _ in range(1)] == [110]
    predictor.update(110)
    assert predictor.predict() == 120  # no correction: the segment goes on


def test_predictions_are_clamped_so_residuals_fit_64_bits() -> None:
    assert run("linear", [0, 1 << 60, -(1 << 60)])[2] == (1 << 61)
    huge = predict.Swing()
    for value in [0, 1 << 60]:
        huge.predict()
        huge.update(value)
    for _ in range(5):
        huge.update(huge.predict())
    assert abs(huge.predict()) <= predict.LIMIT


def test_every_predictor_has_a_wire_number_and_back() -> None:
    assert set(predict.PREDICTORS) == set(predict.WIRE_PREDICTORS)
    assert set(predict.WIRE_PREDICTORS.values()) == set(pb.Predictor.values())
    assert all(predict.PREDICTOR_NAMES[n] == name for name, n in predict.WIRE_PREDICTORS.items())
    assert predict.DEFAULT in predict.PREDICTORS


def test_coding_reads_back_what_it_writes() -> None:
    for code in (
        predict.Coding("hold"),
        predict.Coding("swing", 36000, 0),
        predict.Coding("linear", 3600, -1800),
    ):
        assert predict.Coding.parse(str(code)) == code
    for bad in ("", "nope", "hold angle", "hold angle 1 0", "hold wrap 360 0", "hold angle x 0"):
        with pytest.raises(ValueError):
            predict.Coding.parse(bad)


def reference_quantize(values: list[int], bound: int, code: predict.Coding) -> list[int]:
    """The closed loop spelled out with the predictor classes (no fast path)."""
    predictor, step, out = predict.make(code.predictor), 2 * bound + 1, []
    for value in values:
        guess = predictor.predict()
        delta = value - guess
        if code.period:
            delta = (delta + code.period // 2) % code.period - code.period // 2
        quantum = (delta + bound) // step
        predictor.update(guess + quantum * step)
        out.append(quantum)
    return out


def reference_reconstruct(residuals: list[int], bound: int, code: predict.Coding) -> list[int]:
    predictor, step, out = predict.make(code.predictor), 2 * bound + 1, []
    for quantum in residuals:
        value = predictor.predict() + quantum * step
        predictor.update(value)
        out.append(code.low + (value - code.low) % code.period if code.period else value)
    return out


@settings(max_examples=400, deadline=None)
@given(
    values=st.lists(st.integers(-(2**40), 2**40), max_size=80),
    bound=st.sampled_from([0, 0, 1, 7, 500]),
    predictor=st.sampled_from(sorted(predict.PREDICTORS)),
    steady=st.booleans(),
)
def test_fast_paths_agree_with_the_predictor_classes(
    values: list[int], bound: int, predictor: str, steady: bool
) -> None:
    if steady and values:
        values = [values[0]] * len(values)
    code = predict.Coding(predictor)
    spec = SignalSpec("M.s", bound_raw=bound, predictor=str(code))
    coded = columns.encode(values, spec)  # type: ignore[arg-type]
    expected = reference_quantize(values, bound, code)
    assert columns.trim(coded.residuals) == columns.trim(expected)
    assert columns.reconstruct(
        columns.trim(coded.residuals), len(values), spec, code
    ) == reference_reconstruct(expected, bound, code)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.integers(0, 35999), max_size=80),
    bound=st.sampled_from([0, 3, 500, 17999]),
    predictor=st.sampled_from(sorted(predict.PREDICTORS)),
)
def test_angle_paths_agree_with_the_predictor_classes(values: list[int], bound: int, predictor: str) -> None:
    code = predict.Coding(predictor, 36000, 0)
    spec = SignalSpec("N.h", bound_raw=bound, predictor=str(code))
    coded = columns.encode(values, spec)  # type: ignore[arg-type]
    expected = reference_quantize(values, bound, code)
    assert coded.residuals == expected
    assert columns.reconstruct(coded.residuals, len(values), spec, code) == reference_reconstruct(
        expected, bound, code
    )
