"""The packed layout of a batch (used via :mod:`agent.wire`).

A stored chunk (``pb.Chunk``, :mod:`agent.wire.chunks`) holds its signals one after the other; 60 chunks in
a row interleave every signal's statistics 60 times, which a general-purpose compressor codes poorly.
:func:`pack` lays the same chunks out signal by signal (``pb.Packed``): chunk headers as differences,
each signal's presence runs over the whole batch, its exactly-sent values, and its residuals as one
stream (:mod:`agent.wire.streams`: only the first residuals of each chunk are rewritten). Packing moves
stored integers and never re-quantizes, so every value decodes exactly as its stored chunk would.

Contract: pure functions, safe from any thread. :func:`pack` returns ``None`` for chunks that do not
parse or do not fit the schema (the caller sends them as they are, for the receiver to refuse);
:func:`unpack` raises :class:`~agent.errors.WireError` on inconsistent input.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate, repeat

from google.protobuf.message import DecodeError

from agent.errors import WireError
from agent.wire import quantizer as columns
from agent.wire import streams
from agent.wire import telemetry_pb2 as pb
from agent.wire.chunks import MAX_CHUNK_SAMPLES, Parts, coded_of, fill_column, ticks_from
from agent.wire.values import ChunkData, RawValue, Schema, SignalSpec

MAX_BATCH_SAMPLES = 16_000_000  # a packed batch claiming more samples in all is refused


# --- packed batches ------------------------------------------------------------------------------------


class _Unfit(Exception):
    """The chunks cannot be packed faithfully: send them as they are."""


def _merge_runs(runs: list[int], more: Sequence[int], count: int) -> None:
    if not more:  # present throughout
        if len(runs) % 2 == 0:
            runs[-1] += count
        elif count:
            runs.append(count)
        return
    for index, run in enumerate(more):
        if run:
            if (len(runs) % 2 == 1) == (index % 2 == 0):  # the last run has this run's state
                runs[-1] += run
            else:
                runs.append(run)


def _pack_hold(chunks: Sequence[Parts], index: int, refresh: Sequence[bool]) -> list[int] | None:
    """:func:`agent.wire.streams.join` for ``hold``, when every chunk has the column throughout, nothing aside."""
    out: list[int] = []
    total = 0
    for chunk, fresh in zip(chunks, refresh, strict=True):
        if index in chunk.extras:
            return None
        low, high, count = chunk.offsets[index], chunk.offsets[index + 1], chunk.count
        if high - low > count:
            raise _Unfit
        if fresh:
            total = 0
        if high > low:
            at, part = len(out), chunk.residuals[low:high]
            out += part
            out[at] = part[0] - total
            total = sum(part)
        elif count:
            out.append(-total)
            total, count = 0, count - 1
        if count > high - low:
            out += repeat(0, count - (high - low))
    return out


def _pack_column(
    out: pb.Column, chunks: Sequence[Parts], index: int, spec: SignalSpec, refresh: Sequence[bool]
) -> None:
    """Fill ``out`` with one signal's values in every chunk (see :func:`agent.wire.streams.join`)."""
    if not spec.is_float and columns.coding(spec).predictor == "hold":
        plain = _pack_hold(chunks, index, refresh)
        if plain is not None:
            try:
                out.residuals.extend(plain)
            except ValueError as error:  # beyond 64 bits: send the chunks as they are
                raise _Unfit from error
            return
    runs, floats, gaps, exact = [0], list[float](), list[int](), list[int]()
    per_chunk: list[tuple[list[int], int]] = []
    append = per_chunk.append
    present_before, last_exact = 0, -1
    for chunk in chunks:
        count, extra = chunk.count, chunk.extras.get(index)
        if extra is None and not spec.is_float:  # the usual case: present throughout, nothing aside
            residuals = chunk.residuals[chunk.offsets[index] : chunk.offsets[index + 1]]
            if len(residuals) > count:
                raise _Unfit
            append((residuals, count - len(residuals)))
            if len(runs) % 2 == 0:
                runs[-1] += count
            elif count:
                runs.append(count)
            present_before += count
            continue
        coded = chunk.coded(index)
        present = count - sum(coded.runs[0::2]) if coded.runs else count
        if coded.runs and sum(coded.runs) != count:
            raise _Unfit
        _merge_runs(runs, coded.runs, count)
        if spec.is_float:
            if len(coded.floats) != present or coded.residuals or coded.exact:
                raise _Unfit
            floats += coded.floats
            continue
        predicted = present - len(coded.exact)
        if len(coded.exact_gaps) != len(coded.exact) or predicted < sum(coded.exact_gaps) or coded.floats:
            raise _Unfit
        position = present_before - 1
        for gap, value in zip(coded.exact_gaps, coded.exact, strict=True):
            position += gap + 1
            gaps.append(position - last_exact - 1)
            exact.append(value)
            last_exact = position
        if len(coded.residuals) > predicted:
            raise _Unfit
        append((coded.residuals, predicted - len(coded.residuals)))
        present_before += present
    out.presence_runs.extend([] if runs[0] == 0 and len(runs) <= 2 else runs)
    if spec.is_float:
        out.floats.extend(floats)
        return
    try:
        stream = streams.join(per_chunk, refresh, columns.coding(spec).predictor)
        out.residuals.extend(stream)  # not trimmed: a compressor makes next to nothing of the zeros
        fill_column(out, columns.Coded([], [], [], gaps, exact), residuals=False)
    except (ValueError, WireError) as error:
        raise _Unfit from error


