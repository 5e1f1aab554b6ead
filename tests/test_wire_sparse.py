"""agent.wire.sparse: a packed batch with sparse residuals decodes exactly like the same batch without."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import wire
from agent.errors import WireError
from agent.wire import packed, sparse
from agent.wire import telemetry_pb2 as pb
from agent.wire.values import ChunkData, RawValue
from tests.harness.codec import BOOT, SPECS, drive, schema_of
from tests.harness.strategies import Signal, chunks_of, drives

SINT64 = st.integers(-(2**63), 2**63 - 1)
STREAMS = st.lists(st.lists(st.one_of(st.just(0), st.just(0), SINT64), max_size=60), max_size=6)


def trimmed(stream: list[int]) -> list[int]:
    end = len(stream)
    while end and not stream[end - 1]:
        end -= 1
    return stream[:end]


def bits(column: list[RawValue | None]) -> tuple[object, ...]:
    return tuple(struct.pack("<d", v) if isinstance(v, float) else v for v in column)


def normal(chunks: list[ChunkData]) -> list[object]:
    """Chunks comparable with NaN in them (floats by their bits)."""
    return [
        (c.boot_id, c.seq, c.ticks, c.sealed_at_ms, *(bits(column) for column in c.columns)) for c in chunks
    ]


@settings(max_examples=300, deadline=None)
@given(streams=STREAMS)
def test_streams_come_back_exactly_without_their_trailing_zeros(streams: list[list[int]]) -> None:
    layout = pb.Packed()
    for stream in streams:
        layout.columns.add().residuals.extend(stream)
    sparse.to_sparse(layout)
    assert not any(column.residuals for column in layout.columns)
    assert len(layout.sparse.values) == sum(1 for s in streams for r in s if r)
    parsed = pb.Packed.FromString(layout.SerializeToString())
    assert sparse.from_sparse(parsed, max((len(s) for s in streams), default=0)) == [
        trimmed(s) for s in streams
    ]


@settings(max_examples=200, deadline=None)
@given(drive=drives())
def test_a_sparse_batch_decodes_like_the_same_batch_without(
    drive: tuple[list[int], list[Signal], list[int], list[int]],
) -> None:
    ticks, chosen, cuts, _ = drive
    schema, stored = chunks_of(BOOT, ticks, chosen, cuts)
    blobs = [wire.encode_chunk(schema, chunk) for chunk in stored]
    plain, thin = packed.pack(schema, blobs), packed.pack(schema, blobs, sparse=True)
    assert plain is not None and thin is not None
    assert thin.HasField("sparse") and not plain.HasField("sparse")
    thin = pb.Packed.FromString(thin.SerializeToString())
    assert normal(packed.unpack(schema, thin)) == normal(packed.unpack(schema, plain))


def test_a_held_signal_costs_its_changes_only() -> None:
    schema = schema_of(*SPECS)
    blobs = [wire.encode_chunk(schema, chunk) for chunk in drive(1, 45)]
    plain, thin = packed.pack(schema, blobs), packed.pack(schema, blobs, sparse=True)
    assert plain is not None and thin is not None
    assert list(thin.sparse.nonzero) == [sum(1 for r in c.residuals if r) for c in plain.columns]
    assert len(thin.SerializeToString()) < len(plain.SerializeToString())
    assert packed.unpack(schema, thin) == packed.unpack(schema, plain)


def sparse_layout(nonzero: list[int], gaps: list[int], values: list[int], own: bool = False) -> pb.Packed:
    layout = pb.Packed()
    for _ in nonzero:
        layout.columns.add()
    if own and nonzero:
        layout.columns[0].residuals.append(1)
    layout.sparse.nonzero.extend(nonzero)
    layout.sparse.gaps.extend(gaps)
    layout.sparse.values.extend(values)
    return layout


@pytest.mark.parametrize(
    ("layout", "reason"),
    [
        (sparse_layout([1], [0, 1], [5, 6]), "different lengths"),
        (sparse_layout([2], [0], [5]), "different lengths"),
        (sparse_layout([1], [10], [5]), "past the batch's 10 samples"),
        (sparse_layout([2], [3, 6], [5, 1]), "past the batch's 10 samples"),
        (sparse_layout([1], [0], [0]), "a sparse residual of 0"),
        (sparse_layout([1], [0], [5], own=True), "beside a column's own residuals"),
    ],
)
def test_inconsistent_sparse_residuals_are_refused(layout: pb.Packed, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        sparse.from_sparse(layout, 10)
    layout.columns.add()
    with pytest.raises(WireError, match="columns, the batch has"):
        sparse.from_sparse(layout, 10)


def test_positions_are_gaps_in_turn() -> None:
    layout = sparse_layout([2, 0, 1], [1, 2, 0], [7, -3, 9])
    assert sparse.from_sparse(layout, 10) == [[0, 7, 0, 0, -3], [], [9]]
