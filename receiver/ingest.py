"""The receiver service: batches from MQTT into the store, then an ack back to the agent.

Contract
- Threads: paho's network thread (``loop_start``) runs every callback, so it decodes, stores and acks one
  message at a time; :meth:`Receiver.start` and :meth:`Receiver.stop` are called from the owner's thread
  (tests, the demo, :meth:`Receiver.run_forever` on the main thread). ``start`` does not block: paho
  connects in the background and keeps reconnecting with its own backoff; ``on_connect`` (re)subscribes.
- Subscription: ``$share/{share_group}/{prefix}/+/telemetry`` at QoS 1, so several receivers split the
  load. Clean start, no session kept: anything lost with a session is resent by the agent, which deletes
  nothing until an ack arrives.
- What an ack means: ``{prefix}/{vin}/ack`` (QoS 1) names chunks that are committed durably in the store,
  and it is published only after that commit. A duplicate batch is acked again (its chunks are stored).
- Alerts: after the commit, the episodes it stored or ended go out on ``{prefix}/{vin}/alerts`` (QoS 1),
  each marked published when the broker confirms it (:mod:`receiver.alert_publish`: at least once).
- Garbage (not an envelope, wrong version, bad zlib or protobuf, inconsistent columns, a topic vin that
  is not the batch's, a rate that conflicts with the store, a batch past ``limits``: its bytes checked
  before it is decoded, its declared samples and samples x signals before any value is allocated) is
  logged once as ``batch_rejected`` with the topic, size and reason, counted, and never acked. Memory
  per message is bounded by the limits (measured in tests/test_receiver_limits.py). A storage error is logged and not acked (the
  agent resends); the service keeps running either way.
- The receiver owns its :class:`~receiver.store.Store` (``store.path`` or ``store.dsn``; opened by ``start``,
  closed by ``stop``) and the counters; a message's payload is not kept after its callback returns.
  :meth:`Receiver.run_forever` also runs the store's retention (:mod:`receiver.retention`: at start, then
  hourly, in a thread of its own with its own connection).
- Supervision (:meth:`Receiver.run_forever`): the main thread beats the ``ingest`` heartbeat each time it
  can take the message lock, i.e. when no handler is stuck in the store; its declared period is one
  turn of that loop (``SUPERVISE_EVERY_S`` + ``LOCK_WAIT_S``), so the watchdog's threshold follows it.
  This is not an :class:`agent.stage.Stage`: paho's thread does the work and a message that fails is
  logged, counted and not acked (``message_failed``), while the service goes on with the next one.
"""

from __future__ import annotations

import gc
import itertools
import os
import signal
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import paho.mqtt.client as paho

from agent import wire
from agent.errors import SchemaUnknownError, StorageError, WireError
from agent.service import mqtt
from agent.service.logs import get_logger
from agent.service.supervise import Heartbeat, Supervisor
from agent.wire import auth
from receiver import metrics
from receiver.alert_publish import AlertPublisher
from receiver.config import ReceiverConfig
from receiver.retention import Retention
from receiver.schemas import SchemaCache
from receiver.store import RateConflictError, Store

_instances = itertools.count(1)
SUPERVISE_EVERY_S = 1.0  # one turn of the supervisor's loop: watchdog, STATUS=
LOCK_WAIT_S = 0.5  # how long the supervisor waits for the message lock before it skips a beat


GC_GEN0_THRESHOLD = 50_000  # allocations between collections of generation 0 (CPython's default: 700)


