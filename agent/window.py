"""The uploader's window: which chunks the next batch carries, what is in flight, what an ack settles.

Contract
- A :class:`Window` belongs to the uploader's thread (:class:`agent.upload.Uploader`), which alone calls
  it. It never blocks but on the buffer's reads and paho's ``publish`` (which only queues); it counts
  into the uploader's :class:`~agent.status.UploadCounters` (the same object) and returns the state
  changes it sees (a backlog found, a backlog sent) for the uploader to make.
- :meth:`Window.send_one` publishes whole chunks, oldest first after ``cursor``, at most
  ``max_batch_bytes`` (fewer when the broker announced a smaller Maximum Packet Size), when the pacer
  lets them go (:mod:`agent.pacing`), with the eviction notices riding along, the schema whole until a
  receiver said it stored it, then by hash. Each batch stays in flight until an ack settles all of it,
  or an ack timeout or a reconnect resets the window: everything unacked goes again from the oldest.
- :meth:`Window.settle` applies a checked ack (:func:`agent.acks.read_ack`) to what this process sent and
  the buffer still holds (:class:`agent.acks.SentLedger`): it deletes by range, clears only the notices
  sent, and says what it settled; an ack naming nothing of ours settles nothing.
- Backlog: each batch says how many of its first chunks were already in the buffer when a batch last
  left or the connection came up (``fresh_after``); the others are live (the receiver's latency).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import paho.mqtt.client as paho

from agent import wire
from agent.acks import Ack, SentLedger
from agent.buffer import Buffer, StoredChunk
from agent.config import UploadConfig
from agent.errors import StorageError
from agent.pacing import Pacer
from agent.service import mqtt
from agent.status import State, UploadCounters
from agent.wire.values import ChunkId

DRAIN_THRESHOLD_CHUNKS = 5  # more unsent chunks than this after a batch means we are draining
Notice = tuple[int, bytes, int, int]  # a buffer's eviction notice: row, boot id, first seq, last seq
Change = tuple[State, str] | None  # a state change the window saw, and why


@dataclass
class _InFlight:
    ids: set[ChunkId]  # chunk ids of the batch still awaiting an ack
    samples: int
    sent_at: float


class Settled(NamedTuple):
    samples: int  # of the batches the ack completed (the drain rate)
    all_done: bool  # nothing is in flight any more


class Window:
    def __init__(
        self,
        vin: str,
        config: UploadConfig,
        client: paho.Client,
        topic: str,
        sign: Callable[[bytes], bytes],
        counters: UploadCounters,
        log: Any,
        wake: threading.Event,
    ) -> None:
        self.vin, self.config, self.client, self.topic = vin, config, client, topic
        self.sign, self.counters, self.log, self.wake = sign, counters, log, wake
        self.inflight: dict[int, _InFlight] = {}  # keyed by the batch's last buffer row
        self.cursor = 0  # last buffer row handed to the broker since the last reset
        self.fresh_after = 0  # buffer row: chunks after it were committed after the last publish/connect
        self.packet_limit = 0  # the broker's Maximum Packet Size, 0 = none announced
        self.pacer = Pacer(config.max_bytes_per_s, config.batch_interval_s, config.max_batch_bytes)
        self.sent = SentLedger()  # what this process handed to the broker and has not seen acked
        self.waiting_since: float | None = None  # monotonic: first send with no ack since
        self.schemas_stored: set[bytes] = set()  # schema hashes an ack said a receiver stored
        self._unknown_boot_logged = False

    @property
    def full(self) -> bool:
        return len(self.inflight) >= self.config.max_inflight_batches

    def unacked_for(self, now: float) -> float | None:
        """How long batches have been in flight without any ack; ``None`` when none is."""
        return None if self.waiting_since is None else now - self.waiting_since

    def connected(self, packet_limit: int, buffer: Buffer) -> None:
        """The connection is up: start afresh, and every chunk held now waited for it (backlog)."""
        self.disconnected()
        self.packet_limit = packet_limit
        try:
            self.fresh_after = max(self.fresh_after, buffer.newest_row())
        except StorageError as error:  # the next send's read says it too; the split is only for latency
            self.log.error("buffer_read_failed", reason=str(error))

    def disconnected(self) -> None:
        self.reset()
        self.waiting_since = None

    def reset(self) -> None:
        """Forget what is in flight: it will be sent again, oldest first."""
        if self.inflight:
            self.counters.resends += 1
        self.inflight.clear()
        self.cursor = 0

    def expire(self, now: float) -> None:
        late = [b for b in self.inflight.values() if now - b.sent_at > self.config.ack_timeout_s]
        if late:
            self.log.warning("ack_timeout", batches=len(late), timeout_s=self.config.ack_timeout_s)
            self.reset()

    # --- sending ----------------------------------------------------------------------------------------
    def send_one(self, buffer: Buffer, state: State) -> tuple[bool, Change]:
        """Publish the next batch, if one may go; (whether one went, a state change seen)."""
        try:
            newest = buffer.newest_row()  # what this send could take: later ones are live at the next
            chunks = buffer.oldest(self.cursor, self.config.max_batch_bytes)
            notices = buffer.notices() if chunks else []
        except StorageError as error:
            self.log.error("buffer_read_failed", reason=str(error))
            return False, None
        if not chunks:
            caught_up = (
                (State.ONLINE, "backlog sent") if state is State.DRAINING and not self.inflight else None
            )
            self._send_notices_alone(buffer)
            return False, caught_up
        if self.pacer.holds(state is State.ONLINE, sum(len(c.payload) for c in chunks)):
            return False, None
        payload = self._encode(buffer, chunks, notices)
        while self.packet_limit and len(payload) > self.packet_limit * 0.9 and len(chunks) > 1:
            chunks = chunks[: len(chunks) // 2]  # the broker would refuse it: send fewer chunks
            payload = self._encode(buffer, chunks, notices)
        if not self.pacer.allows(len(payload)):
            threading.Timer(0.1, self.wake.set).start()
            return False, None
        info = self.client.publish(self.topic, payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            self.log.warning("publish_failed", rc=paho.error_string(info.rc))
            return False, None
        self.cursor = chunks[-1].row_id
        self.fresh_after = max(self.fresh_after, newest, self.cursor)  # sent once: a resend is backlog
        ids = {ChunkId(c.boot_id, c.seq) for c in chunks}
        self._note_sent(self.cursor, ids, sum(c.sample_count for c in chunks), notices, len(payload))
        if state is State.ONLINE and self._behind(buffer):
            return True, (State.DRAINING, "backlog found")
        return True, None

    def _behind(self, buffer: Buffer) -> bool:
        """More than ``DRAIN_THRESHOLD_CHUNKS`` chunks wait after the cursor: a backlog."""
        return len(buffer.oldest(self.cursor, 1 << 30, DRAIN_THRESHOLD_CHUNKS + 1)) > DRAIN_THRESHOLD_CHUNKS

    def _encode(self, buffer: Buffer, chunks: list[StoredChunk], notices: list[Notice]) -> bytes:
        schema = buffer.schema(chunks[0].schema_id)
        evicted = [(boot, first, last) for _, boot, first, last in notices]
        backlog = sum(1 for c in chunks if c.row_id <= self.fresh_after)  # a prefix: oldest first
        payloads = [c.payload for c in chunks]
        by_hash = wire.schema_hash(schema) in self.schemas_stored
        return self.sign(
            wire.encode_batch(
                self.vin, schema, payloads, evicted, time.time(), self.config.compression, backlog, by_hash
            )
        )

    def _send_notices_alone(self, buffer: Buffer) -> None:
        """Eviction notices left over with no chunk to ride along (say, the last commit was refused)."""
        if self.inflight:
            return
        try:
            notices, schema_id = buffer.notices(), buffer.latest_schema_id()
        except StorageError as error:
            self.log.error("buffer_read_failed", reason=str(error))
            return
        if not notices or schema_id is None:
            return
        evicted = [(boot, first, last) for _, boot, first, last in notices]
        schema = buffer.schema(schema_id)
        payload = self.sign(
            wire.encode_batch(self.vin, schema, [], evicted, time.time(), self.config.compression)
        )
        if self.client.publish(self.topic, payload, qos=1).rc == paho.MQTT_ERR_SUCCESS:
            self._note_sent(-1, set(), 0, notices, len(payload))

    def _note_sent(self, key: int, ids: set[ChunkId], samples: int, notices: list[Notice], size: int) -> None:
        """A batch of ``size`` bytes went to the broker: in flight under ``key``, and counted."""
        self.sent.sent(ids, ((boot, first, last) for _, boot, first, last in notices))
        self.inflight[key] = _InFlight(ids, samples, time.monotonic())
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()
        self.counters.batches_sent += 1
        self.counters.chunks_sent += len(ids)
        self.counters.bytes_sent += size
        self.counters.link_bytes += mqtt.publish_bytes(self.topic, size) + mqtt.PUBACK_BYTES

    # --- acks -------------------------------------------------------------------------------------------
    def settle(self, buffer: Buffer, ack: Ack) -> Settled | None:
        """Apply ``ack`` to what this process sent (see the module's contract); ``None``: nothing settled."""
        # Only what this process sent: the cost follows the chunks sent, never the width of a claimed range.
        match = self.sent.match(ack.ranges)
        noted = self.sent.noted(ack.noted)
        self._count_strays(match.unknown_boots, match.unmatched)
        if not match.ids and not noted:
            return None  # names nothing this agent sent: not a receiver's ack of ours (stale, or forged)
        if ack.schema_stored and len(self.schemas_stored) < 64:
            self.schemas_stored.add(ack.schema_stored)
        acked = set(match.ids)
        done = [key for key, batch in self.inflight.items() if batch.ids <= acked]
        try:
            deleted = buffer.delete(match.ranges) if match.ranges else 0
            buffer.clear_noted(noted)
        except StorageError as error:
            self.log.error("ack_not_applied", reason=str(error))
            return None
        all_done = len(done) == len(self.inflight)
        self.waiting_since = None if all_done else time.monotonic()
        self.counters.chunks_acked += deleted
        self.counters.last_ack_at = time.time()
        samples = sum(self.inflight[key].samples for key in done)
        for key in done:
            del self.inflight[key]
        for batch in self.inflight.values():
            batch.ids -= acked
        return Settled(samples, all_done)

    def resend_schema(self, digest: bytes) -> None:
        """A receiver lacks the schema named ``digest``: send it whole again, from the oldest unacked."""
        if digest not in self.schemas_stored:
            return  # already sent whole (an answer to a batch that left before the last request)
        self.schemas_stored.discard(digest)
        self.counters.schemas_resent += 1
        self.log.warning(
            "schema_resent",
            schema_hash=digest.hex(),
            reason="a receiver does not hold the schema that batches named by hash",
            action="sending the schema whole again, from the oldest unacked chunk",
        )
        self.reset()

    def _count_strays(self, unknown_boots: frozenset[bytes], unmatched: int) -> None:
        """Count ack ranges that name nothing this process sent; the first unknown boot is logged."""
        self.counters.acks_unknown_boot += len(unknown_boots)
        self.counters.acks_unmatched += unmatched
        if unknown_boots and not self._unknown_boot_logged:
            self._unknown_boot_logged = True  # once: a stranger's acks must not flood the journal
            self.log.warning(
                "ack_ignored",
                reason="names a boot this agent never sent (a stale or forged ack; counted from now on)",
                boot_id=min(unknown_boots).hex(),
            )
