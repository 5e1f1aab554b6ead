"""How a run ended: what it committed, what it dropped and what never reached a sample, and why.

:class:`RunResult` is built by the daemon's supervisor from the stages' counters once they have
stopped (:meth:`agent.daemon.Agent.account`); ``edge-agent replay`` prints it and exits with its
:meth:`RunResult.outcome`. Immutable once built; any thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent import source
from agent.buffer import BufferStats
from agent.decode import Decoder
from agent.sample import SampleStats


@dataclass
class RunResult:
    """How a run ended. ``failed`` names the stages that failed (then the command exits non-zero)."""

    complete: bool  # the source ended, its last commit was made and the buffer is empty (all acked)
    backlog: BufferStats
    samples_committed: int
    failed: tuple[str, ...] = ()
    dropped: dict[str, int] = field(default_factory=dict)  # why -> samples dropped during this run
    unsampled: dict[str, int] = field(default_factory=dict)  # why -> frames that reached no sample
    warnings: tuple[str, ...] = ()  # e.g. a configured channel that had no frames
    sampling: SampleStats | None = None

    def outcome(self) -> str:
        """``complete``; else the worst of ``incomplete``, ``dropped``, ``unsampled``."""
        if not self.complete or self.failed:
            return "incomplete"
        if self.dropped:
            return "dropped"
        if self.unsampled or self.warnings:
            return "unsampled"
        return "complete"


def unsampled_frames(decoder: Decoder, log_stats: source.LogStats, sampling: SampleStats) -> dict[str, int]:
    """Why -> how many frames (or log lines) reached no sample; only the non-zero reasons."""
    stats = decoder.stats
    counts = {
        "unknown_channel_frames": decoder.unknown_channel_frames(),
        "oversize_frames": sum(stats.oversize.values()),
        "undecodable_frames": sum(stats.errors.values()),
        "bad_log_lines": log_stats.bad_lines,
        "late_frames": sampling.late,
    }
    return {why: n for why, n in counts.items() if n}
