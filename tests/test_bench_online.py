"""The link-bytes rows of `make bench` count what goes on the wire: MQTT framing, batches and acks."""

from __future__ import annotations

from agent import wire
from tests.harness import bench_codec as bc
from tests.harness import bench_online as bo


def test_publish_bytes_follow_mqtt_5_framing() -> None:
    # type byte, remaining length (a varint), topic length, topic, packet id, property length, payload
    assert bo.publish_bytes("t", 0) == 1 + 1 + 2 + 1 + 2 + 1
    assert bo.publish_bytes("t", 121) == 1 + 1 + 127  # remaining length 127: one byte
    assert bo.publish_bytes("t", 122) == 1 + 2 + 128  # 128: two
    assert bo.publish_bytes("fleet/V/telemetry", 20_000) == 1 + 3 + 2 + 17 + 2 + 1 + 20_000


def test_online_costs_more_per_sample_than_drained_and_by_hash_less_than_whole() -> None:
    d = bc.drive(bc.PROFILES[1])  # city
    schema = bc.schema_of(d, seeds=True)
    blobs = [wire.encode_chunk(schema, chunk) for chunk in bc.chunks(d)[:20]]
    drained, online = bo.link_bytes(schema, blobs, 20), bo.link_bytes(schema, blobs, 1)
    whole = bo.link_bytes(schema, blobs, 1, by_hash=False)
    assert drained < bo.link_bytes(schema, blobs, 10) < online < whole
    payloads = sum(
        len(wire.encode_batch(bo.VIN, schema, blobs[i : i + 1], schema_by_hash=i > 0)) for i in range(20)
    )
    assert online > payloads + 20 * (2 * bo.PUBACK + 2 * 35)  # framing both ways and the acks on top
