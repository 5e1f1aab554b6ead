"""The base of the agent's long-running stages (pipeline, uploader): one thread, one loop, one handler.

A template method, in the spirit of python-can's ``BusABC``: :class:`Stage` owns what every stage needs
and a subclass fills one hook, :meth:`Stage.run_once` (one turn of its loop), plus the optional
:meth:`Stage.open`, :meth:`Stage.finish` and :meth:`Stage.close` around the loop.

Contract
- Threads: :meth:`start`, :meth:`request_stop` and :meth:`join` are called by the owner (the daemon's
  supervisor thread, or a test); every hook runs on the stage's own thread, named after the stage, so a
  hook's state (its buffer connection above all) belongs to that thread alone.
- The loop: ``open()``, then ``beat; run_once()`` until ``run_once`` returns False (the work is done)
  or a stop is requested, then ``finish(stopped)``; ``close()`` runs last in every case, errors included.
- Blocking: ``run_once`` blocks at most the declared ``period_s`` before it returns (waiting on a queue
  or an event with that timeout); a long piece of work inside it beats again itself
  (``self.heartbeat.beat()``). The heartbeat's period is what the watchdog allows between two beats,
  with a margin (:func:`agent.service.supervise.stall_threshold`).
- Failure: an exception that escapes a hook (anything unexpected: the stages catch what they expect,
  such as :class:`~agent.errors.StorageError`, themselves) is logged once as the critical event
  ``stage_failed`` with the stage's name and the traceback, and sets :attr:`failed`. The thread then
  ends. The daemon's supervisor watches :attr:`failed`: it stops every stage and exits non-zero, so
  that systemd (``Restart=on-failure``) starts the agent afresh. A failed stage is never restarted in
  the same process: what it held in memory may be inconsistent.
- Cross-thread state is explicit: :attr:`heartbeat` (an atomically replaced stamp), :attr:`failed` and
  :attr:`stop_event` (``threading.Event``); a subclass that shows more to other threads publishes an
  immutable snapshot (see :meth:`agent.upload.Uploader.status`).
"""

from __future__ import annotations

import abc
import threading
from typing import Any

from agent.service.supervise import Heartbeat


class Stage(abc.ABC):
    """One stage on its own thread; see the module docstring for the contract."""

    def __init__(self, name: str, period_s: float, log: Any) -> None:
        self.name = name
        self.log = log
        self.heartbeat = Heartbeat(period_s)
        self.stop_event = threading.Event()  # set by the owner: finish the current turn, then stop
        self.failed = threading.Event()  # set by the stage's thread when a hook raised
        self.alarm: threading.Event | None = None  # set too on a failure: the owner's wake-up (the daemon's)
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)

    # --- the owner's side ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the stage's thread; returns at once."""
        self.thread.start()

    def request_stop(self) -> None:
        """Ask the loop to end after the current turn (from any thread); :meth:`join` waits for it."""
        self.stop_event.set()
        self.interrupt()

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` for the thread to end; True if it has."""
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    # --- hooks, on the stage's thread ----------------------------------------------------------------
    def open(self) -> None:  # noqa: B027  (an optional hook: empty by design)
        """Before the first turn: open what the thread owns (say, its buffer connection)."""

    @abc.abstractmethod
    def run_once(self) -> bool:
        """One turn of the loop, blocking at most ``period_s``; False when the stage's work is done."""

    def finish(self, stopped: bool) -> None:  # noqa: B027
        """After the last turn, unless a hook raised: ``stopped`` if the loop ended on a stop request,
        False if it ended because the work is done (``run_once`` returned False)."""

    def close(self) -> None:  # noqa: B027
        """Last, always (after an error too): release what :meth:`open` took."""

    def interrupt(self) -> None:  # noqa: B027
        """Cut the current wait short (called by :meth:`request_stop`, from any thread)."""

    # --- the template method -------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            try:
                self.open()
                done = False
                while not done and not self.stop_event.is_set():
                    self.heartbeat.beat()
                    done = not self.run_once()
                self.heartbeat.beat()
                self.finish(stopped=not done)
            finally:
                self.close()
        except BaseException as error:  # the one top-level handler: no silent thread death
            self.log.critical(
                "stage_failed",
                stage=self.name,
                reason=f"{type(error).__name__}: {error}",
                action="stopping the agent (exit status 1) so that systemd restarts it",
                exc_info=error,
            )
            self.failed.set()
            if self.alarm is not None:
                self.alarm.set()
