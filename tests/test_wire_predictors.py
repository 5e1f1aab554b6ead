"""agent.wire.predictors: each predictor's guesses, their 64-bit clamp, wire numbers and codings."""

from __future__ import annotations

import pytest

from agent.wire import predictors
from agent.wire import telemetry_pb2 as pb


def run(name: str, values: list[int]) -> list[int]:
    """Predictions made before each value, fed the values themselves (lossless reconstructions)."""
    predictor, out = predictors.make(name), []
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
    predictor = predictors.Swing()
    reconstructions = [0] * 10 + [100]
    for value in reconstructions:
        predictor.predict()
        predictor.update(value)
    assert [predictor.predict() for _ in range(1)] == [110]
    predictor.update(110)
    assert predictor.predict() == 120  # no correction: the segment goes on


def test_predictions_are_clamped_so_residuals_fit_64_bits() -> None:
    assert run("linear", [0, 1 << 60, -(1 << 60)])[2] == (1 << 61)
    huge = predictors.Swing()
    for value in [0, 1 << 60]:
        huge.predict()
        huge.update(value)
    for _ in range(5):
        huge.update(huge.predict())
    assert abs(huge.predict()) <= predictors.LIMIT


def test_every_predictor_has_a_wire_number_and_back() -> None:
    assert set(predictors.PREDICTORS) == set(predictors.WIRE_PREDICTORS)
    assert set(predictors.WIRE_PREDICTORS.values()) == set(pb.Predictor.values())
    assert all(predictors.PREDICTOR_NAMES[n] == name for name, n in predictors.WIRE_PREDICTORS.items())
    assert predictors.DEFAULT in predictors.PREDICTORS


def test_coding_reads_back_what_it_writes() -> None:
    for code in (
        predictors.Coding("hold"),
        predictors.Coding("swing", 36000, 0),
        predictors.Coding("linear", 3600, -1800),
    ):
        assert predictors.Coding.parse(str(code)) == code
    for bad in ("", "nope", "hold angle", "hold angle 1 0", "hold wrap 360 0", "hold angle x 0"):
        with pytest.raises(ValueError):
            predictors.Coding.parse(bad)
