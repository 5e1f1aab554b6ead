"""``edge-receiver run --config FILE``: the MQTT service until SIGTERM or SIGINT.

Receives batches through the shared subscription, stores each chunk once, acks after the commit
(:class:`receiver.ingest.Receiver`); logs through :mod:`agent.service.logs`.
"""

from __future__ import annotations

import argparse

from agent.service import logs
from agent.service.cli import add_config_argument
from receiver.config import DEFAULT_RECEIVER_CONFIG, load_receiver_config

HELP = "receive batches over MQTT, store them, ack them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser, DEFAULT_RECEIVER_CONFIG, "receiver's")


def run(args: argparse.Namespace) -> int:
    from receiver.ingest import Receiver, tune_gc  # paho is needed by this command only

    config = load_receiver_config(args.config, check_files=True)
    logs.configure(config.logging.level, config.logging.format)
    tune_gc()
    Receiver(config).run_forever()
    return 0
