"""The daemon: wires the stages together, in one short place, and supervises them.

    source thread(s) ──FrameFeed──▶ pipeline thread ──commit──▶ buffer ◀── uploader thread ◀─ paho ─▶ broker

The supervisor is the caller's thread (the main thread under systemd): it handles SIGTERM/SIGINT and
decides when a replay is complete (the source ended, the last commit succeeded, the buffer is empty).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from types import FrameType
from typing import Any

from agent import source
from agent.buffer import Buffer, BufferStats
from agent.chunk import new_boot_id
from agent.config import AgentConfig
from agent.decode import Decoder, build_decoder
from agent.logs import get_logger
from agent.model import Schema
from agent.pipeline import Pipeline
from agent.upload import Uploader, UploadSettings


def build_schema(config: AgentConfig) -> tuple[Decoder, Schema]:
    buses = [
        (bus.channel, bus.dbc, "auto" if bus.j1939 is None else str(bus.j1939).lower())
        for bus in config.buses
    ]
    decoder = build_decoder(buses, config.sampling.signals, dict(config.sampling.bounds))
    rate = Fraction(str(config.sampling.rate_hz)).limit_denominator(1_000_000)
    return decoder, Schema(rate, decoder.signals)


@dataclass
class RunResult:
    complete: bool
    backlog: BufferStats
    samples_committed: int


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.log = get_logger("agent.daemon", vin=config.vin)
        self.decoder, self.schema = build_schema(config)
        self.boot_id = new_boot_id()
        self.stop_event = threading.Event()
        self.log_stats = source.LogStats()
        self.feed, self.readers = self._open_source()
        wake = threading.Event()
        chunk_samples = max(1, math.ceil(float(self.schema.rate) * config.buffer.commit_interval_s))
        self.pipeline = Pipeline(
            self.decoder,
            self.schema,
            self.feed,
            config.buffer.path,
            self.boot_id,
            chunk_samples,
            config.buffer.commit_interval_s,
            wake,
            config.vin,
        )
        upload = config.upload
        self.uploader = Uploader(
            UploadSettings(
                config.vin,
                config.mqtt.prefix,
                config.mqtt.client_id or f"edge-agent-{config.vin}",
                upload.max_inflight_batches,
                upload.max_batch_bytes,
                upload.ack_timeout_s,
            ),
            config.mqtt,
            config.buffer.path,
            wake,
        )

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
            handle = source.open_bus(bus.interface, bus.channel, bus.bitrate)
            frames_iter = source.bus_frames(handle, bus.channel, self.stop_event)
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

    def run(self, until_drained: bool = False, drain_timeout_s: float = 60.0) -> RunResult:
        """Supervise until stopped, or (``until_drained``) until the source is done and everything acked."""
        status = Buffer(self.config.buffer.path)
        try:
            deadline: float | None = None
            while not self.stop_event.wait(0.1):
                if not until_drained:
                    continue
                if not self.pipeline.finished.is_set():
                    if not self.pipeline.thread.is_alive():
                        break  # the pipeline ended without its final commit: report what is left
                    continue
                deadline = deadline or time.monotonic() + drain_timeout_s
                if status.stats().chunks == 0 or time.monotonic() > deadline:
                    break
            self.shutdown()
            backlog = status.stats()
        finally:
            status.close()
        complete = self.pipeline.finished.is_set() and backlog.chunks == 0
        return RunResult(complete, backlog, self.pipeline.samples_committed)

    def shutdown(self) -> None:
        """Stop the readers, let the pipeline make its last commit, then stop the uploader (< 5 s)."""
        self.stop_event.set()
        for reader in self.readers:
            reader.join(1.0)
        self.pipeline.thread.join(2.0)
        if self.pipeline.thread.is_alive():
            self.pipeline.stop_event.set()
            self.pipeline.thread.join(1.0)
        self.uploader.stop(1.5)
        self.log.info(
            "agent_stopped",
            samples_committed=self.pipeline.samples_committed,
            frames=self.decoder.stats.frames,
            unknown_frames=sum(self.decoder.stats.unknown.values()),
            bad_log_lines=self.log_stats.bad_lines,
        )