def tune_gc() -> None:
    """Collect generation 0 every :data:`GC_GEN0_THRESHOLD` allocations: one batch makes some 10^5
    short-lived lists (values, columns), which reference counting frees; the cyclic collector walking them
    at the default threshold took a fifth of ingest CPU (1.2x more samples per CPU second without it, in
    ``make bench``'s hour). Process-wide, so ``edge-receiver run`` calls it, not the store."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


@dataclass
class Counters:
    """Written by paho's thread only; plain ints, safe to read from any thread."""

    batches: int = 0  # batches stored and acked (duplicates included)
    chunks_new: int = 0
    chunks_duplicate: int = 0
    samples: int = 0  # values inserted
    rejected: int = 0  # payloads refused: never acked
    bad_mac: int = 0  # of those, refused for a missing or wrong MAC (security.fleet_key_file)
    store_errors: int = 0  # storage failures: not acked, the agent resends
    failed: int = 0  # unexpected exceptions while handling a message: not acked
    acks_sent: int = 0
    schemas_requested: int = 0  # batches named a schema by a hash the store lacks: not stored, asked for
    connects: int = 0  # accepted CONNACKs: 1 after start, +1 per reconnect


class Receiver:
    """One receiver process's MQTT client and store; see the module docstring."""

    def __init__(
        self, config: ReceiverConfig, *, reconnect_min_s: int = 1, reconnect_max_s: int = 30
    ) -> None:
        self.config = config
        self.prefix = config.mqtt.prefix
        self.subscription = f"$share/{config.mqtt.share_group}/{self.prefix}/+/telemetry"
        self.client_id = config.mqtt.client_id or (
            f"edge-receiver-{socket.gethostname()}-{os.getpid()}-{next(_instances)}"
        )
        self.counters = Counters()
        self.tally = metrics.Tally()  # the same counts per vin, kept in the store for `serve` (metrics.py)
        # One logger per receiver, so that every event names its client id.
        self.log = get_logger("receiver.ingest", client_id=self.client_id)
        self._reconnect = (reconnect_min_s, reconnect_max_s)
        self._lock = threading.Lock()  # held while a message is handled; stop() waits for it
        self._stopping = False
        self._subscribed = threading.Event()
        self._stop_requested = threading.Event()
        self._client: paho.Client | None = None
        self._store: Store | None = None
        self._alerts: AlertPublisher | None = None  # episodes to {prefix}/{vin}/alerts (alert_publish.py)
        self._fleet_key = config.security.fleet_key()  # None: batches are not authenticated
        self._schemas: SchemaCache | None = None  # schemas named by hash, through the store (start to stop)
        self._schemas_asked: set[bytes] = set()  # hashes whose request was logged (once each)

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the store and start connecting in the background; returns at once."""
        self._stopping = False
        if self._fleet_key is None:
            self.log.warning(
                "batches_not_authenticated",
                reason="no security.fleet_key_file: anyone on the broker can forge",
            )
        self._store = Store(self.config.store.target)
        self._store.alert_rules = self.config.alerts.rules
        self._schemas = SchemaCache(self._store.db)
        self._alerts = AlertPublisher(self._store, self.prefix, self.log)
        try:
            self._client = self._make_client()
        except BaseException:
            self._store.close()
            raise
        mqtt.connect(self._client, self.config.mqtt, persistent=False)
        store = self.config.store.shown
        self.log.info("receiver_started", subscription=self.subscription, store=store)

    def _make_client(self) -> paho.Client:
        client = mqtt.make_client(
            self.config.mqtt, self.client_id, persistent=False, reconnect=self._reconnect
        )
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def wait_subscribed(self, timeout: float | None = None) -> bool:
        """Block until the broker has granted the subscription (again, after a reconnect)."""
        return self._subscribed.wait(timeout)

    def stop(self) -> None:
        """Finish the message in progress, disconnect (its ack goes out first), close the store."""
        with self._lock:
            self._stopping = True
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        if self._store is not None:
            self._store.close()
            self._store = None
            self._alerts = None
            self._schemas = None
        self._subscribed.clear()
        self.log.info("receiver_stopped", **asdict(self.counters))

    def request_stop(self) -> None:
        """Make :meth:`run_forever` return (from any thread; signal handlers call it)."""
        self._stop_requested.set()

    def run_forever(self) -> None:
        """Run until SIGTERM or SIGINT (or :meth:`request_stop`), then stop gracefully. Main thread only."""
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        for sig in handlers:
            signal.signal(sig, lambda _sig, _frame: self.request_stop())
        supervisor = Supervisor()  # sd_notify; no-ops outside systemd
        retention = Retention(self.config.store, self.log)  # its own thread and store connection
        try:
            self.start()
            retention.start()
            supervisor.ready(self.status_line())
            ingest = Heartbeat(SUPERVISE_EVERY_S + LOCK_WAIT_S)
            totals = TotalsWriter(self)
            while not self._stop_requested.wait(SUPERVISE_EVERY_S):
                totals.maybe_flush()
                if self._lock.acquire(timeout=LOCK_WAIT_S):  # held for long: a handler is stuck
                    self._lock.release()
                    ingest.beat()
                supervisor.tick({"ingest": ingest})
                supervisor.status(self.status_line())
            totals.close()
        finally:
            supervisor.stopping()
            retention.stop()
            try:
                self.stop()
            finally:
                for sig, handler in handlers.items():
                    signal.signal(sig, handler)

    def status_line(self) -> str:
        """One line for systemd's STATUS= (``systemctl status edge-receiver``)."""
        c = self.counters
        state = "subscribed" if self._subscribed.is_set() else "connecting"
        return (
            f"{state}: {c.batches} batches stored, {c.chunks_new} new chunks, {c.acks_sent} acks sent, "
            f"{c.rejected} rejected, {c.store_errors} store errors"
        )

    # --- paho callbacks (network thread) -----------------------------------------------------------------

    def _on_connect(self, client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            self.log.warning("connect_refused", reason=str(reason))
            return
        self.counters.connects += 1
        self.log.info("connected", host=self.config.mqtt.host, port=self.config.mqtt.port)
        client.subscribe(self.subscription, qos=1)
        if self._alerts is not None:  # what a previous run stored and did not see confirmed
            self._alerts.forget()
            self._alerts.publish(client)

    def _on_subscribe(self, _client: paho.Client, _userdata: Any, _mid: int, codes: Any, _props: Any) -> None:
        if any(code.is_failure for code in codes):
            reasons = [str(code) for code in codes]
            self.log.error("subscribe_refused", subscription=self.subscription, reasons=reasons)
            return
        self._subscribed.set()
        self.log.info("subscribed", subscription=self.subscription)

    def _on_disconnect(self, _client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _p: Any) -> None:
        self._subscribed.clear()
        if not self._stopping:
            self.log.warning("disconnected", reason=str(reason))

    def _on_message(self, client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            if self._stopping:
                return  # not stored, not acked: the agent resends
            try:
                ack = self.handle(message.topic, bytes(message.payload))
            except Exception:
                self.counters.failed += 1
                self.log.exception("message_failed", topic=message.topic, size=len(message.payload))
                return
            if ack is None:
                return
            vin, payload = ack
            info = client.publish(f"{self.prefix}/{vin}/ack", payload, qos=1)
            if info.rc == paho.MQTT_ERR_SUCCESS:
                self.counters.acks_sent += 1
                self.tally.count(vin, acks=1)
            else:  # the chunks are stored: the agent's resend will be acked as a duplicate
                self.log.warning("ack_not_sent", vin=vin, reason=paho.error_string(info.rc))
            if self._alerts is not None:
                self._alerts.publish(client)

    def _on_publish(self, _client: paho.Client, _userdata: Any, mid: int, _reason: Any, _props: Any) -> None:
        if self._alerts is not None and not self._stopping:
            self._alerts.confirmed(mid)

    # --- one message -------------------------------------------------------------------------------------

    def topic_vin(self, topic: str) -> str | None:
        """The vin of ``{prefix}/{vin}/telemetry``, or ``None`` for any other topic."""
        head, tail = f"{self.prefix}/", "/telemetry"
        if not (topic.startswith(head) and topic.endswith(tail)):
            return None
        vin = topic[len(head) : -len(tail)]
        return vin if vin and "/" not in vin else None

    def handle(self, topic: str, payload: bytes) -> tuple[str, bytes] | None:
        """Decode, check and store one payload; return (vin, ack payload) once committed, else ``None``."""
        if self._store is None:
            raise StorageError("the receiver is not started (no store is open)")
        try:
            vin = self.topic_vin(topic)
            if vin is None:
                raise WireError(f"topic is not {self.prefix}/<vin>/telemetry")
            limits = self.config.limits
            if len(payload) > limits.max_batch_bytes:
                raise WireError(f"{len(payload)} bytes is more than limits.max_batch_bytes")
            key = None if self._fleet_key is None else auth.derive_key(self._fleet_key, vin)
            if key is not None:
                try:
                    auth.verify(payload, key, vin)  # before anything is decompressed or parsed
                except WireError:
                    self.counters.bad_mac += 1
                    raise
            try:
                batch = wire.decode_batch(payload, limits.wire(), self._schemas)
            except SchemaUnknownError as missing:
                if missing.vin != vin:
                    raise WireError(
                        f"batch is for vin {missing.vin!r} but was published under vin {vin!r}"
                    ) from None
                return vin, self._ask_schema(vin, missing.schema_hash, key)
            if batch.vin != vin:
                raise WireError(f"batch is for vin {batch.vin!r} but was published under vin {vin!r}")
            result = self._store.store_batch(batch)
        except (WireError, RateConflictError) as error:
            self.counters.rejected += 1
            self.tally.count(None, rejected=1)
            self.log.error("batch_rejected", topic=topic, size=len(payload), reason=str(error))
            return None
        except StorageError as error:
            self.counters.store_errors += 1
            self.log.error("store_failed", topic=topic, size=len(payload), reason=str(error))
            return None
        counters = self.counters
        counters.batches += 1
        counters.chunks_new += result.new
        counters.chunks_duplicate += result.duplicates
        counters.samples += result.samples
        self.tally.count(vin, batches=1, samples=result.samples, wire_bytes=len(payload))
        self.log.debug(
            "batch_stored", vin=vin, new=result.new, duplicates=result.duplicates, samples=result.samples
        )
        ack = wire.encode_ack(vin, result.stored, batch.evicted, schema_stored=batch.schema_hash)
        return vin, (ack if key is None else auth.sign(ack, key, vin))

    def _ask_schema(self, vin: str, digest: bytes, key: bytes | None) -> bytes:
        """An ack that stores nothing and asks the agent for the schema named ``digest``."""
        self.counters.schemas_requested += 1
        if digest not in self._schemas_asked and len(self._schemas_asked) < 1024:
            self._schemas_asked.add(digest)
            self.log.warning(
                "schema_requested",
                vin=vin,
                schema_hash=digest.hex(),
                reason="the batch names its schema by a hash this store does not hold; nothing of it stored",
                action="asked the agent to send the schema whole (logged once per schema)",
            )
        ack = wire.encode_ack(vin, (), schema_needed=digest)
        return ack if key is None else auth.sign(ack, key, vin)


class TotalsWriter:
    """Writes a receiver's :class:`~receiver.metrics.Tally` into the store every
    :data:`~receiver.metrics.FLUSH_EVERY_S`, on the supervising thread, through a connection of its own
    (a store is one thread's). A storage error is logged and retried at the next turn: statistics never
    stop ingest."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver, self._store = receiver, Store(receiver.config.store.target)
        self._next = 0.0

    def maybe_flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + metrics.FLUSH_EVERY_S
        rows = self.receiver.tally.rows(self.receiver.client_id)
        if not rows:
            return
        try:
            self._store.write("record ingest totals in", lambda db: metrics.flush(db, rows))
        except StorageError as error:
            self.receiver.log.warning("totals_not_recorded", reason=str(error))

    def close(self) -> None:
        self.maybe_flush(force=True)
        self._store.close()
