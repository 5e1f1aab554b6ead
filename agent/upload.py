"""Upload stage: the online/offline state machine that drains the buffer oldest-first over MQTT.

Contract
- Runs on its own thread as a :class:`agent.stage.Stage` ("uploader") with its own buffer connection;
  paho's network thread only posts events (connected, disconnected, ack) into a queue, so every decision
  happens on one thread. Each turn waits at most ``IDLE_WAIT_S`` for work (the heartbeat's declared
  period), offline ``OFFLINE_WAIT_S`` (only paho's events bring work then); an unexpected error is logged as ``stage_failed`` and stops the agent.
- Takes its configuration as it was read: :class:`agent.config.UploadConfig` and the ``mqtt`` section.
- Publishes whole chunks, oldest first, as batches at QoS 1 on ``{prefix}/{vin}/telemetry``, keeping at
  most ``max_inflight_batches`` unacked, so the broker's per-subscriber queue never overflows. During a
  drain batches grow up to ``max_batch_bytes`` (and never past the broker's Maximum Packet Size).
  Online, ``batch_interval_s`` > 0 holds committed chunks until the first of them has waited that long
  (or they make half a full batch), then sends them as one: fewer, larger batches on a metered link.
- Deletes from the buffer only what a receiver's ack on ``{prefix}/{vin}/ack`` names: the receiver sends
  it after its own commit. A PUBACK from the broker deletes nothing. An ack is honoured only for chunks
  this process has sent (:class:`agent.acks.SentLedger`) and the buffer still holds, deleted by SQL range,
  so its cost is bounded by what was sent, never by the range it claims; retained acks are ignored and
  counted; ranges of boots never sent are counted and logged once; ``noted`` clears only notices sent.
- Whatever is unacked after a reconnect or an ack timeout is sent again from the oldest; the receiver
  stores a chunk once, whatever the number of deliveries.
- Eviction notices ride along in batches until a batch that carried them is acked.
- The schema rides whole in every batch until an ack says a receiver stored it (``schema_stored``, after
  its commit); from then on batches name it by hash (wire version 3). An ack asking for it
  (``schema_needed``: that receiver's store lacks it) makes it ride whole again, from the oldest unacked
  chunk. A restart sends it whole again once: what receivers hold is not kept on disk.
- Each batch says how many of its first chunks are backlog (``backlog_chunks``, for the receiver's
  latency histograms): those already in the buffer when the uploader last published a batch or when the
  connection came up, which could have gone then and did not (offline, a batch too small for them all,
  a resend after an ack timeout). The others are live: in the first batch published after their commit
  (however long a full window of unacked batches held that publish back: live latency shows it).
- States: OFFLINE (no broker), ONLINE (connected, backlog small), DRAINING (connected, working off a
  backlog), NOT_ACKED (connected, but batches have been in flight without any ack for longer than
  ``UNACKED_AFTER_TIMEOUTS`` ack timeouts). Every transition is logged once, with its reason and the
  backlog. Failures to reach the broker are logged once per reason, with the broker and the next retry
  (:mod:`agent.broker_link`).
- What other threads see: :meth:`Uploader.status`, an immutable :class:`UploadStatus` (state, a copy of
  the counters, the ack rate; defined in :mod:`agent.status`) that the uploader's thread publishes
  under a lock after every turn and every transition. Everything else (``state``, the in-flight window, the :class:`DrainRate`) belongs
  to the uploader's thread; :meth:`Uploader.publish_status` is the one call other threads make.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent import wire
from agent.acks import SentLedger, read_ack
from agent.broker_link import BrokerEvents, FailureLog, describe_error, describe_refusal
from agent.buffer import Buffer, StoredChunk
from agent.config import UploadConfig
from agent.errors import AckRejected, StorageError
from agent.pacing import Pacer
from agent.service import mqtt
from agent.service.logs import get_logger
from agent.stage import Stage
from agent.status import DrainRate, State, UploadCounters, UploadStatus
from agent.wire import auth
from agent.wire.values import ChunkId

DRAIN_THRESHOLD_CHUNKS = 5  # more unsent chunks than this after a batch means we are draining
IDLE_WAIT_S = 2.0  # the longest wait for work (a commit, a broker event) while connected
OFFLINE_WAIT_S = 5.0  # offline, only a broker event brings work (the heartbeat allows that much then)
UNACKED_AFTER_TIMEOUTS = 3  # in flight with no ack for this many ack timeouts: NOT_ACKED

__all__ = ["IDLE_WAIT_S", "State", "UploadCounters", "UploadStatus", "Uploader"]


@dataclass
class _InFlight:
    ids: set[ChunkId]
    samples: int
    sent_at: float


class Uploader(Stage):
    def __init__(
        self,
        vin: str,
        config: UploadConfig,
        mqtt_config: mqtt.MqttConfig,
        buffer_path: Path,
        wake: threading.Event,
    ) -> None:
        super().__init__("uploader", IDLE_WAIT_S, get_logger("agent.upload", vin=vin))
        self.vin = vin
        self.config = config
        self.mqtt_config = mqtt_config
        self.buffer_path = buffer_path
        self.wake = wake  # set by the pipeline after each commit, and by paho's thread on an event
        self.state = State.OFFLINE  # the uploader's thread's; others read status().state
        self.drain_rate = DrainRate()  # the uploader's thread's; others read status()
        self._counters = UploadCounters()
        self._status_lock = threading.Lock()
        self._status = UploadStatus(self.state, UploadCounters(), None)
        self._buffer: Buffer | None = None  # the uploader's thread's own connection (open() to close())
        self._inflight: dict[int, _InFlight] = {}  # keyed by the batch's last buffer row
        self._cursor = 0  # last buffer row handed to the broker since the last reset
        self._fresh_after = 0  # buffer row: chunks after it were committed after the last publish/connect
        self._packet_limit = 0  # the broker's Maximum Packet Size, 0 = none announced
        self._pacer = Pacer(config.max_bytes_per_s, config.batch_interval_s, config.max_batch_bytes)
        self._sent = SentLedger()  # what this process handed to the broker and has not seen acked
        self._waiting_since: float | None = None  # monotonic: first send with no ack since
        self._unknown_boot_logged = False
        self._schemas_stored: set[bytes] = set()  # schema hashes an ack said a receiver stored
        base = f"{mqtt_config.prefix}/{vin}"
        self.telemetry_topic, self.ack_topic, self.status_topic = (
            f"{base}/telemetry",
            f"{base}/ack",
            f"{base}/status",
        )
        client_id = mqtt_config.client_id or f"edge-agent-{vin}"
        # Jitter the reconnect backoff, so a fleet does not reconnect in lock-step after a broker restart.
        backoff = (random.uniform(0.5, 1.5), random.uniform(20, 40))
        self.client = mqtt.make_client(mqtt_config, client_id, persistent=True, reconnect=backoff)  # type: ignore[arg-type]
        self._failures = FailureLog(self.log, f"{mqtt_config.host}:{mqtt_config.port}", *backoff)
        self._auth_key = mqtt_config.auth_key()  # the vehicle's MAC key (agent.wire.auth), or None
        self._mac_rejections: set[str] = set()  # reasons already logged
        self.client.will_set(self.status_topic, mqtt.offline_status(vin, self._auth_key), qos=1, retain=True)
        self._events = BrokerEvents(self.ack_topic, wake)  # paho's thread posts, this one decides
        self._events.attach(self.client)

    # --- any thread ---------------------------------------------------------------------------------
    def status(self) -> UploadStatus:
        """The last snapshot the uploader's thread published (thread-safe, never blocks for long)."""
        with self._status_lock:
            return self._status

    @property
    def counters(self) -> UploadCounters:
        """A copy of the running totals, as of the last snapshot (see :meth:`status`)."""
        return self.status().counters

    def publish_status(self, payload: bytes) -> int:
        """Retained status for dashboards (thread-safe: paho queues it); the bytes it puts on the link
        (0 while offline: a status is not queued for later)."""
        if self.status().state is State.OFFLINE:
            return 0
        signed = self._sign(payload)
        self.client.publish(self.status_topic, signed, qos=1, retain=True)
        return mqtt.publish_bytes(self.status_topic, len(signed)) + mqtt.PUBACK_BYTES

    def _sign(self, payload: bytes) -> bytes:
        """``payload`` with its MAC under the vehicle's key, when there is one (pure: any thread)."""
        return payload if self._auth_key is None else auth.sign(payload, self._auth_key, self.vin)

    # --- the owner's thread -------------------------------------------------------------------------
    def start(self) -> None:
        """Start connecting (paho's thread, in the background), then the uploader's thread."""
        mqtt.connect(self.client, self.mqtt_config, persistent=True)
        super().start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the uploader's thread (waiting up to ``timeout``), then disconnect from the broker."""
        self.request_stop()
        self.join(timeout)
        # MQTT v5's "disconnect with will message": the broker publishes our retained OFFLINE status, so
        # a dashboard does not show a vehicle that stopped cleanly as online for ever.
        self.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
        self.client.loop_stop()

    def interrupt(self) -> None:
        """Cut the uploader's wait short (any thread)."""
        self.wake.set()

    # --- the stage's hooks, on the uploader's thread ------------------------------------------------
    def open(self) -> None:
        self._buffer = Buffer(self.buffer_path)

    def run_once(self) -> bool:
        """Wait for work (at most ``IDLE_WAIT_S``, offline ``OFFLINE_WAIT_S``), apply broker events, then
        fill the window."""
        assert self._buffer is not None
        if self.state is State.OFFLINE:
            self.heartbeat.beat(OFFLINE_WAIT_S)
            self.wake.wait(OFFLINE_WAIT_S)
        else:
            self.wake.wait(IDLE_WAIT_S)
        self.wake.clear()
        self._drain_events(self._buffer)
        if self.state is not State.OFFLINE:
            self._expire(time.monotonic())
            self._check_unacked(time.monotonic(), self._buffer)
            while len(self._inflight) < self.config.max_inflight_batches and self._send_one(self._buffer):
                self.heartbeat.beat()
        self._publish()
        return True

    def finish(self, stopped: bool) -> None:
        assert self._buffer is not None
        self._drain_events(self._buffer)

    def close(self) -> None:
        if self._buffer is None:
            return
        try:
            self._transition(State.STOPPED, "shutdown", self._buffer)
        finally:
            self._buffer.close()
            self._buffer = None
            self._publish()  # the final figures, for the owner once the thread has ended

    def _publish(self) -> None:
        """Publish what other threads may see (:meth:`status`)."""
        now = time.monotonic()
        waited = None if self._waiting_since is None else now - self._waiting_since
        snapshot = UploadStatus(self.state, replace(self._counters), self.drain_rate.per_second(now), waited)
        with self._status_lock:
            self._status = snapshot

    def _drain_events(self, buffer: Buffer) -> None:
        while True:
            try:
                kind, detail = self._events.queue.get_nowait()
            except queue.Empty:
                return
            if kind == "connected":
                self._reset()
                self._waiting_since = None
                self._failures.connected()
                self._packet_limit = int(detail[1] or 0)
                self._mark_backlog(buffer)
                self._transition(State.ONLINE, f"connected ({detail[0]})", buffer)
            elif kind in ("disconnected", "refused", "unreachable"):
                self._reset()
                self._waiting_since = None
                if kind != "disconnected":
                    self._counters.connect_failures += 1
                    self._failures.failed(*self._describe(kind, detail))
                self._transition(State.OFFLINE, f"{kind} ({detail})", buffer)
            elif kind == "retained_ack":
                self._counters.acks_retained += 1
                if self._counters.acks_retained == 1:  # once: counted from then on
                    self.log.warning(
                        "ack_ignored", reason="retained (not a receiver's fresh ack)", size=detail
                    )
            elif kind == "ack":
                self._handle_ack(buffer, detail)

    def _handle_ack(self, buffer: Buffer, payload: bytes) -> None:
        self._counters.link_bytes += mqtt.publish_bytes(self.ack_topic, len(payload)) + mqtt.PUBACK_BYTES
        try:
            ack = read_ack(payload, self.vin, self._auth_key)
        except AckRejected as error:
            if not error.forged:
                self.log.error("ack_rejected", reason=str(error), size=len(payload))
                return
            self._counters.acks_rejected += 1
            if str(error) not in self._mac_rejections:
                self._mac_rejections.add(str(error))
                self.log.error("ack_rejected", reason=str(error), size=len(payload), logged="once")
            return
        if ack.schema_needed:
            self._resend_schema(ack.schema_needed)
            return
        schema_stored = ack.schema_stored
        # Only what this process sent: the cost follows the chunks sent, never the width of a claimed range.
        match = self._sent.match(ack.ranges)
        noted = self._sent.noted(ack.noted)
        self._count_strays(match.unknown_boots, match.unmatched)
        if not match.ids and not noted:
            return  # names nothing this agent sent: not a receiver's ack of ours (stale, or forged)
        if schema_stored and len(self._schemas_stored) < 64:
            self._schemas_stored.add(schema_stored)
        acked = set(match.ids)
        done = [key for key, batch in self._inflight.items() if batch.ids <= acked]
        try:
            deleted = buffer.delete(match.ranges) if match.ranges else 0
            buffer.clear_noted(noted)
        except StorageError as error:
            self.log.error("ack_not_applied", reason=str(error))
            return
        self._waiting_since = None if len(done) == len(self._inflight) else time.monotonic()
        if self.state is State.NOT_ACKED:
            self._transition(State.ONLINE, "acked again", buffer)
        self._counters.chunks_acked += deleted
        self._counters.last_ack_at = time.time()
        self.drain_rate.add(sum(self._inflight[key].samples for key in done), time.monotonic())
        for key in done:
            del self._inflight[key]
        for batch in self._inflight.values():
            batch.ids -= acked

    def _resend_schema(self, digest: bytes) -> None:
        """A receiver lacks the schema named ``digest``: send it whole again, from the oldest unacked."""
        if digest not in self._schemas_stored:
            return  # already sent whole (an answer to a batch that left before the last request)
        self._schemas_stored.discard(digest)
        self._counters.schemas_resent += 1
        self.log.warning(
            "schema_resent",
            schema_hash=digest.hex(),
            reason="a receiver does not hold the schema that batches named by hash",
            action="sending the schema whole again, from the oldest unacked chunk",
        )
        self._reset()

    def _describe(self, kind: str, detail: Any) -> tuple[str, str]:
        """The reason class and detail of a failed connection (a refusal, or an error before any CONNACK)."""
        return describe_refusal(detail) if kind == "refused" else describe_error(detail, self.mqtt_config.tls)

    def _count_strays(self, unknown_boots: frozenset[bytes], unmatched: int) -> None:
        """Count ack ranges that name nothing this process sent; the first unknown boot is logged."""
        self._counters.acks_unknown_boot += len(unknown_boots)
        self._counters.acks_unmatched += unmatched
        if unknown_boots and not self._unknown_boot_logged:
            self._unknown_boot_logged = True  # once: a stranger's acks must not flood the journal
            self.log.warning(
                "ack_ignored",
                reason="names a boot this agent never sent (a stale or forged ack; counted from now on)",
                boot_id=min(unknown_boots).hex(),
            )

    def _check_unacked(self, now: float, buffer: Buffer) -> None:
        """NOT_ACKED once batches have waited ``UNACKED_AFTER_TIMEOUTS`` ack timeouts with no ack."""
        limit = UNACKED_AFTER_TIMEOUTS * self.config.ack_timeout_s
        if self._waiting_since is None or self.state is State.NOT_ACKED or now - self._waiting_since <= limit:
            return
        waited = round(now - self._waiting_since)
        self._transition(State.NOT_ACKED, f"connected, but the receiver has not acked for {waited} s", buffer)

    def _reset(self) -> None:
        """Forget what is in flight: it will be sent again, oldest first."""
        if self._inflight:
            self._counters.resends += 1
        self._inflight.clear()
        self._cursor = 0

    def _expire(self, now: float) -> None:
        late = [b for b in self._inflight.values() if now - b.sent_at > self.config.ack_timeout_s]
        if late:
            self.log.warning("ack_timeout", batches=len(late), timeout_s=self.config.ack_timeout_s)
            self._reset()

    def _mark_backlog(self, buffer: Buffer) -> None:
        """The connection is up: every chunk held now waited for it (backlog)."""
        try:
            self._fresh_after = max(self._fresh_after, buffer.newest_row())
        except StorageError as error:  # the next send's read says it too; the split is only for latency
            self.log.error("buffer_read_failed", reason=str(error))

    def _encode(
        self, buffer: Buffer, chunks: list[StoredChunk], notices: list[tuple[int, bytes, int, int]]
    ) -> bytes:
        schema = buffer.schema(chunks[0].schema_id)
        evicted = [(boot, first, last) for _, boot, first, last in notices]
        backlog = sum(1 for c in chunks if c.row_id <= self._fresh_after)  # a prefix: oldest first
        payloads = [c.payload for c in chunks]
        by_hash = wire.schema_hash(schema) in self._schemas_stored
        return self._sign(
            wire.encode_batch(
                self.vin, schema, payloads, evicted, time.time(), self.config.compression, backlog, by_hash
            )
        )

    def _send_one(self, buffer: Buffer) -> bool:
        try:
            newest = buffer.newest_row()  # what this send could take: later ones are live at the next
            chunks = buffer.oldest(self._cursor, self.config.max_batch_bytes)
            notices = buffer.notices() if chunks else []
        except StorageError as error:
            self.log.error("buffer_read_failed", reason=str(error))
            return False
        if not chunks:
            if self.state is State.DRAINING and not self._inflight:
                self._transition(State.ONLINE, "backlog sent", buffer)
            return self._send_notices_alone(buffer)
        if self._pacer.holds(self.state is State.ONLINE, sum(len(c.payload) for c in chunks)):
            return False
        payload = self._encode(buffer, chunks, notices)
        while self._packet_limit and len(payload) > self._packet_limit * 0.9 and len(chunks) > 1:
            chunks = chunks[: len(chunks) // 2]  # the broker would refuse it: send fewer chunks
            payload = self._encode(buffer, chunks, notices)
        if not self._pacer.allows(len(payload)):
            threading.Timer(0.1, self.wake.set).start()
            return False
        info = self.client.publish(self.telemetry_topic, payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            self.log.warning("publish_failed", rc=paho.error_string(info.rc))
            return False
        self._cursor = chunks[-1].row_id
        self._fresh_after = max(self._fresh_after, newest, self._cursor)  # sent once: a resend is backlog
        ids = {ChunkId(c.boot_id, c.seq) for c in chunks}
        self._note_sent(self._cursor, ids, sum(c.sample_count for c in chunks), notices, len(payload))
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
        payload = self._sign(
            wire.encode_batch(
                self.vin, buffer.schema(schema_id), [], evicted, time.time(), self.config.compression
            )
        )
        if self.client.publish(self.telemetry_topic, payload, qos=1).rc != paho.MQTT_ERR_SUCCESS:
            return False
        self._note_sent(-1, set(), 0, notices, len(payload))
        return False

    def _note_sent(
        self, key: int, ids: set[ChunkId], samples: int, notices: list[tuple[int, bytes, int, int]], size: int
    ) -> None:
        """A batch of ``size`` bytes went to the broker: in flight under ``key``, and counted."""
        self._sent.sent(ids, ((boot, first, last) for _, boot, first, last in notices))
        self._inflight[key] = _InFlight(ids, samples, time.monotonic())
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        self._counters.batches_sent += 1
        self._counters.chunks_sent += len(ids)
        self._counters.bytes_sent += size
        self._counters.link_bytes += mqtt.publish_bytes(self.telemetry_topic, size) + mqtt.PUBACK_BYTES

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
        self._publish()