def pack(schema: Schema, blobs: Sequence[bytes]) -> pb.Packed | None:
    """The chunks laid out signal by signal, or ``None`` when they do not fit ``schema``."""
    try:
        messages = [pb.Chunk.FromString(blob) for blob in blobs]
        chunks = [Parts(schema, message) for message in messages]
    except (DecodeError, WireError):
        return None
    packed = pb.Packed()
    previous_boot, previous_seq, previous_tick = None, 0, 0
    for message in messages:
        count = message.sample_count
        packed.boot_id.append(b"" if message.boot_id == previous_boot else message.boot_id)
        packed.seq.append(message.seq - previous_seq)
        packed.first_tick.append(message.first_tick - previous_tick)
        packed.sample_count.append(count)
        packed.tick_dod_count.append(len(message.tick_dod))
        packed.tick_dod.extend(message.tick_dod)
        previous_boot, previous_seq, previous_tick = message.boot_id, message.seq, message.first_tick
    if sum(packed.sample_count) > MAX_BATCH_SAMPLES:
        return None
    refresh = streams.refreshes([m.first_tick for m in messages], schema)
    try:
        for index, spec in enumerate(schema.signals):
            _pack_column(packed.columns.add(), chunks, index, spec, refresh)
    except _Unfit:
        return None
    return packed


def unpack(schema: Schema, packed: pb.Packed) -> list[ChunkData]:
    """The chunks of a packed batch, exactly as :func:`decode_chunk` gives each stored chunk."""
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
    boots, boot = [], b""
    for given in packed.boot_id:
        boot = given or boot
        boots.append(boot)
    seqs = list(accumulate(packed.seq))
    firsts = list(accumulate(packed.first_tick))
    ticks = []
    for first, count, dods in zip(
        firsts, counts, streams.slices(packed.tick_dod, packed.tick_dod_count), strict=True
    ):
        if len(dods) > max(count - 1, 0):
            raise WireError(f"packed batch: {len(dods)} tick deltas for {count} samples")
        ticks.append(ticks_from(first, count, dods))
    refresh = streams.refreshes(firsts, schema)
    layout = streams.Layout(counts, refresh)
    values: list[list[list[RawValue | None]]] = [[] for _ in counts]
    for spec, column in zip(schema.signals, packed.columns, strict=True):
        plain = _unpack_plain(spec, column, layout)
        parts = plain if plain is not None else _unpack_column(spec, column, counts, refresh)
        for chunk, decoded in zip(values, parts, strict=True):
            chunk.append(decoded)
    return [
        ChunkData(boot_id, seq, chunk_ticks, chunk_values)
        for boot_id, seq, chunk_ticks, chunk_values in zip(boots, seqs, ticks, values, strict=True)
    ]


