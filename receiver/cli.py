"""``edge-receiver``: the receiver service and the tools that read its store, one verb per module under
:mod:`receiver.commands` (the agent's layout).

Runs on the main thread; read commands open the store read-only and may run beside a live receiver
(WAL). Errors of the project's tree print as one line on stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agent.service import cli

COMMANDS = ("run", "serve", "check-config", "export", "history", "stats", "accuracy", "pki", "broker-config")


def build_parser() -> argparse.ArgumentParser:
    return cli.build_parser(
        "edge-receiver", "Cloud receiver of edge telemetry.", "receiver.commands", COMMANDS
    )


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
