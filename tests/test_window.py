"""agent.window on a real buffer, its publishes captured: oldest first within the window, the state
changes it reports, an ack that settles only what was sent, and a reset that sends everything again."""

from __future__ import annotations

import threading
import types
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from structlog import get_logger

from agent import wire
from agent.acks import read_ack
from agent.buffer import Buffer
from agent.config import UploadConfig
from agent.status import State, UploadCounters
from agent.window import DRAIN_THRESHOLD_CHUNKS, Window
from agent.wire.values import ChunkId
from tests.harness.buffers import SCHEMA, sealed

VIN, BOOT = "WINDOW000000001", b"W" * 16


class Captured:
    """Stands in for paho's client: every publish is kept (paho only queues one anyway)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def publish(self, _topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> Any:
        self.sent.append(payload)
        return types.SimpleNamespace(rc=paho.MQTT_ERR_SUCCESS)


def window_over(tmp_path: Path, chunks: int, batch_bytes: int) -> tuple[Window, Buffer, Captured]:
    buffer = Buffer(tmp_path / "buffer.sqlite")
    buffer.append(buffer.schema_id(SCHEMA), sealed(BOOT, chunks))
    client = Captured()
    config = UploadConfig(max_inflight_batches=2, max_batch_bytes=batch_bytes)
    window = Window(VIN, config, client, "t", lambda p: p, UploadCounters(), get_logger(), threading.Event())  # type: ignore[arg-type]
    return window, buffer, client


def seqs(payload: bytes) -> list[int]:
    return [chunk.seq for chunk in wire.decode_batch(payload).chunks]


def test_batches_leave_oldest_first_and_a_backlog_is_said(tmp_path: Path) -> None:
    two = sum(len(c.payload) for c in sealed(BOOT, 2))
    window, buffer, client = window_over(tmp_path, DRAIN_THRESHOLD_CHUNKS + 4, batch_bytes=two)
    sent, change = window.send_one(buffer, State.ONLINE)
    assert sent and change == (State.DRAINING, "backlog found")  # seven more wait behind two
    assert window.send_one(buffer, State.DRAINING) == (True, None)
    batches = [seqs(p) for p in client.sent]
    flat = [seq for batch in batches for seq in batch]
    assert batches[0] == [0, 1] and flat == list(range(len(flat)))  # the oldest first, no gap, no repeat
    assert window.full  # max_inflight_batches: 2


def test_an_ack_settles_what_was_sent_and_a_reset_sends_the_rest_again(tmp_path: Path) -> None:
    window, buffer, client = window_over(tmp_path, 3, batch_bytes=1 << 20)
    assert window.send_one(buffer, State.ONLINE)[0]
    batch = wire.decode_batch(client.sent[0])
    stranger = read_ack(wire.encode_ack(VIN, [ChunkId(b"X" * 16, 0)]), VIN, None)
    assert window.settle(buffer, stranger) is None and window.counters.acks_unknown_boot == 1
    settled = window.settle(buffer, read_ack(wire.encode_ack(VIN, [batch.chunks[0].id]), VIN, None))
    assert settled is not None and not settled.all_done and buffer.stats().chunks == 2  # one of three
    window.reset()
    assert window.counters.resends == 1 and window.send_one(buffer, State.ONLINE)[0]
    assert seqs(client.sent[-1]) == [1, 2]  # everything unacked, again, oldest first
    rest = wire.decode_batch(client.sent[-1])
    done = window.settle(buffer, read_ack(wire.encode_ack(VIN, [c.id for c in rest.chunks]), VIN, None))
    assert done is not None and done.all_done and window.unacked_for(0.0) is None
    assert window.send_one(buffer, State.DRAINING) == (False, (State.ONLINE, "backlog sent"))
