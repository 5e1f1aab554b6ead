"""Rollups (:mod:`receiver.rollups`, :mod:`receiver.windows`) on real stores, SQLite and PostgreSQL: equal
to an independent computation from ``edge-agent sample``'s CSV of the same drive, exactly once whatever is
delivered twice or shuffled, with overlapping boots of two rates, and built for a store that had none."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import wire
from agent.sim import simulate, write_log
from agent.wire.values import Schema, SignalSpec
from receiver import rollups
from receiver.store import RateConflictError, Store
from receiver.windows import NS, WIDTHS
from tests.harness.batches import BOOT, OTHER_BOOT, VIN, batch, chunk
from tests.harness.drive import DBC
from tests.harness.processes import sample_csv
from tests.harness.sampled import Sealed, payloads, sealed

NAMES = ["DriveSpeed.VehicleSpeed", "MotorStatus.MotorRPM", "Gear.Gear", "BatteryState.StateOfCharge"]
START = 1_700_000_070.0  # 30 s before a 300 s and a 900 s boundary: a 60 s drive crosses both
Key = tuple[str, int, int]  # signal, width, bucket start


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Sealed, str]:
    """A 60 s drive, its chunks as the agent seals them, and ``edge-agent sample``'s CSV of it."""
    log = tmp_path_factory.mktemp("drive") / "city.log.gz"
    write_log(log, simulate("city", 60.0, 7, DBC, start_time=START))
    csv = sample_csv(log, NAMES)
    return log, sealed(log, NAMES, BOOT), csv


def expected(lines: Iterable[tuple[Fraction, str, Any]]) -> dict[Key, list[Any]]:
    """Rollups computed from (instant, signal, physical value): n, min, max, sum, first, last."""
    out: dict[Key, list[Any]] = {}
    for at, name, value in lines:
        if value is None or value != value:
            continue
        for width in WIDTHS:
            start = math.floor(at / width) * width
            offset = math.floor((at - start) * NS)
            row = out.setdefault((name, width, start), [0, value, value, 0, (offset, value), (offset, value)])
            row[0] += 1
            row[1], row[2], row[3] = min(row[1], value), max(row[2], value), row[3] + value
            row[4], row[5] = min(row[4], (offset, value)), max(row[5], (offset, value))
    return out


def from_csv(text: str) -> Iterable[tuple[Fraction, str, Any]]:
    header, *rows = text.splitlines()
    names = header.split(",")[1:]
    for line in rows:
        time, *cells = line.split(",")
        for name, cell in zip(names, cells, strict=True):
            if cell:
                yield Fraction(Decimal(time)), name, number(cell)


def number(cell: str) -> Any:
    """A CSV cell as ``format_value`` wrote it: an int, or a float (which always has '.', 'e' or 'n')."""
    try:
        return int(cell)
    except ValueError:
        return float(cell)


def from_export(store: Store, vin: str = VIN) -> Iterable[tuple[Fraction, str, Any]]:
    grid, names = store.rate(vin), store.signals(vin)
    for tick, values in store.rows(vin, names):
        yield from ((Fraction(tick) / grid, name, value) for name, value in zip(names, values, strict=True))


def stored(store: Store) -> dict[Key, list[Any]]:
    sql = (
        "SELECT s.name, r.width, r.bucket_start, r.n, r.lo, r.hi, r.total, r.first_at, r.first_value, "
        "r.last_at, r.last_value FROM rollups AS r JOIN signals AS s ON s.id = r.signal_id"
    )
    rows = store._query(sql)
    return {(n, w, b): [c, lo, hi, t, (fa, fv), (la, lv)] for n, w, b, c, lo, hi, t, fa, fv, la, lv in rows}


def assert_same(got: dict[Key, list[Any]], want: dict[Key, list[Any]]) -> None:
    assert sorted(got) == sorted(want)
    for key, (n, lo, hi, total, first, last) in want.items():
        held = got[key]
        assert held[0] == n and (held[1], held[2]) == (lo, hi), key
        assert held[4] == (first[0], first[1]) and held[5] == (last[0], last[1]), key
        assert math.isclose(held[3], total, rel_tol=1e-9, abs_tol=1e-6), (key, held[3], total)


