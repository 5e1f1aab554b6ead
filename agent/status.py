"""What the agent reports about itself: `edge-agent status`, systemd's STATUS= line, the retained MQTT status.

Contract (who owns what, across threads)
- :class:`StatusReport` is an immutable snapshot built by the supervisor (main thread) about once a
  second. :func:`write_status_file` replaces the file atomically (write, rename), so a reader in another
  process (``edge-agent status``) sees either the old or the new report, never half of one.
- :class:`DrainRate` is mutable and belongs to one thread, the uploader's, which alone calls its
  methods. Other threads never touch it: they read the rate from :class:`UploadStatus`, the immutable
  snapshot that the uploader's thread publishes under a lock (``Uploader.status()``), and turn it into
  a time to drain with :func:`drain_eta`.
- :class:`UploadCounters` is the uploader thread's mutable tally; every other thread gets a copy inside
  an :class:`UploadStatus`.
- :attr:`StatusReport.latest` comes from the pipeline's published snapshot (:mod:`agent.latest`). The
  status file holds the report as JSON (:meth:`StatusReport.as_json`); a file written before a field
  existed still reads (:meth:`StatusReport.from_json`: the field takes its default).
"""

from __future__ import annotations

import enum
import json
import os
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from agent.bushealth import BusReport
from agent.wire import telemetry_pb2 as pb

STALE_AFTER_S = 10.0  # a status file older than this is from a daemon that is gone


class State(enum.Enum):
    """The uploader's state (see :mod:`agent.upload`)."""

    OFFLINE = "OFFLINE"
    ONLINE = "ONLINE"
    DRAINING = "DRAINING"
    NOT_ACKED = "NOT_ACKED"  # connected, batches in flight, but no receiver's ack for too long
    STOPPED = "STOPPED"


@dataclass
class UploadCounters:
    """Running totals, written by the uploader's thread only; other threads get copies (UploadStatus)."""

    batches_sent: int = 0
    chunks_sent: int = 0
    chunks_acked: int = 0
    bytes_sent: int = 0
    link_bytes: int = 0  # batches out and acks in, MQTT framing included (agent.budget)
    resends: int = 0
    last_ack_at: float | None = None
    acks_rejected: int = 0  # acks whose MAC is missing or wrong (mqtt.auth_key_file): nothing deleted
    acks_retained: int = 0  # retained acks ignored (a stale or planted message, never a receiver's)
    acks_unknown_boot: int = 0  # ack ranges naming a boot this process never sent
    acks_unmatched: int = 0  # ack ranges naming no chunk this process sent and holds
    connect_failures: int = 0  # attempts to reach the broker that failed
    schemas_resent: int = 0  # a receiver asked for a schema named by hash: sent whole again


@dataclass(frozen=True)
class UploadStatus:
    """The uploader as other threads see it: built and published whole by the uploader's thread.

    ``counters`` is a copy (changing it changes nothing); ``acked_samples_per_s`` is the recent ack rate
    (:meth:`DrainRate.per_second` when the snapshot was taken), ``None`` until there is one;
    ``unacked_for_s`` is how long batches have been in flight without any ack (``None`` when none is).
    """

    state: State
    counters: UploadCounters
    acked_samples_per_s: float | None
    unacked_for_s: float | None = None


def drain_eta(backlog_samples: int, samples_per_s: float | None) -> float | None:
    """Seconds until ``backlog_samples`` are acked at ``samples_per_s``: 0 when nothing is left,
    ``None`` without a rate (no estimate rather than a guess)."""
    if backlog_samples == 0:
        return 0.0
    return None if not samples_per_s else backlog_samples / samples_per_s


class Latest(NamedTuple):
    """A configured signal's latest sampled value (physical) and its tick's time on the vehicle's clock."""

    name: str  # MESSAGE.SIGNAL
    value: float | int
    at: float


