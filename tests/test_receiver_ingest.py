"""The receiver service against a real Mosquitto: store, then ack; garbage refused; shared load; restarts."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent import wire
from agent.errors import StorageError
from agent.wire import messages
from agent.wire import telemetry_pb2 as pb
from agent.wire.values import Schema
from receiver.config import ReceiverConfig, ReceiverMqttConfig, StoreConfig
from receiver.ingest import GC_GEN0_THRESHOLD, Receiver, tune_gc
from receiver.store import Store
from tests.harness.batches import BOOT, C0, C1, C2, SCHEMA, VIN, chunk, payload
from tests.harness.broker import Broker
from tests.harness.peer import TIMEOUT, Peer


def config(broker: Broker, store: Path, client_id: str) -> ReceiverConfig:
    mqtt = ReceiverMqttConfig(host="127.0.0.1", port=broker.port, client_id=client_id, keepalive_s=5)
    return ReceiverConfig(mqtt=mqtt, store=StoreConfig(path=store))


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def peer(broker: Broker) -> Iterator[Peer]:
    instance = Peer(broker)
    yield instance
    instance.close()


@pytest.fixture
def receivers(broker: Broker, tmp_path: Path) -> Iterator[Callable[[str], Receiver]]:
    started: list[Receiver] = []

    def start(client_id: str) -> Receiver:
        receiver = Receiver(config(broker, tmp_path / "store.sqlite", client_id))
        receiver.start()
        started.append(receiver)
        assert receiver.wait_subscribed(TIMEOUT)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


def stored_chunks(path: Path) -> int:
    with Store(path, readonly=True) as store:
        return sum(entry.chunks for entry in store.stats())


def test_batch_is_stored_then_acked_naming_its_chunks(
    receivers: Callable[[str], Receiver], peer: Peer, tmp_path: Path
) -> None:
    receiver = receivers("r1")
    peer.publish(payload([C0, C1]))
    assert peer.ack() == (f"fleet/{VIN}/ack", VIN, [(BOOT, 0, 1)])
    assert stored_chunks(tmp_path / "store.sqlite") == 2  # committed before the ack went out
    counters = receiver.counters
    assert (counters.batches, counters.chunks_new, counters.chunks_duplicate) == (1, 2, 0)
    assert counters.samples == 11
    assert (counters.rejected, counters.acks_sent) == (0, 1)


def test_duplicate_delivery_is_acked_twice_and_stored_once(
    receivers: Callable[[str], Receiver], peer: Peer, tmp_path: Path
) -> None:
    receiver = receivers("r1")
    data = payload([C1, C2])
    peer.publish(data)
    peer.publish(data)
    assert peer.ack()[2] == peer.ack()[2] == [(BOOT, 1, 2)]
    assert (receiver.counters.chunks_new, receiver.counters.chunks_duplicate) == (2, 2)
    assert stored_chunks(tmp_path / "store.sqlite") == 2


def garbage() -> dict[str, tuple[str, bytes]]:
    good = payload([C0])
    wrong_version = pb.Envelope.FromString(good)
    wrong_version.version = 99
    bad_zlib = pb.Envelope.FromString(good)
    bad_zlib.body = b"\x78\x9c" + os.urandom(40)
    not_a_batch = messages.envelope(pb.BODY_KIND_BATCH, b"\xff\xff\xff", compress=False)
    narrow = Schema(SCHEMA.rate, SCHEMA.signals[:2])
    two_columns = wire.encode_chunk(narrow, chunk(5, [1, 2], [1, 2], [3, 4]))
    return {
        "random bytes": (f"fleet/{VIN}/telemetry", bytes(range(256)) * 3),
        "truncated envelope": (f"fleet/{VIN}/telemetry", good[: len(good) // 2]),
        "wrong version": (f"fleet/{VIN}/telemetry", wrong_version.SerializeToString()),
        "bad zlib": (f"fleet/{VIN}/telemetry", bad_zlib.SerializeToString()),
        "protobuf that does not parse": (f"fleet/{VIN}/telemetry", not_a_batch),
        "vin mismatch": ("fleet/OTHERVIN/telemetry", good),
        "empty": (f"fleet/{VIN}/telemetry", b""),
        "inconsistent columns": (f"fleet/{VIN}/telemetry", wire.encode_batch(VIN, SCHEMA, [two_columns])),
    }


def test_garbage_is_rejected_counted_never_acked_and_the_receiver_keeps_working(
    receivers: Callable[[str], Receiver], peer: Peer, tmp_path: Path
) -> None:
    receiver = receivers("r1")
    cases = garbage()
    with capture_logs() as events:
        for topic, data in cases.values():
            peer.publish(data, topic=topic)
        peer.publish(payload([C2]))
        assert peer.ack()[1:] == (VIN, [(BOOT, 2, 2)])  # the good batch after the garbage
    assert receiver.counters.rejected == len(cases)
    assert receiver.counters.failed == receiver.counters.store_errors == 0
    assert peer.acks.empty()  # garbage never acked
    rejected = [event for event in events if event["event"] == "batch_rejected"]
    assert len(rejected) == len(cases)
    assert all(event["log_level"] == "error" and event["reason"] for event in rejected)
    assert {(event["topic"], event["size"]) for event in rejected} == {
        (topic, len(data)) for topic, data in cases.values()
    }
    assert any(f"vin {VIN!r} but was published under vin 'OTHERVIN'" in e["reason"] for e in rejected)
    assert stored_chunks(tmp_path / "store.sqlite") == 1


def test_storage_error_is_logged_not_acked_and_the_next_batch_is(
    receivers: Callable[[str], Receiver], peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = receivers("r1")
    original = Store.store_batch
    calls = iter([True])

    def flaky(self: Store, batch: wire.DecodedBatch) -> object:
        if next(calls, False):
            raise StorageError(f"cannot write to store {self.path}: disk I/O error")
        return original(self, batch)

    monkeypatch.setattr(Store, "store_batch", flaky)
    peer.publish(payload([C0]))
    peer.publish(payload([C0]))  # the agent's resend
    assert peer.ack()[2] == [(BOOT, 0, 0)]
    assert (receiver.counters.store_errors, receiver.counters.chunks_new) == (1, 1)
    assert peer.acks.empty()


def test_two_receivers_in_one_share_group_split_the_load(
    receivers: Callable[[str], Receiver], peer: Peer, tmp_path: Path
) -> None:
    first, second = receivers("r1"), receivers("r2")
    count = 30
    for seq in range(count):
        peer.publish(payload([chunk(seq, [seq * 10], [seq], [seq], [float(seq)])]))
    acked = sorted(peer.ack()[2][0][1] for _ in range(count))
    assert acked == list(range(count))
    assert first.counters.batches > 0 and second.counters.batches > 0
    assert first.counters.batches + second.counters.batches == count
    assert first.counters.chunks_new + second.counters.chunks_new == count
    assert stored_chunks(tmp_path / "store.sqlite") == count


def test_broker_restart_then_a_new_batch_is_still_stored_and_acked(
    broker: Broker, receivers: Callable[[str], Receiver], tmp_path: Path
) -> None:
    receiver = receivers("r1")
    before = Peer(broker)
    before.publish(payload([C0]))
    assert before.ack()[2] == [(BOOT, 0, 0)]
    before.close()

    broker.restart()
    wait_until(lambda: receiver.counters.connects >= 2)  # paho reconnected by itself
    assert receiver.wait_subscribed(TIMEOUT)  # and on_connect subscribed again

    after = Peer(broker)
    try:
        after.publish(payload([C1]))
        assert after.ack()[2] == [(BOOT, 1, 1)]
    finally:
        after.close()
    assert stored_chunks(tmp_path / "store.sqlite") == 2
    assert receiver.counters.rejected == 0


def test_stop_closes_the_store_and_a_new_receiver_resumes_it(
    broker: Broker, peer: Peer, tmp_path: Path
) -> None:
    receiver = Receiver(config(broker, tmp_path / "store.sqlite", "r1"))
    receiver.start()
    assert receiver.wait_subscribed(TIMEOUT)
    peer.publish(payload([C0]))
    peer.ack()
    receiver.stop()
    assert not receiver.wait_subscribed(0)

    again = Receiver(config(broker, tmp_path / "store.sqlite", "r1"))
    again.start()
    try:
        assert again.wait_subscribed(TIMEOUT)
        peer.publish(payload([C0, C1]))
        assert peer.ack()[2] == [(BOOT, 0, 1)]
        assert (again.counters.chunks_new, again.counters.chunks_duplicate) == (1, 1)
    finally:
        again.stop()


def test_tune_gc_raises_only_generation_0s_threshold() -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 11, 12)
        tune_gc()
        assert gc.get_threshold() == (GC_GEN0_THRESHOLD, 11, 12)
    finally:
        gc.set_threshold(*saved)


def raw_ack(peer: Peer) -> tuple[list[tuple[bytes, int, int]], bytes, bytes]:
    """The next ack's stored ranges and its (schema_needed, schema_stored)."""
    _topic, data = peer.acks.get(timeout=TIMEOUT)
    return (wire.decode_ack(data)[1], *wire.ack_schemas(data))


