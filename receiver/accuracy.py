"""The largest error per signal: a receiver export beside ``edge-agent sample`` of the same log.

In replay the truth is known: ``edge-agent sample LOG`` prints every tick's values as the agent sampled
them, and ``edge-receiver export`` prints what the receiver reconstructed, in the same CSV format
(``timestamp,<names>``, one line per tick, ascending). :func:`compare` reads both and reports, for every
signal of the export, the largest ``|received - truth|`` beside its bound ε (modulo the turn for a signal
configured as an angle), where it happened, and any tick or value that is in one and not the other.

Bounds are what the agent declared on the wire: :func:`declared_bounds` turns the coding the store keeps
for each signal (:meth:`receiver.store.Store.declared`: its bound and an angle's period, in raw units) into
the signal's unit, so the receiver needs nothing of the agent's configuration; ``--bound`` and ``--angle``
of ``edge-receiver accuracy`` (:mod:`receiver.commands.accuracy`) override them.

Contract: pure functions over iterables of lines; nothing is held but the current line of each side, so
a day of data compares in constant memory. Any thread; the caller owns the lines and closes their files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from agent.errors import ConfigError, WireError
from agent.wire.predictors import Coding
from agent.wire.values import SignalSpec

TOLERANCE = 1e-9  # relative slack for float rounding: 0.1 * 5 is 0.5000000000000001 in binary


@dataclass
class SignalAccuracy:
    """One signal: the largest error seen (in its unit) beside its bound."""

    name: str
    bound: float = 0.0  # ε; 0 = lossless
    turn: float = 0.0  # an angle's whole turn; 0 = not an angle
    compared: int = 0  # ticks where both sides hold a value
    max_error: float = 0.0
    at: str = ""  # timestamp of the largest error (the first one)
    presence_mismatches: int = 0  # ticks where one side has a value and the other not

    @property
    def within(self) -> bool:
        slack = TOLERANCE * max(1.0, self.bound, self.turn)
        return self.presence_mismatches == 0 and self.max_error <= self.bound + slack


@dataclass
class AccuracyReport:
    signals: list[SignalAccuracy] = field(default_factory=list)
    ticks: int = 0  # ticks in both
    missing: int = 0  # ticks of the truth that the export lacks
    extra: int = 0  # ticks of the export that the truth lacks
    unknown: list[str] = field(default_factory=list)  # signals of the export that the truth lacks

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.unknown) and all(s.within for s in self.signals)


def _rows(lines: Iterable[str], what: str) -> tuple[list[str], Iterator[tuple[Decimal, list[str]]]]:
    source = iter(lines)
    header = next(source, "").rstrip("\r\n").split(",")
    if header[0] != "timestamp":
        raise ConfigError(f"{what}: not a sample/export CSV (its header does not start with 'timestamp')")

    def rows() -> Iterator[tuple[Decimal, list[str]]]:
        for number, line in enumerate(source, start=2):
            cells = line.rstrip("\r\n").split(",")
            if len(cells) != len(header):
                raise ConfigError(f"{what}:{number}: {len(cells)} cells, the header has {len(header)}")
            try:
                yield Decimal(cells[0]), cells
            except InvalidOperation as error:
                raise ConfigError(f"{what}:{number}: timestamp {cells[0]!r} is not a number") from error

    return header[1:], rows()


def _error(truth: float, got: float, turn: float) -> float:
    if math.isnan(truth) or math.isnan(got):
        return 0.0 if math.isnan(truth) and math.isnan(got) else math.inf
    if math.isinf(truth) or math.isinf(got):
        return 0.0 if truth == got else math.inf
    difference = abs(got - truth)
    if turn:
        difference %= turn
        difference = min(difference, turn - difference)
    return difference


def compare(
    truth: Iterable[str],
    received: Iterable[str],
    bounds: Mapping[str, float] | None = None,
    angles: Mapping[str, float] | None = None,
) -> AccuracyReport:
    """Compare an export (``received``) with ``edge-agent sample`` output (``truth``), line by line.

    ``bounds`` maps ``MESSAGE.SIGNAL`` to ε (missing = 0, lossless); ``angles`` to a whole turn.
    """
    bounds, angles = bounds or {}, angles or {}
    truth_names, truth_rows = _rows(truth, "truth")
    got_names, got_rows = _rows(received, "export")
    index = {name: column for column, name in enumerate(truth_names, start=1)}
    report = AccuracyReport(unknown=[name for name in got_names if name not in index])
    pairs = [
        (SignalAccuracy(name, bounds.get(name, 0.0), angles.get(name, 0.0)), index[name], column)
        for column, name in enumerate(got_names, start=1)
        if name in index
    ]
    report.signals = [accuracy for accuracy, _, _ in pairs]
    want, have = next(truth_rows, None), next(got_rows, None)
    while want is not None or have is not None:
        if have is None or (want is not None and want[0] < have[0]):
            report.missing += 1
            want = next(truth_rows, None)
            continue
        if want is None or have[0] < want[0]:
            report.extra += 1
            have = next(got_rows, None)
            continue
        report.ticks += 1
        for accuracy, truth_column, got_column in pairs:
            expected, got = want[1][truth_column], have[1][got_column]
            if not expected or not got:
                accuracy.presence_mismatches += bool(expected) != bool(got)
                continue
            accuracy.compared += 1
            error = 0.0 if expected == got else _error(float(expected), float(got), accuracy.turn)
            if error > accuracy.max_error:
                accuracy.max_error, accuracy.at = error, want[1][0]
        want, have = next(truth_rows, None), next(got_rows, None)
    return report


def format_report(report: AccuracyReport) -> str:
    """A table: signal, ε, largest error, where, and a verdict; then the tick counts."""
    width = max([len("signal"), *(len(s.name) for s in report.signals)])
    lines = [f"{'signal':<{width}} {'bound ε':>10} {'max |error|':>12} {'values':>8}  at / verdict"]
    for s in report.signals:
        kind = f" (angle of {s.turn:g})" if s.turn else ""
        verdict = "ok" if s.within else "BEYOND ITS BOUND"
        if s.presence_mismatches:
            verdict = f"{s.presence_mismatches} presence mismatches"
        lines.append(
            f"{s.name:<{width}} {s.bound:>10.6g} {s.max_error:>12.6g} {s.compared:>8}  "
            f"{s.at or '-'} {verdict}{kind}"
        )
    lines.append(
        f"{report.ticks} ticks compared, {report.missing} missing from the export, {report.extra} only in "
        f"the export" + (f"; signals not in the truth: {', '.join(report.unknown)}" if report.unknown else "")
    )
    return "\n".join(lines) + "\n"


def declared_bounds(specs: Iterable[SignalSpec]) -> tuple[dict[str, float], dict[str, float]]:
    """(bounds, angles) in each signal's unit as its agent coded it: ``bound_raw * |scale|`` and, for an
    angle, its period times ``|scale|``; a lossless signal (or a float one) is in neither."""
    bounds, angles = {}, {}
    for spec in specs:
        try:
            period = Coding.parse(spec.predictor).period
        except ValueError as error:
            raise WireError(f"{spec.name}: the coding its agent declared does not parse: {error}") from error
        if spec.bound_raw:
            bounds[spec.name] = spec.bound_raw * abs(spec.scale)
        if period:
            angles[spec.name] = period * abs(spec.scale)
    return bounds, angles


def parse_pair(text: str, option: str) -> tuple[str, float]:
    """``MESSAGE.SIGNAL=NUMBER`` of ``--bound`` or ``--angle``; :class:`ConfigError` naming ``option``."""
    name, sep, value = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(value)
    except ValueError as error:
        raise ConfigError(f"{option} {text!r}: expected MESSAGE.SIGNAL=NUMBER") from error
