"""agent.wire.messages: envelopes, compression, acks and status; garbage is a WireError, never a crash."""

from __future__ import annotations

import contextlib
import zlib

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import wire
from agent.errors import SchemaUnknownError, WireError
from agent.wire import messages
from agent.wire import telemetry_pb2 as pb
from agent.wire.values import ChunkData, ChunkId, SignalSpec
from tests.harness.codec import BOOT, SPECS, drive, round_trip, schema_of


@pytest.mark.parametrize("compress", [True, False, "zlib", "zstd", "none"])
def test_every_compression_round_trips(compress: bool | str) -> None:
    schema = schema_of(*SPECS)
    chunk = drive(2, 1)[0]
    envelope = pb.Envelope.FromString(
        wire.encode_batch("V", schema, [wire.encode_chunk(schema, chunk)], compress=compress)
    )
    expected = {True: pb.COMPRESSION_ZSTD, False: pb.COMPRESSION_NONE, "zlib": pb.COMPRESSION_ZLIB}
    assert envelope.compression == expected.get(compress, pb.COMPRESSION_ZSTD if compress == "zstd" else 0)
    assert round_trip(schema, chunk, compress) == round_trip(schema, chunk, "none")
    with pytest.raises(ValueError, match="unknown compression 'lz4'"):
        wire.encode_batch("V", schema, [], compress="lz4")


def test_a_batch_carries_its_header() -> None:
    schema = schema_of(SignalSpec("M.s"))
    blob = wire.encode_chunk(schema, ChunkData(BOOT, 0, [1, 2], [[1, 2]]))
    evicted = [(BOOT, 3, 9)]
    got = wire.decode_batch(wire.encode_batch("VIN7", schema, [blob], evicted, 1700000000.5))
    assert (got.vin, got.schema, got.evicted, got.sent_at) == ("VIN7", schema, evicted, 1700000000.5)
    assert wire.decode_batch(wire.encode_batch("VIN7", schema, [], evicted)).chunks == []


def test_versions_batches_at_2_acks_and_statuses_at_1_and_reads_both() -> None:
    schema = schema_of(SignalSpec("M.s"))
    blobs = [
        wire.encode_chunk(schema, ChunkData(BOOT, n, [n], [[n]], 1_700_000_000_000 + n)) for n in range(3)
    ]
    payload = wire.encode_batch("V", schema, blobs, backlog_chunks=2)
    assert pb.Envelope.FromString(payload).version == 2
    assert pb.Envelope.FromString(wire.encode_ack("V", [ChunkId(BOOT, 0)])).version == 1
    assert pb.Envelope.FromString(wire.encode_status(pb.Status(vin="V"))).version == 1
    got = wire.decode_batch(payload)
    assert got.backlog_chunks == 2 and [c.sealed_at_ms for c in got.chunks] == [
        1_700_000_000_000 + n for n in range(3)
    ]
    newer = pb.Envelope.FromString(payload)
    newer.version = 4
    with pytest.raises(WireError, match="wire version 4 is not supported"):
        wire.decode_batch(newer.SerializeToString())
    with pytest.raises(ValueError, match="backlog_chunks 4"):
        wire.encode_batch("V", schema, blobs, backlog_chunks=4)
    body = pb.Batch.FromString(messages._open_envelope(payload, pb.BODY_KIND_BATCH))
    body.backlog_chunks = 4  # more than the batch holds: garbage
    with pytest.raises(WireError, match="4 backlog chunks of its 3"):
        wire.decode_batch(messages.envelope(pb.BODY_KIND_BATCH, body.SerializeToString(), compress=False))


def test_ack_ranges_fold_and_round_trip() -> None:
    ids = [ChunkId(b"a", 1), ChunkId(b"a", 2), ChunkId(b"a", 3), ChunkId(b"b", 0), ChunkId(b"a", 9)]
    vin, ranges = wire.decode_ack(wire.encode_ack("V", ids))
    assert vin == "V" and ranges == [(b"a", 1, 3), (b"b", 0, 0), (b"a", 9, 9)]
    payload = wire.encode_ack("V", ids[:1], noted=[(b"a", 4, 5)])
    assert wire.ack_noted(payload) == [(b"a", 4, 5)]
    assert pb.Envelope.FromString(payload).compression == pb.COMPRESSION_NONE


def test_status_round_trips_uncompressed() -> None:
    status = pb.Status(vin="V", state="ONLINE", backlog_chunks=3, oldest_age_s=1.5, agent_version="1.0")
    payload = wire.encode_status(status)
    assert wire.decode_status(payload) == status
    assert pb.Envelope.FromString(payload).compression == pb.COMPRESSION_NONE
    with pytest.raises(WireError, match="expected a BODY_KIND_ACK"):
        wire.decode_ack(payload)


def test_an_unknown_compression_is_refused_when_encoding() -> None:
    with pytest.raises(ValueError, match="unknown compression 'lz4'"):
        messages.envelope(pb.BODY_KIND_STATUS, b"", "lz4")


