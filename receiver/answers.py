"""What the HTTP API answers, read from the store: JSON-ready dicts, times in seconds on the vehicle's clock.

Contract: plain functions of a :class:`~receiver.store.Store` (read-only, opened by the caller on the
caller's thread: the API's worker threads, one store each) and, for the fleet, the statuses that
:class:`receiver.fleet.FleetWatch` holds. Every call blocks on the database. Unknown vins and signals raise
``NotFoundError`` (with a "did you mean"), which the API turns into a 404; nothing here retries or caches.

- ``latest``: per signal, the value at the latest instant holding a numeric value, from the 60 s rollups'
  ``last_value`` (one indexed row per signal, whatever the store's size), i.e. the last row of ``export``
  for that signal (NaN and absent values skipped).
- ``history``: :func:`receiver.history.query`, buckets as ``edge-receiver history`` prints them: a gap is
  a missing bucket, never an interpolated value.
- ``aggregates``: the tumbling 5 or 15 minute windows of the rollups, as stored.
- ``values_since``: the rows stored after an instant, for the live feed, at most ``most`` per signal
  (evenly thinned: the page draws seconds, a chart cannot show 50 Hz of a minute anyway).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from receiver import history, latency, metrics
from receiver.fleet import VehicleStatus
from receiver.store import Store
from receiver.windows import BASE, NS

WINDOWS = {"5m": 300, "15m": 900}
LIVE_WINDOW_S = 60  # the live feed sends at most this much of a vehicle's newest data at once


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def stored_until(store: Store, vin: str) -> float | None:
    """The instant of the vin's last stored tick (s), or ``None`` when it has none."""
    rows = store._query("SELECT max(last_tick) FROM chunks WHERE vin = ?", (vin,))
    if not rows or rows[0][0] is None:
        return None
    return float(Fraction(int(rows[0][0])) / store.rate(vin))


def vehicles(
    store: Store, statuses: Mapping[str, VehicleStatus], only: set[str] | None = None
) -> list[dict[str, Any]]:
    """Every vehicle the store or the broker knows (of ``only``, when given), sorted by vin."""
    stored = set(store.vins())
    latencies = latency.read(store.db)
    totals = metrics.read(store.db)
    out = []
    known = stored | set(statuses) if only is None else (stored | set(statuses)) & only
    for vin in sorted(known):
        status = statuses.get(vin)
        live = latencies.get(vin, {}).get("live")
        p95 = live.percentile(95) if live is not None else None
        per_vin = totals.get(vin)
        out.append(
            {
                "vin": vin,
                "online": None if status is None else status.online,
                "state": None if status is None else status.state,
                "last_seen": None if status is None else status.last_seen,
                "backlog_chunks": None if status is None else status.backlog_chunks,
                "backlog_samples": None if status is None else status.backlog_samples,
                "drain_eta_s": None if status is None else status.drain_eta_s,
                "dropped_chunks": None if status is None else status.dropped_chunks,
                "latency_p95_s": _number(p95),
                "bytes_per_sample": None if per_vin is None else per_vin.bytes_per_sample,
                "latest": {} if status is None else status.latest,
                "stored_until": stored_until(store, vin) if vin in stored else None,
            }
        )
    return out


def latest(store: Store, vin: str) -> dict[str, Any]:
    """The latest stored numeric value of each of the vin's signals, with its instant."""
    store.rate(vin)  # raises NotFoundError for an unknown vin (did you mean)
    names = store.signals(vin)
    ids = history.signal_ids(store, vin, names)
    signals: dict[str, Any] = {}
    sql = (
        "SELECT bucket_start, last_at, last_value FROM rollups WHERE signal_id = ? AND width = ? "
        "ORDER BY bucket_start DESC LIMIT 1"
    )
    for name, signal_id in zip(names, ids, strict=True):
        for start, at, value in store._query(sql, (signal_id, BASE)):
            signals[name] = {"value": _number(value), "at": float(start + Fraction(at, NS))}
    return {"vin": vin, "signals": signals}


def history_of(
    store: Store,
    vin: str,
    names: Sequence[str] | None,
    start: Fraction | None,
    end: Fraction | None,
    points: int,
) -> dict[str, Any]:
    """Buckets of count/min/mean/max, at most ``points`` per signal (:func:`receiver.history.query`)."""
    answer = history.query(store, vin, names, start, end, points)
    signals: dict[str, list[dict[str, Any]]] = {name: [] for name in answer.names}
    for begin, place, n, lo, total, hi in answer.buckets:
        mean = None if total is None else _number(total / n)
        signals[answer.names[place]].append(
            {"start": float(begin), "count": n, "min": _number(lo), "mean": mean, "max": _number(hi)}
        )
    return {
        "vin": vin,
        "width": None if answer.plan is None else float(answer.plan.width),
        "source": None if answer.plan is None else ("raw" if answer.plan.level is None else "rollups"),
        "from": None if answer.start is None else float(answer.start),
        "to": None if answer.end is None else float(answer.end),
        "signals": signals,
    }


def aggregates(
    store: Store, vin: str, window: str, start: Fraction | None, end: Fraction | None
) -> dict[str, Any]:
    """The vin's tumbling windows of ``window`` (5m or 15m) over [start, end] (default: everything)."""
    width = WINDOWS[window]
    store.rate(vin)  # raises NotFoundError for an unknown vin
    names = store.signals(vin)
    ids = history.signal_ids(store, vin, names)
    history.ready(store, vin)
    low = history.clamp(-(2**62)) if start is None else math.floor(start / width) * width
    high = history.clamp(2**62) if end is None else math.floor(end / width) * width
    found = history.from_rollups(
        store, ids, history.Plan(Fraction(width), width), Fraction(low), Fraction(high)
    )
    windows: dict[str, list[dict[str, Any]]] = {}
    for begin, place, n, lo, total, hi in found:
        windows.setdefault(names[place], []).append(
            {
                "start": float(begin),
                "count": n,
                "min": _number(lo),
                "mean": None if total is None else _number(total / n),
                "max": _number(hi),
            }
        )
    return {"vin": vin, "window": window, "width": width, "signals": windows}


def values_since(
    store: Store, vin: str, after: float | None, most: int = 50
) -> tuple[float | None, dict[str, Any]]:
    """The values stored after instant ``after`` (``None``: the last ``most`` ticks), per signal as
    ``[t, value]`` pairs, thinned to ``most``; and the instant of the last tick read."""
    rate, names = store.rate(vin), store.signals(vin)
    until = stored_until(store, vin)
    if until is None or (after is not None and until <= after):
        return after, {}
    newest = math.floor(Fraction(until) * rate)
    first = newest - most if after is None else math.floor(Fraction(after) * rate) + 1
    first = max(
        first, math.floor(newest - LIVE_WINDOW_S * rate)
    )  # a drained backlog: its history is a query away
    rows = list(store.rows(vin, names, first))
    step = max(1, -(-len(rows) // most))
    signals: dict[str, list[list[float | None]]] = {name: [] for name in names}
    for tick, values in rows[::step]:
        t = float(Fraction(tick) / rate)
        for name, value in zip(names, values, strict=True):
            if value is not None:
                signals[name].append([t, _number(value)])
    last = float(Fraction(rows[-1][0]) / rate) if rows else after
    return last, {name: points for name, points in signals.items() if points}
