"""``edge-receiver export --db PATH --vin VIN [--signals A.B,C.D]``: a vehicle's stored samples as CSV.

``timestamp,<names>`` then one line per stored tick; byte-identical to ``edge-agent sample`` for the
same data (:mod:`receiver.timeline`). Opens the store read-only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.service.cli import did_you_mean
from receiver.store import NotFoundError, Store
from receiver.timeline import write_csv

HELP = "print a vehicle's stored samples as CSV"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, required=True, metavar="PATH", help="the receiver's store")
    parser.add_argument("--vin", required=True, help="the vehicle")
    parser.add_argument(
        "--signals", metavar="A.B,C.D", help="comma-separated MESSAGE.SIGNAL names (default: all, sorted)"
    )


def run(args: argparse.Namespace) -> int:
    with Store(args.db, readonly=True) as store:
        vins = store.vins()
        if args.vin not in vins:
            raise NotFoundError(f"unknown vin {args.vin!r} in {args.db}{did_you_mean(args.vin, vins)}")
        known = store.signals(args.vin)
        if args.signals is None:
            names = known
        else:
            names = [name.strip() for name in args.signals.split(",")]
            if not all(names):
                raise NotFoundError(f"--signals {args.signals!r}: an empty signal name")
            for name in names:
                if name not in known:
                    raise NotFoundError(f"vin {args.vin!r} has no signal {name!r}{did_you_mean(name, known)}")
        write_csv(sys.stdout, store.rate(args.vin), names, store.rows(args.vin, names))
    sys.stdout.flush()
    return 0
