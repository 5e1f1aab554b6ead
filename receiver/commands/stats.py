"""``edge-receiver stats --db PATH|URL``: per vehicle, chunks, samples, evicted chunks, unexplained gaps, latency.

A gap in a boot's chunk sequence that no eviction notice explains is printed as ``missing``: either
still in flight or lost (which must never happen). Then, for a vehicle whose agent stamps its chunks
(wire version 2), one line per kind, live and backlog, of the latency from seal to commit
(:mod:`receiver.latency`): P50, P95 and P99 as bucket bounds ("P95 < 1.09 s") beside seed 002's target
("P95 latency < 2000ms"). A vehicle with no stamped chunk prints no latency line. Opens the store read-only.
"""

from __future__ import annotations

import argparse

from receiver import latency
from receiver.store import open_store

HELP = "per vehicle: chunks, samples, evicted and missing chunks, latency percentiles"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", required=True, metavar="PATH|URL", help="the store: a SQLite file or a postgresql:// URL"
    )


def run(args: argparse.Namespace) -> int:
    with open_store(args.db, readonly=True) as store:
        per_vin = store.stats()
        latencies = latency.read(store.db)
        where = store.path  # a URL's password as ***
    if not per_vin:
        print(f"{where}: no vehicles")
    for entry in per_vin:
        missing = sum(last - first + 1 for _, first, last in entry.missing)
        print(
            f"{entry.vin}: {entry.chunks} chunks, {entry.samples} samples, {entry.values} values, "
            f"{entry.overlaps} overlapping, {entry.evicted} evicted, {missing} missing"
            + (f", {entry.expired} expired (retention)" if entry.expired else "")
        )
        for boot_id, first, last in entry.missing:
            print(f"  missing: boot {boot_id.hex()} seq {first}-{last}")
        kinds = latencies.get(entry.vin, {})
        for kind in latency.KINDS:
            if kind in kinds:
                print(f"  {latency.describe(kind, kinds[kind])}")
    return 0
