"""The column quantizer: one signal's values within one chunk, closed-loop, in integers.

What it holds: :func:`encode` turns a column (``None`` = absent) into a :class:`Coded` (presence runs,
quantized residuals, floats, values sent exactly); :func:`decode` is its inverse. :mod:`agent.wire.chunks`
lays a chunk's ``Coded`` columns into its message; :mod:`agent.wire.packed_columns` reuses
:func:`reconstruct`, :func:`to_values`, :func:`merge_exact` and the presence helpers for a whole batch.

Contract
- Pure functions over lists the caller owns (read, never kept or changed); no I/O, no shared state
  except an LRU cache of parsed codings: safe from any thread.
- The error bound: the encoder runs the decoder's own predictor on the reconstructions the decoder will
  compute, and quantizes each residual with step ``2*bound_raw+1``, so every reconstructed raw value is
  within ``bound_raw`` of the truth (equal when it is 0), modulo the period for an angle. A fresh
  predictor starts every column of every chunk, so a chunk decodes alone.
- Absent stays absent (presence runs); values the predictor must not see are sent *exactly*, aside,
  without updating it: an angle's value outside its canonical range (an "invalid" marker, say) and any
  value beyond ``±ESCAPE_LIMIT``. Float columns are sent bit for bit (NaN and infinities included).
- Limits: raw integers are CAN values of 64 bits at most (``ValueError`` otherwise); residuals of values
  within ``±ESCAPE_LIMIT`` fit ``sint64``.
- Lossless ``hold`` and ``linear`` columns present throughout take a vectorized path (:func:`fast_path`,
  :func:`vectorized`); the other predictors, and every lossy encode, go through the sample-by-sample
  loop. Both give the same integers (``tests/test_wire_quantizer.py`` checks it).
- Decoders raise :class:`agent.errors.WireError` on inconsistent input, before allocating for it.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from itertools import accumulate, chain, islice, repeat
from typing import NamedTuple

from agent.errors import WireError
from agent.wire import predictors
from agent.wire.values import RawValue, SignalSpec

ESCAPE_LIMIT = 1 << 60  # integer values beyond ±this are sent exactly, aside (when it matters)
_SIGNED_MIN, _UNSIGNED_END = -(1 << 63), 1 << 64


class Coded(NamedTuple):
    """One column of one chunk, as :mod:`agent.wire.chunks` serializes it (``pb.Column``)."""

    runs: list[int]  # alternating absent, present, ... run lengths; empty = present throughout
    residuals: list[int]  # quantized residuals of the predicted values (all of them: see ``trim``)
    floats: list[float]  # a float column's present values
    exact_gaps: list[int]  # positions of exactly-sent values among the present ones, as gaps
    exact: list[int]  # those values


def coding(spec: SignalSpec) -> predictors.Coding:
    """The column's predictor and angle; :class:`WireError` naming the signal when it does not parse."""
    try:
        return _parse(spec.predictor)
    except ValueError as error:
        raise WireError(f"{spec.name}: {error}") from error


@functools.lru_cache(maxsize=256)
def _parse(text: str) -> predictors.Coding:
    return predictors.Coding.parse(text)


def fast_path(spec: SignalSpec) -> str | None:
    """The predictor, ``"hold"`` or ``"linear"``, of a column that may take the vectorized path.

    ``None`` for a float, lossy or angle column, or another predictor; :class:`WireError` when the
    coding does not parse.
    """
    code = coding(spec)
    if spec.is_float or spec.bound_raw or code.period or code.predictor not in ("hold", "linear"):
        return None
    return code.predictor


def trim(residuals: list[int]) -> list[int]:
    """Drop trailing zeros (the decoder pads them back): a steady signal costs its first value only."""
    end = len(residuals)
    while end and not residuals[end - 1]:
        end -= 1
    return residuals if end == len(residuals) else residuals[:end]


# --- presence ------------------------------------------------------------------------------------------


