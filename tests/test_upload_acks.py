"""Defence in depth on the agent: an ack deletes only chunks this agent sent and still holds, at a cost
bounded by what it sent, never by the range it claims (a real Mosquitto, a real Uploader, a real buffer).

The test plays whoever is on the broker: an attacker, a stale retained message, or a receiver.
"""

from __future__ import annotations

import os
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from structlog.testing import capture_logs

from agent import wire
from agent.acks import SentLedger
from agent.buffer import Buffer
from agent.config import BufferConfig, UploadConfig
from agent.service import mqtt
from agent.service.mqtt import MqttConfig
from agent.upload import Uploader
from agent.wire import messages
from agent.wire import telemetry_pb2 as pb
from agent.wire.messages import envelope
from agent.wire.values import ChunkId
from tests.harness.broker import Broker
from tests.harness.buffers import SCHEMA, fill, sealed
from tests.harness.uploaders import VIN, backlog, start_uploader
from tests.harness.waiting import wait_for

BOOT = b"B" * 16
HUGE = 1 << 62
MEMORY_BOUND = 20 << 20  # bytes: what one ack may cost the agent, whatever range it claims


class Peer:
    """A client on the broker (no receiver): records the batches it sees, publishes what the test says."""

    def __init__(self, broker: Broker) -> None:
        self.batches: list[wire.DecodedBatch] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = lambda _c, _u, m: self.batches.append(wire.decode_batch(bytes(m.payload)))
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe(f"fleet/{VIN}/telemetry", qos=1)
        self.client.loop_start()

    def ack(self, payload: bytes, retain: bool = False) -> None:
        self.client.publish(f"fleet/{VIN}/ack", payload, qos=1, retain=retain).wait_for_publish(5)

    def seen(self) -> set[ChunkId]:
        return {c.id for b in self.batches for c in b.chunks}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def huge_ack(boot: bytes) -> bytes:
    """An ack claiming seqs 0..2^62 of ``boot``: a few dozen bytes."""
    ack = pb.Ack(vin=VIN)
    ack.stored.add(boot_id=boot, first_seq=0, last_seq=HUGE)
    return envelope(pb.BODY_KIND_ACK, ack.SerializeToString(), compress=False)


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "buffer.sqlite"
    fill(path, BOOT, 30)
    yield path


def test_a_54_byte_ack_claiming_2_to_the_62_costs_nothing_and_deletes_nothing(
    broker: Broker, filled: Path
) -> None:
    peer = Peer(broker)
    uploader, _ = start_uploader(broker, filled)
    try:
        wait_for(lambda: uploader.counters.chunks_sent == 30)  # all in flight: no receiver acks them
        forged = huge_ack(os.urandom(16))
        assert len(forged) <= 64  # the 54-byte ack, give or take the envelope's version
        tracemalloc.start()
        try:
            started = time.monotonic()
            with capture_logs() as logs:
                peer.ack(forged)
                wait_for(lambda: uploader.counters.acks_unknown_boot == 1, timeout=10)
                peer.ack(forged)  # the second one is counted, not logged again
                wait_for(lambda: uploader.counters.acks_unknown_boot == 2, timeout=10)
            elapsed = time.monotonic() - started
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert elapsed < 5 and peak < MEMORY_BOUND, (elapsed, peak)
        assert sum(e["event"] == "ack_ignored" for e in logs) == 1
        assert backlog(filled) == 30 and uploader.counters.chunks_acked == 0
    finally:
        uploader.stop()
        peer.close()


def test_a_retained_ack_published_before_the_agent_starts_is_ignored(broker: Broker, filled: Path) -> None:
    peer = Peer(broker)
    peer.ack(wire.encode_ack(VIN, [ChunkId(BOOT, n) for n in range(30)]), retain=True)
    uploader, _ = start_uploader(broker, filled)
    try:
        wait_for(lambda: uploader.counters.acks_retained == 1)
        wait_for(lambda: uploader.counters.chunks_sent == 30)
        assert backlog(filled) == 30 and uploader.counters.chunks_acked == 0
    finally:
        uploader.stop()
        peer.ack(b"", retain=True)  # clear it from the broker
        peer.close()


def test_an_ack_naming_chunks_never_sent_deletes_nothing(broker: Broker, filled: Path) -> None:
    peer = Peer(broker)
    uploader, _ = start_uploader(broker, filled, max_inflight_batches=1, max_batch_bytes=200)
    try:
        wait_for(lambda: uploader.counters.batches_sent == 1 and bool(peer.batches))
        sent = peer.seen()
        assert 0 < len(sent) < 30  # one small batch in flight, the rest never sent
        never_sent = [ChunkId(BOOT, n) for n in range(30) if ChunkId(BOOT, n) not in sent]
        other_boot = [ChunkId(b"O" * 16, n) for n in range(30)]
        peer.ack(wire.encode_ack(VIN, never_sent + other_boot))
        wait_for(lambda: uploader.counters.acks_unmatched == 1 and uploader.counters.acks_unknown_boot == 1)
        assert backlog(filled) == 30
        peer.ack(wire.encode_ack(VIN, sorted(sent)))  # what it did send, a receiver may ack
        wait_for(lambda: backlog(filled) == 30 - len(sent))
    finally:
        uploader.stop()
        peer.close()


