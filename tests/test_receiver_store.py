"""The receiver's store on real SQLite files: dedupe by chunk id, physical values, merged export rows."""

from __future__ import annotations

import math
import random
import tempfile
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import wire
from agent.errors import StorageCorruptError
from agent.model import ChunkData, ChunkId, RawValue, Schema, SignalSpec
from receiver.export import merge_rows, merge_ticks, missing_runs, pack_ticks
from receiver.store import NotFoundError, RateConflictError, Store

BOOT = bytes(range(16))
OTHER_BOOT = bytes(range(16, 32))
VIN = "WVWZZZ1JZXW000001"
SCHEMA = Schema(
    Fraction(50),
    (
        SignalSpec("Engine.Rpm", scale=2, offset=-40),  # integer-scaled: physical ints
        SignalSpec("Engine.Temp", scale=0.5, integer_scaled=False),  # physical floats
        SignalSpec("Imu.Accel", is_float=True, integer_scaled=False),  # IEEE float signal
    ),
)


def chunk(seq: int, ticks: list[int], *columns: list[RawValue | None], boot: bytes = BOOT) -> ChunkData:
    return ChunkData(boot, seq, ticks, [list(column) for column in columns])


def payload(chunks: list[ChunkData], vin: str = VIN, schema: Schema = SCHEMA, **kwargs: object) -> bytes:
    blobs = [wire.encode_chunk(schema, c) for c in chunks]
    return wire.encode_batch(vin, schema, blobs, **kwargs)  # type: ignore[arg-type]


def batch(
    chunks: list[ChunkData], vin: str = VIN, schema: Schema = SCHEMA, **kwargs: object
) -> wire.DecodedBatch:
    return wire.decode_batch(payload(chunks, vin, schema, **kwargs))


C0 = chunk(0, [0, 1, 2, 3], [10, 11, None, 13], [None, 6, 6, 7], [0.25, None, None, -1.5])
C1 = chunk(1, [4, 5, 6], [14, None, None], [8, 8, None], [None, None, None])
C2 = chunk(2, [7, 9, 12], [None, None, 20], [1, 2, 3], [2.0, None, 1e300])


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store.sqlite")


def test_round_trip_stores_physical_values(store: Store) -> None:
    result = store.store_batch(batch([C0, C1]))
    assert result.stored == [ChunkId(BOOT, 0), ChunkId(BOOT, 1)]
    assert (result.new, result.duplicates, result.samples, result.overlaps) == (2, 0, 11, 0)
    assert store.vins() == [VIN]
    assert store.rate(VIN) == Fraction(50)
    assert store.signals(VIN) == ["Engine.Rpm", "Engine.Temp", "Imu.Accel"]
    rows = list(store.rows(VIN, ["Engine.Rpm", "Engine.Temp", "Imu.Accel"]))
    assert rows == [
        (0, [-20, None, 0.25]),
        (1, [-18, 3.0, None]),
        (2, [None, 3.0, None]),
        (3, [-14, 3.5, -1.5]),
        (4, [-12, 4.0, None]),
        (5, [None, 4.0, None]),
        (6, [None, None, None]),  # every value absent: still a tick of the stored grid
    ]


def test_integer_and_float_physical_values_keep_their_type(store: Store) -> None:
    store.store_batch(batch([C0]))
    (_, (rpm, temp, accel)), *_ = store.rows(VIN, ["Engine.Rpm", "Engine.Temp", "Imu.Accel"], 3, 3)
    assert type(rpm) is int and rpm == -14
    assert type(temp) is float and temp == 3.5
    (_, (whole,)), *_ = store.rows(VIN, ["Engine.Temp"], 1, 1)
    assert type(whole) is float and whole == 3.0  # 3.0 is not turned into 3 by SQLite
    assert type(accel) is float


def test_redelivered_batch_is_a_no_op(store: Store) -> None:
    data = batch([C0, C1, C2])
    first = store.store_batch(data)
    again = store.store_batch(wire.decode_batch(payload([C0, C1, C2])))
    assert again.stored == first.stored  # still ackable
    assert (again.new, again.duplicates, again.samples) == (0, 3, 0)
    (stats,) = store.stats()
    assert (stats.chunks, stats.samples, stats.values) == (3, 10, first.samples)