def store_all(target: str | Path, drive: Sealed, groups: Iterable[Iterable[int]], vin: str = VIN) -> Store:
    store = Store(target)
    for payload in payloads(vin, drive, [list(group) for group in groups]):
        store.store_batch(wire.decode_batch(payload))
    return store


def test_rollups_equal_a_computation_from_the_sample_csv(
    drive: tuple[Path, Sealed, str], new_target: Callable[[], str | Path]
) -> None:
    _, chunks, csv = drive
    groups = [range(i, min(i + 40, len(chunks.chunks))) for i in range(0, len(chunks.chunks), 40)]
    with store_all(new_target(), chunks, groups) as store:
        got = stored(store)
    want = expected(from_csv(csv))
    assert {width for _, width, _ in want} == set(WIDTHS) and len({k[2] for k in want if k[1] == 900}) == 2
    assert_same(got, want)


@pytest.fixture(scope="module")
def want(drive: tuple[Path, Sealed, str]) -> dict[Key, list[Any]]:
    return expected(from_csv(drive[2]))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_duplicated_and_shuffled_deliveries_count_once(
    drive: tuple[Path, Sealed, str],
    want: dict[Key, list[Any]],
    tmp_path_factory: pytest.TempPathFactory,
    data: st.DataObject,
) -> None:
    chunks = drive[1]
    count = len(chunks.chunks)
    order = data.draw(st.permutations(range(count)))
    again = data.draw(st.lists(st.integers(0, count - 1), max_size=30))  # redelivered chunks
    sequence = list(order) + again
    cuts = sorted(data.draw(st.sets(st.integers(1, len(sequence) - 1), max_size=12)))
    groups = [sequence[a:b] for a, b in zip([0, *cuts], [*cuts, len(sequence)], strict=True)]
    target = tmp_path_factory.mktemp("shuffled") / "store.sqlite"
    with store_all(target, chunks, groups) as store:
        assert_same(stored(store), want)


@pytest.fixture(scope="module")
def replay(drive: tuple[Path, Sealed, str]) -> Sealed:
    """A second boot that replayed part of the drive, sampled at 25 Hz."""
    return sealed(drive[0], NAMES, OTHER_BOOT, rate_hz=25, window_s=(START + 15, START + 45))


def test_overlapping_boots_of_two_rates_count_what_the_store_keeps(
    drive: tuple[Path, Sealed, str], replay: Sealed, new_target: Callable[[], str | Path]
) -> None:
    first = drive[1]
    for later_first in (True, False):
        with Store(new_target()) as store:
            boots = [(first, range(len(first.chunks))), (replay, range(len(replay.chunks)))]
            for drive_of, indexes in boots if later_first else boots[::-1]:
                for payload in payloads(VIN, drive_of, [indexes]):
                    store.store_batch(wire.decode_batch(payload))
            assert store.stats()[0].overlaps > 0  # the boots share instants: first write wins
            assert_same(stored(store), expected(from_export(store)))


def test_values_are_physical_skip_absent_and_nan_and_keep_their_extremes(tmp_path: Path) -> None:
    reversed_signal = SignalSpec("A.Down", scale=-2, offset=10)  # a negative scale swaps min and max
    nan_signal = SignalSpec("A.Nan", is_float=True, integer_scaled=False)
    huge = SignalSpec("A.Huge", scale=1)
    schema = Schema(Fraction(10), (reversed_signal, nan_signal, huge))
    ticks = [595, 599, 600, 601]  # 59.5 s .. 60.1 s: two 60 s windows
    data = chunk(0, ticks, [1, None, 3, 4], [math.nan, 2.5, math.nan, None], [2**62, 2**62, 1, 1])
    with Store(tmp_path / "s.sqlite") as store:
        store.store_batch(batch([data], schema=schema))
        got = stored(store)
    assert got["A.Down", 60, 0] == [1, 8.0, 8.0, 8.0, (59_500_000_000, 8.0), (59_500_000_000, 8.0)]
    assert got["A.Down", 60, 60] == [2, 2.0, 4.0, 6.0, (0, 4.0), (100_000_000, 2.0)]
    assert got["A.Down", 300, 0][:4] == [3, 2.0, 8.0, 14.0]
    assert got["A.Nan", 60, 0] == [1, 2.5, 2.5, 2.5, (59_900_000_000, 2.5), (59_900_000_000, 2.5)]
    assert ("A.Nan", 60, 60) not in got  # NaN and absent only: no window
    assert got["A.Huge", 60, 0][3] == float(2**63)  # an exact integer sum, then a double


