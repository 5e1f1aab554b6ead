"""The packed layout of a batch (``pb.Packed``): the stored chunks laid out signal by signal.

A stored chunk (``pb.Chunk``, :mod:`agent.wire.chunks`) holds its signals one after the other; 60 chunks
in a row interleave every signal's statistics 60 times, which a general-purpose compressor codes poorly.
:func:`pack` lays the same chunks out signal by signal: the chunk headers (boot id, sequence number,
first tick, sample count, tick deltas) as differences from the previous chunk's, then one ``pb.Column``
per signal over all the chunks (:mod:`agent.wire.packed_columns`: presence, exact values, and the
residuals as one stream in which only each chunk's first residuals are rewritten), and the chunks' seal
times as differences (none when no chunk is stamped). Packing moves stored integers and never
re-quantizes, so every value decodes exactly as its stored chunk would.

Why :func:`pack` parses the stored chunks. The path from samples to the wire is: the pipeline seals a
chunk once (:func:`agent.wire.chunks.encode_chunk`) and the buffer keeps those bytes on disk; the
uploader, on its own thread and possibly after a restart, reads them back and packs them. The packed
layout takes each signal's residuals, presence runs and exact values out of every chunk, so the chunk
must be parsed; keeping the sealed messages in memory for the uploader would save only that parse
(``pb.Chunk.FromString``, in C: about 3 % of ``encode_batch`` on the highway drive, 0.1 µs a sample),
would add state shared between the pipeline and the uploader threads, and would not help after a
restart, where every chunk comes from disk. The stored chunk stays the unit that decodes alone; the
batch is re-serialized because its layout differs.

Contract: pure functions; the caller owns the blobs and messages (read, never kept); safe from any
thread. :func:`pack` returns ``None`` for chunks that do not parse, do not fit the schema, or whose
stream would not fit 64 bits (the caller sends them as they are, for the receiver to refuse or decode
one by one); :func:`unpack` raises :class:`~agent.errors.WireError` on inconsistent input, before
allocating for it: at most :data:`MAX_BATCH_SAMPLES` samples in all,
:data:`~agent.wire.chunks.MAX_CHUNK_SAMPLES` in a chunk, and within the :class:`~agent.wire.chunks.Limits`
it is given (samples, samples x signals).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

from google.protobuf.message import DecodeError

from agent.errors import WireError
from agent.wire import telemetry_pb2 as pb
from agent.wire.chunks import DEFAULT_LIMITS, MAX_CHUNK_SAMPLES, Limits, Parts, ticks_from
from agent.wire.packed_columns import Unfit, pack_column, refreshes, slices, unpack_column
from agent.wire.sparse import from_sparse, to_sparse
from agent.wire.values import ChunkData, RawValue, Schema

MAX_BATCH_SAMPLES = 16_000_000  # a packed batch claiming more samples in all is refused


def pack(schema: Schema, blobs: Sequence[bytes], sparse: bool = False) -> pb.Packed | None:
    """The stored chunks laid out signal by signal, or ``None`` when they cannot be packed faithfully.

    ``sparse``: the residuals go in ``Packed.sparse`` (:mod:`agent.wire.sparse`; wire version 3)."""
    try:
        messages = [pb.Chunk.FromString(blob) for blob in blobs]
        chunks = [Parts(schema, message) for message in messages]
    except (DecodeError, WireError):
        return None
    packed = pb.Packed()
    previous_boot, previous_seq, previous_tick = None, 0, 0
    for message in messages:
        packed.boot_id.append(b"" if message.boot_id == previous_boot else message.boot_id)
        packed.seq.append(message.seq - previous_seq)
        packed.first_tick.append(message.first_tick - previous_tick)
        packed.sample_count.append(message.sample_count)
        packed.tick_dod_count.append(len(message.tick_dod))
        packed.tick_dod.extend(message.tick_dod)
        previous_boot, previous_seq, previous_tick = message.boot_id, message.seq, message.first_tick
    sealed = [message.sealed_at_ms for message in messages]
    if any(sealed):
        try:  # a difference past sint64 (two seal times 2^63 ms apart: garbage) is sent as stored
            packed.sealed_at_ms.extend(
                after - before for before, after in zip([0, *sealed], sealed, strict=False)
            )
        except ValueError:
            return None
    if sum(packed.sample_count) > MAX_BATCH_SAMPLES:
        return None
    refresh = refreshes([message.first_tick for message in messages], schema)
    try:
        for index, spec in enumerate(schema.signals):
            pack_column(packed.columns.add(), chunks, index, spec, refresh)
    except Unfit:
        return None
    if sparse:
        to_sparse(packed)
    return packed


def unpack(schema: Schema, packed: pb.Packed, limits: Limits = DEFAULT_LIMITS) -> list[ChunkData]:
    """The chunks of a packed batch, exactly as :func:`~agent.wire.chunks.decode_chunk` gives each one."""
    counts = list(packed.sample_count)
    heads = (packed.boot_id, packed.seq, packed.first_tick, packed.tick_dod_count)
    if any(len(field) != len(counts) for field in heads) or sum(packed.tick_dod_count) != len(
        packed.tick_dod
    ):
        raise WireError("packed batch: chunk headers of different lengths")
    if (counts and max(counts) > MAX_CHUNK_SAMPLES) or sum(counts) > MAX_BATCH_SAMPLES:
        raise WireError(f"packed batch: more than {MAX_CHUNK_SAMPLES} samples in a chunk or too many in all")
    if len(packed.columns) != len(schema.signals):
        raise WireError(f"packed batch: {len(packed.columns)} columns, schema has {len(schema.signals)}")
    limits.check(counts, len(schema.signals), "packed batch")
    sealed = list(accumulate(packed.sealed_at_ms)) or [0] * len(counts)
    if len(sealed) != len(counts) or (sealed and not 0 <= min(sealed) <= max(sealed) < 1 << 64):
        raise WireError("packed batch: seal times of another length than the chunks, or out of range")
    boots, boot = [], b""
    for given in packed.boot_id:
        boot = given or boot
        boots.append(boot)
    seqs = list(accumulate(packed.seq))
    firsts = list(accumulate(packed.first_tick))
    ticks = []
    for first, count, dods in zip(
        firsts, counts, slices(packed.tick_dod, packed.tick_dod_count), strict=True
    ):
        if len(dods) > max(count - 1, 0):
            raise WireError(f"packed batch: {len(dods)} tick deltas for {count} samples")
        ticks.append(ticks_from(first, count, dods))
    refresh = refreshes(firsts, schema)
    streams: list[list[int] | None] = [None] * len(packed.columns)
    if packed.HasField("sparse"):
        streams = list(from_sparse(packed, sum(counts)))
    values: list[list[list[RawValue | None]]] = [[] for _ in counts]
    for spec, column, stream in zip(schema.signals, packed.columns, streams, strict=True):
        decoded_column = unpack_column(spec, column, counts, refresh, stream)
        for chunk, decoded in zip(values, decoded_column, strict=True):
            chunk.append(decoded)
    ids = zip(boots, seqs, sealed, strict=True)
    return [
        ChunkData(boot_id, seq, chunk_ticks, chunk_values, stamp)
        for (boot_id, seq, stamp), chunk_ticks, chunk_values in zip(ids, ticks, values, strict=True)
    ]
