"""One signal's residuals across the chunks of a batch, as one stream (used by :mod:`agent.wire.packed`).

Every stored chunk codes each column from a fresh predictor, so that it decodes alone. Laid end to end,
their residuals restart from absolute values every second, which costs bytes and keeps a decoder from
running through a column in one go. :func:`join` rewrites only the first residuals of each chunk so that
the stream reads as if the predictor had run on through the chunks: with ``hold``, the first residual
minus the sum of the previous chunk's (that sum is the previous chunk's last value, in quantizer
steps); with ``linear``, the first two, from the running value and slope; with any other predictor,
the first residual minus the previous chunk's first. Every value stays on its own chunk's quantizer
lattice (``hold`` and ``linear`` reconstructions are whole multiples of the step), so :func:`split`
gives back each chunk's own reconstructions exactly, with one or two ``accumulate`` over the whole
column. The state starts again from zero at every *refresh* (:func:`refreshes`): the first chunk and
any chunk starting :data:`REFRESH_SECONDS` or more after the last refresh, so a long batch carries
absolute values at least every 30 s.

Contract: pure functions over lists of ints, safe from any thread.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import accumulate, pairwise, repeat
from typing import TypeVar

from agent.wire import quantizer as columns
from agent.wire.values import Schema, SignalSpec

T = TypeVar("T")
REFRESH_SECONDS = 30


def refreshes(first_ticks: Sequence[int], schema: Schema) -> list[bool]:
    span = math.ceil(REFRESH_SECONDS * schema.rate)
    out, last = [], 0
    for index, tick in enumerate(first_ticks):
        refresh = index == 0 or tick - last >= span
        last = tick if refresh else last
        out.append(refresh)
    return out


def join(chunks: Sequence[tuple[list[int], int]], refresh: Sequence[bool], predictor: str) -> list[int]:
    """The chunks' residuals (in quantizer steps) as one stream; see :func:`split` for the inverse.

    ``chunks`` are (residuals, how many zeros follow them). ``hold`` and ``linear``: the stream is what
    the same predictor would have sent had it run on through the chunks (each chunk's first residuals
    are rewritten from the running state), so the whole stream decodes with one or two ``accumulate``.
    Other predictors: each chunk's first residual becomes its difference from the previous chunk's. The
    state starts again from zero at every refresh.
    """
    out: list[int] = []
    total = slope = 0  # hold: the running sum; linear: the running value and its last difference
    for (steps, zeros), fresh in zip(chunks, refresh, strict=True):
        if fresh:
            total = slope = 0
        if not steps and zeros:
            steps, zeros = [0], zeros - 1
        if not steps:
            continue
        at, first = len(out), steps[0]
        out += steps
        out += repeat(0, zeros)
        if predictor == "hold":
            out[at] = first - total
            total = sum(steps)
        elif predictor == "linear":
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
    """Each chunk's reconstructions (raw units) from a stream of :func:`join`."""
    code = columns.coding(spec)
    step = 2 * spec.bound_raw + 1
    if code.predictor not in ("hold", "linear"):
        chunks, total, at = [], 0, 0
        for size, fresh in zip(sizes, refresh, strict=True):
            steps = stream[at : at + size]
            at, total = at + size, 0 if fresh else total
            if steps:
                steps[0] += total
                total = steps[0]
            chunks.append(columns.reconstruct(steps, size, spec, code))
        return chunks
    values: list[int] = []
    at = 0
    for segment in segments(sizes, refresh):
        part = stream[at : at + segment]
        at += segment
        sums = accumulate(part)
        values += accumulate(sums) if code.predictor == "linear" else sums
    return list(slices(columns.to_values(values, step, code), sizes))


def segments(sizes: Sequence[int], refresh: Sequence[bool]) -> Iterator[int]:
    """Lengths of the runs of values between refreshes."""
    length = 0
    for size, fresh in zip(sizes, refresh, strict=True):
        if fresh and length:
            yield length
            length = 0
        length += size
    yield length


def slices(values: Sequence[T], sizes: Sequence[int]) -> Iterator[list[T]]:
    start, as_list = 0, isinstance(values, list)
    for size in sizes:
        part = values[start : start + size]
        yield part if as_list else list(part)  # type: ignore[misc]
        start += size


class Layout:
    """Where each chunk's samples and each refresh segment lie in a packed column present throughout."""

    def __init__(self, counts: Sequence[int], refresh: Sequence[bool]) -> None:
        starts = list(accumulate(counts, initial=0))
        self.total = starts[-1]
        self.bounds = list(pairwise(starts))
        self.segments = list(
            pairwise([*(start for start, fresh in zip(starts, refresh, strict=False) if fresh), self.total])
        )
