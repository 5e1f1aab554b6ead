"""Predictors for closed-loop coding: pure integer arithmetic, so encoder and decoder agree bit for bit.

A predictor only ever sees *reconstructions* (the values the receiver will hold), never the true values:
that is what keeps the agent's copy and the receiver's copy in lock-step (seed 001's scheme fed its
predictor the truth, which the server never saw, and drifted). Any predictor can be plugged in here
without touching the error-bound guarantee, which lives in :mod:`agent.wire`.

Contract: ``predict()`` returns an int; ``update(r)`` is called with every reconstruction in order.
A fresh instance is made for every column of every chunk (chunks decode alone). Not thread-safe;
each lives inside one encode or decode call.
"""

from __future__ import annotations

from typing import Protocol

from agent import telemetry_pb2 as pb


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
        return self.last if self.count < 2 else 2 * self.last - self.previous

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


PREDICTORS: dict[str, type[HoldLast] | type[Linear] | type[Smoothing]] = {
    "hold": HoldLast,
    "linear": Linear,
    "smoothing": Smoothing,
}
WIRE_PREDICTORS = {
    "hold": pb.PREDICTOR_HOLD,
    "linear": pb.PREDICTOR_LINEAR,
    "smoothing": pb.PREDICTOR_SMOOTHING,
}
PREDICTOR_NAMES = {number: name for name, number in WIRE_PREDICTORS.items()}


def make(name: str) -> Predictor:
    return PREDICTORS[name]()
