"""The reader threads: the replay loop, or one per live bus, each pumping frames into the feed.

Contract
- :class:`Readers` is built by the daemon's supervisor before any stage starts. A live bus that is
  there is opened then (a failure to open it is fatal: :class:`~agent.errors.SourceError`); one that
  is missing or down is waited for on its own thread (:func:`agent.bus.wait_for_bus`), and its event
  in ``bound`` is set once it is bound.
- Each thread runs :meth:`agent.source.FrameFeed.pump` until its source ends or ``stop`` is set. A
  reader that fails is never a silent thread death: ``error`` says why (``source_failed`` in the log)
  and ``stop`` is set, which ends the supervisor's wait at once.
- Counters shared with the supervisor: ``log_stats`` (the replay's, written by its thread), ``health``
  (one :class:`~agent.bushealth.BusHealth` per live bus, written by its thread; read as snapshots).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import Any

from agent import bus, source
from agent.bushealth import BusHealth
from agent.config import AgentConfig, BusConfig
from agent.errors import SourceError
from agent.service.logs import get_logger


class Readers:
    def __init__(self, config: AgentConfig, stop: threading.Event) -> None:
        self.stop = stop
        self.log = get_logger("agent.readers", vin=config.vin)
        self.log_stats = source.LogStats()
        self.bound: list[threading.Event] = []  # one per live bus, set once it is bound
        self.health: list[BusHealth] = []  # one per live bus
        self.error: str | None = None  # a reader that failed: ends the run
        if config.source.kind == "replay":
            assert config.source.log is not None
            speed = None if math.isinf(config.source.speed) else config.source.speed
            frames = source.paced(source.read_log(config.source.log, self.log_stats), speed, stop)
            self.feed = source.FrameFeed(producers=1)
            self.threads = [self._thread("replay", frames)]
            return
        self.feed = source.FrameFeed(producers=len(config.buses))
        self.threads = [self._thread(f"bus-{live.channel}", self._live(live)) for live in config.buses]

    def _thread(self, name: str, frames: Any) -> threading.Thread:
        return threading.Thread(target=self._pump, args=(frames,), name=name, daemon=True)

    def _live(self, live: BusConfig) -> Iterator[Any]:
        """A live bus opened now if it is there, else (on its thread) once it is bound."""
        health, bound = BusHealth(live.channel), threading.Event()
        self.health.append(health)
        self.bound.append(bound)
        opened = None
        if bus.bus_unavailable(live.interface, live.channel) is None:
            opened = bus.open_bus(
                live.interface, live.channel, live.bitrate, live.receive_buffer_bytes, health
            )
        return self._frames(live, opened, bound, health)

    def _frames(
        self, live: BusConfig, opened: Any, bound: threading.Event, health: BusHealth
    ) -> Iterator[Any]:
        if opened is None:
            opened = bus.wait_for_bus(
                live.interface, live.channel, live.bitrate, self.stop, live.receive_buffer_bytes, health
            )
            if opened is None:
                return
        bound.set()
        yield from bus.bus_frames(opened, live.channel, self.stop, health=health)

    def _pump(self, frames: Any) -> None:
        try:
            self.feed.pump(frames, self.stop)
        except SourceError as error:  # a dead reader must be reported, not a silent thread death
            self.error = str(error)
            self.log.error("source_failed", reason=self.error)
            self.stop.set()
        except Exception as error:
            self.error = f"{type(error).__name__}: {error}"
            self.log.error("source_failed", reason=self.error, exc_info=error)
            self.stop.set()

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def all_bound(self) -> bool:
        return all(event.is_set() for event in self.bound)

    def stop_and_close(self, timeout_s: float = 0.5) -> None:
        """After ``stop`` was set: give each thread ``timeout_s`` to end, then end the feed regardless (a
        live reader may sit in its bus's receive for ``agent.bus.QUIET_WAIT_S`` yet: not waited for)."""
        for thread in self.threads:
            thread.join(timeout_s)
        self.feed.close()
