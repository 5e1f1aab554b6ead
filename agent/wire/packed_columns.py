"""One signal across the chunks of a batch: a ``pb.Column`` of ``pb.Packed`` (see :mod:`agent.wire.packed`).

:func:`pack_column` gathers one signal from every stored chunk (:class:`agent.wire.chunks.Parts`): its
presence runs over all the batch's samples, its floats, its exactly-sent values (positions over all its
present samples) and its residuals as one *stream*; :func:`unpack_column` gives back each chunk's values.

The stream. Every stored chunk codes each column from a fresh predictor, so that it decodes alone. Laid
end to end, their residuals restart from absolute values every second, which costs bytes and keeps a
decoder from running through a column in one go. :func:`join` rewrites only the first residuals of each
chunk so that the stream reads as if the predictor had run on through the chunks: with ``hold``, the
first residual minus the sum of the previous chunk's (that sum is the previous chunk's last value, in
quantizer steps); with ``linear``, the first two, from the running value and slope; with any other
predictor, the first residual minus the previous chunk's first. Every value stays on its own chunk's
quantizer lattice (``hold`` and ``linear`` reconstructions are whole multiples of the step), so
:func:`split` gives back each chunk's own reconstructions exactly, with one or two ``accumulate`` over the
whole column. The state starts again from zero at every *refresh* (:func:`refreshes`): the first chunk and
any chunk starting :data:`REFRESH_SECONDS` or more after the last refresh, so a long batch carries
absolute values at least every 30 s. Packing moves stored integers and never re-quantizes.

Contract: pure functions over lists the caller owns (read, never kept); safe from any thread.
:func:`pack_column` raises :class:`Unfit` when the chunks cannot be packed faithfully (the caller then
sends them as stored); :func:`unpack_column` raises :class:`~agent.errors.WireError` on inconsistent
input, before allocating for it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import accumulate, islice, pairwise, repeat
from typing import TypeVar

from agent.errors import WireError
from agent.wire import quantizer
from agent.wire import telemetry_pb2 as pb
from agent.wire.chunks import Parts, coded_of, fill_column
from agent.wire.values import RawValue, Schema, SignalSpec

T = TypeVar("T")
REFRESH_SECONDS = 30


class Unfit(Exception):
    """The chunks cannot be packed faithfully: send them as they are."""


def slices(values: Sequence[T], sizes: Sequence[int]) -> list[list[T]]:
    """``values`` cut into consecutive lists of ``sizes``."""
    bounds = pairwise(accumulate(sizes, initial=0))
    if isinstance(values, list):  # a list's slices are lists already
        return [values[start:end] for start, end in bounds]
    return [list(values[start:end]) for start, end in bounds]


# --- the stream ----------------------------------------------------------------------------------------


def refreshes(first_ticks: Sequence[int], schema: Schema) -> list[bool]:
    """Per chunk (by its first tick): does the stream's state start again from zero there?"""
    span = math.ceil(REFRESH_SECONDS * schema.rate)
    out, last = [], 0
    for index, tick in enumerate(first_ticks):
        refresh = index == 0 or tick - last >= span
        last = tick if refresh else last
        out.append(refresh)
    return out


def join(chunks: Sequence[tuple[list[int], int]], refresh: Sequence[bool], predictor: str) -> list[int]:
    """The chunks' residuals (in quantizer steps) as one stream; :func:`split` is the inverse.

    ``chunks`` are (residuals, how many zeros follow them).
    """
    out: list[int] = []
    hold, linear = predictor == "hold", predictor == "linear"
    total = slope = 0  # hold: the running sum; linear: the running value and its last difference
    for (steps, zeros), fresh in zip(chunks, refresh, strict=True):
        if fresh:
            total = slope = 0
        if not steps:
            if not zeros:
                continue
            steps, zeros = [0], zeros - 1
        at, first = len(out), steps[0]
        out += steps
        if zeros:
            out += repeat(0, zeros)
        if hold:
            out[at] = first - total
            total = sum(steps)
        elif linear:
            out[at] = first - total
            out[at] -= slope
            if len(steps) + zeros == 1:
                total, slope = first, first - total
            else:
                out[at + 1] = out[at + 1] - first + total
                differences = list(accumulate(steps[1:], initial=0))
                slope = differences[-1]
                total = first + sum(differences) + zeros * slope
        else:
            out[at] = first - total
            total = first
    return out


def split(
    stream: list[int], sizes: Sequence[int], refresh: Sequence[bool], spec: SignalSpec
) -> list[list[int]]:
    """Each chunk's reconstructions (raw units) from a stream of :func:`join` (untrimmed)."""
    code = quantizer.coding(spec)
    if code.predictor not in ("hold", "linear"):
        chunks, total, at = [], 0, 0
        for size, fresh in zip(sizes, refresh, strict=True):
            steps = stream[at : at + size]
            at, total = at + size, 0 if fresh else total
            if steps:
                steps[0] += total
                total = steps[0]
            chunks.append(quantizer.reconstruct(steps, size, spec, code))
        return chunks
    values: list[int] = []
    source, linear = iter(stream), code.predictor == "linear"
    for segment in _segments(sizes, refresh):
        sums = accumulate(islice(source, segment))
        values += accumulate(sums) if linear else sums
    return slices(quantizer.to_values(values, 2 * spec.bound_raw + 1, code), sizes)


