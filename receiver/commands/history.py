"""``edge-receiver history --db D --vin V [--signals A,B] [--from T0] [--to T1] [--points N]``: a vehicle's
signals over a time range, as at most N buckets per signal: CSV, long format.

Header ``bucket_start,signal,count,min,mean,max``, then one line per bucket that holds a numeric value,
by start then in the order of ``--signals`` (default: every signal of the vin, sorted). Times are seconds
on the vehicle's clock, as ``export`` prints them; ``--from``/``--to`` take them the same way (default:
the signals' whole range). The resolution is the finest that fits N (:mod:`receiver.history`): buckets
of 1 ms to 30 s from the raw chunks, the 60, 300 or 900 s rollups, or 900 s rollups merged into a
multiple. ``--db`` is a SQLite path or a ``postgresql://`` URL, opened read-only. An unknown vin or
signal is one line with a "did you mean", N < 1 or ``--from`` after ``--to`` one line naming the
option (exit 2), before anything is printed. Main thread.
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction

from agent.errors import ConfigError
from receiver import history
from receiver.store import NotFoundError, open_store

HELP = "print a vehicle's signals as buckets (count, min, mean, max) over a time range, N at most"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, metavar="PATH|URL", help="the receiver's store")
    parser.add_argument("--vin", required=True, help="the vehicle")
    parser.add_argument(
        "--signals", metavar="A.B,C.D", help="comma-separated MESSAGE.SIGNAL names (default: all, sorted)"
    )
    parser.add_argument("--from", dest="start", metavar="T0", help="first second (default: the first value)")
    parser.add_argument("--to", dest="end", metavar="T1", help="last second (default: the last value)")
    parser.add_argument("--points", default="1000", metavar="N", help="buckets per signal, at most (1000)")


def instant(text: str | None, option: str) -> Fraction | None:
    """Seconds on the vehicle's clock, exactly as written (``1700000040.02``)."""
    if text is None:
        return None
    try:
        return Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"{option} {text!r}: expected seconds, such as 1700000040.5") from None


def points(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError(f"--points {text!r}: expected a whole number of buckets, at least 1")
    return number


def run(args: argparse.Namespace) -> int:
    names = None if args.signals is None else [name.strip() for name in args.signals.split(",")]
    if names is not None and not all(names):
        raise NotFoundError(f"--signals {args.signals!r}: an empty signal name")
    start, end, most = instant(args.start, "--from"), instant(args.end, "--to"), points(args.points)
    if start is not None and end is not None and start > end:
        raise ConfigError(f"--from {args.start} is after --to {args.end}")
    with open_store(args.db, readonly=True) as store:
        answer = history.query(store, args.vin, names, start, end, most)
        sys.stdout.writelines(history.lines(answer.names, answer.integer, answer.buckets))
    sys.stdout.flush()
    return 0