def test_a_refused_or_failed_batch_leaves_no_rollups_and_counts_once_when_resent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = chunk(0, [0, 1], [1, 2], [4, 4], [0.5, 0.5])
    with Store(tmp_path / "s.sqlite") as store:
        store.store_batch(batch([one]))
        faster = Schema(Fraction(100), batch([one]).schema.signals)
        with pytest.raises(RateConflictError):  # a new chunk, refused with its batch
            store.store_batch(batch([chunk(1, [5], [9], [9], [9.0])], schema=faster))
        before = stored(store)
        fails = iter([RuntimeError("killed before the commit")])

        def backfill(*_args: object) -> None:
            raise next(fails)

        second = batch([chunk(1, [2, 3], [7, 8], [None, None], [None, None])])
        with monkeypatch.context() as patch:
            patch.setattr(rollups, "backfill", backfill)  # fails after the upsert, inside the transaction
            with pytest.raises(RuntimeError):
                store.store_batch(second)
        assert stored(store) == before
        for _ in range(2):  # then delivered, and delivered again (an ack that was lost)
            store.store_batch(second)
        assert stored(store)["Engine.Rpm", 60, 0][:4] == [4, -38.0, -24.0, -38 - 36 - 26 - 24]


def test_an_older_store_gets_its_rollups_from_its_chunks(
    drive: tuple[Path, Sealed, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, chunks, csv = drive
    path = tmp_path / "v4.sqlite"
    half = len(chunks.chunks) // 2
    store_all(path, chunks, [range(half)]).close()
    connection = apsw.Connection(str(path))  # what a store of schema 4 was: no rollups
    connection.execute("DROP TABLE rollups; DROP TABLE rollup_backfill")
    connection.close()
    with Store(path, readonly=True) as reader:
        assert "no rollups yet" in (rollups.pending(reader.db, VIN) or "")
    monkeypatch.setattr(rollups, "BACKFILL_OPEN_S", 0.0)  # a big store: nothing done at open...
    monkeypatch.setattr(rollups, "BACKFILL_PER_BATCH", 10)
    with Store(path) as store:
        assert "of its chunks to go" in (rollups.pending(store.db, VIN) or "")
        for index in range(half, len(chunks.chunks), 2):  # ...then at least 10 old ones per batch
            group = [range(index, min(index + 2, len(chunks.chunks)))]
            store.store_batch(wire.decode_batch(payloads(VIN, chunks, group)[0]))
        assert rollups.pending(store.db, VIN) is None
        assert_same(stored(store), expected(from_csv(csv)))
    monkeypatch.setattr(rollups, "BACKFILL_OPEN_S", 2.0)
    connection = apsw.Connection(str(path))
    connection.execute("DROP TABLE rollups; DROP TABLE rollup_backfill")
    connection.close()
    with Store(path) as store:  # a small store: all of it when a writer opens it
        assert rollups.pending(store.db, VIN) is None
        assert_same(stored(store), expected(from_csv(csv)))


def test_expire_deletes_the_windows_that_end_by_the_cutoff(tmp_path: Path) -> None:
    schema = Schema(Fraction(1), (SignalSpec("A.Level"),))
    ticks = [0, 59, 60, 299, 300, 899, 900]  # seconds at 1 Hz
    with Store(tmp_path / "s.sqlite") as store:
        store.store_batch(batch([chunk(0, ticks, list(range(7)))], schema=schema))
        rollups.expire(store.db, Fraction(300, 1) + Fraction(1, 2))  # 300.5 s
        left = sorted((width, start) for _, width, start in stored(store))
    assert left == [(60, 300), (60, 840), (60, 900), (300, 300), (300, 600), (300, 900), (900, 0), (900, 900)]
