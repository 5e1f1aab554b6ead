"""What ``edge-receiver history`` reads: a vehicle's signals as buckets of count, min, mean and max, at
the finest resolution that gives at most N buckets per signal over a time range.

Contract
- Buckets are aligned windows ``[k w, (k + 1) w)`` of whole ``k`` on the vehicle's clock (seconds, as
  ``export`` prints them): a bucket starts at a multiple of its width ``w`` and holds every numeric value
  of its window, so the first and the last bucket of a range may reach outside it. A bucket without a
  numeric value is not printed: a gap stays a gap, never interpolated.
- Resolution (:func:`choose`): the first of these widths that gives at most ``points`` buckets over
  [from, to]: (1) :data:`FINE` (1 ms to 30 s, each divides 60 s), read from the raw chunks
  (``Store.rows``), when the range holds at most :data:`RAW_VALUES` values of the asked signals on the
  vehicle's grid (else a finer width is skipped for its cost); (2) the rollups' 60, 300 and 900 s
  (:mod:`receiver.rollups`); (3) the least multiple of 900 s that fits, the 900 s rollups merged on the
  fly by the database (``GROUP BY``). So no signal ever gets more than ``points`` buckets.
- Default range: from the first to the last instant of a numeric value of the asked signals (their
  60 s rollups). Answers that need the rollups are refused (:class:`~agent.errors.StorageError`) while
  :func:`receiver.rollups.pending` says the vin's are still being built.
- Values: raw buckets keep the signal's types (ints stay ints); rollups are doubles, printed as ints for
  an integer signal (its declared coding) when they are whole. ``mean`` is ``sum / count``.
- Reads only, through the store (:class:`~receiver.store.Store`, SQLite or PostgreSQL); the caller's
  thread; memory bounded by the buckets printed (the raw path streams the rows).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

from agent.errors import ConfigError, StorageError
from agent.wire.values import PhysicalValue, format_value
from receiver import rollups
from receiver.column import INT64_RANGE
from receiver.store import Store
from receiver.windows import BASE, NS, WIDTHS

# The raw widths (1 ms to 30 s, in ms): each divides 60 s, so their buckets meet the rollups' windows.
FINE = tuple(
    Fraction(ms, 1000)
    for ms in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 15_000, 20_000, 30_000)
)
RAW_VALUES = 500_000  # the most raw values a query reads (about 0.15 s on SQLite)
HEADER = "bucket_start,signal,count,min,mean,max\n"
Bucket = tuple[Fraction, int, int, Any, Any, Any]  # start, place of the signal, count, min, sum, max


@dataclass(frozen=True)
class Plan:
    """A resolution: buckets of ``width`` seconds, from the rollups of width ``level`` or, when it is
    ``None``, from the raw chunks."""

    width: Fraction
    level: int | None


@dataclass(frozen=True)
class Answer:
    """What :func:`query` found: the signals asked, whether each has whole values, the plan, the range
    (``None`` when no asked signal has a numeric value) and the buckets, by start then by signal."""

    names: list[str]
    integer: list[bool]
    plan: Plan | None
    start: Fraction | None
    end: Fraction | None
    buckets: list[Bucket]


def query(
    store: Store,
    vin: str,
    names: Sequence[str] | None,
    start: Fraction | None,
    end: Fraction | None,
    points: int,
) -> Answer:
    """The buckets of ``names`` (default: every signal of the vin, sorted) over [start, end] (default: the
    signals' whole range), at most ``points`` per signal: what ``history`` prints and the API returns.
    An unknown vin or signal raises ``NotFoundError`` (did you mean); ``start`` after ``end``
    :class:`ConfigError`; rollups still being built :class:`StorageError`."""
    grid = store.rate(vin)  # an unknown vin: one line, with a "did you mean"
    names = store.signals(vin) if names is None else list(dict.fromkeys(names))
    ids = signal_ids(store, vin, names)
    specs = store.declared(vin)
    integer = [name in specs and specs[name].integer_scaled and not specs[name].is_float for name in names]
    if start is None or end is None:
        ready(store, vin)
        whole = span(store, ids)
        if whole is None:  # no numeric value at all: no bucket
            return Answer(names, integer, None, start, end, [])
        start, end = start if start is not None else whole[0], end if end is not None else whole[1]
        if start > end:
            raise ConfigError(f"--from {seconds(start)} is after --to {seconds(end)}")
    plan = choose(start, end, points, (end - start) * grid * len(names))
    if plan.level is None:
        found = from_raw(store, vin, names, plan.width, start, end)
    else:
        ready(store, vin)
        found = from_rollups(store, ids, plan, start, end)
    return Answer(names, integer, plan, start, end, found)


def buckets(start: Fraction, end: Fraction, width: Fraction) -> int:
    """How many aligned buckets of ``width`` cover [start, end]."""
    return math.floor(end / width) - math.floor(start / width) + 1


def choose(start: Fraction, end: Fraction, points: int, raw_values: Fraction) -> Plan:
    """The finest resolution with at most ``points`` buckets over [start, end]; ``raw_values``: how many
    values the raw chunks hold there."""
    if raw_values <= RAW_VALUES:
        for width in FINE:
            if buckets(start, end, width) <= points:
                return Plan(width, None)
    for level in WIDTHS:
        if buckets(start, end, Fraction(level)) <= points:
            return Plan(Fraction(level), level)
    low, high = math.floor(start), math.floor(end)  # floor(t / w) == floor(floor(t) / w) for a whole w
    if points == 1 and low < 0 <= high:
        raise ConfigError("--points 1: the range holds 0 s, where buckets of every width meet; ask for 2")
    top = WIDTHS[-1]
    factor = max(2, -(-(high - low) // (top * points)))  # a narrower width gives too many buckets
    while high // (top * factor) - low // (top * factor) + 1 > points:
        factor += 1
    return Plan(Fraction(top * factor), top)


def signal_ids(store: Store, vin: str, names: Sequence[str]) -> list[int]:
    """The ids of the vin's signals ``names``; an unknown one raises ``NotFoundError`` (did you mean)."""
    known = dict(store._query("SELECT name, id FROM signals WHERE vin = ?", (vin,)))
    for name in names:
        if name not in known:
            store.rows(vin, [name])  # raises NotFoundError with the store's "did you mean"
    return [int(known[name]) for name in names]


def span(store: Store, ids: Sequence[int]) -> tuple[Fraction, Fraction] | None:
    """The first and the last instant of a numeric value of these signals, from their rollups."""
    ends = []
    for signal_id in ids:
        for order, at in (("", "first_at"), (" DESC", "last_at")):
            sql = (
                f"SELECT bucket_start, {at} FROM rollups WHERE signal_id = ? AND width = ? "
                f"ORDER BY bucket_start{order} LIMIT 1"
            )
            ends += [start + Fraction(offset, NS) for start, offset in store._query(sql, (signal_id, BASE))]
    return (min(ends), max(ends)) if ends else None


def ready(store: Store, vin: str) -> None:
    """Raise :class:`StorageError` when the vin's rollups are not complete yet."""
    why = rollups.pending(store.db, vin)
    if why is not None:
        raise StorageError(f"{store.path}: {why}")


def from_rollups(
    store: Store, ids: Sequence[int], plan: Plan, start: Fraction, end: Fraction
) -> list[Bucket]:
    """The buckets of ``plan`` (from the rollups) over [start, end], by start then by signal."""
    assert plan.level is not None
    width, level = int(plan.width), plan.level
    low, high = math.floor(start / width) * width, math.floor(end / width) * width + width - level
    marks, place = ", ".join("?" * len(ids)), {signal_id: index for index, signal_id in enumerate(ids)}
    where = f"FROM rollups WHERE signal_id IN ({marks}) AND width = ? AND bucket_start BETWEEN ? AND ?"
    if width == level:
        sql = f"SELECT signal_id, bucket_start, n, lo, total, hi {where}"
    else:
        begin = f"bucket_start - ((bucket_start % {width}) + {width}) % {width}"  # floored on both
        total = "CASE WHEN count(total) = count(*) THEN sum(total) END"
        sql = f"SELECT signal_id, {begin}, CAST(sum(n) AS BIGINT), min(lo), {total}, max(hi) {where} GROUP BY signal_id, 2"
    rows = store._query(sql, (*ids, level, clamp(low), clamp(high)))
    found = [
        (Fraction(begin), place[signal_id], n, lo, total, hi) for signal_id, begin, n, lo, total, hi in rows
    ]
    return sorted(found, key=lambda bucket: bucket[:2])


def from_raw(
    store: Store, vin: str, names: Sequence[str], width: Fraction, start: Fraction, end: Fraction
) -> list[Bucket]:
    """The buckets of ``width`` over [start, end] from the raw chunks, by start then by signal."""
    grid = store.rate(vin)
    first, last = math.floor(start / width), math.floor(end / width)
    low, high = math.ceil(first * width * grid), math.ceil((last + 1) * width * grid) - 1
    per = width * grid  # ticks per bucket: tick t is in bucket floor(t / per)
    up, down = per.denominator, per.numerator
    found: list[Bucket] = []
    current: int | None = None  # rows come in tick order: one bucket at a time
    held: list[list[Any]] = [[] for _ in names]
    for tick, values in store.rows(vin, names, clamp(low), clamp(high)):
        bucket = tick * up // down
        if bucket != current:
            if current is not None:
                found += _bucket(current * width, held)
            current, held = bucket, [[] for _ in names]
        for column, value in zip(held, values):  # noqa: B905 - one value per name
            if value is not None:
                column.append(value)
    if current is not None:
        found += _bucket(current * width, held)
    return found


def _bucket(start: Fraction, held: list[list[Any]]) -> Iterator[Bucket]:
    for place, values in enumerate(held):
        total = sum(values)
        if total != total:  # a NaN (or inf - inf)
            values = [value for value in values if value == value]
            total = sum(values)
        if values:
            yield start, place, len(values), min(values), total, max(values)


def clamp(number: int) -> int:
    """A bound within int64 (past it, it selects the same rows)."""
    return min(max(number, INT64_RANGE[0]), INT64_RANGE[1])


def seconds(instant: Fraction) -> str:
    """An instant as ``export`` prints a tick's: exact, 6 decimals."""
    with localcontext(prec=60):  # exact for any instant of an int64 tick
        return str((Decimal(instant.numerator) / Decimal(instant.denominator)).quantize(Decimal("0.000001")))


def lines(names: Sequence[str], integer: Sequence[bool], found: Iterable[Bucket]) -> Iterator[str]:
    """The CSV: the header, then a line per bucket; ``integer[i]``: whether ``names[i]`` has whole values."""
    yield HEADER
    for start, place, n, lo, total, hi in found:
        mean = None if total is None or total != total else total / n
        low, high = (_whole(v) for v in (lo, hi)) if integer[place] else (lo, hi)
        yield f"{seconds(start)},{names[place]},{n},{format_value(low)},{format_value(mean)},{format_value(high)}\n"


def _whole(value: PhysicalValue) -> PhysicalValue:
    return int(value) if isinstance(value, float) and value.is_integer() else value