def _segments(sizes: Sequence[int], refresh: Sequence[bool]) -> Iterator[int]:
    """Lengths of the runs of values between refreshes."""
    length = 0
    for size, fresh in zip(sizes, refresh, strict=True):
        if fresh and length:
            yield length
            length = 0
        length += size
    yield length


# --- packing -------------------------------------------------------------------------------------------


def pack_column(
    out: pb.Column, chunks: Sequence[Parts], index: int, spec: SignalSpec, refresh: Sequence[bool]
) -> None:
    """Fill ``out`` with signal ``index`` of every chunk."""
    runs, floats, gaps, exact = [0], list[float](), list[int](), list[int]()
    streams: list[tuple[list[int], int]] = []  # per chunk: its residuals, how many zeros follow them
    present_before, last_exact = 0, -1
    present_run = 0  # samples present throughout since the last chunk with presence runs
    usual = not spec.is_float
    for chunk in chunks:
        count = chunk.count
        if usual and index not in chunk.extras:  # the usual case: present throughout, nothing aside
            residuals = chunk.residuals[chunk.offsets[index] : chunk.offsets[index + 1]]
            zeros = count - len(residuals)
            if zeros < 0:
                raise Unfit
            streams.append((residuals, zeros))
            present_run += count
            present_before += count
            continue
        coded, present = chunk.coded(index), count
        if coded.runs:
            if sum(coded.runs) != count:
                raise Unfit
            present -= sum(coded.runs[0::2])
            _merge_runs(runs, (), present_run)
            _merge_runs(runs, coded.runs, count)
            present_run = 0
        else:
            present_run += count
        if spec.is_float:
            if len(coded.floats) != present or coded.residuals or coded.exact:
                raise Unfit
            floats += coded.floats
            continue
        predicted = present - len(coded.exact)
        if len(coded.exact_gaps) != len(coded.exact) or predicted < sum(coded.exact_gaps) or coded.floats:
            raise Unfit
        position = present_before - 1
        for gap, value in zip(coded.exact_gaps, coded.exact, strict=True):
            position += gap + 1
            gaps.append(position - last_exact - 1)
            exact.append(value)
            last_exact = position
        if len(coded.residuals) > predicted:
            raise Unfit
        streams.append((coded.residuals, predicted - len(coded.residuals)))
        present_before += present
    _merge_runs(runs, (), present_run)
    if runs[0] or len(runs) > 2:  # else present throughout: no runs
        out.presence_runs.extend(runs)
    if spec.is_float:
        out.floats.extend(floats)
        return
    try:  # the stream is not trimmed: a compressor makes next to nothing of the zeros
        out.residuals.extend(join(streams, refresh, quantizer.coding(spec).predictor))
        if exact:
            fill_column(out, quantizer.Coded([], [], [], gaps, exact), residuals=False)
    except (ValueError, WireError) as error:  # beyond 64 bits, say
        raise Unfit from error


def _merge_runs(runs: list[int], more: Sequence[int], count: int) -> None:
    """Append a chunk's presence runs (``()``: present at all its ``count`` samples) to ``runs``."""
    if not more:
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


# --- unpacking -----------------------------------------------------------------------------------------


def unpack_column(
    spec: SignalSpec,
    column: pb.Column,
    counts: Sequence[int],
    refresh: Sequence[bool],
    residuals: list[int] | None = None,
) -> list[list[RawValue | None]]:
    """One signal's values in each chunk (of ``counts`` samples) of a packed batch (``residuals``, when
    given, stand for the column's own: see :mod:`agent.wire.sparse`)."""
    coded = coded_of(column, residuals)
    masks: list[list[bool]] | None = None
    presents = counts
    if coded.runs:
        mask = quantizer.expand_presence(coded.runs, sum(counts))
        masks = slices(mask, counts)
        presents = [sum(chunk_mask) for chunk_mask in masks]
    if spec.is_float:
        if len(coded.floats) != sum(presents) or coded.residuals or coded.exact:
            raise WireError(f"{spec.name}: {len(coded.floats)} floats for {sum(presents)} present samples")
        parts: list[list[RawValue]] = [list[RawValue](part) for part in slices(coded.floats, presents)]
    else:
        parts = _unpack_integers(spec, coded, presents, refresh)
    if masks is None:
        return parts  # type: ignore[return-value]
    return [  # a chunk present throughout keeps its own (fresh) list
        part if len(part) == len(m) else quantizer.with_presence(m, part)  # type: ignore[misc]
        for m, part in zip(masks, parts, strict=True)
    ]


def _unpack_integers(
    spec: SignalSpec, coded: quantizer.Coded, presents: Sequence[int], refresh: Sequence[bool]
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
    stream += repeat(0, wanted - len(stream))
    parts = split(stream, predicted, refresh, spec)
    if chunk_gaps is None or chunk_exact is None:
        return parts  # type: ignore[return-value]
    return [
        list[RawValue](quantizer.merge_exact(part, gaps, exact))
        for part, gaps, exact in zip(parts, chunk_gaps, chunk_exact, strict=True)
    ]


def _exact_per_chunk(
    spec: SignalSpec, coded: quantizer.Coded, presents: Sequence[int]
) -> tuple[list[list[int]], list[list[int]]]:
    """The exactly-sent values of each chunk, with their gaps counted within the chunk."""
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
