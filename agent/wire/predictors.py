"""Predictors for closed-loop coding: pure integer arithmetic, so encoder and decoder agree bit for bit.

A predictor only ever sees *reconstructions* (the values the receiver will hold), never the true values:
that is what keeps the agent's copy and the receiver's copy in lock-step (seed 001's scheme fed its
predictor the truth, which the server never saw, and drifted). Any predictor can be plugged in here
without touching the error-bound guarantee, which lives in :mod:`agent.wire.quantizer`: register a class in
:data:`PREDICTORS` and give it a number in the ``Predictor`` enum of ``proto/telemetry.proto``.

Contract: ``predict()`` returns an int within ``±LIMIT``; ``update(r)`` is called with every
reconstruction in order. A fresh instance is made for every column of every chunk (chunks decode
alone). An instance is not thread-safe; each lives inside one encode or decode call, which owns it.
The module's tables are constants. :mod:`agent.wire.quantizer` and :mod:`agent.wire.packed_columns` have
faster inlined copies of ``hold`` and ``linear``; ``tests/test_wire_quantizer.py`` checks that they agree
with these classes.

The coding of a column (``SignalSpec.predictor``) is a predictor name, optionally followed by the raw
period and low end of an angle: ``"hold"`` or ``"hold angle 36000 0"`` (see :class:`Coding`).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from agent.wire import telemetry_pb2 as pb

LIMIT = 1 << 62  # predictions are clamped to ±LIMIT: residuals of values within ±2^60 fit sint64


class Predictor(Protocol):
    def predict(self) -> int: ...

    def update(self, reconstruction: int) -> None: ...


class HoldLast:
    """Predict the previous reconstruction (0 before the first)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0

    def predict(self) -> int:
        return self.last

    def update(self, reconstruction: int) -> None:
        self.last = reconstruction


class Linear:
    """Extrapolate the line through the last two reconstructions."""

    __slots__ = ("count", "last", "previous")

    def __init__(self) -> None:
        self.last = 0
        self.previous = 0
        self.count = 0

    def predict(self) -> int:
        guess = self.last if self.count < 2 else 2 * self.last - self.previous
        return max(-LIMIT, min(LIMIT, guess))

    def update(self, reconstruction: int) -> None:
        self.previous, self.last = self.last, reconstruction
        self.count += 1


class Smoothing:
    """Seed 001's exponential smoothing (alpha 0.3), closed-loop, in 16-bit fixed point."""

    __slots__ = ("level", "started")
    SHIFT = 16

    def __init__(self) -> None:
        self.level = 0
        self.started = False

    def predict(self) -> int:
        return (self.level + (1 << (self.SHIFT - 1))) >> self.SHIFT

    def update(self, reconstruction: int) -> None:
        target = reconstruction << self.SHIFT
        if not self.started:
            self.level, self.started = target, True
        else:
            self.level += ((target - self.level) * 3) // 10


class Swing:
    """Piecewise-linear, in the spirit of the swing filter: follow the line through the last two corrections.

    A *correction* is a reconstruction that differs from the prediction (the encoder had to send something).
    Between corrections the prediction extends the segment from the previous correction to the last one,
    so a steady ramp costs one correction per change of slope instead of one per ``2ε+1`` of travel (hold),
    and a lossy step does not make it overshoot (linear on reconstructions does). Before the second
    correction it holds. Rounding is half up, in integers.
    """

    __slots__ = ("anchor", "anchor_at", "base", "base_at", "corrections", "guess", "now")

    def __init__(self) -> None:
        self.anchor = self.base = self.guess = 0
        self.anchor_at = self.base_at = self.now = 0
        self.corrections = 0

    def predict(self) -> int:
        if self.corrections < 2:
            guess = self.base
        else:
            span = self.base_at - self.anchor_at
            rise = (self.base - self.anchor) * (self.now - self.base_at)
            guess = self.base + (2 * rise + span) // (2 * span)
        self.guess = max(-LIMIT, min(LIMIT, guess))
        return self.guess

    def update(self, reconstruction: int) -> None:
        if reconstruction != self.guess or self.corrections == 0:
            self.anchor, self.anchor_at = self.base, self.base_at
            self.base, self.base_at = reconstruction, self.now
            self.corrections += 1
        self.now += 1


PREDICTORS: dict[str, type[HoldLast] | type[Linear] | type[Smoothing] | type[Swing]] = {
    "hold": HoldLast,
    "linear": Linear,
    "smoothing": Smoothing,
    "swing": Swing,
}
WIRE_PREDICTORS = {
    "hold": pb.PREDICTOR_HOLD,
    "linear": pb.PREDICTOR_LINEAR,
    "smoothing": pb.PREDICTOR_SMOOTHING,
    "swing": pb.PREDICTOR_SWING,
}
PREDICTOR_NAMES = {number: name for name, number in WIRE_PREDICTORS.items()}
DEFAULT = "hold"  # chosen by measurement: see tests/harness/bench_codec.py and the README


def make(name: str) -> Predictor:
    return PREDICTORS[name]()


class Coding(NamedTuple):
    """How a column is coded: its predictor and, for an angle, the raw period and the low end.

    An angle's values are taken modulo ``period`` (a whole turn in raw units): its residuals go the short
    way round and its reconstructions are reported in ``[low, low + period)``; its error is measured
    modulo ``period``. ``period == 0``: not an angle.
    """

    predictor: str = DEFAULT
    period: int = 0
    low: int = 0

    def __str__(self) -> str:
        return self.predictor if not self.period else f"{self.predictor} angle {self.period} {self.low}"

    @classmethod
    def parse(cls, text: str) -> Coding:
        """The inverse of ``str()``; raises ``ValueError`` on anything else."""
        words = text.split()
        if not words or words[0] not in PREDICTORS:
            raise ValueError(f"unknown predictor in coding {text!r} (known: {', '.join(PREDICTORS)})")
        if len(words) == 1:
            return cls(words[0])
        if len(words) != 4 or words[1] != "angle":
            raise ValueError(f"coding {text!r} is not 'PREDICTOR' or 'PREDICTOR angle PERIOD LOW'")
        period, low = int(words[2]), int(words[3])
        if period < 2:
            raise ValueError(f"coding {text!r}: an angle's period is at least 2 raw units")
        return cls(words[0], period, low)