def test_a_forged_noted_cannot_clear_an_eviction_notice_that_was_never_delivered(
    broker: Broker, tmp_path: Path
) -> None:
    path = tmp_path / "buffer.sqlite"
    buffer = Buffer(path)
    sid = buffer.schema_id(SCHEMA)
    chunks = sealed(BOOT, 6)
    buffer.append(sid, chunks[:4])
    buffer.append(sid, chunks[4:], BufferConfig(max_bytes=sum(len(c.payload) for c in chunks[:4])))
    notice = [(boot, first, last) for _, boot, first, last in buffer.notices()]
    assert notice and notice[0][:2] == (BOOT, 0)  # the oldest evicted by the cap: a notice pends
    # Not started: nothing has left this agent, so a "noted" echo can only be forged.
    mqtt = MqttConfig(host="127.0.0.1", port=broker.port, client_id="never-connected")
    idle = Uploader(VIN, UploadConfig(), mqtt, path, threading.Event())
    idle._handle_ack(buffer, wire.encode_ack(VIN, [], noted=notice))
    assert [n[1:] for n in buffer.notices()] == notice, "a forged echo cleared an undelivered notice"
    buffer.close()
    # Delivered to a receiver that echoes it: now, and only now, the agent forgets it.
    echo = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)

    def on_message(client: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        batch = wire.decode_batch(bytes(message.payload))
        ack = wire.encode_ack(VIN, [c.id for c in batch.chunks], noted=batch.evicted)
        client.publish(f"fleet/{VIN}/ack", ack, qos=1)

    echo.on_message = on_message
    echo.connect("127.0.0.1", broker.port)
    echo.subscribe(f"fleet/{VIN}/telemetry", qos=1)
    echo.loop_start()
    uploader, _ = start_uploader(broker, path)
    try:
        wait_for(lambda: backlog(path) == 0)
        check = Buffer(path)
        wait_for(lambda: not check.notices())
        check.close()
    finally:
        uploader.stop()
        echo.disconnect()
        echo.loop_stop()


def test_the_sent_ledger_costs_what_was_sent_not_what_is_claimed() -> None:
    ledger = SentLedger()
    ledger.sent([ChunkId(BOOT, n) for n in (3, 4, 5, 9)], [(BOOT, 0, 2)])
    claimed = [(BOOT, 0, HUGE)] * 10_000 + [(b"X" * 16, 0, HUGE), (BOOT, 7, 2)]  # merged, empty dropped
    started = time.monotonic()
    match = ledger.match(claimed)
    assert time.monotonic() - started < 1
    assert match.ranges == [(BOOT, 3, 5), (BOOT, 9, 9)] and match.unknown_boots == {b"X" * 16}
    assert len(ledger) == 0 and ledger.match([(BOOT, 3, 5)]).ids == frozenset()  # acked once, then gone
    assert ledger.noted([(BOOT, 0, 1), (BOOT, 0, 2)]) == [(BOOT, 0, 2)]  # only the notice it sent
    assert ledger.noted([(BOOT, 0, 2)]) == []


class RawPeer(Peer):
    """A peer that keeps the batches' payloads as they came (a batch named by hash needs its schema)."""

    def __init__(self, broker: Broker) -> None:
        super().__init__(broker)
        self.payloads: list[bytes] = []
        self.client.on_message = lambda _c, _u, m: self.payloads.append(bytes(m.payload))

    def next_batch(self, seen: int) -> tuple[bool, wire.DecodedBatch]:
        """Whether batch number ``seen`` named its schema by hash, and the batch itself."""
        wait_for(lambda: len(self.payloads) > seen)
        data = self.payloads[seen]
        by_hash = not pb.Batch.FromString(messages._open_envelope(data, pb.BODY_KIND_BATCH)).HasField(
            "schema"
        )
        return by_hash, wire.decode_batch(data, schemas={wire.schema_hash(SCHEMA): SCHEMA}.get)

    def ack_until_drained(
        self, path: Path, seen: int, schema_stored: bytes = b""
    ) -> tuple[list[bool], list[bytes]]:
        """Ack batch number ``seen`` and each later one as it comes, until the buffer at ``path`` is
        empty: whether each named its schema by hash, and the acks sent."""
        named: list[bool] = []
        acks: list[bytes] = []
        while True:
            by_hash, batch = self.next_batch(seen)
            named.append(by_hash)
            acks.append(
                wire.encode_ack(VIN, [chunk.id for chunk in batch.chunks], schema_stored=schema_stored)
            )
            self.ack(acks[-1])
            seen += 1
            wait_for(lambda: len(self.payloads) > seen or not backlog(path))  # noqa: B023
            if not backlog(path):
                return named, acks


def test_the_schema_goes_whole_until_a_receiver_stored_it_and_whole_again_when_one_asks(
    broker: Broker, filled: Path
) -> None:
    peer, digest = RawPeer(broker), wire.schema_hash(SCHEMA)
    uploader, _ = start_uploader(broker, filled, max_inflight_batches=1, max_batch_bytes=300)
    try:
        by_hash, first = peer.next_batch(0)
        assert not by_hash and first.schema_hash == digest
        ids = [chunk.id for chunk in first.chunks]
        peer.ack(wire.encode_ack(VIN, ids))  # a version-2 receiver: it never says it stored the schema
        by_hash, second = peer.next_batch(1)
        assert not by_hash  # so the agent keeps sending it whole
        peer.ack(wire.encode_ack(VIN, [chunk.id for chunk in second.chunks], schema_stored=digest))
        by_hash, third = peer.next_batch(2)
        assert by_hash and pb.Envelope.FromString(peer.payloads[2]).version == 3
        with capture_logs() as logs:
            peer.ack(wire.encode_ack(VIN, [], schema_needed=digest))  # a receiver without it: nothing stored
            by_hash, again = peer.next_batch(3)
        assert not by_hash and again.chunks[0].id == third.chunks[0].id  # the same chunks, schema whole
        assert uploader.counters.schemas_resent == 1
        assert [e["schema_hash"] for e in logs if e["event"] == "schema_resent"] == [digest.hex()]
        named, _ = peer.ack_until_drained(filled, 3, schema_stored=digest)  # a receiver storing all
        assert named[0] is False and all(named[1:])  # batch 3 carried the schema whole, the rest by hash
        wait_for(lambda: uploader.counters.chunks_acked == 30)  # its next snapshot, after the last delete
    finally:
        uploader.stop()
        peer.close()


def test_online_chunks_wait_for_the_batch_interval_and_leave_together(broker: Broker, tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    fill(path, BOOT, 2)  # a small backlog: the uploader is ONLINE, not draining
    peer = RawPeer(broker)
    started = time.monotonic()
    uploader, _ = start_uploader(broker, path, batch_interval_s=2.0)
    try:
        _, batch = peer.next_batch(0)
        assert time.monotonic() - started >= 2.0  # held for the interval (a loaded machine only adds)
        assert [chunk.id.seq for chunk in batch.chunks] == [0, 1]  # both in one batch
        assert uploader.counters.batches_sent == 1
    finally:
        uploader.stop()
        peer.close()


def test_link_bytes_count_every_batch_and_ack_with_their_mqtt_framing(broker: Broker, tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    fill(path, BOOT, 6)
    peer = RawPeer(broker)
    uploader, _ = start_uploader(broker, path, max_inflight_batches=1, max_batch_bytes=1024)
    try:
        _, acks = peer.ack_until_drained(path, 0)
        wait_for(lambda: uploader.counters.chunks_acked == 6)
        telemetry, ack_topic = f"fleet/{VIN}/telemetry", f"fleet/{VIN}/ack"
        expected = sum(mqtt.publish_bytes(telemetry, len(p)) + mqtt.PUBACK_BYTES for p in peer.payloads)
        expected += sum(mqtt.publish_bytes(ack_topic, len(a)) + mqtt.PUBACK_BYTES for a in acks)
        assert acks and uploader.counters.link_bytes == expected
    finally:
        uploader.stop()
        peer.close()


def test_an_ack_is_read_only_when_its_mac_its_bytes_and_its_vin_hold() -> None:
    from agent.acks import read_ack
    from agent.errors import AckRejected
    from agent.wire import auth

    key = bytes(range(32))
    ack = wire.encode_ack(VIN, [ChunkId(BOOT, 3)], schema_stored=b"\x01" * 16)
    read = read_ack(auth.sign(ack, key, VIN), VIN, key)
    assert read.ranges == [(BOOT, 3, 3)] and read.schema_stored == b"\x01" * 16 and not read.schema_needed
    assert read_ack(ack, VIN, None).ranges == read.ranges  # no key configured: nothing to verify
    with pytest.raises(AckRejected) as unsigned:
        read_ack(ack, VIN, key)
    assert unsigned.value.forged
    with pytest.raises(AckRejected) as wrong_key:
        read_ack(auth.sign(ack, bytes(32), VIN), VIN, key)
    assert wrong_key.value.forged
    with pytest.raises(AckRejected, match="names vin 'OTHERVIN'"):
        read_ack(wire.encode_ack("OTHERVIN", []), VIN, None)
    with pytest.raises(AckRejected) as garbage:
        read_ack(b"\x00garbage", VIN, None)
    assert not garbage.value.forged
