"""``edge-agent replay``: one recorded drive through the whole pipeline, until every sample is acked.

Runs on the main thread (the daemon's supervisor), blocks until the replay is drained or times out.
The report (stderr, and ``--report JSON``) says what happened to every frame; the exit status:

- 0: complete: every frame reached a sample, every sample committed was acked, nothing was dropped.
- 1: incomplete: chunks still pending (not acked before ``--drain-timeout``) or a stage failed.
- 2: an error before the replay ran (configuration, log file, buffer): one line on stderr.
- 3: something was dropped: samples evicted by the buffer's cap (or a full disk), or refused
  (``refuse_new``); the receiver has them as evicted, but they are not stored.
- 4: something was never sampled: frames of channels no bus is configured for, oversize or
  undecodable frames, bad log lines, late frames, or a configured channel without any frame.

When several apply, the lowest non-zero status of 1, 3, 4 wins; the report lists them all.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from agent.config import load_agent_config
from agent.daemon import Agent
from agent.errors import ConfigError
from agent.runresult import RunResult
from agent.service import logs
from agent.service.cli import positive_or

HELP = (
    "replay a log through the whole pipeline; exit 0 once every frame is sampled and every sample acked"
    " (1 incomplete, 3 dropped, 4 never sampled)"
)
EXIT = {"complete": 0, "incomplete": 1, "dropped": 3, "unsampled": 4}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", help="recorded log (overrides source.log of the configuration)")
    parser.add_argument("--config", required=True, help="YAML configuration file")
    parser.add_argument(
        "--speed", default=None, help="multiple of real time, or 'max' (default: the config's)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds allowed after the log ends for the backlog to be acked (default 60)",
    )
    parser.add_argument("--report", metavar="JSON", help="also write the run's figures to this JSON file")


def parse_speed(text: str) -> float:
    speed = positive_or(text, "--speed", "max")
    return math.inf if speed is None else speed


def run(args: argparse.Namespace) -> int:
    config = load_agent_config(args.config, check_files=True)
    source = dataclasses.replace(config.source, kind="replay", log=Path(args.log))
    if args.speed is not None:
        source = dataclasses.replace(source, speed=parse_speed(args.speed))
    if not source.log or not source.log.exists():
        raise ConfigError(f"{args.log}: no such log file")
    config = dataclasses.replace(config, source=source)
    logs.configure(config.logging.level, config.logging.format)
    agent = Agent(config)
    agent.install_signal_handlers()
    agent.start()
    result = agent.run(until_drained=True, drain_timeout_s=args.drain_timeout)
    counters = agent.uploader.counters
    outcome = result.outcome()
    sampling = dataclasses.asdict(result.sampling) if result.sampling else {}
    if args.report:
        report = {
            "vin": config.vin,
            "log": str(args.log),
            "outcome": outcome,
            "exit_status": EXIT[outcome],
            "complete": result.complete,
            "failed": list(result.failed),
            "samples_committed": result.samples_committed,
            "chunks_committed": agent.pipeline.chunks_committed,
            "frames": agent.decoder.stats.frames,
            "unknown_frames": sum(agent.decoder.stats.unknown.values()),
            "bad_log_lines": agent.readers.log_stats.bad_lines,
            "pending_chunks": result.backlog.chunks,
            "dropped": result.dropped,
            "unsampled": result.unsampled,
            "warnings": list(result.warnings),
            "channels": dict(agent.decoder.stats.channels),
            "sampling": sampling,
            "backpressure_s": round(agent.pipeline.backpressure_s, 3),
            **dataclasses.asdict(counters),
        }
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.log}: {'; '.join(summary_lines(result, agent, config.buffer.path))}", file=sys.stderr)
    return EXIT[outcome]


def summary_lines(result: RunResult, agent: Agent, buffer_path: Path) -> list[str]:
    """The report's parts: the figures, then every reason the run is not complete."""
    counters = agent.uploader.counters
    parts = [
        f"{result.samples_committed} samples committed, {counters.chunks_acked} chunks acked, "
        f"{counters.bytes_sent} bytes sent in {counters.batches_sent} batches"
    ]
    sampling = result.sampling
    if sampling and sampling.jumps_back:
        parts.append(
            f"{sampling.jumps_back} backward time jumps (largest {sampling.largest_jump_back_s:.1f} s), "
            "each sampled as a new segment"
        )
    if sampling and sampling.gaps:
        parts.append(f"{sampling.gaps} gaps ({sampling.ticks_skipped} ticks without any signal skipped)")
    if result.failed:
        parts.append(f"FAILED: {', '.join(result.failed)}")
    if not result.complete:
        backlog = result.backlog
        parts.append(
            f"INCOMPLETE: {backlog.chunks} chunks ({backlog.samples} samples) still pending in {buffer_path}"
        )
    if result.dropped:
        parts.append("DROPPED by the buffer: " + ", ".join(f"{n} {why}" for why, n in result.dropped.items()))
    if result.unsampled:
        parts.append("NEVER SAMPLED: " + ", ".join(f"{n} {why}" for why, n in result.unsampled.items()))
    parts.extend(f"WARNING: {warning}" for warning in result.warnings)
    if result.outcome() == "complete":
        parts.append("complete")
    return parts
