"""The store's layout (:mod:`receiver.table`): ticks as stored, the declared coding as a row, upgrades."""

from __future__ import annotations

import apsw
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import StorageError
from agent.wire.values import SignalSpec
from receiver import table


def test_ticks_are_stored_only_when_they_skip() -> None:
    assert table.pack_ticks([5, 6, 7]) is None and table.pack_ticks([]) is None
    assert list(table.chunk_ticks(7, 12, table.pack_ticks([7, 9, 12]))) == [7, 9, 12]
    assert list(table.chunk_ticks(5, 7, None)) == [5, 6, 7]
    assert table.increasing([1, 2, 9]) and not table.increasing([1, 1]) and not table.increasing([2**63])


@given(
    st.builds(
        SignalSpec,
        name=st.just("A.b"),
        scale=st.floats(allow_nan=False, allow_infinity=False),
        offset=st.floats(allow_nan=False, allow_infinity=False),
        is_float=st.booleans(),
        integer_scaled=st.booleans(),
        bound_raw=st.integers(0, 2**40),
        predictor=st.sampled_from(["hold", "linear", "hold angle 36000 0"]),
    )
)
def test_a_declared_coding_round_trips_through_its_row(spec: SignalSpec) -> None:
    connection = apsw.Connection(":memory:")
    connection.execute(table.DDL)
    connection.execute(table.DECLARE_SIGNALS, table.declared("V", spec))
    connection.execute(table.DECLARE_SIGNALS, table.declared("V", spec))  # the same again: no change
    assert connection.changes() == 0
    (row,) = connection.execute(table.SELECT_DECLARED, ("V",)).fetchall()
    assert table.spec_of(row) == spec
    assert table.spec_of(("A.b", None, None, None, None, None, None)) is None  # upgraded, not declared


def test_upgrades_from_each_version() -> None:
    assert table.upgrades("s", 0, readonly=False) == []  # a new file: the DDL makes it current
    assert table.upgrades("s", table.SCHEMA_VERSION, readonly=True) == []
    assert table.upgrades("s", 2, readonly=False) == [table.UPGRADES[2], table.UPGRADES[3]]
    assert table.upgrades("s", 3, readonly=True) == [table.UPGRADES[3]]
    for version, readonly in ((1, False), (99, False), (0, True)):
        with pytest.raises(
            StorageError, match=f"^s is not a receiver store of version {table.SCHEMA_VERSION}"
        ):
            table.upgrades("s", version, readonly=readonly)
