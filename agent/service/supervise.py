"""Supervision by the service manager: readiness, status, the watchdog and shutdown, over sd_notify.

The protocol (sd_notify(3), sd_watchdog_enabled(3)) is implemented here directly, without libsystemd:
a manager that wants notifications sets ``$NOTIFY_SOCKET`` to an ``AF_UNIX`` datagram socket, a file
system path or, with a leading ``@``, a name in the abstract namespace; each notification is one
datagram of newline-separated ``KEY=value`` assignments (``READY=1``, ``STATUS=...``, ``WATCHDOG=1``,
``STOPPING=1``). ``$WATCHDOG_USEC`` asks for ``WATCHDOG=1`` pings (when ``$WATCHDOG_PID`` is unset or
names this process): the manager acts when none came for that long, so a ping goes out every half of it.
Without ``$NOTIFY_SOCKET`` every call is a no-op: the agent runs the same way from a terminal. Sending
never raises; a failure is logged once and counted.

The :class:`Watchdog` pings only while every stage is alive: the daemon's loop hands it each stage's
:class:`Heartbeat` (a ``time.monotonic()`` stamp that the stage's thread moves on every turn of its loop,
with the stage's declared period: the longest a healthy stage goes between two beats), and a stage
silent for longer than its stall threshold (:func:`stall_threshold`: the watchdog's own threshold, or
``STALL_MARGIN`` times the stage's period if that is longer) holds the pings back, so that systemd
restarts a process whose pipeline is stuck even though its main thread is fine, while a short
``WATCHDOG_USEC`` never reports a healthy stage in its idle wait as stalled.

Threading contract: :class:`Notifier`, :class:`Watchdog` and :class:`Supervisor` belong to one thread,
the supervisor's (the main thread of ``edge-agent run``), which alone sends notifications. A stage's
thread only calls :meth:`Heartbeat.beat` on its own heartbeat (see :class:`Heartbeat` for why no lock is
needed); stages never notify, because a ping must prove that the supervisor *and* every stage are alive.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from agent.service.logs import get_logger

log = get_logger("agent.service.supervise")

DEFAULT_STALL_S = 15.0  # the stall threshold when no watchdog is configured (stalls are still logged)
STALL_MARGIN = 2.0  # a stage is stalled after this many of its declared periods without a beat


class Heartbeat:
    """A stage's proof of life: moved by the stage's own thread, read by the supervisor's.

    ``period_s`` is the stage's declared period, fixed at creation: the longest a healthy, working stage
    goes between two beats. A beat may allow a longer silence until the next (``beat(allow_s)``: a stage
    about to wait long for work that only an event brings, such as the pipeline on an idle bus), so that an
    idle agent need not wake to prove it lives.

    Threading: only the owning thread calls :meth:`beat`; any thread reads :attr:`at` and
    :attr:`allowed_s`. The beat is one tuple attribute replaced whole, an immutable value swapped
    atomically, so a reader sees the previous or the new beat, never a torn one; no lock is needed and
    the beat never blocks.
    """

    __slots__ = ("_beat", "_clock", "period_s")

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not period_s > 0:
            raise ValueError(f"a heartbeat's period must be > 0 s, got {period_s!r}")
        self.period_s = period_s
        self._clock = clock
        self._beat = (clock(), period_s)

    def beat(self, allow_s: float | None = None) -> None:
        """Now is a sign of life (owning thread only); the next may come ``allow_s`` later (at least
        the declared period)."""
        self._beat = (self._clock(), self.period_s if allow_s is None else max(allow_s, self.period_s))

    @property
    def at(self) -> float:
        """The last beat, on the ``clock`` (``time.monotonic()``)."""
        return self._beat[0]

    @property
    def allowed_s(self) -> float:
        """The silence the last beat allowed until the next: the declared period, or longer."""
        return self._beat[1]


def stall_threshold(stall_after_s: float, period_s: float) -> float:
    """How long a stage of declared ``period_s`` may stay silent before the watchdog calls it stalled."""
    return max(stall_after_s, STALL_MARGIN * period_s)


def socket_address(value: str) -> str | None:
    """The ``AF_UNIX`` address of a ``$NOTIFY_SOCKET`` value: a path, or ``@name`` (abstract); else None."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_timeout(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds of ``$WATCHDOG_USEC`` if the watchdog is meant for process ``pid``, else ``None``."""
    owner = environ.get("WATCHDOG_PID", "")
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
        if owner and int(owner) != pid:
            return None
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None


class Notifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET``; every method is a no-op when it is not set."""

    def __init__(self, environ: Mapping[str, str] | None = None, pid: int | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self.address = socket_address(raw)
        if raw and self.address is None:
            log.warning("notify_socket_unsupported", notify_socket=raw)
        self.timeout_s = watchdog_timeout(env, os.getpid() if pid is None else pid)
        self.failures = 0
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between two ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), or ``None``: no watchdog."""
        if self.address is None or self.timeout_s is None:
            return None
        return self.timeout_s / 2

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments in one datagram; False if not under systemd or it failed."""
        if self.address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto("\n".join(assignments).encode("utf-8", "replace"), self.address)
        except OSError as error:
            self.failures += 1
            if self.failures == 1:  # once: a vanished manager must not flood the log
                log.warning("notify_failed", reason=str(error), notify_socket=self.address.lstrip("\0"))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        return self.notify(*_status(text))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *_status(status))

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _status(text: str | None) -> tuple[str, ...]:
    # STATUS= is one line (sd_notify(3)): fold any newline into a space.
    return () if text is None else ("STATUS=" + " ".join(text.splitlines()),)


class Watchdog:
    """Pings the watchdog from the supervisor's loop, but only while every stage's heartbeat is fresh.

    ``stall_after_s`` defaults to half the watchdog timeout (``DEFAULT_STALL_S`` without a watchdog).
    A stage is stalled once silent for longer than ``stall_threshold(stall_after_s, its period)``, and
    the pings stop until it beats again, so the manager restarts the service within about that
    threshold + ``WatchdogSec=``. Stalls and recoveries are logged once each, with or without a watchdog.
    """

    def __init__(
        self,
        notifier: Notifier,
        stall_after_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self.interval_s = notifier.watchdog_interval()
        if stall_after_s is None:
            stall_after_s = self.interval_s if self.interval_s is not None else DEFAULT_STALL_S
        self.stall_after_s = stall_after_s
        self.clock = clock
        self.last_ping: float | None = None
        self.pings = 0
        self.stalled: dict[str, float] = {}  # stage → seconds since its last heartbeat, at the last tick

    @property
    def enabled(self) -> bool:
        return self.interval_s is not None

    def threshold(self, heartbeat: Heartbeat) -> float:
        """The silence after which the stage that owns ``heartbeat`` is stalled."""
        return stall_threshold(self.stall_after_s, heartbeat.allowed_s)

    def tick(self, heartbeats: Mapping[str, Heartbeat | None]) -> bool:
        """Call on every loop of the supervisor. ``heartbeats`` maps a stage's name to its
        :class:`Heartbeat` (on this watchdog's clock), or to ``None`` for a stage that is done and no
        longer has to beat. Returns True when it sent a ping."""
        now = self.clock()
        live = {name: beat for name, beat in heartbeats.items() if beat is not None}
        stalled = {name: now - beat.at for name, beat in live.items() if now - beat.at > self.threshold(beat)}
        for name in stalled.keys() - self.stalled.keys():
            log.error(
                "stage_stalled",
                stage=name,
                silent_s=round(stalled[name], 1),
                stall_after_s=self.threshold(live[name]),
                reason="no heartbeat: watchdog pings withheld" if self.enabled else "no heartbeat",
            )
        for name in self.stalled.keys() - stalled.keys():
            log.info("stage_recovered", stage=name, silent_s=round(self.stalled[name], 1))
        self.stalled = stalled
        if stalled or self.interval_s is None:
            return False
        if self.last_ping is not None and now - self.last_ping < self.interval_s:
            return False
        if not self.notifier.watchdog():
            return False
        self.last_ping = now
        self.pings += 1
        return True


def _age(seconds: float) -> str:
    return f"{max(seconds, 0.0):.1f} s" if seconds < 60 else f"{seconds / 60:.0f} min"


class Supervisor:
    """The daemon's side of systemd: READY once, the watchdog on every loop of the supervisor,
    STATUS= whenever the daemon has a new status line, STOPPING at shutdown. Same threading contract
    as the module: call it from the supervisor's thread only."""

    def __init__(
        self,
        notifier: Notifier | None = None,
        *,
        stall_after_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = Notifier() if notifier is None else notifier
        self.watchdog = Watchdog(self.notifier, stall_after_s, clock)
        self.is_ready = False
        self._status: str | None = None

    def ready(self, status: str | None = None) -> None:
        """READY=1, once: call when the buffer is open and the source is bound."""
        if not self.is_ready:
            self.is_ready = True
            self._status = status
            self.notifier.ready(status)

    def tick(self, heartbeats: Mapping[str, Heartbeat | None]) -> bool:
        """On every loop: ping the watchdog if every stage beats (see :meth:`Watchdog.tick`)."""
        return self.watchdog.tick(heartbeats)

    def status(self, text: str) -> None:
        """STATUS=``text`` (what ``systemctl status`` shows), sent only when it changed; a stalled
        stage is named in front of it."""
        if self.watchdog.stalled:
            silent = ", ".join(
                f"{name} silent {_age(age)}" for name, age in sorted(self.watchdog.stalled.items())
            )
            text = f"STALLED ({silent}); {text}"
        if text != self._status:
            self._status = text
            self.notifier.status(text)

    def stopping(self, status: str = "stopping") -> None:
        self.notifier.stopping(status)

    def describe(self) -> dict[str, Any]:
        """The supervision settings, for the daemon's start-up log line."""
        return {
            "notify": self.notifier.enabled,
            "watchdog_interval_s": self.watchdog.interval_s,
            "stall_after_s": self.watchdog.stall_after_s,
        }
