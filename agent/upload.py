"""Upload stage: the online/offline state machine that drains the buffer oldest-first over MQTT.

Contract
- Runs on its own thread (:meth:`Uploader.run`) with its own buffer connection; paho's network thread
  only posts events (connected, disconnected, ack) into a queue, so every decision happens on one thread.
- Publishes whole chunks, oldest first, as batches at QoS 1 on ``{prefix}/{vin}/telemetry``, keeping at
  most ``max_inflight_batches`` unacked, so the broker's per-subscriber queue never overflows. During a
  drain batches grow up to ``max_batch_bytes`` (and never past the broker's Maximum Packet Size).
- Deletes from the buffer only what a receiver's ack on ``{prefix}/{vin}/ack`` names: the receiver sends
  it after its own commit. A PUBACK from the broker deletes nothing.
- Whatever is unacked after a reconnect or an ack timeout is sent again from the oldest; the receiver
  stores a chunk once, whatever the number of deliveries.
- Eviction notices ride along in batches until a batch that carried them is acked.
- States: OFFLINE (no broker), ONLINE (connected, backlog small), DRAINING (connected, working off a
  backlog). Every transition is logged once, with its reason and the backlog.
"""

from __future__ import annotations

import enum
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from agent import wire
from agent.buffer import Buffer, StoredChunk
from agent.errors import StorageError, WireError
from agent.service import mqtt
from agent.service.logs import get_logger
from agent.status import DrainRate
from agent.wire.values import ChunkId

DRAIN_THRESHOLD_CHUNKS = 5  # more unsent chunks than this after a batch means we are draining


class State(enum.Enum):
    OFFLINE = "OFFLINE"
    ONLINE = "ONLINE"
    DRAINING = "DRAINING"
    STOPPED = "STOPPED"


@dataclass
class UploadCounters:
    batches_sent: int = 0
    chunks_sent: int = 0
    chunks_acked: int = 0
    bytes_sent: int = 0
    resends: int = 0
    last_ack_at: float | None = None


@dataclass
class _InFlight:
    ids: set[ChunkId]
    samples: int
    sent_at: float


@dataclass
class UploadSettings:
    vin: str
    prefix: str
    client_id: str
    max_inflight_batches: int = 8
    max_batch_bytes: int = 256 * 1024
    ack_timeout_s: float = 15.0
    max_bytes_per_s: float = 0.0  # 0 = no bandwidth cap
    compression: str = "zstd"
    counters: UploadCounters = field(default_factory=UploadCounters)


