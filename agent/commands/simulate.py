"""``edge-agent simulate``: record a synthetic drive of the reference EV as a candump log.

The same ``--personality``, ``--duration`` and ``--seed`` always give the same file, byte for byte. Without
``--dbc`` it encodes with the reference EV's DBC wherever it is (:func:`agent.sim.default_dbc`: the
checkout's ``dbc/``, or ``/usr/share/edge-agent/dbc`` of the installed package).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator

import can

from agent.errors import SourceError
from agent.sim import PERSONALITIES, default_dbc, simulate, write_log

HELP = "record a deterministic synthetic drive of the reference EV as a candump log (.log or .log.gz)"

PROGRESS_ABOVE_S = 60.0  # simulated seconds; shorter drives finish before progress would help


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--personality", required=True, help=f"one of: {', '.join(PERSONALITIES)}")
    parser.add_argument("--duration", type=float, required=True, metavar="S", help="seconds to drive")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--out", required=True, help="log to write: *.log, or *.log.gz for gzip")
    parser.add_argument(
        "--dbc", help="DBC to encode with (default: the reference EV's, from the checkout or the package)"
    )
    parser.add_argument("--channel", default="can0", help="channel name written in the log (default can0)")
    parser.add_argument(
        "--start-time",
        type=float,
        default=1_700_000_000.0,
        metavar="EPOCH",
        help="timestamp of the drive's first instant (default 1700000000)",
    )


def _progress(frames: Iterable[can.Message], start: float, duration: float) -> Iterator[can.Message]:
    """Pass the frames through, reporting every tenth of the drive on stderr."""
    tty = sys.stderr.isatty()
    step = duration / 10.0
    next_report = step
    for frame in frames:
        if frame.timestamp - start >= next_report:
            done = f"simulated {next_report:.0f} of {duration:.0f} s ({next_report / duration:.0%})"
            print(f"\r{done}" if tty else done, end="" if tty else "\n", file=sys.stderr, flush=True)
            next_report += step
        yield frame
    if tty:  # wipe the progress line; the summary takes its place
        print("\r" + " " * 60 + "\r", end="", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    if args.personality not in PERSONALITIES:
        raise SourceError(f"unknown personality {args.personality!r}; valid: {', '.join(PERSONALITIES)}")
    if not args.duration > 0:
        raise SourceError(f"--duration must be more than 0 seconds, not {args.duration}")
    began = time.monotonic()
    dbc = args.dbc if args.dbc is not None else default_dbc()
    frames = simulate(args.personality, args.duration, args.seed, dbc, args.start_time, args.channel)
    if args.duration > PROGRESS_ABOVE_S:
        frames = _progress(frames, args.start_time, args.duration)
    count = write_log(args.out, frames)
    print(
        f"{args.out}: {count} frames, {args.duration:g} s of {args.personality} driving (seed {args.seed}) "
        f"in {time.monotonic() - began:.1f} s",
        file=sys.stderr,
    )
    return 0
