"""The wire codec: the one module that both the agent and the receiver import, so they cannot drift.

Contract
- Pure functions, no I/O, no shared state: safe from any thread.
- ``encode_chunk`` is closed-loop: for each integer signal it runs the same predictor the decoder runs,
  on the reconstructions the decoder will compute, and quantizes the residual with step ``2*bound+1``;
  every reconstructed raw value is within ``bound_raw`` of the truth (equal when it is 0).
- A chunk decodes alone: every column starts from a fresh predictor, so batches decode in any order, on
  any receiver, with no per-vehicle state.
- ``decode_*`` raise :class:`agent.errors.WireError` (never a protobuf or zlib exception) on garbage.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from google.protobuf.message import DecodeError

from agent import predict
from agent import telemetry_pb2 as pb
from agent.errors import WireError
from agent.model import ChunkData, ChunkId, RawValue, Schema, SignalSpec

WIRE_VERSION = 1
MAX_BODY_BYTES = 64 * 1024 * 1024  # a decompressed body past this is refused, not allocated
MAX_CHUNK_SAMPLES = 1_000_000  # a chunk claiming more is refused before anything is allocated


# --- columns -------------------------------------------------------------------------------------------


def _presence_runs(column: Sequence[RawValue | None]) -> tuple[list[int], list[RawValue]]:
    runs: list[int] = []
    present: list[RawValue] = []
    absent_now, run = True, 0
    for value in column:
        if (value is None) != absent_now:
            runs.append(run)
            absent_now, run = not absent_now, 0
        run += 1
        if value is not None:
            present.append(value)
    runs.append(run)
    return ([] if len(runs) == 2 and runs[0] == 0 else runs), present


def _expand_presence(runs: Sequence[int], count: int) -> list[bool]:
    if not runs:
        return [True] * count
    mask: list[bool] = []
    absent = True
    for run in runs:
        mask.extend([not absent] * run)
        absent = not absent
    if len(mask) != count:
        raise WireError(f"presence runs cover {len(mask)} samples, chunk has {count}")
    return mask


def _encode_integers(values: Sequence[RawValue], spec: SignalSpec) -> list[int]:
    step = 2 * spec.bound_raw + 1
    predictor = predict.make(spec.predictor)
    residuals: list[int] = []
    for value in values:
        guess = predictor.predict()
        # floor((d + b) / step) leaves |d - q*step| <= b: the bound holds for every sample.
        quantum = (int(value) - guess + spec.bound_raw) // step
        residuals.append(quantum)
        predictor.update(guess + quantum * step)
    while residuals and residuals[-1] == 0:
        residuals.pop()
    return residuals


def _decode_integers(residuals: Sequence[int], count: int, spec: SignalSpec) -> list[int]:
    if len(residuals) > count:
        raise WireError(f"{spec.name}: {len(residuals)} residuals for {count} present samples")
    step = 2 * spec.bound_raw + 1
    predictor = predict.make(spec.predictor)
    out: list[int] = []
    for index in range(count):
        value = predictor.predict() + (residuals[index] if index < len(residuals) else 0) * step
        predictor.update(value)
        out.append(value)
    return out


# --- chunks --------------------------------------------------------------------------------------------


def encode_chunk(schema: Schema, chunk: ChunkData) -> bytes:
    """Serialize one chunk (a ``Chunk`` message); called once, when the chunk is sealed."""
    if len(chunk.columns) != len(schema.signals):
        raise ValueError(f"chunk has {len(chunk.columns)} columns, schema {len(schema.signals)}")
    message = pb.Chunk(boot_id=chunk.boot_id, seq=chunk.seq, sample_count=len(chunk.ticks))
    if chunk.ticks:
        message.first_tick = chunk.ticks[0]
        dods, previous_delta = [], 1
        for before, after in zip(chunk.ticks, chunk.ticks[1:], strict=False):
            delta = after - before
            if delta <= 0:
                raise ValueError(f"ticks must increase: {before} then {after}")
            dods.append(delta - previous_delta)
            previous_delta = delta
        while dods and dods[-1] == 0:
            dods.pop()
        message.tick_dod.extend(dods)
    for spec, column in zip(schema.signals, chunk.columns, strict=True):
        if len(column) != len(chunk.ticks):
            raise ValueError(f"{spec.name}: {len(column)} values for {len(chunk.ticks)} ticks")
        runs, present = _presence_runs(column)
        out = message.columns.add()
        out.presence_runs.extend(runs)
        if spec.is_float:
            out.floats.extend(float(v) for v in present)
        else:
            out.residuals.extend(_encode_integers(present, spec))
    return message.SerializeToString()


def _decode_chunk(schema: Schema, message: pb.Chunk) -> ChunkData:
    count = message.sample_count
    if count > MAX_CHUNK_SAMPLES:
        raise WireError(f"chunk {message.seq}: {count} samples is more than {MAX_CHUNK_SAMPLES}")
    if len(message.tick_dod) > max(count - 1, 0):
        raise WireError(f"chunk {message.seq}: {len(message.tick_dod)} tick deltas for {count} samples")
    ticks: list[int] = []
    if count:
        ticks.append(message.first_tick)
        delta = 1
        for index in range(count - 1):
            delta += message.tick_dod[index] if index < len(message.tick_dod) else 0
            ticks.append(ticks[-1] + delta)
    if len(message.columns) != len(schema.signals):
        raise WireError(
            f"chunk {message.seq}: {len(message.columns)} columns, schema has {len(schema.signals)}"
        )
    columns: list[list[RawValue | None]] = []
    for spec, column in zip(schema.signals, message.columns, strict=True):
        mask = _expand_presence(column.presence_runs, count)
        present = sum(mask)
        values: list[RawValue]
        if spec.is_float:
            if len(column.floats) != present:
                raise WireError(f"{spec.name}: {len(column.floats)} floats for {present} present samples")
            values = list(column.floats)
        else:
            values = list(_decode_integers(column.residuals, present, spec))
        source = iter(values)
        columns.append([next(source) if here else None for here in mask])
    return ChunkData(bytes(message.boot_id), message.seq, ticks, columns)


# --- schema --------------------------------------------------------------------------------------------


def _schema_message(schema: Schema) -> pb.Schema:
    message = pb.Schema(rate_num=schema.rate.numerator, rate_den=schema.rate.denominator)
    for spec in schema.signals:
        message.signals.add(
            name=spec.name,
            scale=spec.scale,
            offset=spec.offset,
            kind=pb.VALUE_KIND_FLOAT if spec.is_float else pb.VALUE_KIND_INTEGER,
            integer_scaled=spec.integer_scaled,
            bound_raw=spec.bound_raw,
            predictor=predict.WIRE_PREDICTORS[spec.predictor],
        )
    return message


def _schema_from_message(message: pb.Schema) -> Schema:
    if message.rate_num == 0 or message.rate_den == 0:
        raise WireError(f"schema has an invalid rate {message.rate_num}/{message.rate_den}")
    specs = []
    for signal in message.signals:
        if signal.predictor not in predict.PREDICTOR_NAMES:
            raise WireError(f"{signal.name}: unknown predictor {signal.predictor}")
        if not (math.isfinite(signal.scale) and math.isfinite(signal.offset)):
            raise WireError(f"{signal.name}: scale and offset must be finite")
        specs.append(
            SignalSpec(
                name=signal.name,
                scale=signal.scale,
                offset=signal.offset,
                is_float=signal.kind == pb.VALUE_KIND_FLOAT,
                integer_scaled=signal.integer_scaled,
                bound_raw=signal.bound_raw,
                predictor=predict.PREDICTOR_NAMES[signal.predictor],
            )
        )
    return Schema(Fraction(message.rate_num, message.rate_den), tuple(specs))


def schema_bytes(schema: Schema) -> bytes:
    """A schema as stored beside the chunks in the agent's buffer."""
    return _schema_message(schema).SerializeToString()


