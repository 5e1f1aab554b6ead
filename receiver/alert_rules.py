"""Alert rules: their configuration (``alerts.rules``) and their evaluation on one boot's timeline.

A rule watches one signal (``MESSAGE.SIGNAL``) for ``above: T`` or ``below: T`` (exactly one). A *run*
starts at the first tick whose value is past the entry level; it lasts while the value stays short of the
exit level (``hysteresis`` back from the entry level), and ends at the first tick past it. A run becomes
an *episode* once it has lasted ``min_duration_s`` (tick time minus its first tick's time; 0: at once);
the episode's start is the run's first tick, its end the tick that ended the run (open until then), its
peak the most extreme value of the run (the first tick of it). Ticks without a value (absent, NaN) are
skipped: they neither start nor end anything.

Lossy signals. A signal the agent codes with a bound ε > 0 (``bound_raw * |scale|``) arrives within ε of
its real value. The entry level is then ``T + ε`` for ``above`` (``T - ε`` for ``below``), and the exit
level follows it: a reconstructed value past ``T + ε`` means the real one was past ``T``, so an alert is
always true of the real signal (a real excursion shallower than ε may go unseen: the bound says how
much). The episode records ε (``bound``; ``lossy`` when > 0).

Contract: pure (no I/O, no threads); :class:`Evaluator` holds one rule's run between chunks as a small
JSON-able list, so the caller can keep it in the store (:mod:`receiver.alerts`) and evaluate a boot's
chunks one after another, across transactions and processes, with the same result as all at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from agent.service.schema import Choice, Float, ListOf, Nullable, Section, SectionView, String

SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class AlertRule:
    """One rule of ``alerts.rules``; see the module docstring."""

    name: str
    signal: str
    above: float | None = None
    below: float | None = None
    hysteresis: float = 0.0
    min_duration_s: float = 0.0
    severity: str = "warning"

    @property
    def threshold(self) -> float:
        return self.above if self.above is not None else float(self.below or 0.0)


def _one_condition(rule: AlertRule, view: SectionView) -> None:
    if (rule.above is None) == (rule.below is None):
        view.error("above" if rule.above is not None else None, "give exactly one of above and below")


# The reference EV (dbc/reference_ev.dbc). The simulator's normal drives (replay_logs/) stay below 85 degC
# (motor), 35 (battery) and 45 (coolant); its own OverheatWarning trips at 130/50/85: these sit above it.
# A panic stop decelerates at about -8.3 m/s^2 (panic_braking.log.gz), a highway drive never past -2.2.
DEFAULT_RULES: tuple[AlertRule, ...] = (
    AlertRule("motor_overheat", "Thermal.MotorTemp", above=150.0, hysteresis=5.0, severity="critical"),
    AlertRule("battery_overheat", "Thermal.BatteryTemp", above=55.0, hysteresis=2.0, severity="critical"),
    AlertRule("coolant_overheat", "Thermal.CoolantTemp", above=90.0, hysteresis=3.0, severity="warning"),
    AlertRule("abs_active", "VehicleFlags.ABSActive", above=0.5, severity="info"),
    AlertRule(
        "panic_stop",
        "Dynamics.LongitudinalAccel",
        below=-7.0,
        hysteresis=1.0,
        min_duration_s=0.2,
        severity="warning",
    ),
    AlertRule("low_soc", "BatteryState.StateOfCharge", below=10.0, hysteresis=1.0, severity="warning"),
)


@dataclass(frozen=True)
class AlertsConfig:
    """``alerts``: the rules (absent: :data:`DEFAULT_RULES`; ``rules: []``: no alerts)."""

    rules: tuple[AlertRule, ...] = field(default=DEFAULT_RULES)


SIGNAL = r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*"
ALERTS_SECTION = Section(
    AlertsConfig,
    {
        "rules": ListOf(
            Section(
                AlertRule,
                {
                    "name": String(pattern=r"[A-Za-z0-9_.-]+", rule="letters, digits, '_', '.', '-'"),
                    "signal": String(pattern=SIGNAL, rule="MESSAGE.SIGNAL"),
                    "above": Nullable(Float()),
                    "below": Nullable(Float()),
                    "hysteresis": Float(min=0.0),
                    "min_duration_s": Float(min=0.0),
                    "severity": Choice(*SEVERITIES),
                },
                (_one_condition,),
            ),
            unique="name",
        )
    },
)


@dataclass(frozen=True)
class Episode:
    """An episode as far as the ticks seen tell: ``end`` is ``None`` while it is open."""

    start: int  # ticks of the boot
    end: int | None
    peak: float
    peak_at: int


class Evaluator:
    """One rule on one boot's values, in tick order; ``state`` (JSON-able) carries a run between calls."""

    def __init__(self, rule: AlertRule, bound: float, rate: Fraction, state: list[Any] | None = None) -> None:
        self.rule, self.bound, self.rate = rule, bound, rate
        self.low = rule.below is not None  # below: the extreme is the minimum
        sign = -1.0 if self.low else 1.0
        self.entry = rule.threshold + sign * bound
        self.exit = self.entry - sign * rule.hysteresis
        self.min_ticks = Fraction(repr(rule.min_duration_s)) * rate  # exact for 0.2 s at 50 Hz
        self.state = state  # [start tick, peak, peak tick, counted] or None

    def _past_entry(self, value: float) -> bool:
        return value < self.entry if self.low else value > self.entry

    def _past_exit(self, value: float) -> bool:
        return value >= self.exit if self.low else value <= self.exit

    def feed(self, ticks: Iterable[int], values: Iterable[float | int | None]) -> list[Episode]:
        """Advance over one chunk's values; return the episodes touched: those that ended in it, and the
        open one (counted, not ended) with its peak so far."""
        touched: list[Episode] = []
        run = self.state
        if run is None:  # the common case, no run: done at C speed when nothing is past the entry level
            values = list(values)
            present = [v for v in values if v is not None]
            if not present or (min(present) >= self.entry if self.low else max(present) <= self.entry):
                return touched
        for tick, value in zip(ticks, values, strict=True):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            if run is None:
                if self._past_entry(value):
                    run = [tick, value, tick, self.min_ticks <= 0]
                continue
            if self._past_exit(value):
                if run[3]:
                    touched.append(Episode(run[0], tick, run[1], run[2]))
                run = None
                continue
            if (value < run[1]) if self.low else (value > run[1]):
                run[1], run[2] = value, tick
            if not run[3] and tick - run[0] >= self.min_ticks:
                run[3] = True
        if run is not None and run[3]:
            touched.append(Episode(run[0], None, run[1], run[2]))
        self.state = run
        return touched
