"""``edge-agent status``: backlog, last ack and drops, read from the buffer file."""

from __future__ import annotations

import argparse
import time

from agent.buffer import Buffer
from agent.config import DEFAULT_AGENT_CONFIG, load_agent_config

HELP = "print the buffer's backlog, age of the oldest sample and last ack"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=str(DEFAULT_AGENT_CONFIG), help="YAML configuration file")


def _age(moment: float | None) -> str:
    return "never" if moment is None else f"{time.time() - moment:.1f} s ago"


def run(args: argparse.Namespace) -> int:
    config = load_agent_config(args.config)
    buffer = Buffer(config.buffer.path)
    try:
        stats = buffer.stats()
    finally:
        buffer.close()
    print(f"vin:            {config.vin}")
    print(f"buffer:         {config.buffer.path}")
    print(f"backlog:        {stats.chunks} chunks, {stats.samples} samples, {stats.payload_bytes} bytes")
    print(f"oldest sample:  {'none' if stats.oldest_created is None else _age(stats.oldest_created)}")
    print(f"last ack:       {_age(stats.last_ack_at)}")
    print(f"dropped chunks: {stats.dropped_chunks}")
    return 0
