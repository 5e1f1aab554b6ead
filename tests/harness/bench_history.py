"""The rollups' bench (issue 11): a one-day ``edge-receiver history`` query beside a full export of the day.

One day of one 50 Hz vehicle (4.32 M ticks, each of :data:`SIGNALS` signals present at every tick) is
synthesized as decoded batches (:func:`batches`: 50-tick chunks, 240 to a batch, as a backlog drain
sends them; values from integer formulas, no CAN, no codec) and stored into a fresh store with
``Store.store_batch``, so that the rollups are maintained at ingest as in production. Then, best of
:data:`RUNS`, wall time (a query is waited on):

- ``history``: ``edge-receiver history`` of every signal over the whole day, ``--points 1000``, run as
  the command runs (:func:`receiver.commands.history.run`, its CSV written to memory);
- ``export``: ``edge-receiver export`` of the same signals over the same day
  (:func:`receiver.commands.export.run`), once: seconds, not milliseconds.

:func:`history_rows` takes the store's target (a SQLite path or a ``postgresql://`` URL) and gives the
rows of the receiver-store table of :mod:`tests.harness.bench_receiver`, each ``(measure, value, unit,
note)``. ``python -m tests.harness.bench_history [--hours H]`` prints them for a SQLite file.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import math
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

from agent.wire import DecodedBatch
from agent.wire.values import ChunkData, Schema, SignalSpec
from receiver.commands import export, history
from receiver.store import open_store

VIN = "BENCH0HISTORY0001"
RATE = 50
SIGNALS = 4
START_S = 1_700_006_400  # a midnight (UTC) on the vehicle's clock
CHUNK = 50
BATCH = 240
POINTS = 1000
RUNS = 5
SCHEMA = Schema(
    Fraction(RATE),
    (
        SignalSpec("Drive.Speed", scale=0.01, integer_scaled=False),  # physical floats
        SignalSpec("Motor.Rpm", scale=1, offset=-10_000),  # physical ints
        SignalSpec("Imu.Accel", is_float=True, integer_scaled=False),  # IEEE floats
        SignalSpec("Gear.Gear"),  # held: a constant per chunk
    )[:SIGNALS],
)
Measure = tuple[str, float, str, str]


def batches(
    seconds: int, start_s: int = START_S, vin: str = VIN, schema: Schema = SCHEMA, boot: bytes = bytes(16)
) -> Iterator[DecodedBatch]:
    """``seconds`` of one boot at the schema's (whole) rate from ``start_s``, as decoded batches."""
    rate = int(schema.rate)
    first, end = start_s * rate, (start_s + seconds) * rate
    for begin in range(first, end, CHUNK * BATCH):
        chunks = []
        for low in range(begin, min(begin + CHUNK * BATCH, end), CHUNK):
            ticks = list(range(low, min(low + CHUNK, end)))
            columns: list[list[int | float | None]] = [
                [(t // 7) % 12_000 for t in ticks],
                [(t * 13) % 9_000 for t in ticks],
                [math.sin(t / 500) for t in ticks],
                [(low // 3_000) % 6] * len(ticks),
            ]
            chunks.append(ChunkData(boot, (low - first) // CHUNK, ticks, columns[: len(schema.signals)]))
        yield DecodedBatch(vin, schema, chunks, [], 0.0)


def build(target: str | Path, seconds: int) -> float:
    """Store ``seconds`` of the vehicle into the fresh store at ``target``; the CPU seconds it took."""
    started = time.process_time()
    with open_store(target) as store:
        for batch in batches(seconds):
            store.store_batch(batch)
    return time.process_time() - started


class Sink(io.TextIOBase):
    """A stdout that keeps the first :data:`KEEP` characters written and counts the lines."""

    KEEP = 1 << 20

    def __init__(self) -> None:
        self.kept: list[str] = []
        self.size = self.lines = 0

    def write(self, text: str) -> int:
        if self.size < self.KEEP:
            self.kept.append(text)
        self.size += len(text)
        self.lines += text.count("\n")
        return len(text)


def timed(
    command: Callable[[argparse.Namespace], int], args: argparse.Namespace, runs: int
) -> tuple[float, Sink]:
    """Best wall seconds of ``runs`` runs of a command, and what its last run printed."""
    best, out = math.inf, Sink()
    for _ in range(runs):
        out = Sink()
        started = time.perf_counter()
        with contextlib.redirect_stdout(out):
            command(args)
        best = min(best, time.perf_counter() - started)
    return best, out


def api_history(target: str | Path, names: str) -> tuple[float, int]:
    """Best wall seconds of the same query through ``edge-receiver serve``'s app, and its bucket count."""
    from receiver.config import ReceiverConfig, StoreConfig
    from tests.harness.api_server import serving

    store = (
        StoreConfig(dsn=str(target)) if str(target).startswith("postgres") else StoreConfig(path=Path(target))
    )
    best, found = math.inf, 0
    with serving(ReceiverConfig(store=store)) as base:
        query = urllib.parse.urlencode({"signals": names, "points": POINTS})
        for _ in range(RUNS):
            started = time.perf_counter()
            with urllib.request.urlopen(f"{base}/api/vehicles/{VIN}/history?{query}", timeout=60) as answer:
                body = json.loads(answer.read())
            best = min(best, time.perf_counter() - started)
            found = sum(len(buckets) for buckets in body["signals"].values())
    return best, found


def history_rows(
    target: str | Path, hours: float = 24, progress: Callable[[str], None] | None = None
) -> list[Measure]:
    """The rows of a day (``hours``) stored into the fresh store ``target``: history and export."""
    say = progress or (lambda _text: None)
    seconds = int(hours * 3600)
    kind = "PostgreSQL" if str(target).startswith("postgres") else "SQLite"
    say(
        f"history: storing {seconds * RATE:,} ticks x {SIGNALS} signals at {RATE} Hz into a fresh {kind} store"
    )
    build_cpu = build(target, seconds)
    names = ",".join(spec.name for spec in SCHEMA.signals)
    query = argparse.Namespace(
        db=str(target), vin=VIN, signals=names, start=None, end=None, points=str(POINTS)
    )
    say(f"history: {POINTS} points of {SIGNALS} signals over the day, best of {RUNS}; then a full export")
    query_s, printed = timed(history.run, query, RUNS)
    api_s, api_buckets = api_history(target, names)
    export_s, exported = timed(export.run, argparse.Namespace(db=str(target), vin=VIN, signals=names), 1)
    starts = sorted({Fraction(line.split(",")[0]) for line in "".join(printed.kept).splitlines()[1:]})
    width = min((b - a for a, b in itertools.pairwise(starts)), default=Fraction(0))
    day = f"{hours:g} h of a {RATE} Hz vehicle ({seconds * RATE:,} ticks x {SIGNALS} signals)"
    return [
        (
            f"history, 1 day, {POINTS:,} points ({kind})",
            query_s * 1000,
            "ms",
            f"{day}, all {SIGNALS} signals, --points {POINTS}: {printed.lines - 1} buckets of "
            f"{float(width):g} s, best of {RUNS} wall; stored in {build_cpu:.1f} CPU s with the rollups",
        ),
        (
            f"history via the API, 1 day, {POINTS:,} points ({kind})",
            api_s * 1000,
            "ms",
            f"GET /api/vehicles/{{vin}}/history on uvicorn, loopback HTTP, JSON: {api_buckets} buckets, best of "
            f"{RUNS} wall; {api_s / max(query_s, 1e-9):.2f}x the CLI's query above",
        ),
        (
            f"export, the same day ({kind})",
            export_s,
            "s",
            f"the {SIGNALS} signals' {exported.lines - 1:,} rows as CSV ({exported.size / 1e6:,.0f} MB), wall: "
            f"{export_s * 1000 / max(query_s * 1000, 1e-9):,.0f}x the history query",
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hours", type=float, default=24.0, help="hours of data (default a day)")
    parser.add_argument(
        "--db", help="a store to fill (a new SQLite path or a postgresql:// URL; default a temp file)"
    )
    args = parser.parse_args(argv)
    from tests.harness.bench_receiver import print_measures

    with tempfile.TemporaryDirectory(prefix="bench-history-") as folder:
        target = args.db or str(Path(folder) / "day.sqlite")
        print_measures(history_rows(target, args.hours, lambda text: print(text, file=sys.stderr)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
