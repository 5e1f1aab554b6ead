"""Bytes on the link per sample: a vehicle online (a batch a second) against the same drive drained.

For each committed drive at the seeds' bounds (:func:`tests.harness.bench_codec.drive`, 1-s chunks as the
agent seals them), every byte that crosses a metered link is counted, both ways:

- up: each batch's MQTT PUBLISH (QoS 1, MQTT 5: fixed header, topic ``fleet/{vin}/telemetry``, packet
  id, property length; no topic alias: see the README's performance section) and the PUBACK for the
  receiver's ack;
- down: the receiver's ack (its PUBLISH on ``fleet/{vin}/ack``, the ack itself as
  :func:`agent.wire.encode_ack` makes it) and the broker's PUBACK for the batch.

Online, the uploader keeps up: with ``upload.batch_interval_s: 10`` (the setting for a metered link)
ten 1-s chunks leave together; at the default (0) every 1-s chunk is a batch of its own (given in the
note). Drained, the same chunks go 60 to a batch (a backlog). In both, the first batch carries the schema whole and every
later one names it by hash (wire version 3: after the first ack says the receiver stored it). The
reference is the drained figure; the goal, online at most 1.5 times it. Also given: what online cost
before version 3 (the schema in every batch), for the record.

``python -m tests.harness.bench_online`` prints the rows; :func:`online_rows` gives them to ``make
bench``. Pure computation on the committed drives: no broker (the MQTT framing is the protocol's own,
computed), no files written.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from agent import wire
from agent.service import mqtt
from agent.wire.values import ChunkId, Schema
from tests.harness import bench_codec as bc

VIN = "BENCHONLINE000001"  # 17 characters, as a real VIN
GOAL = 1.5
METERED_INTERVAL = 10  # seconds: upload.batch_interval_s for a metered link (config/edge-agent.example.yaml)
PUBACK = mqtt.PUBACK_BYTES
publish_bytes = mqtt.publish_bytes


def link_bytes(schema: Schema, blobs: Sequence[bytes], per_batch: int, by_hash: bool = True) -> int:
    """Every byte both ways for ``blobs`` sent ``per_batch`` to a batch (see the module docstring)."""
    total = 0
    for number, at in enumerate(range(0, len(blobs), per_batch)):
        batch = blobs[at : at + per_batch]
        payload = wire.encode_batch(VIN, schema, batch, schema_by_hash=by_hash and number > 0)
        ids = [ChunkId(b"\x01" * 16, seq) for seq in range(at, at + len(batch))]
        ack = wire.encode_ack(VIN, ids, schema_stored=b"" if number else wire.schema_hash(schema))
        total += publish_bytes(f"fleet/{VIN}/telemetry", len(payload)) + PUBACK
        total += publish_bytes(f"fleet/{VIN}/ack", len(ack)) + PUBACK
    return total


def online_rows(names: Sequence[str] | None = None) -> list[bc.Row]:
    """(measure, online, drained, unit, note) per committed drive."""
    rows: list[bc.Row] = []
    for profile in bc.profiles(names or [p.name for p in bc.PROFILES if "(real)" not in p.name]):
        d = bc.drive(profile)
        schema = bc.schema_of(d, seeds=True)
        blobs = [wire.encode_chunk(schema, chunk) for chunk in bc.chunks(d)]
        samples = len(d.ticks)
        online = link_bytes(schema, blobs, METERED_INTERVAL) / samples
        drained = link_bytes(schema, blobs, bc.BATCH) / samples
        each_second = link_bytes(schema, blobs, 1) / samples
        whole = link_bytes(schema, blobs, 1, by_hash=False) / samples
        rows.append(
            (
                f"{profile.name}: link bytes/sample online vs drained",
                online,
                drained,
                "B",
                f"ratio {online / drained:.2f} (goal <= {GOAL}); online: batch_interval_s "
                f"{METERED_INTERVAL}; drained: 60-s batches; MQTT framing and acks both ways counted; "
                f"{len(schema.signals)} signals at the seeds' bounds; a batch a second (the default): "
                f"{each_second:.2f} B, with the schema in each (wire version 2): {whole:.2f} B",
            )
        )
    return rows


if __name__ == "__main__":
    for measure, ours, reference, unit, note in online_rows(sys.argv[1:] or None):
        print(f"{measure}: {ours:.2f} {unit} vs {reference:.2f} {unit}; {note}")