def presence_runs(column: Sequence[RawValue | None]) -> tuple[list[int], list[RawValue]]:
    if None not in column:
        return [], list(column)  # type: ignore[arg-type]
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
    return runs, present


def expand_presence(runs: Sequence[int], count: int) -> list[bool]:
    if not runs:
        return [True] * count
    if sum(runs) != count:
        raise WireError(f"presence runs cover {sum(runs)} samples, chunk has {count}")
    mask: list[bool] = []
    absent = True
    for run in runs:
        mask += repeat(not absent, run)
        absent = not absent
    return mask


def with_presence(mask: Sequence[bool], values: list[RawValue]) -> list[RawValue | None]:
    if len(values) == len(mask):
        return list[RawValue | None](values)
    source = iter(values)
    return [next(source) if here else None for here in mask]


# --- integers ------------------------------------------------------------------------------------------


def _split_exact(values: Sequence[int], code: predictors.Coding) -> tuple[list[int], list[int], list[int]]:
    """(values for the predictor, gaps of the exact ones, the exact ones)."""
    low, high = (code.low, code.low + code.period - 1) if code.period else (-ESCAPE_LIMIT, ESCAPE_LIMIT)
    if not values or (low <= min(values) and max(values) <= high):
        return list(values), [], []
    kept: list[int] = []
    gaps: list[int] = []
    exact: list[int] = []
    last = -1
    for index, value in enumerate(values):
        if low <= value <= high:
            kept.append(value)
        else:
            if not _SIGNED_MIN <= value < _UNSIGNED_END:
                raise ValueError(f"{value} is not a raw CAN value (64 bits at most)")
            gaps.append(index - last - 1)
            exact.append(value)
            last = index
    return kept, gaps, exact


def _quantize(values: Sequence[int], spec: SignalSpec, code: predictors.Coding) -> list[int]:
    """Closed loop: residual indices whose reconstructions are within ``bound_raw`` of ``values``."""
    bound, period = spec.bound_raw, code.period
    if not period and not bound and code.predictor in ("hold", "linear"):
        return _differences(values, code.predictor == "linear")
    step, half = 2 * bound + 1, period // 2
    out: list[int] = []
    append = out.append
    if code.predictor == "hold":  # the loop below with HoldLast inlined: most lossy columns use it
        last = 0
        for value in values:
            delta = value - last
            if period:
                delta = (delta + half) % period - half
            quantum = (delta + bound) // step  # |delta - quantum*step| <= bound for every sample
            last += quantum * step
            append(quantum)
        return out
    predictor = predictors.make(code.predictor)
    for value in values:
        guess = predictor.predict()
        delta = value - guess
        if period:  # the short way round: the representative of value nearest the guess
            delta = (delta + half) % period - half
        quantum = (delta + bound) // step
        predictor.update(guess + quantum * step)
        append(quantum)
    return out


def to_values(steps: list[int], step: int, code: predictors.Coding) -> list[int]:
    """Reconstructions in raw units from reconstructions in quantizer steps (an angle's brought round)."""
    values = steps if step == 1 else [value * step for value in steps]
    if code.period:
        low, period = code.low, code.period
        values = [low + (value - low) % period for value in values]
    return values


def reconstruct(residuals: Sequence[int], count: int, spec: SignalSpec, code: predictors.Coding) -> list[int]:
    """The ``count`` reconstructions of one chunk's residuals (trailing zeros may be missing)."""
    padded = chain(residuals, repeat(0, count - len(residuals)))
    step = 2 * spec.bound_raw + 1
    if code.predictor == "hold":
        return to_values(list(accumulate(padded)), step, code)
    if code.predictor == "linear":
        steps = list(padded)
        return to_values(list(accumulate(chain(steps[:1], accumulate(steps[1:])))), step, code)
    predictor = predictors.make(code.predictor)
    values = []
    for quantum in padded:
        value = predictor.predict() + quantum * step
        predictor.update(value)
        values.append(value)
    return to_values(values, 1, code)


