"""The receiver's limits: a batch's declared sizes are checked against its body and the config's limits
before anything is allocated; a refused batch is logged, counted and never acked (real Mosquitto)."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest

from agent import wire
from agent.errors import ConfigError, WireError
from agent.wire import messages
from agent.wire import telemetry_pb2 as pb
from agent.wire.chunks import DEFAULT_LIMITS, Limits, schema_message
from agent.wire.values import ChunkData, Schema, SignalSpec
from receiver.config import (
    LimitsConfig,
    ReceiverConfig,
    ReceiverMqttConfig,
    StoreConfig,
    parse_receiver_config,
)
from receiver.ingest import Receiver
from tests.harness.batches import BOOT, C0, VIN, payload
from tests.harness.broker import Broker
from tests.harness.peer import TIMEOUT, Peer

WIDE = Schema(Fraction(50), tuple(SignalSpec(f"M.S{i}", scale=0.1) for i in range(39)))
BOUND_BYTES = 8 * 1024 * 1024  # what refusing any of these batches may allocate (tracemalloc peak)


def amplification(count: int = 1_000_000, chunks: int = 1) -> bytes:
    """The attack of issue 9: chunks declaring ``count`` samples x 39 signals, every residual zero."""
    batch = pb.Batch(vin=VIN, schema=schema_message(WIDE))
    for seq in range(chunks):
        batch.chunks.add(boot_id=BOOT, seq=seq, sample_count=count, residual_counts=[0] * 39)
    return messages.envelope(pb.BODY_KIND_BATCH, batch.SerializeToString(), compress=True)


def packed_amplification() -> bytes:
    """A packed batch of 16 chunks of 1 M samples: within the per-chunk cap, past the batch's."""
    batch = pb.Batch(vin=VIN, schema=schema_message(WIDE))
    count = 16
    batch.packed.boot_id.extend([BOOT] + [b""] * (count - 1))
    batch.packed.seq.extend([0] + [1] * (count - 1))
    batch.packed.first_tick.extend([0] + [1_000_000] * (count - 1))
    batch.packed.sample_count.extend([1_000_000] * count)
    batch.packed.tick_dod_count.extend([0] * count)
    for _ in WIDE.signals:
        batch.packed.columns.add()
    return messages.envelope(pb.BODY_KIND_BATCH, batch.SerializeToString(), compress=True)


def refused_within_bounds(data: bytes, limits: Limits = DEFAULT_LIMITS) -> str:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(WireError) as refused:
            wire.decode_batch(data, limits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < BOUND_BYTES
    return str(refused.value)


def test_the_675_byte_amplification_batch_is_refused_quickly_with_bounded_memory() -> None:
    data = amplification()
    assert len(data) < 1024
    assert "39 signals is more than the limit of 16000000" in refused_within_bounds(data)
    assert "samples is more than the limit" in refused_within_bounds(amplification(400_000, chunks=3))


def test_a_packed_batch_is_held_to_the_same_limits() -> None:
    assert "samples is more than the limit of 1000000" in refused_within_bounds(packed_amplification())


def test_a_chunk_carrying_more_residuals_than_samples_is_refused() -> None:
    batch = pb.Batch(vin=VIN, schema=schema_message(WIDE))
    batch.chunks.add(boot_id=BOOT, seq=0, sample_count=2, residual_counts=[3] + [0] * 38, residuals=[1, 2, 3])
    data = messages.envelope(pb.BODY_KIND_BATCH, batch.SerializeToString(), compress=False)
    assert "more residuals in a column" in refused_within_bounds(data)


def test_the_largest_batch_a_default_agent_sends_passes_the_default_limits() -> None:
    """Constant signals: a chunk of 50 samples x 39 signals is ~105 bytes, 2,407 fit 256 KiB."""
    blobs = [
        wire.encode_chunk(WIDE, ChunkData(BOOT, seq, list(range(seq * 50, seq * 50 + 50)), [[7] * 50] * 39))
        for seq in range(2407)
    ]
    assert sum(map(len, blobs)) <= 262_144
    decoded = wire.decode_batch(wire.encode_batch(VIN, WIDE, blobs))
    assert sum(len(c.ticks) for c in decoded.chunks) * 39 == 4_693_650
    tight = Limits(max_samples=100_000, max_values=DEFAULT_LIMITS.max_values)
    assert "120350 samples" in refused_within_bounds(wire.encode_batch(VIN, WIDE, blobs), tight)


def test_limits_are_read_from_the_config(tmp_path: Path) -> None:
    text = "limits:\n  max_batch_bytes: 2048\n  max_values_per_batch: 10\n"
    config = parse_receiver_config(text, "r.yaml", tmp_path)
    assert config.limits == LimitsConfig(max_batch_bytes=2048, max_values_per_batch=10)
    assert config.limits.wire() == Limits(1_000_000, 10)
    with pytest.raises(ConfigError, match=r"r\.yaml.*limits\.max_batch_bytes"):
        parse_receiver_config("limits:\n  max_batch_bytes: 10\n", "r.yaml", tmp_path)


@pytest.fixture
def receiver(broker: Broker, tmp_path: Path) -> Iterator[Receiver]:
    mqtt = ReceiverMqttConfig(host="127.0.0.1", port=broker.port, client_id="limits", keepalive_s=5)
    limits = LimitsConfig(max_batch_bytes=4096)
    instance = Receiver(ReceiverConfig(mqtt=mqtt, store=StoreConfig(tmp_path / "s.sqlite"), limits=limits))
    instance.start()
    assert instance.wait_subscribed(TIMEOUT)
    yield instance
    instance.stop()


def test_refused_batches_are_counted_and_never_acked(receiver: Receiver, broker: Broker) -> None:
    peer = Peer(broker)
    try:
        oversized = messages.envelope(pb.BODY_KIND_BATCH, b"\x0a\x03VIN" + b"\x00" * 5000, compress=False)
        for data in (amplification(), packed_amplification(), oversized, payload([C0])):
            peer.publish(data)
        assert peer.ack()[2] == [(BOOT, 0, 0)]  # the first ack is the valid batch's: nothing else acked
        assert receiver.counters.rejected == 3 and receiver.counters.acks_sent == 1
    finally:
        peer.close()
