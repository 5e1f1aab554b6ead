"""What both console scripts share: sub-commands loaded one module per verb, ``--config``, "did you mean",
and a ``main`` that turns the product's errors into one line on stderr instead of a traceback.

A command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``
(cantools' layout). Runs on the main thread; the command's own output owns stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import importlib
import io
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import __version__
from agent.errors import ConfigError, EdgeError
from agent.service import logs
from agent.service.schema import suggest

__all__ = ["add_config_argument", "build_parser", "did_you_mean", "main", "positive_or"]

did_you_mean = suggest  # one "did you mean" for config keys, signal names, VINs and verbs


def add_config_argument(parser: argparse.ArgumentParser, default: Path, whose: str) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=default,
        metavar="FILE",
        help=f"the {whose} YAML config file (default {default})",
    )


def positive_or(text: str, option: str, keyword: str) -> float | None:
    """A number > 0 from a command-line ``option``, or ``None`` for ``keyword`` (e.g. 'max', 'auto')."""
    if text == keyword:
        return None
    try:
        number = float(text)
    except ValueError:
        number = -1.0
    if not number > 0:
        raise ConfigError(f"{option}: expected a number > 0 or {keyword!r}, got {text!r}")
    return number


def build_parser(
    prog: str, description: str, package: str, commands: Sequence[str]
) -> argparse.ArgumentParser:
    """A parser with one sub-command per name, each from the module ``package.<name with _ for ->``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in commands:
        module = importlib.import_module(f"{package}.{name.replace('-', '_')}")
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def main(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse, run the chosen command, and map the product's errors to exit status 2 with one line."""
    with contextlib.suppress(io.UnsupportedOperation, ValueError):  # stderr may be no real file (tests)
        faulthandler.enable()  # a watchdog kill (SIGABRT) leaves every thread's stack in the journal
    args = parser.parse_args(argv)
    logs.configure()  # to stderr: stdout belongs to the command's output (CSV, status)
    try:
        return int(args.handler(args))
    except EdgeError as error:
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head` closed the pipe: not an error
        return 0