@dataclass(frozen=True)
class StatusReport:
    vin: str
    state: str
    backlog_chunks: int
    backlog_samples: int
    backlog_bytes: int
    oldest_age_s: float | None
    last_ack_at: float | None
    dropped_chunks: int
    dropped_samples: int
    drain_eta_s: float | None
    pid: int
    boot_id: str
    updated_at: float
    unacked_for_s: float | None = None  # in NOT_ACKED: how long the receiver has not acked
    latest: tuple[Latest, ...] = ()  # status.signals' latest values (agent.latest)
    month_bytes: int = 0  # link bytes this UTC month (agent.budget)
    month_projected_bytes: int = 0  # the month at this month's rate so far
    monthly_budget_bytes: int = 0  # upload.monthly_bytes; 0 = none
    buses: tuple[BusReport, ...] = ()  # each live bus's health (agent.bushealth); none for a replay
    budget_coarsened: bool = False  # sampling.budget_bounds apply: the month would overrun its budget

    @classmethod
    def from_stats(
        cls,
        vin: str,
        state: str,
        stats: Any,
        eta: float | None = None,
        pid: int = 0,
        boot_id: str = "",
        unacked_for_s: float | None = None,
        latest: tuple[Latest, ...] = (),
    ) -> StatusReport:
        """A report from the buffer's running totals (``agent.buffer.BufferStats``)."""
        now = time.time()
        return cls(
            vin=vin,
            state=state,
            backlog_chunks=stats.chunks,
            backlog_samples=stats.samples,
            backlog_bytes=stats.payload_bytes,
            oldest_age_s=None if stats.oldest_created is None else now - stats.oldest_created,
            last_ack_at=stats.last_ack_at,
            dropped_chunks=stats.dropped_chunks,
            dropped_samples=stats.dropped_samples,
            drain_eta_s=eta,
            pid=pid,
            boot_id=boot_id,
            updated_at=now,
            unacked_for_s=unacked_for_s,
            latest=latest,
        )

    def as_json(self) -> dict[str, Any]:
        """The report as a JSON object (``latest``: a list of objects with name, value and at)."""
        return {
            **asdict(self),
            "latest": [entry._asdict() for entry in self.latest],
            "buses": [bus._asdict() for bus in self.buses],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StatusReport:
        """The report :meth:`as_json` wrote; a missing field (an older file) takes its default."""
        latest = tuple(Latest(**entry) for entry in data.get("latest", ()))
        buses = tuple(BusReport(**entry) for entry in data.get("buses", ()))
        return cls(**{**data, "latest": latest, "buses": buses})

    def line(self) -> str:
        """One line, as `systemctl status` shows it."""
        ack = (
            "never"
            if self.last_ack_at is None
            else f"{max(0.0, self.updated_at - self.last_ack_at):.1f} s ago"
        )
        eta = "" if self.drain_eta_s is None else f", drains in ~{self.drain_eta_s:.0f} s"
        drops = f", {self.dropped_chunks} chunks dropped" if self.dropped_chunks else ""
        state = self.state
        if state == State.NOT_ACKED.value:
            waited = f" for {self.unacked_for_s:.0f} s" if self.unacked_for_s is not None else ""
            state = f"{state} (connected, but the receiver has not acked{waited})"
        budget = ""
        if self.monthly_budget_bytes and self.month_projected_bytes > self.monthly_budget_bytes:
            budget = (
                f", OVER BUDGET: month projected {self.month_projected_bytes / 1e6:.1f} MB of "
                f"{self.monthly_budget_bytes / 1e6:.1f} MB"
            )
        if self.budget_coarsened:
            budget += ", bounds coarsened for the budget"
        sick = "".join(f", {bus.summary()}" for bus in self.buses if bus.troubled)
        return (
            f"{state}: backlog {self.backlog_chunks} chunks / {self.backlog_samples} samples{eta}, "
            f"last ack {ack}{drops}{budget}{sick}"
        )

    def to_proto(self, version: str) -> pb.Status:
        return pb.Status(
            vin=self.vin,
            state=self.state,
            backlog_chunks=self.backlog_chunks,
            backlog_samples=self.backlog_samples,
            backlog_bytes=self.backlog_bytes,
            oldest_age_s=self.oldest_age_s or 0.0,
            last_ack_at=self.last_ack_at or 0.0,
            dropped_chunks=self.dropped_chunks,
            agent_version=version,
            updated_at=self.updated_at,
            drain_eta_s=self.drain_eta_s or 0.0,
            drain_eta_known=self.drain_eta_s is not None,
            latest=[pb.LatestValue(name=e.name, value=e.value, at=e.at) for e in self.latest],
            month_bytes=self.month_bytes,
            month_projected_bytes=self.month_projected_bytes,
            monthly_budget_bytes=self.monthly_budget_bytes,
            buses=[pb.BusHealth(**bus._asdict()) for bus in self.buses],
            budget_coarsened=self.budget_coarsened,
        )


RUNTIME_DIRS = (os.environ.get("RUNTIME_DIRECTORY", ""), "/run/edge-agent")


def status_path(buffer_path: Path) -> Path:
    """Where the daemon publishes its status: a tmpfs when it has one (no SD-card writes every second)."""
    name = buffer_path.name + ".status.json"
    for folder in RUNTIME_DIRS:
        if folder and os.path.isdir(folder) and os.access(folder, os.W_OK):
            return Path(folder) / name
    return buffer_path.with_name(name)


def find_status_file(buffer_path: Path) -> list[Path]:
    """Every place a daemon may have written its status, for a reader in another process."""
    name = buffer_path.name + ".status.json"
    return [Path(folder) / name for folder in RUNTIME_DIRS if folder] + [buffer_path.with_name(name)]


def write_status_file(path: Path, report: StatusReport) -> None:
    """Atomic (rename), not durable: a status lost in a power cut is rewritten a second later."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    with open(temporary, "w") as out:
        json.dump(report.as_json(), out)
    os.replace(temporary, path)


def read_status_file(path: Path) -> StatusReport | None:
    """The running daemon's last report, or None when there is none, it is stale or its process is gone."""
    try:
        report = StatusReport.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    if time.time() - report.updated_at > STALE_AFTER_S:
        return None
    try:
        os.kill(report.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return report


class DrainRate:
    """Samples acked per second over the last ``window_s``: the basis of the time-to-drain estimate.

    Mutable, not thread-safe: one thread (the uploader's) owns it; see the module's contract.
    """

    def __init__(self, window_s: float = 15.0) -> None:
        self.window_s = window_s
        self._events: deque[tuple[float, int]] = deque()

    def add(self, samples: int, now: float) -> None:
        self._events.append((now, samples))
        while self._events and now - self._events[0][0] > self.window_s:
            self._events.popleft()

    def per_second(self, now: float) -> float | None:
        while self._events and now - self._events[0][0] > self.window_s:
            self._events.popleft()
        if len(self._events) < 2:
            return None
        span = max(now - self._events[0][0], 1.0)
        return sum(count for _, count in self._events) / span

    def eta(self, backlog_samples: int, now: float) -> float | None:
        return drain_eta(backlog_samples, self.per_second(now))
