"""``edge-agent run``: the long-running daemon (what the systemd unit starts).

Runs on the main thread (the daemon's supervisor) until SIGTERM/SIGINT or a failure. An error that ends
the run (an :class:`~agent.errors.EdgeError`, or an unexpected one) is logged as ``agent_failed`` at
error priority (PRIORITY=3 in the journal, with the reason) before it leaves, so that
``journalctl -u edge-agent -p err`` and ``systemctl status`` show why; :func:`agent.service.cli.main`
then prints it on stderr as one line (exit 2; an unexpected error keeps its traceback). A stage or a
bus reader that fails exits 1, so that systemd restarts the service.
"""

from __future__ import annotations

import argparse

from agent.config import DEFAULT_AGENT_CONFIG, load_agent_config
from agent.daemon import Agent
from agent.errors import EdgeError
from agent.service import logs

HELP = "run the agent until stopped (SIGTERM or SIGINT)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=str(DEFAULT_AGENT_CONFIG), help="YAML configuration file")


def run(args: argparse.Namespace) -> int:
    log = logs.get_logger("agent.run")
    try:
        return _run(args)
    except EdgeError as error:
        log.error("agent_failed", reason=str(error), error=type(error).__name__, config=str(args.config))
        raise
    except Exception as error:
        log.error("agent_failed", reason=f"{type(error).__name__}: {error}", exc_info=error)
        raise


def _run(args: argparse.Namespace) -> int:
    config = load_agent_config(args.config, check_files=True)
    logs.configure(config.logging.level, config.logging.format)
    agent = Agent(config)
    agent.install_signal_handlers()
    agent.start()
    result = agent.run(until_drained=False)
    if result.failed:  # a stage died (logged as stage_failed): exit 1, so that systemd restarts us
        return 1
    return 0 if result.backlog.chunks == 0 or agent.stop_event.is_set() else 1
