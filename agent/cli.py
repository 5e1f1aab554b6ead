"""``edge-agent``: one sub-command per module under :mod:`agent.commands` (cantools' layout).

Errors of the project's own tree print as one line on stderr and exit 2; nothing prints a traceback
for bad input (:func:`agent.service.cli.main`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agent.service import cli

COMMANDS = ("run", "replay", "sample", "simulate", "check-config", "status")


def build_parser() -> argparse.ArgumentParser:
    return cli.build_parser("edge-agent", "Fault-tolerant CAN telemetry agent.", "agent.commands", COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
