"""``edge-receiver export --db PATH|URL --vin VIN [--signals A.B,C.D]``: a vehicle's stored samples as CSV.

``timestamp,<names>`` then one line per stored tick; byte-identical to ``edge-agent sample`` for the
same data (:mod:`receiver.timeline`). Opens the store (a SQLite file or a ``postgresql://`` URL) read-only; an unknown vin or signal is one line
with a "did you mean" (:class:`~receiver.store.NotFoundError`, exit 2), before anything is printed.
"""

from __future__ import annotations

import argparse
import sys

from receiver.store import NotFoundError, open_store
from receiver.timeline import write_csv

HELP = "print a vehicle's stored samples as CSV"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", required=True, metavar="PATH|URL", help="the store: a SQLite file or a postgresql:// URL"
    )
    parser.add_argument("--vin", required=True, help="the vehicle")
    parser.add_argument(
        "--signals", metavar="A.B,C.D", help="comma-separated MESSAGE.SIGNAL names (default: all, sorted)"
    )


def run(args: argparse.Namespace) -> int:
    names = None if args.signals is None else [name.strip() for name in args.signals.split(",")]
    if names is not None and not all(names):
        raise NotFoundError(f"--signals {args.signals!r}: an empty signal name")
    with open_store(args.db, readonly=True) as store:
        rate = store.rate(args.vin)  # an unknown vin or signal is refused before any output
        names = store.signals(args.vin) if names is None else names
        write_csv(sys.stdout, rate, names, store.rows(args.vin, names))
    sys.stdout.flush()
    return 0
