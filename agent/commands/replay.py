"""``edge-agent replay``: one recorded drive through the whole pipeline, until every sample is acked."""

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
from agent.service import logs
from agent.service.cli import positive_or

HELP = "replay a log through the whole pipeline; exit 0 once every sample is acked by the receiver"


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
    if args.report:
        report = {
            "vin": config.vin,
            "log": str(args.log),
            "complete": result.complete,
            "samples_committed": result.samples_committed,
            "chunks_committed": agent.pipeline.chunks_committed,
            "frames": agent.decoder.stats.frames,
            "unknown_frames": sum(agent.decoder.stats.unknown.values()),
            "bad_log_lines": agent.log_stats.bad_lines,
            "pending_chunks": result.backlog.chunks,
            **dataclasses.asdict(counters),
        }
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    summary = (
        f"{args.log}: {result.samples_committed} samples committed, {counters.chunks_acked} chunks acked, "
        f"{counters.bytes_sent} bytes sent in {counters.batches_sent} batches"
    )
    if result.complete:
        print(f"{summary}; complete", file=sys.stderr)
        return 0
    backlog = result.backlog
    print(
        f"{summary}; INCOMPLETE: {backlog.chunks} chunks ({backlog.samples} samples) still pending in "
        f"{config.buffer.path}",
        file=sys.stderr,
    )
    return 1