def _unpack_plain(
    spec: SignalSpec, column: pb.Column, layout: streams.Layout
) -> list[list[RawValue | None]] | None:
    """The usual column (hold or linear, present throughout, nothing aside) in one pass; else ``None``."""
    if spec.is_float or column.presence_runs or column.exact_gaps or column.floats:
        return None
    code = columns.coding(spec)
    if code.predictor not in ("hold", "linear"):
        return None
    stream = list(column.residuals)
    if len(stream) > layout.total:
        raise WireError(f"{spec.name}: {len(stream)} residuals for {layout.total} predicted values")
    stream += repeat(0, layout.total - len(stream))
    values: list[int] = []
    for start, end in layout.segments:
        sums = accumulate(stream[start:end])
        values += accumulate(sums) if code.predictor == "linear" else sums
    values = columns.to_values(values, 2 * spec.bound_raw + 1, code)
    return [values[start:end] for start, end in layout.bounds]  # type: ignore[misc]


def _unpack_column(
    spec: SignalSpec, column: pb.Column, counts: Sequence[int], refresh: Sequence[bool]
) -> list[list[RawValue | None]]:
    """One signal's values in every chunk of a packed batch."""
    coded = coded_of(column)
    masks: list[list[bool]] | None = None
    presents = counts
    if coded.runs:
        mask = columns.expand_presence(coded.runs, sum(counts))
        masks = list(streams.slices(mask, counts))
        presents = [sum(chunk_mask) for chunk_mask in masks]
    if spec.is_float:
        if len(coded.floats) != sum(presents) or coded.residuals or coded.exact:
            raise WireError(f"{spec.name}: {len(coded.floats)} floats for {sum(presents)} present samples")
        parts: list[list[RawValue]] = [
            list[RawValue](part) for part in streams.slices(coded.floats, presents)
        ]
    else:
        parts = _unpack_integers(spec, coded, presents, refresh)
    if masks is None:
        return parts  # type: ignore[return-value]
    return [columns.with_presence(m, part) for m, part in zip(masks, parts, strict=True)]


def _unpack_integers(
    spec: SignalSpec, coded: columns.Coded, presents: Sequence[int], refresh: Sequence[bool]
) -> list[list[RawValue]]:
    if len(coded.exact_gaps) != len(coded.exact) or coded.floats:
        raise WireError(f"{spec.name}: unpaired exact values or floats in an integer column")
    if not coded.exact:
        predicted, chunk_gaps, chunk_exact = list(presents), None, None
    else:
        chunk_gaps, chunk_exact = _exact_per_chunk(spec, coded, presents)
        predicted = [present - len(exact) for present, exact in zip(presents, chunk_exact, strict=True)]
    wanted = sum(predicted)
    if len(coded.residuals) > wanted:
        raise WireError(f"{spec.name}: {len(coded.residuals)} residuals for {wanted} predicted values")
    stream = coded.residuals
    if len(stream) < wanted:
        stream += repeat(0, wanted - len(stream))
    parts = streams.split(stream, predicted, refresh, spec)
    if chunk_gaps is None or chunk_exact is None:
        return parts  # type: ignore[return-value]
    return [
        list[RawValue](columns.merge_exact(part, gaps, exact))
        for part, gaps, exact in zip(parts, chunk_gaps, chunk_exact, strict=True)
    ]


def _exact_per_chunk(
    spec: SignalSpec, coded: columns.Coded, presents: Sequence[int]
) -> tuple[list[list[int]], list[list[int]]]:
    positions = [p - 1 for p in accumulate(gap + 1 for gap in coded.exact_gaps)]
    if positions and positions[-1] >= sum(presents):
        raise WireError(f"{spec.name}: an exact value past the {sum(presents)} present samples")
    chunk_gaps: list[list[int]] = []
    chunk_exact: list[list[int]] = []
    start, at = 0, 0
    for present in presents:
        gaps, exact, last = [], [], start - 1
        while at < len(positions) and positions[at] < start + present:
            gaps.append(positions[at] - last - 1)
            exact.append(coded.exact[at])
            last, at = positions[at], at + 1
        chunk_gaps.append(gaps)
        chunk_exact.append(exact)
        start += present
    return chunk_gaps, chunk_exact
