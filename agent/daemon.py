"""The daemon: wires the stages together, in one short place, and supervises them.

    source thread(s) ──FrameFeed──▶ pipeline thread ──commit──▶ buffer ◀── uploader thread ◀─ paho ─▶ broker

The supervisor is the caller's thread (the main thread under systemd): it opens (and if need be
quarantines) the buffer before any stage starts, handles SIGTERM/SIGINT, publishes the status once a
second, and decides when a replay is complete (source ended, last commit done, buffer empty).

Contract
- The pipeline and the uploader are :class:`agent.stage.Stage` objects, each on its own thread. The
  supervisor reads from them only what is made for other threads: their heartbeats (the watchdog), their
  ``failed`` and ``finished`` events, and the uploader's published :class:`agent.status.UploadStatus`.
  Their counters are read after they have stopped.
- A stage that fails (``stage_failed``, logged by the stage with its traceback) stops the agent:
  :meth:`Agent.run` shuts every stage down and returns a :class:`RunResult` whose ``failed`` names it,
  and the command exits non-zero, so that systemd restarts the service.
- The configuration sections are handed to the stages as they were read (no copies field by field).
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from types import FrameType
from typing import Any

from agent import __version__, source, wire
from agent.buffer import Buffer, BufferStats
from agent.chunk import new_boot_id
from agent.config import AgentConfig
from agent.decode import Decoder, decoder_for
from agent.pipeline import Pipeline
from agent.service.logs import get_logger
from agent.service.supervise import Heartbeat, Supervisor
from agent.status import StatusReport, drain_eta, status_path, write_status_file
from agent.upload import Uploader
from agent.wire.values import Schema

STATUS_EVERY_S = 1.0


def build_schema(config: AgentConfig) -> tuple[Decoder, Schema]:
    decoder = decoder_for(config)  # the same path as check-config
    rate = Fraction(str(config.sampling.rate_hz)).limit_denominator(1_000_000)
    return decoder, Schema(rate, decoder.signals)


@dataclass
class RunResult:
    """How a run ended. ``failed`` names the stages that failed (then the command exits non-zero)."""

    complete: bool
    backlog: BufferStats
    samples_committed: int
    failed: tuple[str, ...] = ()


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.log = get_logger("agent.daemon", vin=config.vin)
        self.decoder, self.schema = build_schema(config)
        self.boot_id = new_boot_id()
        self.stop_event = threading.Event()
        self.supervisor = Supervisor()  # sd_notify: READY, STATUS, WATCHDOG, STOPPING; no-ops outside systemd
        self.log_stats = source.LogStats()
        self.buffer = Buffer(
            config.buffer.path, check=True
        )  # quarantines a damaged file before anyone uses it
        self.feed, self.readers = self._open_source()
        wake = threading.Event()
        buffer = config.buffer
        chunk_samples = max(1, math.ceil(float(self.schema.rate) * buffer.commit_interval_s))
        self.pipeline = Pipeline(
            self.decoder,
            self.schema,
            self.feed,
            buffer,
            self.boot_id,
            chunk_samples,
            wake,
            config.vin,
            max_hold_s=config.sampling.max_hold_s,
        )
        self.uploader = Uploader(config.vin, config.upload, config.mqtt, buffer.path, wake)
        self.status_file = status_path(buffer.path)

    def _open_source(self) -> tuple[source.FrameFeed, list[threading.Thread]]:
        config = self.config
        if config.source.kind == "replay":
            assert config.source.log is not None
            speed = None if math.isinf(config.source.speed) else config.source.speed
            frames = source.paced(source.read_log(config.source.log, self.log_stats), speed, self.stop_event)
            feed = source.FrameFeed(producers=1)
            return feed, [
                threading.Thread(target=self._pump, args=(feed, frames), name="replay", daemon=True)
            ]
        feed = source.FrameFeed(producers=len(config.buses))
        readers = []
        for bus in config.buses:
            frames_iter = source.bus_frames(
                source.open_bus(bus.interface, bus.channel, bus.bitrate), bus.channel, self.stop_event
            )
            readers.append(
                threading.Thread(
                    target=self._pump, args=(feed, frames_iter), name=f"bus-{bus.channel}", daemon=True
                )
            )
        return feed, readers

    def _pump(self, feed: source.FrameFeed, frames: Any) -> None:
        try:
            feed.pump(frames, self.stop_event)
        except Exception as error:  # a dead reader must be reported, not a silent thread death
            self.log.error("source_failed", reason=str(error))

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
        for reader in self.readers:
            reader.start()

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
        return StatusReport.from_stats(
            self.config.vin, upload.state.value, stats, eta, os.getpid(), self.boot_id.hex()
        )

    def publish_status(self) -> StatusReport:
        report = self.report()
        self.supervisor.status(report.line())
        try:
            write_status_file(self.status_file, report)
        except OSError as error:
            self.log.warning("status_file_failed", path=str(self.status_file), reason=str(error))
        self.uploader.publish_status(wire.encode_status(report.to_proto(__version__)))
        return report

    def run(self, until_drained: bool = False, drain_timeout_s: float = 60.0) -> RunResult:
        """Supervise until stopped, or (``until_drained``) until the source is done and everything acked;
        a failed stage ends it at once (see the module's contract)."""
        deadline: float | None = None
        next_status = 0.0
        # The buffer was opened (and checked) and the source bound in __init__; the stages are started.
        self.supervisor.ready()
        while not self.stop_event.wait(0.1):
            if self.failed_stages():
                break
            self.supervisor.tick(self.heartbeats())
            if time.monotonic() >= next_status:
                self.publish_status()
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
        self.shutdown()
        failed = self.failed_stages()
        backlog = self.buffer.stats()
        notices_left = bool(self.buffer.notices(1))
        self.buffer.close()
        complete = self.pipeline.finished.is_set() and backlog.chunks == 0 and not notices_left and not failed
        return RunResult(complete, backlog, self.pipeline.samples_committed, failed)

    def failed_stages(self) -> tuple[str, ...]:
        """The stages whose thread ended on an unexpected error."""
        return tuple(stage.name for stage in (self.pipeline, self.uploader) if stage.failed.is_set())

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
        for reader in self.readers:
            reader.join(1.0)
        if not self.pipeline.join(2.0):
            self.pipeline.request_stop()
            self.pipeline.join(1.0)
        self.uploader.stop(1.5)
        self.status_file.unlink(missing_ok=True)
        self.log.info(
            "agent_stopped",
            samples_committed=self.pipeline.samples_committed,
            frames=self.decoder.stats.frames,
            unknown_frames=sum(self.decoder.stats.unknown.values()),
            bad_log_lines=self.log_stats.bad_lines,
            failed_stages=list(self.failed_stages()),
        )
