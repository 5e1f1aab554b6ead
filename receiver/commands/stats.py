"""``edge-receiver stats --db PATH``: per vehicle, chunks, samples, evicted chunks and unexplained gaps.

A gap in a boot's chunk sequence that no eviction notice explains is printed as ``missing``: either
still in flight or lost (which must never happen). Opens the store read-only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from receiver.store import Store

HELP = "per vehicle: chunks, samples, evicted and missing chunks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, required=True, metavar="PATH", help="the receiver's store")


def run(args: argparse.Namespace) -> int:
    with Store(args.db, readonly=True) as store:
        per_vin = store.stats()
    if not per_vin:
        print(f"{args.db}: no vehicles")
    for entry in per_vin:
        missing = sum(last - first + 1 for _, first, last in entry.missing)
        print(
            f"{entry.vin}: {entry.chunks} chunks, {entry.samples} samples, {entry.values} values, "
            f"{entry.overlaps} overlapping, {entry.evicted} evicted, {missing} missing"
        )
        for boot_id, first, last in entry.missing:
            print(f"  missing: boot {boot_id.hex()} seq {first}-{last}")
    return 0