def test_same_chunk_in_another_batch_is_a_no_op(store: Store) -> None:
    store.store_batch(batch([C0, C1]))
    result = store.store_batch(batch([C1, C2]))
    assert result.stored == [ChunkId(BOOT, 1), ChunkId(BOOT, 2)]
    assert (result.new, result.duplicates) == (1, 1)
    assert [tick for tick, _ in store.rows(VIN, ["Engine.Rpm"])] == [0, 1, 2, 3, 4, 5, 6, 7, 9, 12]


def test_absent_values_stay_absent(store: Store) -> None:
    store.store_batch(batch([C1]))
    assert list(store.rows(VIN, ["Imu.Accel"])) == [(4, [None]), (5, [None]), (6, [None])]
    (stats,) = store.stats()
    assert (stats.samples, stats.values) == (3, 3)  # 1 Rpm + 2 Temp; no row for an absent value


def test_rows_merge_signals_by_tick_across_chunks_and_boots(store: Store) -> None:
    store.store_batch(batch([C2, C0]))  # out of order
    # A second boot replayed the same log: ticks 2..5 overlap boot 1's; the first write wins.
    replay = chunk(0, [2, 3, 4, 5], [99, 99, 99, 99], [None, None, None, None], [None] * 4, boot=OTHER_BOOT)
    result = store.store_batch(batch([replay]))
    assert (result.new, result.samples, result.overlaps) == (1, 3, 1)
    rows = list(store.rows(VIN, ["Imu.Accel", "Engine.Rpm"]))
    assert [tick for tick, _ in rows] == [0, 1, 2, 3, 4, 5, 7, 9, 12]
    assert dict(rows)[3] == [-1.5, -14]  # boot 1's value kept
    assert dict(rows)[2] == [None, 158]  # boot 1 had none there: boot 2's fills it
    assert dict(rows)[12] == [1e300, 0]
    assert list(store.rows(VIN, ["Engine.Rpm"], 4, 9)) == [(4, [158]), (5, [158]), (7, [None]), (9, [None])]


def test_nan_and_huge_integers_round_trip(store: Store) -> None:
    nan_signal = SignalSpec("A.Nan", is_float=True, integer_scaled=False)
    schema = Schema(Fraction(10), (nan_signal, SignalSpec("A.Big", scale=4)))  # past SQLite's int64
    store.store_batch(batch([chunk(0, [0, 1], [math.nan, -0.5], [2**62, -3])], schema=schema))
    (_, (nan, big)), (_, (half, small)) = store.rows(VIN, ["A.Nan", "A.Big"])
    assert math.isnan(nan) and half == -0.5
    assert (big, small) == (2**64, -12)


def test_rate_change_is_refused_whole(store: Store) -> None:
    store.store_batch(batch([C0]))
    faster = Schema(Fraction(100), SCHEMA.signals)
    with pytest.raises(RateConflictError, match=r"100 Hz.*50 Hz"):
        store.store_batch(batch([C1], schema=faster))
    assert store.stats()[0].chunks == 1  # nothing of the refused batch was stored


def test_stats_show_evicted_and_missing_sequences(store: Store) -> None:
    chunks = [chunk(seq, [seq * 10], [1], [1], [1.0]) for seq in (0, 1, 4, 7, 8)]
    store.store_batch(batch(chunks[:3], evicted=[(BOOT, 2, 3)]))
    store.store_batch(batch(chunks[3:], evicted=[(BOOT, 2, 3)]))  # the same notice again: recorded once
    (stats,) = store.stats()
    assert (stats.chunks, stats.evicted) == (5, 2)
    assert stats.missing == [(BOOT, 5, 6)]


def test_unknown_vin_and_signal(store: Store) -> None:
    store.store_batch(batch([C0]))
    with pytest.raises(NotFoundError, match="NOPE"):
        store.rate("NOPE")
    with pytest.raises(NotFoundError, match=r"Engine\.Rpn"):
        list(store.rows(VIN, ["Engine.Rpn"]))


