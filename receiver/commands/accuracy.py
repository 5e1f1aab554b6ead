"""``edge-receiver accuracy --truth CSV --db PATH --vin VIN``: the largest error per signal beside its bound.

The truth is ``edge-agent sample`` of a log; the received values are the vin's in the store, for the
truth's signals (or, with ``--export CSV``, what ``edge-receiver export`` printed). Each signal's bound
and angle are the ones its agent declared on the wire, as the store keeps them
(:func:`receiver.accuracy.declared_bounds`); ``--bound`` and ``--angle`` override them, and without
``--db`` they are the only ones (any other signal is lossless). Exits 0 when every signal is within its
bound and nothing is missing, 1 otherwise; a file that cannot be read, an unknown vin or signal, is one
line on stderr (exit 2). Main thread; opens the store read-only and reads the CSVs line by line.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

from agent.errors import ConfigError
from receiver.accuracy import compare, declared_bounds, format_report, parse_pair
from receiver.store import open_store
from receiver.timeline import csv_lines

HELP = "largest error per signal: the stored values beside `edge-agent sample` of the same log"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--truth", type=Path, required=True, help="`edge-agent sample` CSV of the log")
    parser.add_argument(
        "--db", metavar="PATH|URL", help="the store (values and bounds): a SQLite file or a postgresql:// URL"
    )
    parser.add_argument("--vin", help="the vehicle in --db")
    parser.add_argument("--export", type=Path, metavar="CSV", help="an `edge-receiver export` CSV to compare")
    parser.add_argument(
        "--bound", action="append", default=[], metavar="NAME=EPS", help="a signal's bound (repeatable)"
    )
    parser.add_argument(
        "--angle", action="append", default=[], metavar="NAME=TURN", help="an angle's turn (repeatable)"
    )


def read_lines(path: Path, what: str) -> Generator[str, None, None]:
    """The lines of the CSV at ``path``, lazily; a file that cannot be read is one :class:`ConfigError`."""
    try:
        with open(path, encoding="utf-8") as file:
            yield from file
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: the {what} CSV is not UTF-8 text ({error.reason})") from error
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the {what} CSV: {error.strerror or error}") from error


def truth_names(path: Path) -> list[str]:
    """The signals of the truth's header (none when it is no sample CSV: :func:`compare` says so)."""
    with contextlib.closing(read_lines(path, "truth")) as lines:
        header = next(lines, "").rstrip("\r\n").split(",")
    return header[1:] if header[0] == "timestamp" else []


def run(args: argparse.Namespace) -> int:
    """Print the table; 0 when every signal is within its bound."""
    if (args.db is None) != (args.vin is None):
        raise ConfigError("--db and --vin go together: the store, and the vehicle in it")
    if args.db is None and args.export is None:
        raise ConfigError("nothing to compare the truth with: give --db PATH --vin VIN, or --export CSV")
    bounds: dict[str, float] = {}
    angles: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        received: Iterator[str] = iter(())  # --db or --export gives it
        if args.export is not None:
            received = stack.enter_context(contextlib.closing(read_lines(args.export, "export")))
        if args.db is not None:
            store = stack.enter_context(open_store(args.db, readonly=True))
            rate = store.rate(args.vin)  # an unknown vin: one line, with a "did you mean"
            bounds, angles = declared_bounds(store.declared(args.vin).values())
            if args.export is None:
                names = truth_names(args.truth)
                received = csv_lines(rate, names, store.rows(args.vin, names))
        bounds.update(parse_pair(text, "--bound") for text in args.bound)
        angles.update(parse_pair(text, "--angle") for text in args.angle)
        truth = stack.enter_context(contextlib.closing(read_lines(args.truth, "truth")))
        report = compare(truth, received, bounds, angles)
    sys.stdout.write(format_report(report))
    return 0 if report.ok else 1
