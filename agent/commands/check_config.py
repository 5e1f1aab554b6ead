"""``edge-agent check-config``: validate a config file, and check that the files it names exist.

Prints ``FILE: ok (vin ..., N buses, M signals, source ...)`` and exits 0; on a problem it raises
:class:`~agent.errors.ConfigError` listing every problem with file, line and key (the CLI exits 2).
The DBC files and the replay log must exist (they are not parsed here), and so must
``mqtt.password_file`` and ``mqtt.ca_file`` when they are set.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.config import DEFAULT_AGENT_CONFIG, AgentConfig, load_agent_config

HELP = "validate a config file and check that the files it names exist"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_AGENT_CONFIG,
        metavar="FILE",
        help=f"the agent's YAML config file (default {DEFAULT_AGENT_CONFIG})",
    )


def summary(config: AgentConfig) -> str:
    """One line describing a config: ``vin ..., N buses, M signals, source ...``."""
    buses = f"{len(config.buses)} bus" + ("es" if len(config.buses) != 1 else "")
    count = len(config.sampling.signals)
    signals = f"{count} signal" + ("s" if count != 1 else "") if count else "all signals"
    if config.source.kind == "replay":
        speed = "max" if config.source.as_fast_as_possible else f"{config.source.speed:g}x"
        source = f"replay {config.source.log} at {speed}"
    else:
        source = "bus " + ", ".join(f"{bus.interface}:{bus.channel}" for bus in config.buses)
    return f"vin {config.vin}, {buses}, {signals}, source {source}"


def run(args: argparse.Namespace) -> int:
    config = load_agent_config(args.config, check_files=True)
    print(f"{args.config}: ok ({summary(config)})")
    return 0
