"""``edge-agent``: one sub-command per module under :mod:`agent.commands` (cantools' layout).

Each command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Errors of the project's own tree print as one line on stderr and exit 2; nothing prints a traceback
for bad input.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import sys
from collections.abc import Sequence

from agent import __version__, logs
from agent.errors import EdgeError

COMMANDS = ("run", "replay", "sample", "simulate", "check-config", "status")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description="Fault-tolerant CAN telemetry agent.")
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"agent.commands.{name.replace('-', '_')}")
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    faulthandler.enable()  # a watchdog kill (SIGABRT) leaves every thread's stack in the journal
    args = build_parser().parse_args(argv)
    logs.configure()  # to stderr: stdout belongs to the command's output (CSV, status)
    try:
        return int(args.handler(args))
    except EdgeError as error:
        print(f"edge-agent {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edge-agent sample ... | head` closed the pipe: not an error
        return 0


if __name__ == "__main__":
    sys.exit(main())
