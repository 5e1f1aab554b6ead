"""Fuzzing the receiver's decoder past the envelope: valid batches (packed and unpacked) mutated inside
their body (bytes flipped, varints rewritten, counts changed, truncated, fields duplicated), then wrapped
again so that they pass the envelope. Each one decodes and stores, or is refused with ``WireError``: no
other exception, no allocation past a bound, and (through a Receiver on a real Mosquitto) never acked."""

from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import wire
from agent.errors import WireError
from agent.wire import messages
from agent.wire import telemetry_pb2 as pb
from agent.wire.chunks import Limits
from tests.harness.batches import BOOT, C0, C1, C2, SCHEMA, payload
from tests.harness.broker import Broker
from tests.harness.peer import TIMEOUT, Peer

LIMITS = Limits(max_samples=20_000, max_values=200_000)
PEAK_BYTES = 32 * 1024 * 1024  # what decoding any mutation may allocate at these limits


def body(packed: bool) -> bytes:
    """A valid batch's body, uncompressed (packed, or its chunks as they are when ``packed`` is false)."""
    data = payload([C0, C1, C2], compress=False)
    message = pb.Batch.FromString(pb.Envelope.FromString(data).body)
    if not packed:
        assert message.HasField("packed")
        message.ClearField("packed")
        message.chunks.extend(pb.Chunk.FromString(wire.encode_chunk(SCHEMA, c)) for c in (C0, C1, C2))
    return message.SerializeToString()


BODIES = (body(True), body(False))


def _flip(data: bytes, at: int, value: int) -> bytes:
    at %= len(data)
    return data[:at] + bytes([value]) + data[at + 1 :]


def _varint(data: bytes, at: int, value: int) -> bytes:
    at %= len(data)
    return data[:at] + messages._varint(value) + data[at + 1 :]


def _truncate(data: bytes, at: int, _value: int) -> bytes:
    return data[: at % len(data)]


def _duplicate(data: bytes, at: int, value: int) -> bytes:
    at %= len(data)
    return data[:at] + data[at : at + 1 + value % 64] + data[at:]


def _count(data: bytes, at: int, value: int) -> bytes:
    """A count field set to ``value``: a chunk's or a packed chunk's sample count, or a residual count."""
    message = pb.Batch.FromString(data)
    if message.HasField("packed"):
        counts = message.packed.sample_count
        counts[at % len(counts)] = value % 2**32
    else:
        target = message.chunks[at % len(message.chunks)]
        if at % 2:
            target.sample_count = value % 2**32
        else:
            target.residual_counts[at % len(target.residual_counts)] = value % 2**32
    return message.SerializeToString()


MUTATIONS: list[Callable[[bytes, int, int], bytes]] = [_flip, _varint, _truncate, _duplicate, _count]
mutated = st.builds(
    lambda which, packed, at, values: _apply(BODIES[packed], which, at, values),
    st.lists(st.integers(0, len(MUTATIONS) - 1), min_size=1, max_size=3),
    st.integers(0, 1),
    st.integers(0, 10_000),
    st.lists(st.one_of(st.integers(0, 255), st.integers(0, 2**40)), min_size=3, max_size=3),
)


def _apply(data: bytes, which: list[int], at: int, values: list[int]) -> bytes:
    for index, value in zip(which, values, strict=False):
        # a count mutation of a body that no longer parses: keep the byte mutations
        with contextlib.suppress(DecodeError, ValueError, IndexError, ZeroDivisionError):
            data = MUTATIONS[index](data, at, value) or data
    return messages.envelope(pb.BODY_KIND_BATCH, data, compress="zstd")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated)
def test_a_mutated_batch_decodes_or_is_refused_within_bounds(data: bytes) -> None:
    tracemalloc.start()
    try:
        try:
            decoded = wire.decode_batch(data, LIMITS)
        except WireError:
            decoded = None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK_BYTES
    if decoded is not None:
        assert sum(len(c.ticks) for c in decoded.chunks) <= LIMITS.max_samples


def refused_mutations(count: int) -> list[bytes]:
    """``count`` mutations that the decoder refuses, found deterministically."""
    found: list[bytes] = []
    for at in range(0, 10_000, 7):
        data = _apply(BODIES[at % 2], [at % len(MUTATIONS)], at, [at * 131 % 256] * 3)
        try:
            wire.decode_batch(data)
        except WireError:
            found.append(data)
        if len(found) == count:
            return found
    raise AssertionError("too few refused mutations")


def test_refused_mutations_are_never_acked(broker: Broker, tmp_path: Path) -> None:
    from receiver.config import ReceiverConfig, ReceiverMqttConfig, StoreConfig  # the receiver's side
    from receiver.ingest import Receiver

    mqtt = ReceiverMqttConfig(host="127.0.0.1", port=broker.port, client_id="fuzz", keepalive_s=5)
    receiver = Receiver(ReceiverConfig(mqtt=mqtt, store=StoreConfig(tmp_path / "s.sqlite")))
    receiver.start()
    peer = Peer(broker)
    try:
        assert receiver.wait_subscribed(TIMEOUT)
        garbage = refused_mutations(5)
        for data in garbage:
            peer.publish(data)
        peer.publish(payload([C0]))
        assert peer.ack()[2] == [(BOOT, 0, 0)]  # the first ack is the valid batch's
        assert receiver.counters.rejected == len(garbage) and receiver.counters.acks_sent == 1
    finally:
        peer.close()
        receiver.stop()
