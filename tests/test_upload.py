"""The uploader against a real Mosquitto, the test playing the receiver: only acks delete, resends on loss.

The test's thread reads the uploader only through what it publishes for other threads
(:meth:`Uploader.status`, its heartbeat) and the buffer file; it waits on those, never for a fixed time.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from structlog.testing import capture_logs

from agent import wire
from agent.buffer import Buffer
from agent.chunk import Chunker, SealedChunk
from agent.upload import State, Uploader
from agent.wire.values import ChunkId
from tests.harness.broker import Broker
from tests.harness.buffers import SCHEMA, fill
from tests.harness.uploaders import VIN, backlog, start_uploader
from tests.harness.waiting import wait_for


class FakeReceiver:
    """A peer on the broker that records batches and acks the ones ``policy`` allows."""

    def __init__(self, broker: Broker, policy: Callable[[int], bool] = lambda n: True) -> None:
        self.batches: list[wire.DecodedBatch] = []
        self.sizes: list[int] = []
        self.policy = policy
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(f"fleet/{VIN}/telemetry", qos=1)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        batch = wire.decode_batch(message.payload)
        self.batches.append(batch)
        self.sizes.append(len(message.payload))
        if self.policy(len(self.batches)):
            client.publish(f"fleet/{VIN}/ack", wire.encode_ack(VIN, [c.id for c in batch.chunks]), qos=1)

    def seen(self) -> set[ChunkId]:
        return {c.id for b in self.batches for c in b.chunks}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def buffer_path(tmp_path: Path) -> Path:
    return tmp_path / "buffer.sqlite"


def wait_turns(uploader: Uploader, turns: int = 2) -> None:
    """Wait until the uploader's thread has begun ``turns`` more turns of its loop (its heartbeat moved
    that many times): after two, whatever was posted to it before the call has been handled."""
    for _ in range(turns):
        since = uploader.heartbeat.at
        wait_for(lambda since=since: uploader.heartbeat.at > since)


@pytest.fixture
def filled(buffer_path: Path) -> Iterator[Path]:
    fill(buffer_path, b"B" * 16, 30)
    yield buffer_path


def test_drains_oldest_first_and_deletes_only_acked(broker: Broker, filled: Path) -> None:
    peer = FakeReceiver(broker)
    uploader, _ = start_uploader(broker, filled, max_batch_bytes=200)
    try:
        wait_for(lambda: backlog(filled) == 0)
        order = [c.seq for b in peer.batches for c in b.chunks]
        assert order == sorted(order) and set(order) == set(range(30))
        wait_for(lambda: uploader.counters.chunks_acked == 30)  # published after the ack's delete
    finally:
        uploader.stop()
        peer.close()


def test_without_acks_nothing_is_deleted_and_everything_is_resent(broker: Broker, filled: Path) -> None:
    acks_on = threading.Event()
    peer = FakeReceiver(broker, policy=lambda n: acks_on.is_set())
    uploader, _ = start_uploader(
        broker, filled, ack_timeout_s=0.5, max_inflight_batches=2, max_batch_bytes=200
    )
    try:
        # Unacked, the two batches time out and go again, oldest first: wait for that second round.
        wait_for(lambda: uploader.counters.resends >= 1 and len(peer.batches) >= 4)
        window = {c.id for b in peer.batches[:2] for c in b.chunks}
        assert len(window) < 30  # a batch of 200 bytes holds a few chunks, not the whole backlog
        assert peer.seen() == window  # the window holds: never more than the 2 unacked batches
        assert backlog(filled) == 30  # a PUBACK deletes nothing
        acks_on.set()
        wait_for(lambda: backlog(filled) == 0)
        assert uploader.counters.resends >= 1
        assert peer.seen() == {ChunkId(b"B" * 16, n) for n in range(30)}
    finally:
        uploader.stop()
        peer.close()


def test_batches_say_which_chunks_waited_in_the_buffer(broker: Broker, filled: Path) -> None:
    """Backlog (issue 11): the chunks held when the connection came up, and a resend; live: a chunk
    committed after the last publish, sent in the next batch."""
    acks_on = threading.Event()
    peer = FakeReceiver(broker, policy=lambda n: acks_on.is_set())
    uploader, wake = start_uploader(broker, filled, ack_timeout_s=0.5, max_batch_bytes=200)
    try:
        wait_for(lambda: uploader.counters.resends >= 1)  # the 30 chunks held at connect, and sent again
        acks_on.set()
        wait_for(lambda: backlog(filled) == 0)
        assert all(b.backlog_chunks == len(b.chunks) > 0 for b in peer.batches)
        seen = len(peer.batches)
        fill(filled, b"D" * 16, 2)
        wake.set()  # as the pipeline does after a commit
        wait_for(lambda: len(peer.batches) > seen and backlog(filled) == 0)
        fresh = peer.batches[seen]
        assert [c.seq for c in fresh.chunks] == [0, 1] and fresh.backlog_chunks == 0
        assert all(c.sealed_at_ms > 0 for c in fresh.chunks)  # stamped at seal, inside the stored bytes
    finally:
        uploader.stop()
        peer.close()


def test_broker_restart_goes_offline_then_drains(broker: Broker, buffer_path: Path) -> None:
    uploader, wake = start_uploader(broker, buffer_path)
    peer = FakeReceiver(broker)
    try:
        wait_for(lambda: uploader.status().state is State.ONLINE)
        broker.stop(kill=True)
        wait_for(lambda: uploader.status().state is State.OFFLINE)
        sent = uploader.counters.batches_sent
        fill(buffer_path, b"C" * 16, 10)
        wake.set()  # as the pipeline does after a commit
        wait_turns(uploader)  # the uploader has seen the commit ...
        assert uploader.status().state is State.OFFLINE  # ... and, offline, sent nothing
        assert uploader.counters.batches_sent == sent
        assert backlog(buffer_path) == 10
        peer.close()
        broker.start()
        peer = FakeReceiver(broker)
        wait_for(lambda: backlog(buffer_path) == 0, timeout=40)
    finally:
        uploader.stop()
        peer.close()


def test_an_ack_for_another_vin_or_garbage_deletes_nothing(broker: Broker, filled: Path) -> None:
    uploader, _ = start_uploader(broker, filled)
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        wait_for(lambda: uploader.status().state is not State.OFFLINE)
        ids = [ChunkId(b"B" * 16, n) for n in range(30)]
        with capture_logs() as logs:
            for payload in (wire.encode_ack("SOMEONE-ELSE", ids), b"\x00garbage"):
                client.publish(f"fleet/{VIN}/ack", payload, qos=1).wait_for_publish()
            wait_for(lambda: sum(e["event"] == "ack_rejected" for e in logs) == 2)  # both seen, refused
            assert backlog(filled) == 30
            client.publish(f"fleet/{VIN}/ack", wire.encode_ack(VIN, ids[:5]), qos=1).wait_for_publish()
            wait_for(lambda: backlog(filled) == 25)
        reasons = [e["reason"] for e in logs if e["event"] == "ack_rejected"]
        assert "ack names vin 'SOMEONE-ELSE'" in reasons[0] and len(reasons) == 2
    finally:
        uploader.stop()
        client.disconnect()
        client.loop_stop()


def noisy(boot: bytes, count: int) -> list[SealedChunk]:
    """Chunks of random values: they do not compress away, so batch sizes are real."""
    rng = random.Random(7)
    chunker = Chunker(SCHEMA, boot, max_samples=10)
    for tick in range(count * 10):
        chunker.add(tick, [rng.randrange(1 << 40) for _ in SCHEMA.signals])
    return chunker.take()


def test_batches_stay_under_the_brokers_maximum_packet_size(tmp_path: Path) -> None:
    broker = Broker(extra_config="max_packet_size 1500")  # announced to MQTT v5 clients in CONNACK
    broker.start()
    path = tmp_path / "buffer.sqlite"
    buffer = Buffer(path)
    buffer.append(buffer.schema_id(SCHEMA), noisy(b"P" * 16, 300))
    buffer.close()
    peer = FakeReceiver(broker)
    uploader, _ = start_uploader(broker, path, max_batch_bytes=1 << 20)
    try:
        wait_for(lambda: backlog(path) == 0, timeout=30)
        assert len(peer.batches) > 1 and max(peer.sizes) <= 1500
        assert {c.seq for b in peer.batches for c in b.chunks} == set(range(300))
    finally:
        uploader.stop()
        peer.close()
        broker.close()


def test_the_bandwidth_cap_spaces_out_batches(broker: Broker, tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    buffer = Buffer(path)
    buffer.append(buffer.schema_id(SCHEMA), noisy(b"R" * 16, 40))
    buffer.close()
    peer = FakeReceiver(broker)
    started = time.monotonic()
    uploader, _ = start_uploader(broker, path, max_batch_bytes=300, max_bytes_per_s=600)
    try:
        wait_for(lambda: backlog(path) == 0, timeout=60)
        elapsed = time.monotonic() - started
        sent = uploader.counters.bytes_sent
        assert sent > 1200 and elapsed >= (sent - 600) / 600 * 0.8  # one second of burst, then the cap
    finally:
        uploader.stop()
        peer.close()


def test_drain_estimate_follows_the_ack_rate() -> None:
    from agent.status import DrainRate

    rate = DrainRate(window_s=10)
    assert rate.eta(500, 0.0) is None  # nothing acked yet: no estimate rather than a guess
    for second in range(5):
        rate.add(100, float(second))
    assert rate.eta(0, 5.0) == 0.0
    eta = rate.eta(1000, 5.0)
    assert eta is not None and 9.0 <= eta <= 11.0  # ~100 samples/s acked
