"""``edge-agent run``: the long-running daemon (what the systemd unit starts)."""

from __future__ import annotations

import argparse

from agent.config import DEFAULT_AGENT_CONFIG, load_agent_config
from agent.daemon import Agent
from agent.service import logs

HELP = "run the agent until stopped (SIGTERM or SIGINT)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=str(DEFAULT_AGENT_CONFIG), help="YAML configuration file")


def run(args: argparse.Namespace) -> int:
    config = load_agent_config(args.config, check_files=True)
    logs.configure(config.logging.level, config.logging.format)
    agent = Agent(config)
    agent.install_signal_handlers()
    agent.start()
    result = agent.run(until_drained=False)
    if result.failed:  # a stage died (logged as stage_failed): exit 1, so that systemd restarts us
        return 1
    return 0 if result.backlog.chunks == 0 or agent.stop_event.is_set() else 1
