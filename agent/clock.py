"""The time base of live buses: the wall clock's time, but never stepped back by NTP.

A live frame carries the kernel's receive time on the wall clock (``CLOCK_REALTIME``). NTP, or an
operator, may step that clock: back (the ticks of the next seconds would be sampled again, their frames
counted late or merged) or forward (a Pi without a real-time clock at its first NTP sync jumps days).
:class:`LiveClock` re-stamps every frame on the monotonic clock, anchored to the wall clock when the
clock is created, and watches ``wall - monotonic``: a change of more than ``STEP_S`` is a *step*.

- A step forward is followed: tick times stay the wall clock's, and the sampler sees a gap (O(1)).
- A step back is absorbed: tick times go on from the monotonic clock, so nothing is reordered or
  merged; they then run ahead of the wall clock by the step until the agent restarts.
- Every step is logged (``clock_step``, with its size and what was done) and counted in ``steps``.

Contract: thread-safe (one lock); shared by every bus reader of a process, so that all buses are on
one time base. ``stamp`` never blocks for long and never raises. The clocks are injectable for tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.service.logs import get_logger

log = get_logger("agent.clock")

STEP_S = 0.01  # wall - monotonic moves only when the wall clock is stepped (both are slewed alike)


@dataclass(frozen=True)
class ClockStep:
    monotonic: float  # when the step was seen
    seconds: float  # positive: the wall clock jumped forward
    followed: bool


class LiveClock:
    def __init__(
        self, wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._wall, self._monotonic = wall, monotonic
        self._lock = threading.Lock()
        self._offset = wall() - monotonic()  # the last wall - monotonic seen
        self._base = self._offset  # tick time = monotonic + base (the anchor plus forward steps)
        self.steps: list[ClockStep] = []  # the last 100
        self.step_count = 0

    def stamp(self, wall_time: float) -> float:
        """The time on the live time base of an event stamped ``wall_time`` on the wall clock just now."""
        with self._lock:
            now_mono = self._monotonic()
            offset = self._wall() - now_mono
            step = offset - self._offset
            if abs(step) > STEP_S:
                self._record(ClockStep(now_mono, step, step > 0))
                if step > 0:
                    self._base += step
            self._offset = offset
            return wall_time - offset + self._base

    def _record(self, step: ClockStep) -> None:
        self.step_count += 1
        self.steps = [*self.steps[-99:], step]
        log.warning(
            "clock_step",
            seconds=round(step.seconds, 6),
            action="followed (a gap in the samples)" if step.followed else "absorbed (times run ahead)",
        )


SHARED = LiveClock()  # the process's live time base: every bus reader uses it unless given another
