"""What the agent's buffer stores: a sealed chunk's message (``pb.Chunk``) and the schema beside it.

A chunk is coded once, when it is sealed (:func:`encode_chunk`): its ticks as delta-of-delta, every
integer signal's residuals (:mod:`agent.wire.quantizer`, closed-loop) in one flat list with a count per
signal, and, only for the signals that need them, presence runs, floats and exactly-sent values
(``extras``); and its seal time (``ChunkData.sealed_at_ms``, wire version 2; 0, not coded, when it has
none, so an unstamped chunk is byte for byte what a version-1 agent stored). It decodes alone (:func:`decode_chunk`). :class:`Parts` takes a stored chunk apart for
:mod:`agent.wire.packed`, which lays the chunks of a batch out signal by signal. The schema travels as a
``pb.Schema``: stored once beside the chunks (:func:`schema_bytes`) and in every batch's header
(:func:`schema_message`).

Contract
- Pure functions; the caller owns every argument (read, never kept). The one shared state is a small
  cache of per-schema plans, keyed by the schema's digest, whose writes are atomic under the GIL: safe
  from any thread.
- :func:`encode_chunk` raises ``ValueError`` on input that is not a chunk of the schema (ticks that do
  not increase, columns of the wrong length, a value that is not a raw CAN value).
- :func:`decode_chunk`, :class:`Parts` and :func:`schema_from_message` raise
  :class:`~agent.errors.WireError` on inconsistent messages, before allocating for them; a chunk claiming
  more than :data:`MAX_CHUNK_SAMPLES` samples is refused, and so is a batch past its :class:`Limits`
  (samples in all, samples x signals), checked on the declared counts before any value is decoded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import accumulate, chain, pairwise, repeat

from google.protobuf.message import DecodeError

from agent.errors import WireError
from agent.wire import predictors, quantizer
from agent.wire import telemetry_pb2 as pb
from agent.wire.values import ChunkData, Schema, SignalSpec

MAX_CHUNK_SAMPLES = 1_000_000  # a chunk claiming more is refused before anything is allocated
_SIGNED_END = 1 << 63


@dataclass(frozen=True)
class Limits:
    """What one batch may declare, checked before its values are allocated (the receiver configures it).

    The defaults hold any batch an agent with default settings sends, with headroom: a drain batch is at
    most ``upload.max_batch_bytes`` (256 KiB) of stored chunks and 10,000 chunks, a chunk 50 samples at
    50 Hz with 1-s commits; so at most 500,000 samples, and, since a chunk whose every signal is constant
    still costs about 25 bytes plus one per signal, at most 50 x 262,144 = 13.1 M values.
    """

    max_samples: int = 1_000_000  # samples (ticks) in all the batch's chunks
    max_values: int = 16_000_000  # samples x signals

    def check(self, counts: Iterable[int], signals: int, what: str) -> None:
        """Refuse (``WireError``) chunks of ``counts`` samples of ``signals`` signals past the limits."""
        samples = biggest = 0
        for count in counts:
            samples, biggest = samples + count, max(biggest, count)
        if biggest > MAX_CHUNK_SAMPLES:
            raise WireError(f"{what}: a chunk of {biggest} samples is more than {MAX_CHUNK_SAMPLES}")
        if samples > self.max_samples:
            raise WireError(f"{what}: {samples} samples is more than the limit of {self.max_samples}")
        if samples * signals > self.max_values:
            raise WireError(
                f"{what}: {samples} samples x {signals} signals is more than the limit of {self.max_values}"
            )


DEFAULT_LIMITS = Limits()


# --- ticks and columns ---------------------------------------------------------------------------------


def tick_dods(ticks: Sequence[int]) -> list[int]:
    """Delta-of-delta of increasing ticks (the delta before the first taken as 1), trailing zeros dropped."""
    deltas = [after - before for before, after in pairwise(ticks)]
    if deltas and min(deltas) <= 0:
        at = next(index for index, delta in enumerate(deltas) if delta <= 0)
        raise ValueError(f"ticks must increase: {ticks[at]} then {ticks[at + 1]}")
    dods = [after - before for before, after in zip(chain((1,), deltas), deltas, strict=False)]
    return quantizer.trim(dods)


def ticks_from(first: int, count: int, dods: Sequence[int]) -> list[int]:
    """The inverse of :func:`tick_dods`: ``count`` ticks from the first one."""
    if not dods:
        return list(range(first, first + count))
    deltas = accumulate(chain(dods, repeat(0, count - 1 - len(dods))), initial=1)
    next(deltas)  # the delta before the first sample
    return list(accumulate(deltas, initial=first)) if count else []


def fill_column(message: pb.Column, coded: quantizer.Coded, residuals: bool = True) -> None:
    """Write a coded column into ``message`` (its residuals trimmed, unless ``residuals`` is false)."""
    message.presence_runs.extend(coded.runs)
    if residuals:
        message.residuals.extend(quantizer.trim(coded.residuals))
    message.floats.extend(coded.floats)
    if coded.exact:
        message.exact_gaps.extend(coded.exact_gaps)
        if max(coded.exact) >= _SIGNED_END:
            if min(coded.exact) < 0:
                raise ValueError("a column mixes negative values and values of 2^63 or more")
            message.exact_unsigned.extend(coded.exact)
        else:
            message.exact.extend(coded.exact)


def coded_of(message: pb.Column, residuals: list[int] | None = None) -> quantizer.Coded:
    """The inverse of :func:`fill_column` (``residuals``, when given, stand for the message's own)."""
    if message.exact and message.exact_unsigned:
        raise WireError("a column has both signed and unsigned exact values")
    return quantizer.Coded(
        list(message.presence_runs),
        list(message.residuals) if residuals is None else residuals,
        list(message.floats),
        list(message.exact_gaps),
        list(message.exact_unsigned or message.exact),
    )


# --- chunks --------------------------------------------------------------------------------------------

_PLANS: dict[bytes, tuple[str | None, ...]] = {}  # schema digest -> quantizer.fast_path of each signal


def _plan(schema: Schema) -> tuple[str | None, ...]:
    plan = _PLANS.get(schema.digest)
    if plan is None:
        plan = tuple(quantizer.fast_path(spec) for spec in schema.signals)
        if len(_PLANS) > 64:
            _PLANS.clear()
        _PLANS[schema.digest] = plan
    return plan


def chunk_message(schema: Schema, chunk: ChunkData) -> pb.Chunk:
    """One chunk coded (closed-loop) into its message; ``ValueError`` on inconsistent input.

    The first pass takes the vectorized path where it may; when protobuf refuses a residual beyond 64
    bits, the second (``careful``) pass sends such values exactly instead.
    """
    count = len(chunk.ticks)
    if len(chunk.columns) != len(schema.signals):
        raise ValueError(f"chunk has {len(chunk.columns)} columns, schema {len(schema.signals)}")
    for spec, column in zip(schema.signals, chunk.columns, strict=True):
        if len(column) != count:
            raise ValueError(f"{spec.name}: {len(column)} values for {count} ticks")
    if not 0 <= chunk.sealed_at_ms < 1 << 64:
        raise ValueError(f"seal time {chunk.sealed_at_ms} ms is not a uint64")
    message = pb.Chunk(
        boot_id=chunk.boot_id, seq=chunk.seq, sample_count=count, sealed_at_ms=chunk.sealed_at_ms
    )
    message.first_tick = chunk.ticks[0] if chunk.ticks else 0
    message.tick_dod.extend(tick_dods(chunk.ticks))
    plan = _plan(schema) if count else (None,) * len(schema.signals)
    for careful in (False, True):
        flat: list[int] = []
        counts: list[int] = []
        extras: list[tuple[int, quantizer.Coded]] = []
        for index, (fast, spec, column) in enumerate(zip(plan, schema.signals, chunk.columns, strict=True)):
            residuals = quantizer.vectorized(column, fast == "linear") if fast and not careful else None
            if residuals is not None:
                residuals = quantizer.trim(residuals)
            else:
                part = quantizer.encode(column, spec, careful=careful)
                residuals = quantizer.trim(part.residuals)
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


def encode_chunk(schema: Schema, chunk: ChunkData) -> bytes:
    """Serialize one chunk (a ``Chunk`` message); called once, when the chunk is sealed."""
    return chunk_message(schema, chunk).SerializeToString()


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
        if signals and max(message.residual_counts) > count:
            raise WireError(f"chunk {message.seq}: more residuals in a column than its {count} samples")
        self.extras = {extra.signal: extra for extra in message.extras}
        if len(self.extras) != len(message.extras) or any(index >= signals for index in self.extras):
            raise WireError(f"chunk {message.seq}: extras of unknown or repeated signals")

    def residuals_of(self, index: int) -> list[int]:
        """Signal ``index``'s residuals (trailing zeros omitted, as stored)."""
        return self.residuals[self.offsets[index] : self.offsets[index + 1]]

    def coded(self, index: int) -> quantizer.Coded:
        extra = self.extras.get(index)
        if extra is None:
            return quantizer.Coded([], self.residuals_of(index), [], [], [])
        return coded_of(extra, self.residuals_of(index))


def decode_chunk(schema: Schema, message: pb.Chunk) -> ChunkData:
    """The inverse of :func:`chunk_message`."""
    parts = Parts(schema, message)
    ticks = ticks_from(message.first_tick, parts.count, message.tick_dod)
    values = [
        quantizer.decode(parts.coded(index), parts.count, spec) for index, spec in enumerate(schema.signals)
    ]
    return ChunkData(bytes(message.boot_id), message.seq, ticks, values, message.sealed_at_ms)


# --- the schema ----------------------------------------------------------------------------------------


def schema_message(schema: Schema) -> pb.Schema:
    message = pb.Schema(rate_num=schema.rate.numerator, rate_den=schema.rate.denominator)
    for spec in schema.signals:
        code = quantizer.coding(spec)
        message.signals.add(
            name=spec.name,
            scale=spec.scale,
            offset=spec.offset,
            kind=pb.VALUE_KIND_FLOAT if spec.is_float else pb.VALUE_KIND_INTEGER,
            integer_scaled=spec.integer_scaled,
            bound_raw=spec.bound_raw,
            predictor=predictors.WIRE_PREDICTORS[code.predictor],
            angle_period=code.period,
            angle_low=code.low,
        )
    return message


def schema_from_message(message: pb.Schema) -> Schema:
    if message.rate_num == 0 or message.rate_den == 0:
        raise WireError(f"schema has an invalid rate {message.rate_num}/{message.rate_den}")
    specs = []
    for signal in message.signals:
        if signal.predictor not in predictors.PREDICTOR_NAMES:
            raise WireError(f"{signal.name}: unknown predictor {signal.predictor}")
        if not (math.isfinite(signal.scale) and math.isfinite(signal.offset)):
            raise WireError(f"{signal.name}: scale and offset must be finite")
        if signal.angle_period == 1:
            raise WireError(f"{signal.name}: an angle period of 1 raw unit")
        name = predictors.PREDICTOR_NAMES[signal.predictor]
        code = predictors.Coding(name, signal.angle_period, signal.angle_low)
        specs.append(
            SignalSpec(
                name=signal.name,
                scale=signal.scale,
                offset=signal.offset,
                is_float=signal.kind == pb.VALUE_KIND_FLOAT,
                integer_scaled=signal.integer_scaled,
                bound_raw=signal.bound_raw,
                predictor=str(code),
            )
        )
    return Schema(Fraction(message.rate_num, message.rate_den), tuple(specs))


def schema_bytes(schema: Schema) -> bytes:
    """A schema as stored beside the chunks in the agent's buffer."""
    return schema_message(schema).SerializeToString()


def schema_from_bytes(data: bytes) -> Schema:
    try:
        return schema_from_message(pb.Schema.FromString(data))
    except DecodeError as error:
        raise WireError(f"schema does not parse: {error}") from error
