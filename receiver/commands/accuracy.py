"""``edge-receiver accuracy --truth CSV --export CSV``: the largest error per signal beside its bound.

The truth is ``edge-agent sample`` of a log, the export ``edge-receiver export`` of the same vehicle;
exits 0 when every signal is within its bound, 1 otherwise (:mod:`receiver.accuracy`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from receiver.accuracy import _pair, bounds_from_config, compare, format_report

HELP = "largest error per signal: an export beside `edge-agent sample` of the same log"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--truth", type=Path, required=True, help="`edge-agent sample` CSV of the log")
    parser.add_argument("--export", type=Path, required=True, help="`edge-receiver export` CSV of the vin")
    parser.add_argument("--config", type=Path, help="the agent's YAML config: bounds, preset and angles")
    parser.add_argument(
        "--bound", action="append", default=[], metavar="NAME=EPS", help="a signal's bound (repeatable)"
    )
    parser.add_argument(
        "--angle", action="append", default=[], metavar="NAME=TURN", help="an angle's turn (repeatable)"
    )


def run(args: argparse.Namespace) -> int:
    """``edge-receiver accuracy``: print the table; 0 when every signal is within its bound."""
    with open(args.truth, encoding="utf-8") as truth, open(args.export, encoding="utf-8") as received:
        names = next(iter(received), "").rstrip("\r\n").split(",")[1:]
        received.seek(0)
        bounds, angles = bounds_from_config(args.config, names) if args.config else ({}, {})
        bounds.update(_pair(text, "--bound") for text in args.bound)
        angles.update(_pair(text, "--angle") for text in args.angle)
        report = compare(truth, received, bounds, angles)
    sys.stdout.write(format_report(report))
    return 0 if report.ok else 1