class Uploader:
    def __init__(
        self,
        settings: UploadSettings,
        mqtt_settings: mqtt.MqttSettings,
        buffer_path: Path,
        wake: threading.Event,
    ) -> None:
        self.settings = settings
        self.counters = settings.counters
        self.mqtt_settings = mqtt_settings
        self.buffer_path = buffer_path
        self.wake = wake  # set by the pipeline after each commit
        self.stop_event = threading.Event()
        self.state = State.OFFLINE
        self.alive_at = time.monotonic()
        self.drain_rate = DrainRate()
        self.log = get_logger("agent.upload", vin=settings.vin)
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._inflight: dict[int, _InFlight] = {}  # keyed by the batch's last buffer row
        self._cursor = 0  # last buffer row handed to the broker since the last reset
        self._packet_limit = 0  # the broker's Maximum Packet Size, 0 = none announced
        self._tokens, self._tokens_at = 0.0, time.monotonic()
        base = f"{settings.prefix}/{settings.vin}"
        self.telemetry_topic, self.ack_topic, self.status_topic = (
            f"{base}/telemetry",
            f"{base}/ack",
            f"{base}/status",
        )
        self.client = mqtt.make_client(mqtt_settings, settings.client_id, persistent=True)
        self.client.will_set(self.status_topic, mqtt.offline_status(settings.vin), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.thread = threading.Thread(target=self.run, name="uploader", daemon=True)

    # --- paho's thread: post events only -----------------------------------------------------------
    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._events.put(("refused", str(reason)))
            return
        client.subscribe(self.ack_topic, qos=1)
        self._events.put(("connected", (str(reason), getattr(properties, "MaximumPacketSize", 0))))
        self.wake.set()

    def _on_disconnect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        # Jitter the reconnect backoff, so a fleet does not reconnect in lock-step after a broker restart.
        client.reconnect_delay_set(min_delay=random.uniform(0.5, 1.5), max_delay=random.uniform(20, 40))  # type: ignore[arg-type]
        self._events.put(("disconnected", str(reason)))
        self.wake.set()

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        self._events.put(("ack", message.payload))
        self.wake.set()

    # --- the uploader's thread ----------------------------------------------------------------------
    def start(self) -> None:
        mqtt.connect(self.client, self.mqtt_settings, persistent=True)
        self.thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        self.stop_event.set()
        self.wake.set()
        self.thread.join(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    def publish_status(self, payload: bytes) -> None:
        """Retained status for dashboards (thread-safe: paho queues it)."""
        if self.state is not State.OFFLINE:
            self.client.publish(self.status_topic, payload, qos=1, retain=True)

    def run(self) -> None:
        buffer = Buffer(self.buffer_path)
        try:
            while not self.stop_event.is_set():
                self.alive_at = time.monotonic()
                self.wake.wait(0.5)
                self.wake.clear()
                self._drain_events(buffer)
                if self.state is State.OFFLINE:
                    continue
                self._expire(time.monotonic())
                while len(self._inflight) < self.settings.max_inflight_batches and self._send_one(buffer):
                    self.alive_at = time.monotonic()
            self._drain_events(buffer)
        finally:
            self._transition(State.STOPPED, "shutdown", buffer)
            buffer.close()

    def _drain_events(self, buffer: Buffer) -> None:
        while True:
            try:
                kind, detail = self._events.get_nowait()
            except queue.Empty:
                return
            if kind == "connected":
                self._reset()
                self._packet_limit = int(detail[1] or 0)
                self._transition(State.ONLINE, f"connected ({detail[0]})", buffer)
            elif kind in ("disconnected", "refused"):
                self._reset()
                self._transition(State.OFFLINE, f"{kind} ({detail})", buffer)
            elif kind == "ack":
                self._handle_ack(buffer, detail)

    def _handle_ack(self, buffer: Buffer, payload: bytes) -> None:
        try:
            vin, ranges = wire.decode_ack(payload)
        except WireError as error:
            self.log.error("ack_rejected", reason=str(error), size=len(payload))
            return
        if vin != self.settings.vin:
            self.log.error("ack_rejected", reason=f"ack names vin {vin!r}", size=len(payload))
            return
        acked = {ChunkId(boot, seq) for boot, first, last in ranges for seq in range(first, last + 1)}
        done = [key for key, batch in self._inflight.items() if batch.ids <= acked]
        try:
            deleted = buffer.delete(ranges)
            buffer.clear_noted(wire.ack_noted(payload))
        except StorageError as error:
            self.log.error("ack_not_applied", reason=str(error))
            return
        self.counters.chunks_acked += deleted
        self.counters.last_ack_at = time.time()
        self.drain_rate.add(sum(self._inflight[key].samples for key in done), time.monotonic())
        for key in done:
            del self._inflight[key]
        for batch in self._inflight.values():
            batch.ids -= acked

    def _reset(self) -> None:
        """Forget what is in flight: it will be sent again, oldest first."""
        if self._inflight:
            self.counters.resends += 1
        self._inflight.clear()
        self._cursor = 0

    def _expire(self, now: float) -> None:
        late = [b for b in self._inflight.values() if now - b.sent_at > self.settings.ack_timeout_s]
        if late:
            self.log.warning("ack_timeout", batches=len(late), timeout_s=self.settings.ack_timeout_s)
            self._reset()

    def _bandwidth_allows(self, size: int) -> bool:
        rate = self.settings.max_bytes_per_s
        if rate <= 0:
            return True
        now = time.monotonic()
        self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)  # at most 1 s of burst
        self._tokens_at = now
        if self._tokens < min(size, rate):
            return False
        self._tokens -= size
        return True

    def _encode(
        self, buffer: Buffer, chunks: list[StoredChunk], notices: list[tuple[int, bytes, int, int]]
    ) -> bytes:
        schema = buffer.schema(chunks[0].schema_id)
        evicted = [(boot, first, last) for _, boot, first, last in notices]
        return wire.encode_batch(
            self.settings.vin,
            schema,
            [c.payload for c in chunks],
            evicted,
            time.time(),
            self.settings.compression,
        )

    def _send_one(self, buffer: Buffer) -> bool:
        try:
            chunks = buffer.oldest(self._cursor, self.settings.max_batch_bytes)
            notices = buffer.notices() if chunks else []
        except StorageError as error:
            self.log.error("buffer_read_failed", reason=str(error))
            return False
        if not chunks:
            if self.state is State.DRAINING and not self._inflight:
                self._transition(State.ONLINE, "backlog sent", buffer)
            return self._send_notices_alone(buffer)
        payload = self._encode(buffer, chunks, notices)
        while self._packet_limit and len(payload) > self._packet_limit * 0.9 and len(chunks) > 1:
            chunks = chunks[: len(chunks) // 2]  # the broker would refuse it: send fewer chunks
            payload = self._encode(buffer, chunks, notices)
        if not self._bandwidth_allows(len(payload)):
            threading.Timer(0.1, self.wake.set).start()
            return False
        info = self.client.publish(self.telemetry_topic, payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            self.log.warning("publish_failed", rc=paho.error_string(info.rc))
            return False
        self._cursor = chunks[-1].row_id
        self._inflight[self._cursor] = _InFlight(
            {ChunkId(c.boot_id, c.seq) for c in chunks},
            sum(c.sample_count for c in chunks),
            time.monotonic(),
        )
        self.counters.batches_sent += 1
        self.counters.chunks_sent += len(chunks)
        self.counters.bytes_sent += len(payload)
        if self.state is State.ONLINE and len(
            buffer.oldest(self._cursor, 1 << 30, DRAIN_THRESHOLD_CHUNKS + 1)
        ) > (DRAIN_THRESHOLD_CHUNKS):
            self._transition(State.DRAINING, "backlog found", buffer)
        return True

    def _send_notices_alone(self, buffer: Buffer) -> bool:
        """Eviction notices left over with no chunk to ride along (say, the last commit was refused)."""
        if self._inflight:
            return False
        try:
            notices, schema_id = buffer.notices(), buffer.latest_schema_id()
        except StorageError as error:
            self.log.error("buffer_read_failed", reason=str(error))
            return False
        if not notices or schema_id is None:
            return False
        evicted = [(boot, first, last) for _, boot, first, last in notices]
        payload = wire.encode_batch(
            self.settings.vin, buffer.schema(schema_id), [], evicted, time.time(), self.settings.compression
        )
        if self.client.publish(self.telemetry_topic, payload, qos=1).rc != paho.MQTT_ERR_SUCCESS:
            return False
        self._inflight[-1] = _InFlight(set(), 0, time.monotonic())
        self.counters.batches_sent += 1
        self.counters.bytes_sent += len(payload)
        return False

    def _transition(self, new: State, reason: str, buffer: Buffer) -> None:
        if new is self.state:
            return
        stats = buffer.stats()
        self.log.info(
            "state_changed",
            state=new.value,
            previous=self.state.value,
            reason=reason,
            backlog_chunks=stats.chunks,
            backlog_samples=stats.samples,
        )
        self.state = new
