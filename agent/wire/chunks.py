"""A sealed chunk's message (``pb.Chunk``): what the agent's buffer stores and a batch may carry as is.

A chunk is coded once, when it is sealed (:func:`chunk_message`): its ticks as delta-of-delta, every
integer signal's residuals (:mod:`agent.wire.quantizer`, closed-loop) in one flat list with a count per signal,
and, only for the signals that need them, presence runs, floats and exactly-sent values (``extras``).
It decodes alone (:func:`decode_chunk`). :class:`Parts` takes a stored chunk apart for
:mod:`agent.wire.packed`.

Contract: pure functions, safe from any thread. :func:`chunk_message` raises ``ValueError`` on input
that is not a chunk of the schema; :func:`decode_chunk` and :class:`Parts` raise
:class:`~agent.errors.WireError` on inconsistent messages, before allocating for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate, chain, pairwise, repeat

from agent.errors import WireError
from agent.wire import quantizer as columns
from agent.wire import telemetry_pb2 as pb
from agent.wire.values import ChunkData, Schema

MAX_CHUNK_SAMPLES = 1_000_000  # a chunk claiming more is refused before anything is allocated
_SIGNED_END = 1 << 63


def tick_dods(ticks: Sequence[int]) -> list[int]:
    """Delta-of-delta of increasing ticks (the delta before the first taken as 1), trailing zeros dropped."""
    deltas = [after - before for before, after in pairwise(ticks)]
    if deltas and min(deltas) <= 0:
        at = next(index for index, delta in enumerate(deltas) if delta <= 0)
        raise ValueError(f"ticks must increase: {ticks[at]} then {ticks[at + 1]}")
    dods = [after - before for before, after in zip(chain((1,), deltas), deltas, strict=False)]
    return columns.trim(dods)


def ticks_from(first: int, count: int, dods: Sequence[int]) -> list[int]:
    if not dods:
        return list(range(first, first + count))
    deltas = accumulate(chain(dods, repeat(0, count - 1 - len(dods))), initial=1)
    next(deltas)  # the delta before the first sample
    return list(accumulate(deltas, initial=first)) if count else []


def fill_column(message: pb.Column, coded: columns.Coded, residuals: bool = True) -> None:
    message.presence_runs.extend(coded.runs)
    if residuals:
        message.residuals.extend(columns.trim(coded.residuals))
    message.floats.extend(coded.floats)
    if coded.exact:
        message.exact_gaps.extend(coded.exact_gaps)
        if max(coded.exact) >= _SIGNED_END:
            if min(coded.exact) < 0:
                raise ValueError("a column mixes negative values and values of 2^63 or more")
            message.exact_unsigned.extend(coded.exact)
        else:
            message.exact.extend(coded.exact)


def coded_of(message: pb.Column, residuals: list[int] | None = None) -> columns.Coded:
    if message.exact and message.exact_unsigned:
        raise WireError("a column has both signed and unsigned exact values")
    return columns.Coded(
        list(message.presence_runs),
        list(message.residuals) if residuals is None else residuals,
        list(message.floats),
        list(message.exact_gaps),
        list(message.exact_unsigned or message.exact),
    )


_PLANS: dict[bytes, tuple[int, ...]] = {}  # schema digest -> per signal: 1 hold, 2 linear (vectorized), 0


def _plan(schema: Schema) -> tuple[int, ...]:
    """Which signals may take the vectorized path: integer, lossless, not an angle, hold or linear."""
    plan = _PLANS.get(schema.digest)
    if plan is None:
        codes = [columns.coding(spec) for spec in schema.signals]
        plan = tuple(
            0
            if spec.is_float or spec.bound_raw or code.period
            else {"hold": 1, "linear": 2}.get(code.predictor, 0)
            for spec, code in zip(schema.signals, codes, strict=True)
        )
        if len(_PLANS) > 64:
            _PLANS.clear()
        _PLANS[schema.digest] = plan
    return plan


def chunk_message(schema: Schema, chunk: ChunkData) -> pb.Chunk:
    """One chunk coded (closed-loop) into its message; ``ValueError`` on inconsistent input."""
    count = len(chunk.ticks)
    if len(chunk.columns) != len(schema.signals):
        raise ValueError(f"chunk has {len(chunk.columns)} columns, schema {len(schema.signals)}")
    for spec, column in zip(schema.signals, chunk.columns, strict=True):
        if len(column) != count:
            raise ValueError(f"{spec.name}: {len(column)} values for {count} ticks")
    message = pb.Chunk(boot_id=chunk.boot_id, seq=chunk.seq, sample_count=count)
    message.first_tick = chunk.ticks[0] if chunk.ticks else 0
    message.tick_dod.extend(tick_dods(chunk.ticks))
    plan = _plan(schema) if count else (0,) * len(schema.signals)
    for careful in (False, True):
        flat: list[int] = []
        counts: list[int] = []
        extras: list[tuple[int, columns.Coded]] = []
        for index, (kind, spec, column) in enumerate(zip(plan, schema.signals, chunk.columns, strict=True)):
            residuals = columns.vectorized(column, kind == 2) if kind and not careful else None
            if residuals is not None:
                residuals = columns.trim(residuals)
            else:
                part = columns.encode(column, spec, careful=careful)
                residuals = columns.trim(part.residuals)
                if part.runs or part.floats or part.exact:
                    extras.append((index, part))
            flat += residuals
            counts.append(len(residuals))
        try:
            message.residuals.extend(flat)  # protobuf refuses a residual beyond 64 bits: ValueError
        except ValueError:
            if careful:
                raise
            del message.residuals[:]
            continue
        for index, part in extras:
            fill_column(message.extras.add(signal=index), part, residuals=False)
        message.residual_counts.extend(counts)
        return message
    raise AssertionError("unreachable")  # pragma: no cover


class Parts:
    """A stored chunk taken apart: its residuals per signal and the extras of the signals that have them."""

    __slots__ = ("count", "extras", "message", "offsets", "residuals")

    def __init__(self, schema: Schema, message: pb.Chunk) -> None:
        count, signals = message.sample_count, len(schema.signals)
        if count > MAX_CHUNK_SAMPLES:
            raise WireError(f"chunk {message.seq}: {count} samples is more than {MAX_CHUNK_SAMPLES}")
        if len(message.tick_dod) > max(count - 1, 0):
            raise WireError(f"chunk {message.seq}: {len(message.tick_dod)} tick deltas for {count} samples")
        if len(message.residual_counts) != signals:
            raise WireError(
                f"chunk {message.seq}: {len(message.residual_counts)} columns, schema has {signals}"
            )
        self.message, self.count = message, count
        self.residuals = list(message.residuals)
        self.offsets = list(accumulate(message.residual_counts, initial=0))
        if self.offsets[-1] != len(self.residuals):
            raise WireError(f"chunk {message.seq}: residual counts do not add up")
        self.extras = {extra.signal: extra for extra in message.extras}
        if len(self.extras) != len(message.extras) or any(index >= signals for index in self.extras):
            raise WireError(f"chunk {message.seq}: extras of unknown or repeated signals")

    def coded(self, index: int) -> columns.Coded:
        residuals = self.residuals[self.offsets[index] : self.offsets[index + 1]]
        extra = self.extras.get(index)
        if extra is None:
            return columns.Coded([], residuals, [], [], [])
        return coded_of(extra, residuals)


def decode_chunk(schema: Schema, message: pb.Chunk) -> ChunkData:
    parts = Parts(schema, message)
    ticks = ticks_from(message.first_tick, parts.count, message.tick_dod)
    values = [
        columns.decode(parts.coded(index), parts.count, spec) for index, spec in enumerate(schema.signals)
    ]
    return ChunkData(bytes(message.boot_id), message.seq, ticks, values)
