"""The daemon: wires the stages together, in one short place, and supervises them.

    source thread(s) ──FrameFeed──▶ pipeline thread ──commit──▶ buffer ◀── uploader thread ◀─ paho ─▶ broker

The supervisor is the caller's thread (the main thread under systemd): it opens (and if need be
quarantines) the buffer before any stage starts, handles SIGTERM/SIGINT, publishes the status once a
second while it changes (every ``STATUS_REFRESH_S`` when it does not), counts the month's link bytes
(:mod:`agent.budget`), and decides when a replay is complete (source ended, last commit done, buffer
empty). A running daemon's supervisor wakes once a second while the status changes, every
``IDLE_SUPERVISE_WAIT_S`` while it does not, and at once when a stage or a reader fails; a replay's every
0.1 s.

Contract
- The pipeline and the uploader are :class:`agent.stage.Stage` objects, each on its own thread. The
  supervisor reads from them only what is made for other threads: their heartbeats (the watchdog), their
  ``failed`` and ``finished`` events, and the uploader's published :class:`agent.status.UploadStatus`.
  Their counters are read after they have stopped.
- A stage that fails (``stage_failed``, logged by the stage with its traceback) stops the agent:
  :meth:`Agent.run` shuts every stage down and returns a :class:`RunResult` whose ``failed`` names it,
  and the command exits non-zero, so that systemd restarts the service.
- The configuration sections are handed to the stages as they were read (no copies field by field).
- Live buses (:class:`agent.readers.Readers`): a bus whose interface exists and is up is opened at
  construction (a failure to open it is fatal: :class:`~agent.errors.SourceError`); one that is missing
  or down is waited for on its reader thread (:func:`agent.bus.wait_for_bus`). READY is sent once every bus is bound; the
  watchdog and the status go on meanwhile. A reader that fails later ends the run (``failed`` names
  ``source``).
- :class:`~agent.runresult.RunResult` accounts for the run: what was dropped (by the cap, by ``refuse_new``), what was
  never sampled (frames of unknown channels, oversize or undecodable frames, bad log lines, late
  frames) and the warnings (a configured channel without frames); :meth:`RunResult.outcome` says which.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from dataclasses import replace
from types import FrameType
from typing import Any

from agent import __version__, wire
from agent.budget import BudgetView, MonthlyBudget, coarse_wanted
from agent.buffer import Buffer, BufferStats
from agent.chunk import new_boot_id
from agent.config import AgentConfig
from agent.pipeline import Pipeline
from agent.readers import Readers
from agent.runresult import RunResult, unsampled_frames
from agent.schemas import build_budget_schema, build_schema
from agent.service.logs import get_logger
from agent.service.supervise import Heartbeat, Supervisor
from agent.status import StatusReport, drain_eta, status_path, write_status_file
from agent.upload import Uploader

STATUS_EVERY_S = 1.0
STATUS_REFRESH_S = 5.0  # an unchanged status is sent again this often (a reader's STALE_AFTER_S is 10)
SUPERVISE_WAIT_S = 1.0  # a running daemon's supervisor loop while its status changes
IDLE_SUPERVISE_WAIT_S = STATUS_REFRESH_S  # ... and while it does not (a failing stage wakes it at once)


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.log = get_logger("agent.daemon", vin=config.vin)
        self.decoder, self.schema = build_schema(config)
        self.boot_id = new_boot_id()
        self.stop_event = threading.Event()
        self._last_changes: tuple[Any, ...] = ()  # what the last published status followed (_changes)
        self._sent_shape: tuple[Any, ...] = ()  # the last MQTT status's states: uploader, budget, buses
        self._sent_at = -math.inf  # when it was sent (monotonic)
        self._status_at = 0.0
        self.supervisor = Supervisor()  # sd_notify: READY, STATUS, WATCHDOG, STOPPING; no-ops outside systemd
        self.buffer = Buffer(
            config.buffer.path, check=True
        )  # quarantines a damaged file before anyone uses it
        self.start_stats = self.buffer.stats()  # what was dropped before this run is not this run's
        self.readers = Readers(config, self.stop_event)  # a live bus that is there is opened now
        wake = threading.Event()
        buffer = config.buffer
        chunk_samples = max(1, math.ceil(float(self.schema.rate) * buffer.commit_interval_s))
        self.pipeline = Pipeline(
            self.decoder,
            self.schema,
            self.readers.feed,
            buffer,
            self.boot_id,
            chunk_samples,
            wake,
            config.vin,
            max_hold_s=config.sampling.max_hold_s,
            status_signals=config.status.signals,
            budget_schema=build_budget_schema(config),
        )
        self.uploader = Uploader(config.vin, config.upload, config.mqtt, buffer.path, wake)
        for stage in (self.pipeline, self.uploader):
            stage.alarm = self.stop_event  # a stage that fails ends the supervisor's wait at once
        self._changed = True  # the last status check found a change: look again in a second
        self.status_file = status_path(buffer.path)
        self.budget = MonthlyBudget(
            buffer.path.with_name(buffer.path.name + ".month.json"), config.upload.monthly_bytes
        )
        self._status_link_bytes = 0  # statuses published since the budget last counted

    def start(self) -> None:
        self.log.info(
            "agent_starting",
            boot_id=self.boot_id.hex(),
            signals=len(self.schema.signals),
            source=self.config.source.kind,
            buffer=str(self.config.buffer.path),
            **self.supervisor.describe(),
        )
        self.pipeline.start()
        self.uploader.start()
        self.readers.start()

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: FrameType | None) -> None:
            self.log.info("signal_received", signal=signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def report(self) -> StatusReport:
        stats = self.buffer.stats()
        upload = self.uploader.status()  # the uploader's published snapshot: never its live state
        eta = drain_eta(stats.samples, upload.acked_samples_per_s)
        month = self.budget.update(upload.counters.link_bytes, self._status_link_bytes)
        self._status_link_bytes = 0
        self._follow_budget(month)
        report = StatusReport.from_stats(
            self.config.vin,
            upload.state.value,
            stats,
            eta,
            os.getpid(),
            self.boot_id.hex(),
            unacked_for_s=upload.unacked_for_s,
            latest=self.pipeline.latest.snapshot(),  # the pipeline's published snapshot
        )
        return replace(
            report,
            month_bytes=month.used_bytes,
            month_projected_bytes=month.projected_bytes,
            monthly_budget_bytes=month.monthly_bytes,
            buses=tuple(health.report() for health in self.readers.health),
            budget_coarsened=self.pipeline.coarsen.is_set(),
        )

    def _follow_budget(self, month: BudgetView) -> None:
        """Coarsen ``sampling.budget_bounds``' signals while the month would overrun (agent.budget)."""
        coarse = self.pipeline.coarsen.is_set()
        wanted = self.pipeline.budget_schema is not None and coarse_wanted(month, coarse)
        if wanted == coarse:
            return
        figures = {"projected_bytes": month.projected_bytes, "monthly_bytes": month.monthly_bytes}
        if wanted:
            self.pipeline.coarsen.set()
            self.log.warning(
                "budget_bounds_coarsened",
                signals=sorted(self.config.sampling.budget_bounds),
                reason="the month is projected over upload.monthly_bytes",
                **figures,
            )
        else:
            self.pipeline.coarsen.clear()
            self.log.info("budget_bounds_restored", reason="the month is projected under budget", **figures)

    def _changes(self) -> tuple[Any, ...]:
        """What the status follows, cheap to read every second (the report itself asks the buffer): the
        uploader's state and counters, the samples committed, the buses' health."""
        upload = self.uploader.status()
        health = tuple(bus.report() for bus in self.readers.health)
        return (upload.state, upload.counters, self.pipeline.samples_committed, health)

    def publish_status(self, only_if_changed: bool = False) -> StatusReport | None:
        """The status to systemd, the status file and the broker; ``only_if_changed``: not when nothing it
        follows changed and the last one is younger than ``STATUS_REFRESH_S`` (``None`` then: an idle
        daemon builds no report, writes no file and sends no bytes every second)."""
        changes = self._changes()
        self._changed = changes != self._last_changes
        fresh = time.monotonic() - self._status_at < STATUS_REFRESH_S
        if only_if_changed and fresh and not self._changed:
            return None
        report = self.report()
        self._last_changes, self._status_at = changes, time.monotonic()
        self.supervisor.status(report.line())
        try:
            write_status_file(self.status_file, report)
        except OSError as error:
            self.log.warning("status_file_failed", path=str(self.status_file), reason=str(error))
        # The broker's copy: a change of state (the uploader's, the budget's, a bus's) at once; figures,
        # error counts included, at their interval (a babbling bus must not send a status a second).
        shape = (report.state, report.budget_coarsened, tuple((b.state, b.troubled) for b in report.buses))
        due = time.monotonic() - self._sent_at >= self.config.status.publish_interval_s
        if shape != self._sent_shape or due or not only_if_changed:
            payload = wire.encode_status(report.to_proto(__version__))
            self._status_link_bytes += self.uploader.publish_status(payload)
            self._sent_shape, self._sent_at = shape, time.monotonic()
        return report

    def run(self, until_drained: bool = False, drain_timeout_s: float = 60.0) -> RunResult:
        """Supervise until stopped, or (``until_drained``) until the source is done and everything acked;
        a failed stage ends it at once (see the module's contract)."""
        deadline: float | None = None
        next_status = 0.0
        # The buffer was opened (and checked) in __init__; READY once every live bus is bound too.
        ready = False
        while not self.stop_event.wait(0.1 if until_drained or not ready else self._loop_wait_s()):
            if self.failed_stages():
                break
            if not ready and self.readers.all_bound():
                self.supervisor.ready()
                ready = True
            self.supervisor.tick(self.heartbeats())
            if time.monotonic() >= next_status:
                self.publish_status(only_if_changed=True)
                next_status = time.monotonic() + STATUS_EVERY_S
            if not until_drained:
                continue
            if not self.pipeline.finished.is_set():
                if not self.pipeline.is_alive():
                    break  # the pipeline ended without its final commit: report what is left
                continue
            deadline = deadline or time.monotonic() + drain_timeout_s
            if (
                self.buffer.stats().chunks == 0 and not self.buffer.notices(1)
            ) or time.monotonic() > deadline:
                break
        self.publish_status()  # the last values sampled, before the will's OFFLINE replaces it
        self.shutdown()
        failed = self.failed_stages()
        backlog = self.buffer.stats()
        notices_left = bool(self.buffer.notices(1))
        self.buffer.close()
        complete = self.pipeline.finished.is_set() and backlog.chunks == 0 and not notices_left and not failed
        return self.account(complete, backlog, failed)

    def account(self, complete: bool, backlog: BufferStats, failed: tuple[str, ...]) -> RunResult:
        """The run's :class:`RunResult`, from the stages' counters (read after they stopped)."""
        pipeline = self.pipeline
        sampling = pipeline.sampler.stats
        dropped_total = backlog.dropped_samples - self.start_stats.dropped_samples
        refused = pipeline.samples_refused
        dropped = {"evicted_samples": dropped_total - refused, "refused_samples": refused}
        warning = self.decoder.check_channels()
        return RunResult(
            complete,
            backlog,
            pipeline.samples_committed,
            failed,
            {why: n for why, n in dropped.items() if n > 0},
            unsampled_frames(self.decoder, self.readers.log_stats, sampling),
            (warning,) if warning else (),
            sampling,
        )

    def _loop_wait_s(self) -> float:
        """How long a running daemon's supervisor sleeps between looks (a replay's looks every 0.1 s, to
        see its end at once): a second while the status changes, ``IDLE_SUPERVISE_WAIT_S`` while it does
        not (a failed stage or reader sets ``stop_event`` and ends the wait at once), or as often as its
        watchdog needs."""
        wait = SUPERVISE_WAIT_S if self._changed else IDLE_SUPERVISE_WAIT_S
        interval = self.supervisor.watchdog.interval_s
        return min(wait, interval / 2) if interval else wait

    def failed_stages(self) -> tuple[str, ...]:
        """The stages whose thread ended on an unexpected error (``source``: a reader that failed)."""
        failed = tuple(stage.name for stage in (self.pipeline, self.uploader) if stage.failed.is_set())
        return (*failed, "source") if self.readers.error else failed

    def heartbeats(self) -> dict[str, Heartbeat | None]:
        """Each stage's heartbeat, for the watchdog; a replay's pipeline that is done no longer beats."""
        done = self.pipeline.finished.is_set() and self.config.source.kind == "replay"
        return {
            "pipeline": None if done else self.pipeline.heartbeat,
            "uploader": self.uploader.heartbeat,
        }

    def shutdown(self) -> None:
        """Stop the readers, let the pipeline make its last commit, then stop the uploader (< 5 s)."""
        failed = self.failed_stages()
        reason = f"{', '.join(failed)} failed" if failed else "last commit, then disconnect"
        self.supervisor.stopping(f"stopping: {reason}")
        self.stop_event.set()
        self.readers.stop_and_close()
        if not self.pipeline.join(2.0):
            self.pipeline.request_stop()
            self.pipeline.join(1.0)
        self.uploader.stop(1.5)
        self.budget.update(self.uploader.status().counters.link_bytes, self._status_link_bytes)
        self._status_link_bytes = 0
        self.budget.save()
        self.status_file.unlink(missing_ok=True)
        self.log.info(
            "agent_stopped",
            samples_committed=self.pipeline.samples_committed,
            frames=self.decoder.stats.frames,
            unknown_frames=sum(self.decoder.stats.unknown.values()),
            bad_log_lines=self.readers.log_stats.bad_lines,
            jumps_back=self.pipeline.sampler.stats.jumps_back,
            late_frames=self.pipeline.sampler.stats.late,
            backpressure_s=round(self.pipeline.backpressure_s, 1),
            failed_stages=list(self.failed_stages()),
        )
