"""agent.wire.packed_columns: one signal across a batch; ``split`` inverts ``join`` for every predictor."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import WireError
from agent.wire import packed_columns, predictors, quantizer
from agent.wire import telemetry_pb2 as pb
from agent.wire.values import Schema, SignalSpec

chunk_values = st.lists(st.lists(st.integers(-(2**40), 2**40), max_size=30), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    values=chunk_values,
    bound=st.sampled_from([0, 0, 1, 9]),
    predictor=st.sampled_from(sorted(predictors.PREDICTORS)),
    refresh=st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_split_gives_back_each_chunks_own_reconstructions(
    values: list[list[int]], bound: int, predictor: str, refresh: list[bool]
) -> None:
    spec = SignalSpec("M.s", bound_raw=bound, predictor=predictor)
    code = quantizer.coding(spec)
    fresh = [True, *refresh[1 : len(values)]]
    stored = [quantizer.trim(quantizer.encode(column, spec).residuals) for column in values]  # type: ignore[arg-type]
    sizes = [len(column) for column in values]
    stream = packed_columns.join(
        [(steps, size - len(steps)) for steps, size in zip(stored, sizes, strict=True)], fresh, predictor
    )
    assert len(stream) == sum(sizes)
    want = [quantizer.reconstruct(steps, size, spec, code) for steps, size in zip(stored, sizes, strict=True)]
    assert packed_columns.split(stream, sizes, fresh, spec) == want


def test_a_steady_signal_costs_one_value_per_refresh() -> None:
    spec = SignalSpec("M.t")
    stored = [([7], 49)] * 4  # four chunks of a steady 7, each with its absolute first value
    stream = packed_columns.join(stored, [True, False, True, False], "hold")
    assert [index for index, residual in enumerate(stream) if residual] == [0, 100]
    assert packed_columns.split(stream, [50] * 4, [True, False, True, False], spec) == [[7] * 50] * 4


def test_refreshes_are_the_first_chunk_and_every_30_s() -> None:
    schema = Schema(Fraction(50), ())
    starts = [0, 50, 1450, 1500, 1550, 3100, 3200]
    assert packed_columns.refreshes(starts, schema) == [True, False, False, True, False, True, False]
    assert packed_columns.refreshes([], schema) == []


def test_slices_cut_in_order() -> None:
    assert packed_columns.slices([1, 2, 3, 4, 5], [2, 0, 3]) == [[1, 2], [], [3, 4, 5]]
    assert packed_columns.slices((1, 2, 3), [1, 2]) == [[1], [2, 3]]


@pytest.mark.parametrize(
    "column, reason",
    [
        (pb.Column(presence_runs=[0, 5]), "presence runs cover 5"),
        (pb.Column(residuals=[1, 2, 3, 4]), "4 residuals for 3"),
        (pb.Column(exact_gaps=[5], exact=[1]), "exact value past"),
        (pb.Column(exact_gaps=[0]), "unpaired"),
        (pb.Column(exact=[1]), "unpaired"),  # values sent exactly, but no positions for them
        (pb.Column(floats=[1.0]), "floats"),
        (pb.Column(exact=[1], exact_unsigned=[2]), "both signed and unsigned"),
    ],
)
def test_an_inconsistent_column_is_refused(column: pb.Column, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        packed_columns.unpack_column(SignalSpec("M.s"), column, [3], [True])


def test_a_float_column_keeps_its_presence_over_the_batch() -> None:
    spec = SignalSpec("F.x", is_float=True)
    column = pb.Column(presence_runs=[1, 2, 2, 1], floats=[0.5, 1.5, 2.5])
    assert packed_columns.unpack_column(spec, column, [3, 3], [True, False]) == [
        [None, 0.5, 1.5],
        [None, None, 2.5],
    ]