def schema_from_bytes(data: bytes) -> Schema:
    try:
        return _schema_from_message(pb.Schema.FromString(data))
    except DecodeError as error:
        raise WireError(f"schema does not parse: {error}") from error


# --- envelopes -----------------------------------------------------------------------------------------


def _envelope(kind: pb.BodyKind, body: bytes, compress: bool) -> bytes:
    if compress:
        envelope = pb.Envelope(
            version=WIRE_VERSION, kind=kind, compression=pb.COMPRESSION_ZLIB, body=zlib.compress(body, 6)
        )
    else:
        envelope = pb.Envelope(version=WIRE_VERSION, kind=kind, body=body)
    return envelope.SerializeToString()


def _open_envelope(payload: bytes, kind: pb.BodyKind) -> bytes:
    try:
        envelope = pb.Envelope.FromString(payload)
    except DecodeError as error:
        raise WireError(f"not an envelope ({len(payload)} bytes): {error}") from error
    if envelope.version != WIRE_VERSION:
        raise WireError(f"wire version {envelope.version} is not supported (this side speaks {WIRE_VERSION})")
    if envelope.kind != kind:
        raise WireError(f"expected a {pb.BodyKind.Name(kind)}, got body kind {envelope.kind}")
    if envelope.compression == pb.COMPRESSION_NONE:
        return envelope.body
    if envelope.compression != pb.COMPRESSION_ZLIB:
        raise WireError(f"unknown compression {envelope.compression}")
    try:
        inflater = zlib.decompressobj()
        body = inflater.decompress(envelope.body, MAX_BODY_BYTES)
    except zlib.error as error:
        raise WireError(f"body does not decompress: {error}") from error
    if inflater.unconsumed_tail:
        raise WireError(f"body inflates past {MAX_BODY_BYTES} bytes")
    return body


