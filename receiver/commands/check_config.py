"""``edge-receiver check-config --config FILE``: validate the configuration (the unit's ExecStartPre).

Prints ``FILE: ok (broker HOST:PORT, store PATH)`` and exits 0; a problem raises
:class:`~agent.errors.ConfigError` naming file, line and key (exit 2).
"""

from __future__ import annotations

import argparse

from agent.service.cli import add_config_argument
from receiver.config import DEFAULT_RECEIVER_CONFIG, load_receiver_config

HELP = "validate the configuration file and exit"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser, DEFAULT_RECEIVER_CONFIG, "receiver's")


def run(args: argparse.Namespace) -> int:
    config = load_receiver_config(args.config, check_files=True)
    print(f"{args.config}: ok (broker {config.mqtt.host}:{config.mqtt.port}, store {config.store.shown})")
    return 0