GOOD = wire.encode_batch(
    "V",
    schema_of(SignalSpec("M.s")),
    [wire.encode_chunk(schema_of(SignalSpec("M.s")), ChunkData(BOOT, 0, [1, 2], [[1, 2]]))],
    compress="zlib",
)


def envelope(compression: pb.Compression, data: bytes) -> bytes:
    return pb.Envelope(
        version=1, kind=pb.BODY_KIND_BATCH, compression=compression, body=data
    ).SerializeToString()


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"", "wire version 0"),
        (pb.Envelope(version=1, kind=pb.BODY_KIND_BATCH).SerializeToString(), "no VIN"),
        (b"\xff\xff\xff", "not an envelope"),
        (pb.Envelope(version=99, kind=pb.BODY_KIND_BATCH).SerializeToString(), "version 99"),
        (pb.Envelope(version=1, kind=pb.BODY_KIND_ACK).SerializeToString(), "expected a BODY_KIND_BATCH"),
        (envelope(pb.COMPRESSION_ZLIB, b"nope"), "does not decompress"),
        (envelope(pb.COMPRESSION_ZLIB, zlib.compress(b"\x00" * (wire.MAX_BODY_BYTES + 10))), "inflates past"),
        (envelope(pb.COMPRESSION_ZLIB, zlib.compress(b"\x0a\x01V" * 50)[:-6]), "truncated"),
        (envelope(pb.COMPRESSION_ZSTD, b"nope"), "does not decompress"),
        (
            envelope(
                pb.COMPRESSION_ZSTD, zstandard.ZstdCompressor().compress(b"\x00" * (wire.MAX_BODY_BYTES + 1))
            ),
            "inflates past",
        ),
        (
            envelope(
                pb.COMPRESSION_ZSTD, zstandard.ZstdCompressor(write_content_size=False).compress(b"\x0a\x01V")
            ),
            "does not say its size",
        ),
        (
            envelope(pb.COMPRESSION_ZSTD, zstandard.ZstdCompressor().compress(b"\x0a\x01V") + b"tail"),
            "decompress",
        ),
        (
            envelope(pb.COMPRESSION_ZSTD, zstandard.ZstdCompressor().compress(b"\x0a\x01V" * 40)[:-5]),
            "decompress",
        ),
        (envelope(7, b""), "unknown compression 7"),  # type: ignore[arg-type]
        (GOOD[: len(GOOD) // 2], "."),
    ],
)
def test_garbage_is_a_wire_error_never_a_crash(payload: bytes, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        wire.decode_batch(payload)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_escape_as_another_exception(payload: bytes) -> None:
    with contextlib.suppress(WireError):
        wire.decode_batch(payload)


def test_a_batch_names_its_schema_by_hash_only_where_asked_and_is_checked() -> None:
    schema = schema_of(SignalSpec("M.s"))
    blobs = [wire.encode_chunk(schema, ChunkData(BOOT, n, [n], [[n]])) for n in range(3)]
    digest = wire.schema_hash(schema)
    assert len(digest) == messages.SCHEMA_HASH_BYTES and digest != wire.schema_hash(
        schema_of(SignalSpec("M.t"))
    )
    whole = wire.encode_batch("V", schema, blobs)
    by_hash = wire.encode_batch("V", schema, blobs, schema_by_hash=True)
    assert len(by_hash) < len(whole) and pb.Envelope.FromString(by_hash).version == 3
    got = wire.decode_batch(whole)
    assert got.schema_hash == digest and got.schema_body == wire.schema_bytes(schema)
    named = wire.decode_batch(by_hash, schemas={digest: schema}.get)
    assert named.chunks == got.chunks and named.schema_body == b""  # nothing to store: it was not carried
    with pytest.raises(SchemaUnknownError) as unknown:
        wire.decode_batch(by_hash)  # no lookup: unknown, not garbage
    assert unknown.value.schema_hash == digest and unknown.value.vin == "V"
    with pytest.raises(SchemaUnknownError):
        wire.decode_batch(by_hash, schemas={}.get)
    lying = pb.Batch.FromString(messages._open_envelope(whole, pb.BODY_KIND_BATCH))
    lying.schema_hash = bytes(16)  # a schema under another's name: it would be stored under that name
    with pytest.raises(WireError, match="is not its schema's"):
        wire.decode_batch(messages.envelope(pb.BODY_KIND_BATCH, lying.SerializeToString(), False))
    old = pb.Envelope.FromString(by_hash)
    old.version = 2  # a version-2 batch must carry its schema
    with pytest.raises(WireError, match="version-2 batch has no schema"):
        wire.decode_batch(old.SerializeToString(), schemas={digest: schema}.get)


def test_acks_say_which_schema_was_stored_or_is_needed() -> None:
    digest = bytes(range(16))
    assert wire.ack_schemas(wire.encode_ack("V", [ChunkId(BOOT, 0)])) == (b"", b"")
    assert wire.ack_schemas(wire.encode_ack("V", [], schema_needed=digest)) == (digest, b"")
    assert wire.ack_schemas(wire.encode_ack("V", [ChunkId(BOOT, 0)], schema_stored=digest)) == (b"", digest)