def _parse(message_type: type[pb.Batch] | type[pb.Ack] | type[pb.Status], body: bytes, what: str) -> object:
    try:
        return message_type.FromString(body)
    except DecodeError as error:
        raise WireError(f"{what} does not parse: {error}") from error


# --- batches -------------------------------------------------------------------------------------------


@dataclass
class DecodedBatch:
    vin: str
    schema: Schema
    chunks: list[ChunkData]
    evicted: list[tuple[bytes, int, int]]
    sent_at: float


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte, number = number & 0x7F, number >> 7
        out.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(out)


def encode_batch(
    vin: str,
    schema: Schema,
    chunks: Iterable[bytes],
    evicted: Iterable[tuple[bytes, int, int]] = (),
    sent_at: float = 0.0,
    compress: bool = True,
) -> bytes:
    """Pack already-encoded chunks into one payload without re-parsing them."""
    header = pb.Batch(vin=vin, schema=_schema_message(schema), sent_at=sent_at)
    for boot_id, first, last in evicted:
        header.evicted.add(boot_id=boot_id, first_seq=first, last_seq=last)
    # A serialized repeated message field is just (tag, length, bytes) per element: append them.
    parts = [header.SerializeToString()]
    for blob in chunks:
        parts += (b"\x1a", _varint(len(blob)), blob)
    return _envelope(pb.BODY_KIND_BATCH, b"".join(parts), compress)


def decode_batch(payload: bytes) -> DecodedBatch:
    body = _open_envelope(payload, pb.BODY_KIND_BATCH)
    message = _parse(pb.Batch, body, "batch")
    assert isinstance(message, pb.Batch)
    if not message.vin:
        raise WireError("batch has no VIN")
    schema = _schema_from_message(message.schema)
    chunks = [_decode_chunk(schema, chunk) for chunk in message.chunks]
    evicted = [(bytes(r.boot_id), r.first_seq, r.last_seq) for r in message.evicted]
    return DecodedBatch(message.vin, schema, chunks, evicted, message.sent_at)


# --- acks and status -----------------------------------------------------------------------------------


def chunk_ranges(ids: Iterable[ChunkId]) -> list[tuple[bytes, int, int]]:
    """Fold chunk ids into (boot_id, first_seq, last_seq) runs, in the order given."""
    ranges: list[tuple[bytes, int, int]] = []
    for boot_id, seq in ids:
        if ranges and ranges[-1][0] == boot_id and ranges[-1][2] + 1 == seq:
            ranges[-1] = (boot_id, ranges[-1][1], seq)
        else:
            ranges.append((boot_id, seq, seq))
    return ranges


def encode_ack(vin: str, ids: Iterable[ChunkId]) -> bytes:
    ack = pb.Ack(vin=vin)
    for boot_id, first, last in chunk_ranges(ids):
        ack.stored.add(boot_id=boot_id, first_seq=first, last_seq=last)
    return _envelope(pb.BODY_KIND_ACK, ack.SerializeToString(), compress=False)


def decode_ack(payload: bytes) -> tuple[str, list[tuple[bytes, int, int]]]:
    message = _parse(pb.Ack, _open_envelope(payload, pb.BODY_KIND_ACK), "ack")
    assert isinstance(message, pb.Ack)
    return message.vin, [(bytes(r.boot_id), r.first_seq, r.last_seq) for r in message.stored]


def encode_status(status: pb.Status) -> bytes:
    return _envelope(pb.BODY_KIND_STATUS, status.SerializeToString(), compress=False)


def decode_status(payload: bytes) -> pb.Status:
    message = _parse(pb.Status, _open_envelope(payload, pb.BODY_KIND_STATUS), "status")
    assert isinstance(message, pb.Status)
    return message
