"""``edge-agent check-config``: validate a config file and everything ``run`` would build from it.

Prints ``FILE: ok (vin ..., N buses, M signals, source ...)`` and exits 0; on a problem it raises
:class:`~agent.errors.ConfigError` listing every problem with file, line and key, or, for a DBC, a
:class:`~agent.errors.DbcError` naming the config and the DBC file (the CLI exits 2). The replay log,
``mqtt.password_file`` and ``mqtt.ca_file`` must exist when they are set; every DBC is loaded the way
``run`` loads it (an empty DBC, a syntax error, a signal beyond its frame, a frame id or message name
defined twice are errors) and every configured signal, bound and angle is resolved, so that a unit's
``ExecStartPre`` catches what ``run`` would fail on. Warnings (stderr, exit 0): the VIN is still the
example's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.config import DEFAULT_AGENT_CONFIG, AgentConfig, load_agent_config
from agent.decode import decoder_for
from agent.errors import ConfigError, DbcError
from agent.schemas import build_budget_schema

HELP = "validate a config file: the files it names, its DBCs and its signals"
EXAMPLE_VIN = "5YJ3E1EA0KF000001"  # config/edge-agent.example.yaml's


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


def warnings(config: AgentConfig) -> list[str]:
    """What is valid but probably not meant."""
    found = []
    if config.vin == EXAMPLE_VIN:
        found.append(
            f"vin {config.vin} is the example configuration's: set this vehicle's own VIN (it names "
            "the MQTT topics and the data at the receiver)"
        )
    return found


def run(args: argparse.Namespace) -> int:
    config = load_agent_config(args.config, check_files=True)
    try:
        decoder_for(config)
        build_budget_schema(config)
    except (DbcError, ConfigError) as error:
        raise type(error)(f"{args.config}: {error}") from error
    print(f"{args.config}: ok ({summary(config)})")
    for warning in warnings(config):
        print(f"{args.config}: warning: {warning}", file=sys.stderr)
    return 0
