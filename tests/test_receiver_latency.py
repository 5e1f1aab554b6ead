"""Latency histograms (receiver/latency.py): buckets and percentiles exact, each chunk counted once, live and
backlog apart, skew clamped, unstamped batches accepted; and end to end, a replay whose receiver starts late.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import apsw
import pytest

from agent import wire
from agent.buffer import Buffer
from agent.errors import StorageError
from agent.sim import simulate, write_log
from agent.wire import telemetry_pb2 as pb
from receiver import latency
from receiver.config import ReceiverConfig, ReceiverMqttConfig, StoreConfig
from receiver.ingest import Receiver
from receiver.store import Store
from tests.harness.batches import BOOT, C0, C1, C2, VIN, batch, payload
from tests.harness.broker import Broker
from tests.harness.drive import DBC, agent_config
from tests.harness.peer import TIMEOUT, Peer
from tests.harness.postgres import Targets
from tests.harness.processes import cli, receiver_yaml, replaying, running_receiver
from tests.harness.waiting import wait_for


def stamped(chunk: Any, ago_s: float) -> Any:
    return replace(chunk, sealed_at_ms=int(time.time() * 1000 - ago_s * 1000))


def histograms(target: Path | str) -> dict[str, dict[str, latency.Histogram]]:
    with Store(target, readonly=True) as store:
        return latency.read(store.db)


# --- buckets and percentiles, exact -------------------------------------------------------------------


def test_buckets_are_log_spaced_with_exact_edges_at_1_and_2_seconds() -> None:
    assert latency.EDGES[0] == 2.0**-10 and latency.EDGES[-1] == 2.0**16.5  # ~1 ms .. ~1 day
    assert all(
        b / a == pytest.approx(2 ** (1 / 8)) for a, b in zip(latency.EDGES, latency.EDGES[1:], strict=False)
    )
    assert latency.bucket_of(0.0) == 0 and latency.bucket_of(0.0009) == 0
    one = latency.bucket_of(1.0)
    assert latency.EDGES[one - 1] == 1.0 and latency.upper_edge(one) == 2 ** (1 / 8)  # [1 s, 1.09 s)
    assert latency.upper_edge(latency.bucket_of(1.999)) == 2.0  # below the target: "P95 < 2 s"
    assert latency.upper_edge(latency.bucket_of(2.0)) == 2 ** (9 / 8)  # 2 s itself misses "< 2000ms"
    assert latency.bucket_of(1e9) == latency.BUCKETS - 1 and math.isinf(
        latency.upper_edge(latency.BUCKETS - 1)
    )


def test_percentiles_are_nearest_rank_upper_edges() -> None:
    counts = [0] * latency.BUCKETS
    for seconds, n in ((0.1, 90), (1.5, 5), (3.0, 4), (100.0, 1)):
        counts[latency.bucket_of(seconds)] += n
    histogram = latency.Histogram(tuple(counts))
    assert histogram.total == 100
    assert histogram.percentile(50) == 2 ** (-26 / 8)  # 0.1 s is in [2^-27/8, 2^-26/8) = [95.6, 104 ms)
    assert histogram.percentile(90) == 2 ** (-26 / 8)  # rank 90: still the 90th value
    assert histogram.percentile(95) == 2 ** (5 / 8)  # rank 95: the 5th of 1.5 s, in [1.41, 1.54 s)
    assert histogram.percentile(99) == 2 ** (13 / 8)  # rank 99: the 4th of 3 s, in [2.83, 3.08 s)
    assert histogram.percentile(100) == 2 ** (54 / 8)  # 100 s, in [98.7, 108 s)
    assert latency.Histogram(tuple([0] * latency.BUCKETS)).percentile(95) is None
    line = latency.describe("live", replace(histogram, skewed=2))
    assert line == (
        "latency live: 100 chunks, P50 < 105 ms, P95 < 1.54 s, P99 < 3.08 s "
        "(seed 002's target P95 < 2 s: met), 2 skewed (sealed after the commit: counted as 0)"
    )


def test_counts_split_live_from_backlog_by_the_agents_word_and_clamp_skew() -> None:
    committed = 2_000_000.0
    chunks = [
        replace(C0, sealed_at_ms=int(committed * 1000) - 30_000),  # backlog (first of the batch): 30 s
        replace(C1, sealed_at_ms=int(committed * 1000) - 250),  # live: 250 ms
        replace(C2, sealed_at_ms=int(committed * 1000) + 5_000),  # live, sealed "after" the commit: skew
    ]
    decoded = batch(chunks, backlog_chunks=1)
    counts = latency.counts_of(decoded, decoded.chunks, committed)
    assert counts == {
        ("backlog", latency.bucket_of(30.0)): 1,
        ("live", latency.bucket_of(0.25)): 1,
        ("live", 0): 1,
        ("live", latency.SKEWED): 1,
    }
    unstamped = batch([C0, C1])
    assert not latency.counts_of(unstamped, unstamped.chunks, committed)  # latency unknown: nothing


# --- through the store: once per chunk ----------------------------------------------------------------


def test_each_chunk_counts_once_whatever_is_delivered_twice(new_target: Targets) -> None:
    target = new_target()  # a SQLite file, then a PostgreSQL database: the same SQL in both dialects
    chunks = [stamped(C0, 10.0), stamped(C1, 10.0), stamped(C2, 0.05)]
    with Store(target) as store:
        store.store_batch(batch(chunks[:2], backlog_chunks=1))
        store.store_batch(batch(chunks[:2], backlog_chunks=1))  # the same delivery again
        store.store_batch(batch(chunks, backlog_chunks=2))  # a resend: C0, C1 again, C2 new
    per_kind = histograms(target)[VIN]
    ten = latency.bucket_of(10.0)  # [9.51 s, 10.4 s): 10 s + the store's few ms stays in it
    assert per_kind["backlog"].counts[ten] == per_kind["backlog"].total == 1  # C0
    assert per_kind["live"].counts[ten] == 1 and per_kind["live"].total == 2  # C1, then C2
    assert per_kind["live"].percentile(50) < 1.0  # type: ignore[operator]  # rank 1 of 2: C2's 0.05 s + the store's
    assert per_kind["live"].skewed == per_kind["backlog"].skewed == 0


def test_a_seal_time_after_the_commit_counts_as_0_and_as_skewed(new_target: Targets) -> None:
    target = new_target()
    with Store(target) as store:
        store.store_batch(batch([stamped(C0, -30.0), stamped(C1, 0.5)]))  # C0 "sealed" 30 s from now
    live = histograms(target)[VIN]["live"]
    assert (live.total, live.skewed, live.counts[0]) == (2, 1, 1)
    assert live.percentile(50) == latency.EDGES[0]  # rank 1 of 2: the clamped 0, "< 0.977 ms"


def test_stats_prints_the_percentiles_beside_seed_002s_target(new_target: Targets) -> None:
    target = new_target()
    with Store(target) as store:
        store.store_batch(batch([stamped(C0, 1.45), stamped(C1, 1.45)]))  # in [1.41 s, 1.54 s)
        store.store_batch(batch([stamped(C2, 40.0)], backlog_chunks=1))  # in [38.1 s, 41.5 s)
    result = cli("receiver.cli", "stats", "--db", str(target))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{VIN}: 3 chunks")
    assert lines[1] == (
        "  latency live: 2 chunks, P50 < 1.54 s, P95 < 1.54 s, P99 < 1.54 s (seed 002's target P95 < 2 s: met)"
    )
    assert lines[2] == (
        "  latency backlog: 1 chunks, P50 < 41.5 s, P95 < 41.5 s, P99 < 41.5 s "
        "(seed 002's target P95 < 2 s: missed)"
    )


# --- old agents: no seal times, accepted ----------------------------------------------------------------


@pytest.fixture
def peer(broker: Broker) -> Iterator[Peer]:
    instance = Peer(broker)
    yield instance
    instance.close()


def test_a_version_1_batch_without_seal_times_is_stored_acked_and_not_timed(
    broker: Broker, peer: Peer, tmp_path: Path
) -> None:
    mqtt = ReceiverMqttConfig(host="127.0.0.1", port=broker.port, client_id="r1", keepalive_s=5)
    receiver = Receiver(ReceiverConfig(mqtt=mqtt, store=StoreConfig(path=tmp_path / "store.sqlite")))
    receiver.start()
    try:
        assert receiver.wait_subscribed(TIMEOUT)
        old = pb.Envelope.FromString(payload([C0, C1], sent_at=time.time()))
        old.version = 1  # what an agent before wire version 2 sends: no seal times, no backlog count
        peer.publish(old.SerializeToString())
        _topic, data = peer.acks.get(timeout=TIMEOUT)
        assert pb.Envelope.FromString(data).version == 1  # an agent of version 1 reads the ack
        assert wire.decode_ack(data) == (VIN, [(BOOT, 0, 1)])
    finally:
        receiver.stop()
    with Store(tmp_path / "store.sqlite", readonly=True) as store:
        assert store.stats()[0].chunks == 2
    assert histograms(tmp_path / "store.sqlite") == {}
    result = cli("receiver.cli", "stats", "--db", str(tmp_path / "store.sqlite"))
    assert result.returncode == 0 and "latency" not in result.stdout


def test_a_store_made_before_latency_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with Store(path) as store:
        store.store_batch(batch([stamped(C0, 1.0)]))
    connection = apsw.Connection(str(path))
    connection.execute("DROP TABLE latency")
    connection.close()
    assert histograms(path) == {}


# --- end to end: a receiver started late --------------------------------------------------------------


@pytest.mark.slow
def test_a_late_receiver_sees_the_backlog_apart_from_live_chunks(broker: Broker, tmp_path: Path) -> None:
    drive = tmp_path / "city.log.gz"
    # 15 s at 2x (acks time out after 3 s): the receiver starts a few seconds in, and a loaded machine
    # still leaves live chunks after it has subscribed.
    write_log(drive, simulate("city", 30.0, seed=5, dbc_path=DBC))
    vin = "LATENCY000000001"
    config = agent_config(tmp_path, broker.port, vin, drive, speed="2")
    store = tmp_path / "store.sqlite"
    log = tmp_path / "agent.log"
    with replaying(drive, config, log) as agent:
        buffer = tmp_path / f"{vin}.sqlite"
        # No receiver yet: the batches go nowhere, the buffer fills (a backlog builds).
        wait_for(lambda: buffer.exists() and _buffered(buffer) >= 40, 20, log.read_text, agent)
        with running_receiver(
            receiver_yaml(tmp_path / "receiver.yaml", broker.port, store), tmp_path / "r.log"
        ):
            agent.wait(timeout=60)
    assert agent.returncode == 0, log.read_text()
    with Store(store, readonly=True) as reader:
        chunks = reader.stats()[0].chunks
    per_kind = histograms(store)[vin]
    live, backlog = per_kind["live"], per_kind["backlog"]
    assert live.total + backlog.total == chunks  # every chunk stamped, each counted once
    assert backlog.total > 0 and live.total > 0  # the resends of what went nowhere; what came after
    assert live.skewed == backlog.skewed == 0  # one machine, one clock
    assert backlog.percentile(50) > live.percentile(50)  # type: ignore[operator]
    result = cli("receiver.cli", "stats", "--db", str(store))
    assert re.search(rf"latency live: {live.total} chunks, P50 < .* P95 < .* P99 < .*seed 002", result.stdout)
    assert f"latency backlog: {backlog.total} chunks" in result.stdout


def _buffered(path: Path) -> int:
    try:
        buffer = Buffer(path, read_only=True)
    except StorageError:  # not created yet
        return 0
    try:
        return buffer.stats().chunks
    except StorageError:  # the agent is still creating its tables
        return 0
    finally:
        buffer.close()
