"""What travels over MQTT: every payload is an ``Envelope`` around a batch, an ack or a status.

The envelope carries the wire version of its body's format (:data:`BODY_VERSIONS`; a side reads every
version up to :data:`WIRE_VERSION` and refuses a newer one rather than guess), the body's kind and its
compression (:data:`COMPRESSIONS`; a batch is compressed, an ack or a status is not). Version 2 added
seal times to batches (``ChunkData.sealed_at_ms``, ``DecodedBatch.backlog_chunks``); acks and statuses
are still version 1, so an agent of version 1 reads a new receiver's acks. A batch (:func:`encode_batch`)
is a header (VIN, schema, eviction notices, send time, how many of its first chunks waited in the
agent's buffer) and the stored chunks (:mod:`agent.wire.chunks`), packed signal by signal
(:mod:`agent.wire.packed`) when they fit the schema, else as they are. An ack names the chunks the receiver stored and the
eviction notices it recorded; a status is the agent's ``pb.Status``.

A batch names its schema by :func:`schema_hash` and carries it whole (version 2) or, once a receiver has
acked a batch that carried it, by the hash alone (version 3, ``schema_by_hash``): the receiver looks it
up in its store (``decode_batch``'s ``schemas``) and, lacking it, raises :class:`SchemaUnknownError`,
answered by an ack whose ``schema_needed`` asks the agent for the whole schema again. The agent names a
schema by hash only after an ack whose ``schema_stored`` says a receiver has it (a receiver of version 2
never says so: its agents go on sending schemas whole).

Contract
- Pure functions, no I/O, no shared state but a bounded cache of schema hashes (a pure function's
  results, keyed by :attr:`Schema.digest`): safe from any thread. The caller owns what it passes in
  and what it gets back (a :class:`DecodedBatch` shares nothing with the payload).
- Packing only changes how the bytes are arranged, so a batch decodes alone, in any order, on any
  receiver, with no per-vehicle state, to exactly what each stored chunk decodes to.
- Limits: a body that inflates past :data:`MAX_BODY_BYTES` is refused before it is allocated;
  ``encode_*`` raise ``ValueError`` on an unknown compression.
- ``decode_*`` raise :class:`agent.errors.WireError` (never a protobuf, zlib or zstd exception) on garbage.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from agent.errors import SchemaUnknownError, WireError
from agent.wire import telemetry_pb2 as pb
from agent.wire.chunks import DEFAULT_LIMITS, Limits, decode_chunk, schema_from_message, schema_message
from agent.wire.packed import pack, unpack
from agent.wire.values import ChunkData, ChunkId, Schema

zstandard: Any
try:
    import zstandard
except ImportError:  # pragma: no cover - zstandard is a dependency; a receiver without it says so
    zstandard = None

WIRE_VERSION = 3  # the newest version this side reads: see proto/telemetry.proto
BODY_VERSIONS = {pb.BODY_KIND_BATCH: 2, pb.BODY_KIND_ACK: 1, pb.BODY_KIND_STATUS: 1}  # what each is sent at
BY_HASH_VERSION = 3  # a batch that names its schema by hash alone
SCHEMA_HASH_BYTES = 16
_SCHEMA_CACHE = 64  # schemas whose hash and serialized message are kept (an agent has one or two)
MAX_BODY_BYTES = 64 * 1024 * 1024  # a decompressed body past this is refused, not allocated
COMPRESSIONS = ("zstd", "zlib", "none")
DEFAULT_COMPRESSION = "zstd"  # chosen by measurement: see tests/harness/bench_codec.py and the README
ZLIB_LEVEL = 9
ZSTD_LEVEL = 13  # measured: level 15 saves 2 % more bytes for +1 µs/sample; 19 saves nothing more


# --- envelopes -----------------------------------------------------------------------------------------


def _compressor(compress: bool | str) -> str:
    name = (DEFAULT_COMPRESSION if compress else "none") if isinstance(compress, bool) else compress
    if name not in COMPRESSIONS:
        raise ValueError(f"unknown compression {name!r} (known: {', '.join(COMPRESSIONS)})")
    if name == "zstd" and zstandard is None:
        raise ValueError("zstd compression needs the zstandard package")
    return name


def envelope(kind: pb.BodyKind, body: bytes, compress: bool | str, version: int = 0) -> bytes:
    """``body`` in its envelope, compressed as asked (see :func:`encode_batch`), at ``version`` (0: the
    kind's :data:`BODY_VERSIONS`). A body that compression would not make smaller goes as it is (a
    second's batch online is a few hundred bytes, where a compressor's frame costs more than it saves)."""
    name = _compressor(compress)
    wrapped = pb.Envelope(version=version or BODY_VERSIONS[kind], kind=kind, body=body)
    if name == "zlib":
        packed = zlib.compress(body, ZLIB_LEVEL)
        if len(packed) < len(body):
            wrapped.compression, wrapped.body = pb.COMPRESSION_ZLIB, packed
    elif name == "zstd":
        packed = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(body)
        if len(packed) < len(body):
            wrapped.compression, wrapped.body = pb.COMPRESSION_ZSTD, packed
    return wrapped.SerializeToString()


def _inflate(data: bytes) -> bytes:
    try:
        inflater = zlib.decompressobj()
        body = inflater.decompress(data, MAX_BODY_BYTES)
    except zlib.error as error:
        raise WireError(f"body does not decompress: {error}") from error
    if inflater.unconsumed_tail:
        raise WireError(f"body inflates past {MAX_BODY_BYTES} bytes")
    if not inflater.eof or inflater.unused_data:
        raise WireError("body does not decompress: a truncated or padded zlib stream")
    return body


def _unzstd(data: bytes) -> bytes:
    if zstandard is None:  # pragma: no cover
        raise WireError("body is zstd-compressed and this side has no zstandard package")
    try:
        size = zstandard.frame_content_size(data)
        if size < 0 or size > MAX_BODY_BYTES:
            raise WireError(f"body inflates past {MAX_BODY_BYTES} bytes or does not say its size")
        body: bytes = zstandard.ZstdDecompressor().decompress(
            data, max_output_size=MAX_BODY_BYTES, allow_extra_data=False
        )
    except zstandard.ZstdError as error:
        raise WireError(f"body does not decompress: {error}") from error
    return body


def _open_envelope(payload: bytes, kind: pb.BodyKind) -> bytes:
    return _open(payload, kind)[1]


def _open(payload: bytes, kind: pb.BodyKind) -> tuple[int, bytes]:
    """(the body's wire version, the body, decompressed)."""
    try:
        wrapped = pb.Envelope.FromString(payload)
    except DecodeError as error:
        raise WireError(f"not an envelope ({len(payload)} bytes): {error}") from error
    if not 1 <= wrapped.version <= WIRE_VERSION:
        raise WireError(
            f"wire version {wrapped.version} is not supported (this side speaks 1 to {WIRE_VERSION})"
        )
    if wrapped.kind != kind:
        raise WireError(f"expected a {pb.BodyKind.Name(kind)}, got body kind {wrapped.kind}")
    if wrapped.compression == pb.COMPRESSION_NONE:
        return wrapped.version, wrapped.body
    if wrapped.compression == pb.COMPRESSION_ZLIB:
        return wrapped.version, _inflate(wrapped.body)
    if wrapped.compression == pb.COMPRESSION_ZSTD:
        return wrapped.version, _unzstd(wrapped.body)
    raise WireError(f"unknown compression {wrapped.compression}")


def _parse(message_type: type[pb.Batch] | type[pb.Ack] | type[pb.Status], body: bytes, what: str) -> object:
    try:
        return message_type.FromString(body)
    except DecodeError as error:
        raise WireError(f"{what} does not parse: {error}") from error


# --- batches -------------------------------------------------------------------------------------------


@dataclass
class DecodedBatch:
    """A batch as the receiver reads it: raw values, schema, the agent's eviction notices, send time.

    ``backlog_chunks``: how many of ``chunks`` (the first ones) had waited in the agent's buffer past an
    earlier chance to be sent (0 from an agent before wire version 2); the others went at their first.
    """

    vin: str
    schema: Schema
    chunks: list[ChunkData]
    evicted: list[tuple[bytes, int, int]]
    sent_at: float
    backlog_chunks: int = 0
    # The schema's hash and serialized message when the batch carried it whole (the receiver stores it
    # under its hash in the batch's transaction); empty when it named it by hash or said no hash.
    schema_hash: bytes = b""
    schema_body: bytes = b""


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte, number = number & 0x7F, number >> 7
        out.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(out)


_schemas: dict[bytes, tuple[bytes, bytes]] = {}  # Schema.digest -> (schema_hash, serialized message)


def _schema_parts(schema: Schema) -> tuple[bytes, bytes]:
    """(:func:`schema_hash`, the serialized ``pb.Schema``) of ``schema``, cached."""
    parts = _schemas.get(schema.digest)
    if parts is None:
        body = schema_message(schema).SerializeToString(deterministic=True)
        parts = (hashlib.sha256(body).digest()[:SCHEMA_HASH_BYTES], body)
        if len(_schemas) >= _SCHEMA_CACHE:
            _schemas.clear()
        _schemas[schema.digest] = parts
    return parts


def schema_hash(schema: Schema) -> bytes:
    """The schema's name on the wire: the first 16 bytes of SHA-256 over its serialized message."""
    return _schema_parts(schema)[0]


def encode_batch(
    vin: str,
    schema: Schema,
    chunks: Iterable[bytes],
    evicted: Iterable[tuple[bytes, int, int]] = (),
    sent_at: float = 0.0,
    compress: bool | str = True,
    backlog_chunks: int = 0,
    schema_by_hash: bool = False,
) -> bytes:
    """Stored chunks (from :func:`~agent.wire.chunks.encode_chunk`) in one payload, packed when they fit.

    ``compress``: ``True`` for :data:`DEFAULT_COMPRESSION`, ``False`` for none, or a name of
    :data:`COMPRESSIONS`. Chunks that do not fit ``schema`` are sent as they are, for the receiver to
    refuse (never packed into something that would decode differently). ``backlog_chunks``: how many of
    the first chunks waited in the buffer (see :class:`DecodedBatch`). ``schema_by_hash``: name the
    schema by its hash alone and send packed residuals sparse (version 3), for a receiver that has
    stored it (so reads version 3); else carry it whole, at version 2.
    """
    blobs = list(chunks)
    if not 0 <= backlog_chunks <= len(blobs):
        raise ValueError(f"backlog_chunks {backlog_chunks} is not within the batch's {len(blobs)} chunks")
    digest, schema_body = _schema_parts(schema)
    header = pb.Batch(vin=vin, sent_at=sent_at, backlog_chunks=backlog_chunks, schema_hash=digest)
    for boot_id, first, last in evicted:
        header.evicted.add(boot_id=boot_id, first_seq=first, last_seq=last)
    # A serialized message field is just (tag, length, bytes), a repeated one that per element: append.
    parts = [header.SerializeToString()]
    if not schema_by_hash:
        parts += (b"\x12", _varint(len(schema_body)), schema_body)  # Batch.schema
    packed = pack(schema, blobs, sparse=schema_by_hash)  # a receiver that stored a schema reads version 3
    if packed is not None:
        body = packed.SerializeToString()
        parts += (b"\x32", _varint(len(body)), body)  # Batch.packed
    else:
        for blob in blobs:
            parts += (b"\x1a", _varint(len(blob)), blob)  # Batch.chunks
    version = BY_HASH_VERSION if schema_by_hash else 0
    return envelope(pb.BODY_KIND_BATCH, b"".join(parts), compress, version)


def decode_batch(
    payload: bytes,
    limits: Limits = DEFAULT_LIMITS,
    schemas: Callable[[bytes], Schema | None] | None = None,
) -> DecodedBatch:
    """The batch in ``payload``; ``WireError`` on garbage or when it declares more than ``limits``.

    ``schemas`` looks up a schema by its hash, for a batch that names it so; :class:`SchemaUnknownError`
    when there is no lookup or it finds nothing. A batch that carries its schema and a hash that is not
    that schema's is garbage (a receiver would otherwise store a schema under another's name).
    """
    version, body = _open(payload, pb.BODY_KIND_BATCH)
    message = _parse(pb.Batch, body, "batch")
    assert isinstance(message, pb.Batch)
    if not message.vin:
        raise WireError("batch has no VIN")
    digest, schema_body = bytes(message.schema_hash), b""
    if message.HasField("schema") or not digest:
        schema = schema_from_message(message.schema)
        if digest:
            expected, schema_body = _schema_parts(schema)
            if digest != expected:
                raise WireError(f"batch's schema_hash {digest.hex()} is not its schema's ({expected.hex()})")
    elif version < BY_HASH_VERSION:
        raise WireError(f"a version-{version} batch has no schema (naming it by hash is version 3)")
    else:
        found = None if schemas is None else schemas(digest)
        if found is None:
            raise SchemaUnknownError(digest, message.vin)
        schema, digest = found, b""
    if message.HasField("packed") and message.chunks:
        raise WireError("batch has both packed and unpacked chunks")
    if message.HasField("packed"):
        if version < BY_HASH_VERSION and message.packed.HasField("sparse"):
            raise WireError(f"a version-{version} batch with sparse residuals (they are version 3)")
        decoded = unpack(schema, message.packed, limits)
    else:
        limits.check((chunk.sample_count for chunk in message.chunks), len(schema.signals), "batch")
        decoded = [decode_chunk(schema, chunk) for chunk in message.chunks]
    if message.backlog_chunks > len(decoded):
        raise WireError(f"batch says {message.backlog_chunks} backlog chunks of its {len(decoded)}")
    evicted = [(bytes(r.boot_id), r.first_seq, r.last_seq) for r in message.evicted]
    return DecodedBatch(
        message.vin, schema, decoded, evicted, message.sent_at, message.backlog_chunks, digest, schema_body
    )


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


def encode_ack(
    vin: str,
    ids: Iterable[ChunkId],
    noted: Iterable[tuple[bytes, int, int]] = (),
    schema_needed: bytes = b"",
    schema_stored: bytes = b"",
) -> bytes:
    """An ack of stored chunks and noted evictions, and of the schema the batch carried whole
    (``schema_stored``: its hash, in the store); or, with ``schema_needed``, a receiver's request for the
    schema of that hash (a batch it could not decode, of which it stored nothing)."""
    ack = pb.Ack(vin=vin, schema_needed=schema_needed, schema_stored=schema_stored)
    for boot_id, first, last in chunk_ranges(ids):
        ack.stored.add(boot_id=boot_id, first_seq=first, last_seq=last)
    for boot_id, first, last in noted:
        ack.noted.add(boot_id=boot_id, first_seq=first, last_seq=last)
    return envelope(pb.BODY_KIND_ACK, ack.SerializeToString(), compress=False)


def ack_noted(payload: bytes) -> list[tuple[bytes, int, int]]:
    """The eviction ranges an ack says are in the receiver's gap ledger."""
    message = _parse(pb.Ack, _open_envelope(payload, pb.BODY_KIND_ACK), "ack")
    assert isinstance(message, pb.Ack)
    return [(bytes(r.boot_id), r.first_seq, r.last_seq) for r in message.noted]


def ack_schemas(payload: bytes) -> tuple[bytes, bytes]:
    """(the schema hash an ack asks the agent to send whole, the one it says is stored), ``b""`` each
    when it says nothing of schemas."""
    message = _parse(pb.Ack, _open_envelope(payload, pb.BODY_KIND_ACK), "ack")
    assert isinstance(message, pb.Ack)
    return bytes(message.schema_needed), bytes(message.schema_stored)


def decode_ack(payload: bytes) -> tuple[str, list[tuple[bytes, int, int]]]:
    message = _parse(pb.Ack, _open_envelope(payload, pb.BODY_KIND_ACK), "ack")
    assert isinstance(message, pb.Ack)
    return message.vin, [(bytes(r.boot_id), r.first_seq, r.last_seq) for r in message.stored]


def encode_status(status: pb.Status) -> bytes:
    return envelope(pb.BODY_KIND_STATUS, status.SerializeToString(), compress=False)


def decode_status(payload: bytes) -> pb.Status:
    message = _parse(pb.Status, _open_envelope(payload, pb.BODY_KIND_STATUS), "status")
    assert isinstance(message, pb.Status)
    return message
