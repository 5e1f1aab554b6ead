"""The codec of one stored column (:mod:`receiver.column`): exactly ``to_physical``, compact, checked."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import StorageCorruptError
from agent.wire.values import RawValue, SignalSpec
from receiver import column

SPECS = [
    SignalSpec("I.Plain"),
    SignalSpec("I.Scaled", scale=-3.0, offset=-40.0),
    SignalSpec("F.Scaled", scale=0.1, offset=-0.0, integer_scaled=False),
    SignalSpec("F.Offset", scale=0.5, offset=1.5, integer_scaled=False),
    SignalSpec("F.Ieee", is_float=True, integer_scaled=False),
]
RAWS = st.one_of(
    st.none(),
    st.integers(-(2**66), 2**66),
    st.sampled_from([0, -0.0, 0.0, 3.0, 2.5, math.nan, math.inf, 7, 2**63, -(2**63) - 1]),
    st.floats(allow_nan=True, allow_infinity=False, width=64),
)


@settings(max_examples=400, deadline=None)
@given(
    spec=st.sampled_from(SPECS),
    raws=st.one_of(
        st.lists(RAWS, min_size=1, max_size=20),
        st.tuples(RAWS, st.integers(1, 20)).map(lambda held: [held[0]] * held[1]),  # sample-and-hold
    ),
)
def test_a_column_round_trips_exactly_as_to_physical(spec: SignalSpec, raws: list[RawValue | None]) -> None:
    try:
        expected = [None if raw is None else spec.to_physical(raw) for raw in raws]
    except (OverflowError, ValueError):  # int(inf), float(2**1100): not values a decoder gives
        return
    encoded = column.ColumnCoder(spec).encode(raws)
    if all(value is None for value in expected):
        assert encoded is None
        return
    assert encoded is not None
    kind, present, data, count = encoded
    assert count == sum(value is not None for value in expected)
    decoded = column.decode(kind, present, data, len(raws))
    assert [repr(v) for v in decoded] == [repr(v) for v in expected]  # types, NaN and -0.0 alike
    assert [type(v) for v in decoded] == [type(v) for v in expected]


def test_stored_columns_are_compact_and_checked() -> None:
    coder = column.ColumnCoder(SignalSpec("Gear.Gear"))
    assert coder.encode([3] * 50) == (column.INT64 | column.CONSTANT, None, (3).to_bytes(8, "little"), 50)
    kind, present, data, _ = coder.encode([None, None, 4, 5])  # type: ignore[misc]
    assert (kind, present, len(data)) == (column.INT64, bytes([0b1100]), 16)
    with pytest.raises(StorageCorruptError):
        column.decode(column.INT64, None, data, 3)
    with pytest.raises(StorageCorruptError, match="does not decode"):
        column.decode(column.JSON, None, b'{"not": "a list"}', 1)


def test_first_write_wins_masks_the_held_ticks() -> None:
    ticks = [10, 11, 12]
    kept, skipped = column.without(ticks, [[1, 2, 3], [None, 5, 6], [7, 8, 9]], [set(), {11}, {10, 11, 12}])
    assert kept == [[1, 2, 3], [None, None, 6], [None, None, None]] and skipped == 4
    assert list(column.positions(bytes([0b101]), 3)) == [0, 2] and list(column.positions(None, 2)) == [0, 1]
