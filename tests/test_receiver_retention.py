"""Retention (``store.retention_days``), on SQLite and on PostgreSQL: what is older than the limit goes by
whole chunks (SQLite) or whole day partitions (PostgreSQL), nothing younger ever does, the gap ledger
says what went; and the receiver's retention thread runs a pass at start."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import pytest

from agent.wire.values import ChunkData, Schema, SignalSpec
from receiver.config import StoreConfig
from receiver.retention import Retention
from receiver.store import Store
from tests.harness.batches import BOOT, OTHER_BOOT, VIN, batch
from tests.harness.postgres import Targets
from tests.harness.waiting import wait_for

DAY = 86_400
HZ1 = Schema(Fraction(1), (SignalSpec("A.b"),))  # 1 Hz: a tick is a second on the vehicle's clock
D = 20_000  # a day (2024-10-04): its partition is created when the first chunk of it arrives
NOW = (D + 91) * DAY + 3600  # an hour into day D + 91: the cutoff at 90 days is one hour into day D + 1
CUTOFF = NOW - 90 * DAY


def second_chunks(boot: bytes, *spans: tuple[int, int]) -> list[ChunkData]:
    """One chunk per (first, last) second, seqs from 0, a value at every tick."""
    return [
        ChunkData(boot, seq, list(range(first, last + 1)), [list(range(last - first + 1))])
        for seq, (first, last) in enumerate(spans)
    ]


def held(store: Store) -> list[int]:
    return [tick for tick, _ in store.rows(VIN, ["A.b"])]


def test_old_chunks_go_and_young_ones_stay_to_the_boundary(new_target: Targets) -> None:
    sqlite = new_target.server is None
    spans = (
        (D * DAY, D * DAY + 9),  # day D: older than the limit everywhere
        (CUTOFF - 5, CUTOFF - 1),  # day D + 1, its last sample one second before the cutoff
        (CUTOFF, CUTOFF),  # one sample at the cutoff, exactly the limit old: it stays
        (NOW - 5, NOW),  # today's
    )
    straddling = ChunkData(BOOT, 0, list(range(CUTOFF - 3, CUTOFF + 4)), [[1] * 7])  # stays whole
    with Store(new_target()) as store:
        store.store_batch(batch(second_chunks(BOOT, *spans), schema=HZ1))
        store.store_batch(batch([straddling], vin="OTHER0VIN", schema=HZ1))
        assert store.expire(0, now=NOW).chunks == 0  # 0 keeps everything
        expiry = store.expire(90, now=NOW, batch=1)  # one chunk per transaction on SQLite
        assert expiry.cutoff == CUTOFF
        # SQLite deletes whole chunks before the cutoff; PostgreSQL whole days that ended before it, so
        # day D + 1's old chunk waits for its day to pass the cutoff.
        assert expiry.chunks == (2 if sqlite else 1)
        if not sqlite:  # day D's partitions were dropped (and older empty ones), day D + 1's kept
            assert expiry.partitions >= 1
            tables = "SELECT to_regclass(?) IS NOT NULL, to_regclass(?) IS NOT NULL"
            assert store.db.fetch(tables, ("chunks_20241004", "chunk_columns_20241004")) == [(False, False)]
            assert store.db.fetch(tables, ("chunks_20241005", "chunk_columns_20241005")) == [(True, True)]
        kept = [CUTOFF, *range(NOW - 5, NOW + 1)]
        assert held(store) == ([] if sqlite else list(range(CUTOFF - 5, CUTOFF))) + kept
        assert [t for t, _ in store.rows("OTHER0VIN", ["A.b"])] == list(range(CUTOFF - 3, CUTOFF + 4))
        mine = next(entry for entry in store.stats() if entry.vin == VIN)
        assert (mine.chunks, mine.expired, mine.missing) == ((2, 2, []) if sqlite else (3, 1, []))
        assert store.expire(90, now=NOW).chunks == 0  # nothing more, until newer data moves the cutoff
        tomorrow = ChunkData(BOOT, 4, list(range(NOW + DAY - 5, NOW + DAY + 1)), [[2] * 6])
        store.store_batch(batch([tomorrow], schema=HZ1))
        assert store.expire(90, now=NOW + DAY).cutoff == CUTOFF + DAY  # day D + 1 has passed it now
        assert held(store) == [*range(NOW - 5, NOW + 1), *range(NOW + DAY - 5, NOW + DAY + 1)]
        assert "OTHER0VIN" in store.vins() and list(store.rows("OTHER0VIN", ["A.b"])) == []
        mine = next(entry for entry in store.stats() if entry.vin == VIN)
        assert (mine.chunks, mine.expired, mine.missing) == (2, 3, [])


def test_a_store_older_than_now_keeps_the_limit_back_from_its_newest_sample(new_target: Targets) -> None:
    with Store(new_target()) as store:  # two boots, 100 days apart, replayed long after
        store.store_batch(batch(second_chunks(BOOT, (D * DAY, D * DAY + 9)), schema=HZ1))
        later = (D + 100) * DAY
        store.store_batch(batch(second_chunks(OTHER_BOOT, (later, later + 9)), schema=HZ1))
        expiry = store.expire(90, now=time.time() + 1000 * DAY)
        assert expiry.cutoff == later + 9 - 90 * DAY and expiry.chunks == 1
        assert held(store) == list(range(later, later + 10))
        (stats,) = store.stats()
        assert (stats.chunks, stats.expired, stats.missing) == (1, 1, [])
        assert store.expire(200, now=time.time()).chunks == 0


def test_the_receiver_runs_a_pass_at_start_in_its_own_thread(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    young = int(time.time()) - 5
    with Store(path) as store:
        store.store_batch(batch(second_chunks(BOOT, (young - 100 * DAY, young - 100 * DAY + 3)), schema=HZ1))
        store.store_batch(batch(second_chunks(OTHER_BOOT, (young, young + 3)), schema=HZ1))
    events: list[tuple[str, dict[str, object]]] = []

    class Log:
        def info(self, event: str, **fields: object) -> None:
            events.append((event, fields))

        error = info

    retention = Retention(StoreConfig(path=path, retention_days=90), Log(), every_s=3600)
    retention.start()
    wait_for(lambda: retention.passes, 10, "no retention pass")
    retention.stop()
    assert [event for event, _ in events] == ["retention_expired"], events
    assert events[0][1]["chunks"] == 1
    with Store(path, readonly=True) as store:
        assert held(store) == list(range(young, young + 4))
    off = Retention(StoreConfig(path=path, retention_days=0), Log())
    off.start()
    assert off.passes == 0 and off._thread is None


@pytest.mark.parametrize("days", [-1, 100_001])
def test_retention_days_is_checked_in_the_config(days: int) -> None:
    from receiver.config import parse_receiver_config

    with pytest.raises(Exception, match=r"r\.yaml:1: store\.retention_days: expected an integer from 0"):
        parse_receiver_config(f"store: {{retention_days: {days}}}\n", "r.yaml", Path("/"))
