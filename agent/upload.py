"""Upload stage: the online/offline state machine that drains the buffer oldest-first over MQTT.

Contract
- Runs on its own thread as a :class:`agent.stage.Stage` ("uploader") with its own buffer connection;
  paho's network thread only posts events (connected, disconnected, ack) into a queue, so every decision
  happens on one thread (:class:`agent.broker_link.BrokerEvents`). Each turn waits at most
  ``IDLE_WAIT_S`` for work (the heartbeat's declared period), offline ``OFFLINE_WAIT_S`` (only paho's
  events bring work then); an unexpected error is logged as ``stage_failed`` and stops the agent.
- What goes in each batch, what is in flight and what an ack settles is its :class:`agent.window.Window`.
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
  under a lock after every turn and every transition. Everything else (``state``, the window, the
  :class:`DrainRate`) belongs to the uploader's thread; :meth:`Uploader.publish_status` is the one call
  other threads make.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent.acks import read_ack
from agent.broker_link import BrokerEvents, FailureLog, describe_error, describe_refusal
from agent.buffer import Buffer
from agent.config import UploadConfig
from agent.errors import AckRejected
from agent.service import mqtt
from agent.service.logs import get_logger
from agent.stage import Stage
from agent.status import DrainRate, State, UploadCounters, UploadStatus
from agent.window import Window
from agent.wire import auth

IDLE_WAIT_S = 2.0  # the longest wait for work (a commit, a broker event) while connected
OFFLINE_WAIT_S = 5.0  # offline, only a broker event brings work (the heartbeat allows that much then)
UNACKED_AFTER_TIMEOUTS = 3  # in flight with no ack for this many ack timeouts: NOT_ACKED

__all__ = ["IDLE_WAIT_S", "State", "UploadCounters", "UploadStatus", "Uploader"]


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
        # The batches: what goes next, what is in flight, what an ack settles (this thread's alone).
        self.window = Window(
            vin, config, self.client, self.telemetry_topic, self._sign, self._counters, self.log, wake
        )

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
            self.window.expire(time.monotonic())
            self._check_unacked(time.monotonic(), self._buffer)
            while not self.window.full and self._send_one(self._buffer):
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
        waited = self.window.unacked_for(now)
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
                self._failures.connected()
                self.window.connected(int(detail[1] or 0), buffer)
                self._transition(State.ONLINE, f"connected ({detail[0]})", buffer)
            elif kind in ("disconnected", "refused", "unreachable"):
                self.window.disconnected()
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
            self.window.resend_schema(ack.schema_needed)
            return
        settled = self.window.settle(buffer, ack)
        if settled is None:
            return
        self.drain_rate.add(settled.samples, time.monotonic())
        if self.state is State.NOT_ACKED:
            self._transition(State.ONLINE, "acked again", buffer)

    def _describe(self, kind: str, detail: Any) -> tuple[str, str]:
        """The reason class and detail of a failed connection (a refusal, or an error before any CONNACK)."""
        return describe_refusal(detail) if kind == "refused" else describe_error(detail, self.mqtt_config.tls)

    def _check_unacked(self, now: float, buffer: Buffer) -> None:
        """NOT_ACKED once batches have waited ``UNACKED_AFTER_TIMEOUTS`` ack timeouts with no ack."""
        limit = UNACKED_AFTER_TIMEOUTS * self.config.ack_timeout_s
        waited_s = self.window.unacked_for(now)
        if waited_s is None or self.state is State.NOT_ACKED or waited_s <= limit:
            return
        waited = round(waited_s)
        self._transition(State.NOT_ACKED, f"connected, but the receiver has not acked for {waited} s", buffer)

    def _send_one(self, buffer: Buffer) -> bool:
        """The window's next batch, and the state change it saw (a backlog found, or sent)."""
        sent, change = self.window.send_one(buffer, self.state)
        if change is not None:
            self._transition(*change, buffer)
        return sent

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
