"""The receiver's store, on real SQLite files and on a real PostgreSQL server (each test that takes the
``store`` or ``new_target`` fixture runs on both): dedupe by chunk id, physical values, merged export rows,
first write wins per (signal, tick), range reads, each signal's declared coding; and the SQLite files it
upgrades or refuses."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import wire
from agent.errors import StorageCorruptError, StorageError, WireError
from agent.wire.values import ChunkData, ChunkId, Schema, SignalSpec
from receiver.store import NotFoundError, RateConflictError, Store
from tests.harness.batches import BOOT, C0, C1, C2, OTHER_BOOT, SCHEMA, VIN, batch, chunk, payload
from tests.harness.postgres import Postgres, Targets

FIXTURE_CHECK = HealthCheck.function_scoped_fixture  # new_target is a factory: a fresh store per example


@pytest.fixture
def store(new_target: Targets) -> Iterator[Store]:
    """A fresh store, once on SQLite and once on PostgreSQL (``new_target`` in tests/conftest.py)."""
    with Store(new_target()) as fresh:
        yield fresh


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


def test_a_boot_keeps_its_rate_and_a_new_boot_may_change_it(store: Store) -> None:
    store.store_batch(batch([C0]))
    faster = Schema(Fraction(100), SCHEMA.signals)
    with pytest.raises(RateConflictError, match=r"100 Hz.*50 Hz"):
        store.store_batch(batch([C1], schema=faster))  # the same boot at another rate: garbage
    assert store.stats()[0].chunks == 1  # nothing of the refused batch was stored
    later = chunk(0, [1000, 1001], [1, 2], [None, None], [None, None], boot=OTHER_BOOT)
    assert store.store_batch(batch([later], schema=faster)).new == 1  # a new boot: uploads on
    assert store.rate(VIN) == Fraction(100)  # the grid both rates divide
    rows = list(store.rows(VIN, ["Engine.Rpm"]))
    assert rows == [(0, [-20]), (2, [-18]), (4, [None]), (6, [-14]), (1000, [-38]), (1001, [-36])]


def test_a_slower_boot_overlapping_in_time_keeps_the_first_written_values(store: Store) -> None:
    slow = Schema(Fraction(25), SCHEMA.signals)  # tick n at 25 Hz is tick 2n at 50 Hz
    store.store_batch(batch([C0]))  # 50 Hz, ticks 0..6
    late = chunk(0, [0, 1, 2, 3], [9] * 4, [9] * 4, [9.0] * 4, boot=OTHER_BOOT)
    result = store.store_batch(batch([late], schema=slow))
    assert store.rate(VIN) == Fraction(50)
    assert (result.samples, result.overlaps) == (9, 3)  # its values at 0 s and 0.04 s were held (Rpm, Temp)
    rows = list(store.rows(VIN, ["Engine.Rpm"]))  # 25 Hz tick n is at 50 Hz tick 2n: in time order
    assert rows == [(0, [-20]), (1, [-18]), (2, [-22]), (3, [-14]), (4, [-22]), (6, [-22])]


def test_a_store_of_version_3_is_upgraded_with_one_rate_per_boot(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite"
    with Store(path) as store:
        store.store_batch(batch([C0]))
    connection = apsw.Connection(str(path))  # what version 3 was: no boots table
    connection.execute("DROP TABLE boots; PRAGMA user_version=3")
    connection.close()
    with Store(path, readonly=True) as reader:
        assert reader.rate(VIN) == Fraction(50) and len(list(reader.rows(VIN, ["Engine.Rpm"]))) == 4
    with Store(path) as writer:
        faster = Schema(Fraction(100), SCHEMA.signals)
        with pytest.raises(RateConflictError):  # the upgrade gave the stored boot its vin's rate
            writer.store_batch(batch([C1], schema=faster))
        writer.store_batch(batch([C1]))
        assert writer.stats()[0].chunks == 2


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


def test_readers_see_a_second_connection_s_commits(new_target: Targets) -> None:
    target = new_target()
    writer = Store(target)
    writer.store_batch(batch([C0]))
    with Store(target, readonly=True) as reader:
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


DELIVERIES = given(
    presences=st.lists(st.lists(st.booleans(), min_size=1, max_size=6), min_size=1, max_size=6),
    extra=st.lists(st.integers(0, 5), max_size=8),
    order=st.randoms(use_true_random=False),
    batch_size=st.integers(1, 4),
)
# PostgreSQL runs the same logic through its dialect: fewer examples (0.1 s each, a store emptied each time).
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, FIXTURE_CHECK])


@settings(PROPERTY, max_examples=60)
@DELIVERIES
def test_any_delivery_order_stores_the_union_once(
    tmp_path: Path, presences: list[list[bool]], extra: list[int], order: random.Random, batch_size: int
) -> None:
    union_once(Targets(tmp_path, None), presences, extra, order, batch_size)


@settings(PROPERTY, max_examples=25)
@DELIVERIES
def test_any_delivery_order_stores_the_union_once_on_postgresql(
    tmp_path: Path,
    postgres: Postgres,
    presences: list[list[bool]],
    extra: list[int],
    order: random.Random,
    batch_size: int,
) -> None:
    union_once(Targets(tmp_path, postgres), presences, extra, order, batch_size)


def union_once(
    targets: Targets, presences: list[list[bool]], extra: list[int], order: random.Random, batch_size: int
) -> None:
    chunks = [small_chunk(index, presence) for index, presence in enumerate(presences)]
    deliveries = list(range(len(chunks))) + [i % len(chunks) for i in extra]
    order.shuffle(deliveries)
    expected: dict[int, list[object]] = {}
    for c in chunks:
        for position, tick in enumerate(c.ticks):
            a, b = c.columns[0][position], c.columns[1][position]
            expected[tick] = [None if a is None else a * 3, b]
    with Store(targets.emptied()) as store:
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


# --- first write wins across boots, range reads ----------------------------------------------------------


def test_overlapping_boots_in_one_batch_and_a_long_chunk_in_range_reads(store: Store) -> None:
    # Boot 1's chunk skips ticks (0, 500, 1000): its span bounds every range read of the vin.
    long = chunk(0, [0, 500, 1000], [1, 2, 3], [None] * 3, [None] * 3)
    later = chunk(1, [1001, 1002], [4, 5], [None] * 2, [None] * 2)
    replay = chunk(0, [499, 500, 501, 1000], [7, 8, None, 9], [1, 1, 1, 1], [None] * 4, boot=OTHER_BOOT)
    result = store.store_batch(batch([long, later, replay]))
    assert (result.new, result.samples, result.overlaps) == (3, 10, 2)  # Rpm at 500 and 1000 were held
    assert list(store.rows(VIN, ["Engine.Rpm", "Engine.Temp"], 600, 1001)) == [
        (1000, [-34, 0.5]),  # boot 1's Rpm (3 * 2 - 40), boot 2's Temp: it had none there
        (1001, [-32, None]),
    ]
    assert [t for t, _ in store.rows(VIN, ["Imu.Accel"], 500, 500)] == [500]
    assert list(store.rows(VIN, [], 499, 501)) == [(499, []), (500, []), (501, [])]
    assert list(store.rows(VIN, ["Engine.Rpm", "Engine.Rpm"], 499, 499)) == [(499, [-26, -26])]
    assert list(store.rows(VIN, ["Engine.Rpm"], 2000, 3000)) == []
    (stats,) = store.stats()
    assert (stats.chunks, stats.samples, stats.values, stats.overlaps) == (3, 9, 10, 2)


def test_ticks_that_do_not_increase_are_refused_whole(store: Store) -> None:
    good = chunk(0, [0, 1], [1, 2], [1, 2], [1.0, 2.0])
    bad = chunk(1, [5, 5], [1, 2], [1, 2], [1.0, 2.0])
    with pytest.raises(WireError, match="ticks must increase"):
        store.store_batch(wire.DecodedBatch(VIN, SCHEMA, [good, bad], [], 0.0))
    assert store.vins() == []  # nothing of the batch was stored
    twice = Schema(Fraction(50), (SignalSpec("A.B"), SignalSpec("A.B")))
    with pytest.raises(WireError, match="twice"):
        store.store_batch(wire.DecodedBatch(VIN, twice, [chunk(0, [0], [1], [2])], [], 0.0))


def test_a_store_of_the_per_value_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    connection = apsw.Connection(str(path))
    connection.execute("CREATE TABLE samples (signal_id, tick, value); PRAGMA user_version=1")
    connection.close()
    with pytest.raises(StorageError, match=r"not a receiver store of version 4 \(version 1 stored a row"):
        Store(path)


BOOTS = [bytes([n]) * 16 for n in range(3)]
MIXED = Schema(
    Fraction(25), (SignalSpec("M.A", scale=3, offset=1), SignalSpec("M.B", scale=0.5, integer_scaled=False))
)


@st.composite
def boot_chunks(draw: st.DrawFn) -> list[ChunkData]:
    """Chunks of up to three boots that replay overlapping stretches of the same ticks."""
    chunks, seqs = [], [0, 0, 0]
    for _ in range(draw(st.integers(1, 7))):
        boot = draw(st.integers(0, 2))
        ticks = sorted(draw(st.sets(st.integers(0, 40), min_size=1, max_size=8)))
        value = st.one_of(st.none(), st.integers(-5, 5))
        a = [draw(value) for _ in ticks]
        b = [draw(st.one_of(st.none(), st.sampled_from([0, 1, -2]))) for _ in ticks]
        chunks.append(ChunkData(BOOTS[boot], seqs[boot], ticks, [a, b]))  # type: ignore[list-item]
        seqs[boot] += 1
    return chunks


REPLAYS = given(
    chunks=boot_chunks(), order=st.randoms(use_true_random=False), size=st.integers(1, 3), data=st.data()
)


@settings(PROPERTY, max_examples=80)
@REPLAYS
def test_first_stored_value_wins_per_signal_and_tick(
    tmp_path: Path, chunks: list[ChunkData], order: random.Random, size: int, data: st.DataObject
) -> None:
    first_wins(Targets(tmp_path, None), chunks, order, size, data)


@settings(PROPERTY, max_examples=25)
@REPLAYS
def test_first_stored_value_wins_per_signal_and_tick_on_postgresql(
    tmp_path: Path,
    postgres: Postgres,
    chunks: list[ChunkData],
    order: random.Random,
    size: int,
    data: st.DataObject,
) -> None:
    first_wins(Targets(tmp_path, postgres), chunks, order, size, data)


def first_wins(
    targets: Targets, chunks: list[ChunkData], order: random.Random, size: int, data: st.DataObject
) -> None:
    deliveries = chunks + [
        chunks[i] for i in data.draw(st.lists(st.integers(0, len(chunks) - 1), max_size=4))
    ]
    order.shuffle(deliveries)
    held: dict[tuple[int, int], object] = {}
    ticks: set[int] = set()
    seen, values, overlaps = set(), 0, 0
    for c in deliveries:  # the model: a chunk's values count in storage order, first come first kept
        if c.id in seen:
            continue
        seen.add(c.id)
        ticks.update(c.ticks)
        for index, (spec, column) in enumerate(zip(MIXED.signals, c.columns, strict=True)):
            for tick, raw in zip(c.ticks, column, strict=True):
                if raw is not None:
                    fresh = (index, tick) not in held
                    held.setdefault((index, tick), spec.to_physical(raw))
                    values, overlaps = values + fresh, overlaps + (not fresh)
    expected = [(t, [held.get((0, t)), held.get((1, t))]) for t in sorted(ticks)]
    with Store(targets.emptied()) as store:
        for start in range(0, len(deliveries), size):
            store.store_batch(batch(deliveries[start : start + size], schema=MIXED))
        (stats,) = store.stats()
        assert (stats.values, stats.overlaps) == (values, overlaps)
        assert list(store.rows(VIN, ["M.A", "M.B"])) == expected
        low, high = sorted(data.draw(st.lists(st.integers(-1, 42), min_size=2, max_size=2)))
        assert list(store.rows(VIN, ["M.B"], low, high)) == [
            (t, v[1:]) for t, v in expected if low <= t <= high
        ]


# --- the coding each signal's agent declared on the wire ------------------------------------------------


def test_each_signal_keeps_the_coding_its_agent_declared(store: Store) -> None:
    store.store_batch(batch([C0]))
    assert store.declared(VIN) == {spec.name: spec for spec in SCHEMA.signals}
    bounded = SignalSpec("Engine.Rpm", scale=2, offset=-40, bound_raw=3, predictor="linear angle 3600 0")
    store.store_batch(batch([C1], schema=Schema(SCHEMA.rate, (bounded, *SCHEMA.signals[1:]))))
    assert store.declared(VIN)["Engine.Rpm"] == bounded  # the latest batch's coding
    store.store_batch(batch([chunk(2, [7], [1])], schema=Schema(SCHEMA.rate, SCHEMA.signals[1:2])))
    assert store.declared(VIN)["Engine.Rpm"] == bounded
    with pytest.raises(NotFoundError, match="unknown vin 'NOPE'"):
        store.declared("NOPE")


def test_a_store_of_version_2_is_upgraded_by_a_writer_and_read_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite"
    with Store(path) as store:
        store.store_batch(batch([C0]))
    connection = apsw.Connection(str(path))  # what version 2 was: the signals without their coding
    connection.execute(
        "ALTER TABLE signals RENAME TO declared; CREATE TABLE signals (id INTEGER PRIMARY KEY, "
        "vin TEXT NOT NULL, name TEXT NOT NULL, UNIQUE (vin, name)); INSERT INTO signals "
        "SELECT id, vin, name FROM declared; DROP TABLE declared; PRAGMA user_version=2"
    )
    connection.close()
    with Store(path, readonly=True) as reader:
        assert reader.declared(VIN) == {} and reader.stats()[0].chunks == 1
    with Store(path) as writer:
        assert writer.declared(VIN) == {}  # upgraded: the columns exist, no batch declared them yet
        writer.store_batch(batch([C1]))
        assert writer.declared(VIN) == {spec.name: spec for spec in SCHEMA.signals}
    with Store(path, readonly=True) as reader:
        assert len(reader.declared(VIN)) == 3 and reader.stats()[0].chunks == 2
        assert [tick for tick, _ in reader.rows(VIN, ["Engine.Rpm"])] == list(range(7))


def test_writers_opening_a_new_file_together_all_open(tmp_path: Path) -> None:
    """Receivers started together (and each one's retention pass) open one new file at once: SQLite answers
    some of them BUSY without waiting (the switch to WAL); every one must still open, none exit 2."""
    opener = "import sys\nfrom receiver.store import Store\nwith Store(sys.argv[1]):\n    pass\n"
    for attempt in range(4):
        path = tmp_path / f"store-{attempt}.sqlite"
        processes = [
            subprocess.Popen([sys.executable, "-c", opener, str(path)], stderr=subprocess.PIPE, text=True)
            for _ in range(6)
        ]
        errors = [p.communicate(timeout=60)[1] for p in processes]
        assert all(p.returncode == 0 for p in processes), errors
