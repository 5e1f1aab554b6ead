"""The PostgreSQL store on a real server: partitions by day made ahead of need, several writers on one
database at once (exactly once, first write wins), a broken connection re-opened, read-only opening,
passwords kept out of messages, and the read commands on a ``postgresql://`` URL."""

from __future__ import annotations

import threading
import time
from contextlib import redirect_stdout
from fractions import Fraction
from io import StringIO
from typing import Any

import psycopg
import pytest

from agent.errors import StorageError
from agent.wire.values import ChunkData, Schema, SignalSpec
from receiver import cli
from receiver.backend import DAY_S
from receiver.store import Store, open_store
from tests.harness.batches import BOOT, C0, C1, C2, OTHER_BOOT, VIN, batch
from tests.harness.postgres import Postgres

HZ1 = Schema(Fraction(1), (SignalSpec("A.b"),))


def partitions(url: str) -> set[str]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relkind = 'r'"
        ).fetchall()
    return {name for (name,) in rows}


def test_day_partitions_are_made_ahead_of_need(postgres: Postgres) -> None:
    url = postgres.database()  # no template: a store made here from nothing
    today = time.strftime("%Y%m%d", time.gmtime())
    with Store(url) as store:
        made = partitions(url)
        assert {f"chunks_{today}", f"chunk_columns_{today}", "chunks_empty", "chunk_columns_empty"} <= made
        assert len(made) == 8  # yesterday, today, tomorrow and the empty chunks', in both tables
        old = ChunkData(BOOT, 0, [1_700_000_000, 1_700_000_001], [[1, 2]])  # 2023-11-14, a replayed log
        store.store_batch(batch([old], schema=HZ1))
        assert {"chunks_20231114", "chunk_columns_20231114"} <= partitions(url)
        assert store.db.fetch("SELECT count(*) FROM chunk_columns_20231114") == [(1,)]
        assert store.db.fetch("SELECT day FROM chunks_20231114") == [(1_700_000_001 // DAY_S,)]
        assert list(store.rows(VIN, ["A.b"], 1_700_000_001)) == [(1_700_000_001, [2])]


def test_two_writers_at_once_store_each_chunk_once_and_the_first_value_wins(postgres: Postgres) -> None:
    url = postgres.store()
    replay = ChunkData(OTHER_BOOT, 0, [2, 3, 4, 5], [[1, 1, 1, 1], [2, 2, 2, 2], [0.5, 0.5, 0.5, 0.5]])
    batches = [batch([C0, C1]), batch([C1, C2]), batch([replay]), batch([C0, C2]), batch([replay, C1])]
    results: list[object] = []

    def write(order: list[int]) -> None:
        with Store(url) as store:
            for index in order:
                results.append(store.store_batch(batches[index]))

    threads = [threading.Thread(target=write, args=(order,)) for order in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 10
    with Store(url, readonly=True) as store:
        (stats,) = store.stats()
        assert (stats.chunks, stats.missing) == (4, [])
        rows = dict(store.rows(VIN, ["Engine.Rpm", "Engine.Temp", "Imu.Accel"]))
    # Ticks 2..5: boot 1's values where it has them (C0 ticks 0-3, C1 4-6), the replay's where not: which
    # boot came first decides, but every (signal, tick) holds exactly one value, never two.
    assert sorted(rows) == [0, 1, 2, 3, 4, 5, 6, 7, 9, 12]
    assert stats.values + stats.overlaps == 8 + 3 + 6 + 12  # the values of C0, C1, C2 and the replay
    assert stats.values == sum(value is not None for row in rows.values() for value in row)


def test_a_writer_of_the_same_vin_waits_for_the_batch_in_progress(postgres: Postgres) -> None:
    """Without the vin's lock, the second boot would not see the first one's uncommitted chunk, and both
    would store a value at the same instants: the overlap rule needs one writer per vin at a time."""
    url = postgres.store()
    inside, proceed, second_done = threading.Event(), threading.Event(), threading.Event()

    class Paused(Store):
        def _derive(self, *args: Any) -> None:
            super()._derive(*args)
            inside.set()  # C0's rows are written, not committed
            proceed.wait(10)

    def first() -> None:
        with Paused(url) as store:
            store.store_batch(batch([C0]))

    writer = Store(url)  # open before the first batch starts: its set-up is not what waits
    writer.store_batch(batch([C2]))  # the vin and its signals exist: no insert of theirs waits either

    def second() -> None:
        with writer:
            writer.store_batch(batch([ChunkData(OTHER_BOOT, 0, [0, 1], [[5, 5], [5, 5], [5.0, 5.0]])]))
        second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert inside.wait(10)
    threads[1].start()
    assert not second_done.wait(0.5), "a second writer of the vin went ahead of the first one's commit"
    proceed.set()
    for thread in threads:
        thread.join(10)
    with Store(url, readonly=True) as store:
        (stats,) = store.stats()
        assert (stats.values, stats.overlaps) == (
            6 + 8 + 2,
            4,
        )  # C2, C0, the replay's Temp at 0 and Accel at 1
        assert list(store.rows(VIN, ["Imu.Accel"], 0, 1)) == [(0, [0.25]), (1, [5.0])]


def test_a_broken_connection_is_opened_again_for_the_next_batch(postgres: Postgres) -> None:
    url = postgres.store()
    with Store(url) as store:
        store.store_batch(batch([C0]))
        pid = store.db.fetch("SELECT pg_backend_pid()")[0][0]
        postgres.execute(f"SELECT pg_terminate_backend({pid})")
        with pytest.raises(StorageError, match="cannot write to store postgresql://"):
            store.store_batch(batch([C1]))  # not stored, so not acked: the agent sends it again
        assert store.store_batch(batch([C1])).new == 1
        assert store.stats()[0].chunks == 2


def test_a_day_dropped_by_another_receiver_s_retention_is_made_again(postgres: Postgres) -> None:
    url = postgres.store()
    day = 20_000 * DAY_S  # 2024-10-04

    def at(seq: int, second: int) -> list[ChunkData]:
        return [ChunkData(BOOT, seq, [day + second], [[seq]])]

    with Store(url) as ingest, Store(url) as retention:
        ingest.store_batch(batch(at(0, 0), schema=HZ1))
        ingest.store_batch(batch([ChunkData(OTHER_BOOT, 0, [day + 200 * DAY_S], [[9]])], schema=HZ1))
        assert retention.expire(90, now=time.time()).chunks == 1  # day 2024-10-04 dropped, elsewhere
        with pytest.raises(StorageError, match="no partition"):  # not acked: the agent sends it again
            ingest.store_batch(batch(at(1, 1), schema=HZ1))
        assert ingest.store_batch(batch(at(1, 1), schema=HZ1)).new == 1  # its partition made again
        assert [tick for tick, _ in ingest.rows(VIN, ["A.b"], day, day + DAY_S)] == [day + 1]


def test_a_reader_needs_a_store_and_messages_hide_the_password(postgres: Postgres) -> None:
    empty = postgres.database()
    with pytest.raises(StorageError, match="is not a receiver store"):
        Store(empty, readonly=True)
    wrong = f"postgresql://postgres:s3cret@127.0.0.1:{postgres.port}/nothing_here"
    with pytest.raises(StorageError, match=r"postgres:\*\*\*@127\.0\.0\.1") as raised:
        Store(wrong)
    assert "s3cret" not in str(raised.value)


def test_export_and_stats_take_a_postgresql_url(postgres: Postgres) -> None:
    url = postgres.store()
    with open_store(url) as store:
        store.store_batch(batch([C0, C2], evicted=[(BOOT, 1, 1)]))
    out = StringIO()
    with redirect_stdout(out):
        assert cli.main(["export", "--db", url, "--vin", VIN, "--signals", "Engine.Rpm"]) == 0
        assert cli.main(["stats", "--db", url]) == 0
    lines = out.getvalue().splitlines()
    assert lines[:3] == ["timestamp,Engine.Rpm", "0.000000,-20", "0.020000,-18"]
    assert f"{VIN}: 2 chunks, 7 samples, 14 values, 0 overlapping, 1 evicted, 0 missing" in lines