def merge_exact(predicted: list[int], gaps: Sequence[int], exact: Sequence[int]) -> list[int]:
    if not exact:
        return predicted
    out: list[int] = []
    source = iter(predicted)
    for gap, value in zip(gaps, exact, strict=True):
        out += (next(source) for _ in range(gap))
        out.append(value)
    out += source
    return out


# --- columns -------------------------------------------------------------------------------------------


def _differences(values: Sequence[int], linear: bool) -> list[int]:
    """Lossless residuals: first differences from 0 (``hold``); for ``linear``, second ones after two.

    ``TypeError`` when a value is ``None``.
    """
    deltas = list(map(operator.sub, values, chain((0,), values)))
    if linear:
        deltas[2:] = map(operator.sub, islice(deltas, 2, None), islice(deltas, 1, None))
    return deltas


def vectorized(column: Sequence[RawValue | None], linear: bool) -> list[int] | None:
    """Lossless ``hold`` (or ``linear``) residuals of a column present throughout; ``None`` if it is not.

    Does not look for values to send exactly: protobuf's range check tells the caller (see :func:`encode`).
    A steady column comes back trimmed already (its first value alone).
    """
    try:
        first = column[0]
        if first is not None and first == column[-1] and column.count(first) == len(column):
            return [first]  # type: ignore[list-item]
        return _differences(column, linear)  # type: ignore[arg-type]
    except (TypeError, IndexError):  # None somewhere, or no values at all
        return None


def encode(column: Sequence[RawValue | None], spec: SignalSpec, careful: bool = False) -> Coded:
    """Code one column of a chunk (``None`` = absent); ``residuals`` are untrimmed.

    The usual column (present throughout, lossless ``hold`` or ``linear``, not an angle) takes the
    :func:`vectorized` path, which does not look for values to send exactly: the caller finds out from
    protobuf's range check, and calls again with ``careful=True``, which does.
    """
    if spec.is_float:
        runs, present = presence_runs(column)
        return Coded(runs, [], [float(value) for value in present], [], [])
    fast = None if careful else fast_path(spec)
    if fast is not None:
        deltas = vectorized(column, fast == "linear")
        if deltas is not None:
            return Coded([], deltas, [], [], [])
    code = coding(spec)
    runs, present = presence_runs(column)
    if careful or code.period:
        kept, gaps, exact = _split_exact(present, code)  # type: ignore[arg-type]
    else:
        kept, gaps, exact = present, [], []  # type: ignore[assignment]
    return Coded(runs, _quantize(kept, spec, code), [], gaps, exact)


def decode_values(coded: Coded, present: int, spec: SignalSpec) -> list[RawValue]:
    """The ``present`` values of a column (``coded.runs`` is not read); ``residuals`` may be trimmed."""
    if spec.is_float:
        if coded.residuals or coded.exact or len(coded.floats) != present:
            raise WireError(f"{spec.name}: {len(coded.floats)} floats for {present} present samples")
        return list(coded.floats)
    if coded.floats or len(coded.exact_gaps) != len(coded.exact):
        raise WireError(f"{spec.name}: an integer column with floats or unpaired exact values")
    predicted = present - len(coded.exact)
    if predicted < sum(coded.exact_gaps) or len(coded.residuals) > predicted:
        raise WireError(f"{spec.name}: more residuals and exact values than {present} present samples")
    values = reconstruct(coded.residuals, predicted, spec, coding(spec))
    return list(merge_exact(values, coded.exact_gaps, coded.exact))


def decode(coded: Coded, count: int, spec: SignalSpec) -> list[RawValue | None]:
    """The inverse of :func:`encode` for a chunk of ``count`` samples."""
    mask = expand_presence(coded.runs, count)
    values = decode_values(coded, count if not coded.runs else sum(mask), spec)
    return with_presence(mask, values)