def test_garbage_file_is_a_corrupt_store_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"not a database at all" * 300)
    with pytest.raises(StorageCorruptError, match=str(path)):
        Store(path)


def test_readers_see_a_second_connection_s_commits(tmp_path: Path) -> None:
    writer = Store(tmp_path / "s.sqlite")
    writer.store_batch(batch([C0]))
    with Store(tmp_path / "s.sqlite", readonly=True) as reader:
        assert reader.stats()[0].chunks == 1
    writer.close()


# --- property: any deliveries, duplicates, any order: exactly the union, once ------------------------------

SMALL = Schema(
    Fraction(25), (SignalSpec("M.A", scale=3), SignalSpec("M.B", is_float=True, integer_scaled=False))
)


def small_chunk(index: int, presence: list[bool]) -> ChunkData:
    boot = BOOT if index % 2 else OTHER_BOOT
    ticks = [index * 20 + 2 * i for i in range(len(presence))]  # disjoint tick ranges per chunk
    return ChunkData(
        boot,
        index // 2,
        ticks,
        [
            [i * index if here else None for i, here in enumerate(presence)],
            [None if here else i / 4 for i, here in enumerate(presence)],
        ],
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    presences=st.lists(st.lists(st.booleans(), min_size=1, max_size=6), min_size=1, max_size=6),
    extra=st.lists(st.integers(0, 5), max_size=8),
    order=st.randoms(use_true_random=False),
    batch_size=st.integers(1, 4),
)
def test_any_delivery_order_stores_the_union_once(
    presences: list[list[bool]], extra: list[int], order: random.Random, batch_size: int
) -> None:
    chunks = [small_chunk(index, presence) for index, presence in enumerate(presences)]
    deliveries = list(range(len(chunks))) + [i % len(chunks) for i in extra]
    order.shuffle(deliveries)
    expected: dict[int, list[object]] = {}
    for c in chunks:
        for position, tick in enumerate(c.ticks):
            a, b = c.columns[0][position], c.columns[1][position]
            expected[tick] = [None if a is None else a * 3, b]
    with tempfile.TemporaryDirectory() as folder, Store(Path(folder) / "p.sqlite") as store:
        new = duplicates = 0
        for start in range(0, len(deliveries), batch_size):
            group = [chunks[i] for i in deliveries[start : start + batch_size]]
            result = store.store_batch(batch(group, schema=SMALL))
            assert result.stored == list(dict.fromkeys(c.id for c in group))
            new, duplicates = new + result.new, duplicates + result.duplicates
        assert (new, duplicates) == (len(chunks), len(deliveries) - len(chunks))
        (stats,) = store.stats()
        assert stats.chunks == len(chunks) and stats.missing == []
        assert stats.values == sum(v is not None for c in chunks for col in c.columns for v in col)
        assert list(store.rows(VIN, ["M.A", "M.B"])) == sorted(expected.items())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(-50, 50), min_size=1, max_size=12, unique=True), max_size=8))
def test_merge_ticks_is_the_sorted_union_of_overlapping_chunks(chunk_ticks: list[list[int]]) -> None:
    chunks = sorted(((min(t), max(t), pack_ticks(sorted(t))) for t in chunk_ticks), key=lambda c: c[0])
    assert list(merge_ticks(chunks)) == sorted({tick for ticks in chunk_ticks for tick in ticks})


def test_merge_rows_and_missing_runs() -> None:
    rows = merge_rows([1, 2, 3, 5], [[(1, 10), (3, 30)], [], [(5, 1.5)]])
    assert list(rows) == [
        (1, [10, None, None]),
        (2, [None] * 3),
        (3, [30, None, None]),
        (5, [None, None, 1.5]),
    ]
    assert missing_runs([(0, 1), (5, 5), (9, 9)], [(3, 3), (12, 20)]) == [(2, 2), (4, 4), (6, 8)]
    assert missing_runs([], [(0, 4)]) == []