def test_a_schema_named_by_an_unknown_hash_is_asked_for_never_acked_and_stored_once_sent(
    broker: Broker, peer: Peer, tmp_path: Path
) -> None:
    digest, store = wire.schema_hash(SCHEMA), tmp_path / "store.sqlite"
    receiver = Receiver(config(broker, store, "r1"))
    receiver.start()
    try:
        assert receiver.wait_subscribed(TIMEOUT)
        peer.publish(payload([C0], schema_by_hash=True))  # a fresh store: it has never seen the schema
        assert raw_ack(peer) == ([], digest, b"")  # nothing acked, the schema asked for
        assert stored_chunks(store) == 0 and receiver.counters.schemas_requested == 1
        peer.publish(payload([C0]))  # the agent sends it whole again
        assert raw_ack(peer) == ([(BOOT, 0, 0)], b"", digest)  # stored: the agent may now name it
        peer.publish(payload([C1], schema_by_hash=True))
        assert raw_ack(peer) == ([(BOOT, 1, 1)], b"", b"")
    finally:
        receiver.stop()
    again = Receiver(config(broker, store, "r2"))  # a restart: the schema is in the store, not in memory
    again.start()
    try:
        assert again.wait_subscribed(TIMEOUT)
        peer.publish(payload([C2], schema_by_hash=True))
        assert raw_ack(peer) == ([(BOOT, 2, 2)], b"", b"")
        assert again.counters.schemas_requested == 0 and stored_chunks(store) == 3
    finally:
        again.stop()
