"""The receiver's store through one hour of a vehicle's backlog (issue #4): ingest CPU and wall, reads.

The hour is built the way the agent builds it, with its own modules: ``replay_logs/highway.log.gz`` (6
minutes) decoded with :func:`agent.decode.build_decoder` (``dbc/reference_ev.dbc``, every signal), put
on the 50 Hz grid by :class:`agent.sample.Sampler`, sealed 50 samples to a chunk by
:class:`agent.chunk.Chunker` and packed 240 chunks to a batch by :func:`agent.wire.encode_batch`. The
drive is repeated 10 times, each repetition a fresh boot (its own boot id, seqs from 0, a fresh sampler:
its first ticks have absent values) that starts where the previous one ended, so the hour is 180,000
ticks of one vin in 15 batches. Boot ids are fixed, so two runs store the same data (``--digest``
prints a digest of the exported hour to compare two versions of the store).

Measured in this process, on a fresh store in a temporary folder (WAL, ``synchronous=FULL``):

- ingest: ``Store.store_batch(wire.decode_batch(payload))`` for every batch in order, CPU seconds
  (``time.process_time``) and wall seconds; the decode's share is timed on its own.
- reads: ``Store.rows`` for one signal over one minute in the middle of the hour, for one signal over the
  hour and for every signal over the hour (every row consumed), best of 3, CPU seconds.
- ingest per process on each store (:func:`ingest_rows`): the same batches into SQLite and into a
  PostgreSQL server this module starts (:mod:`tests.harness.postgres`, durable), samples per wall second.

``python -m tests.harness.bench_receiver`` prints the table; :func:`receiver_rows` gives its rows, each
``(measure, value, unit, note)``, for ``make bench``, with a one-day ``history`` query beside a full export of
the day (:mod:`tests.harness.bench_history`), followed by :func:`fleet_rows` (100 vehicles at once
through one and two receiver processes: :mod:`tests.harness.bench_fleet`).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from agent import wire
from agent.chunk import Chunker, SealedChunk
from agent.decode import build_decoder
from agent.sample import Sampler, to_micros
from agent.source import read_log
from agent.wire.values import Schema
from receiver.ingest import tune_gc
from receiver.store import Store
from tests.harness.bench_history import history_rows

ROOT = Path(__file__).resolve().parents[2]
DBC = ROOT / "dbc" / "reference_ev.dbc"
DEFAULT_LOG = ROOT / "replay_logs" / "highway.log.gz"
VIN = "BENCH0STORE000001"
REPEATS = 10  # 10 x 6 minutes: one hour
CHUNK_SAMPLES = 50  # one second at 50 Hz: what the agent seals at commit_interval_s 1.0
BATCH_CHUNKS = 240  # a backlog batch (the uploader packs what is committed, to 256 KiB)
MINUTE_TICKS = 50 * 60
READ_RUNS = 3
Measure = tuple[str, float, str, str]


@dataclass(frozen=True)
class Hour:
    schema: Schema
    payloads: list[bytes]
    chunks: int
    samples: int
    first_tick: int
    last_tick: int


def build_hour(log: Path = DEFAULT_LOG, repeats: int = REPEATS) -> Hour:
    """``repeats`` boots replaying ``log`` back to back, encoded and batched as the agent does."""
    decoder = build_decoder([("can0", [DBC], "auto")])
    schema = Schema(Fraction(50), tuple(decoder.signals))
    frames = [(to_micros(frame.timestamp), decoder.decode(frame)) for frame in read_log(log)]
    tick_us = 1_000_000 // 50
    first, last = -(-frames[0][0] // tick_us), max(micros for micros, _ in frames) // tick_us
    span = (last - first + 1) * tick_us  # the next boot's first tick follows this one's last
    sealed: list[SealedChunk] = []
    for repeat in range(repeats):
        boot = hashlib.blake2b(f"bench boot {repeat}".encode(), digest_size=16).digest()
        chunker = Chunker(schema, boot, CHUNK_SAMPLES)
        sampler = Sampler(schema.rate, len(schema.signals), chunker.add)
        for micros, updates in frames:
            sampler.feed(micros + repeat * span, updates)
        sampler.finish()
        chunker.seal()
        sealed += chunker.take()
    payloads = [
        wire.encode_batch(VIN, schema, [c.payload for c in sealed[i : i + BATCH_CHUNKS]])
        for i in range(0, len(sealed), BATCH_CHUNKS)
    ]
    end = sealed[-1].first_tick + sealed[-1].sample_count - 1
    samples = sum(c.sample_count for c in sealed)
    return Hour(schema, payloads, len(sealed), samples, sealed[0].first_tick, end)


def best_cpu(fn: Callable[[], object], runs: int = READ_RUNS) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        started = time.process_time()
        result = fn()
        times.append(time.process_time() - started)
    return min(times), result


def digest(store: Store, names: Sequence[str]) -> str:
    hasher = hashlib.blake2b(digest_size=16)
    for tick, values in store.rows(VIN, names):
        hasher.update(repr((tick, values)).encode())
    return hasher.hexdigest()


def measure(hour: Hour, folder: Path, with_digest: bool = False) -> tuple[list[Measure], str | None]:
    path = folder / "bench-receiver.sqlite"
    values = hour.samples * len(hour.schema.signals)
    with Store(path) as store:
        decode_cpu = 0.0
        stored = 0
        cpu, wall = time.process_time(), time.perf_counter()
        for payload in hour.payloads:
            started = time.process_time()
            batch = wire.decode_batch(payload)
            decode_cpu += time.process_time() - started
            stored += store.store_batch(batch).samples
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        size = sum(os.path.getsize(p) for p in folder.iterdir() if p.name.startswith(path.name))
        names = store.signals(VIN)
        one = "DriveSpeed.VehicleSpeed" if "DriveSpeed.VehicleSpeed" in names else names[0]
        middle = (hour.first_tick + hour.last_tick) // 2
        minute_cpu, minute = best_cpu(lambda: list(store.rows(VIN, [one], middle, middle + MINUTE_TICKS - 1)))
        signal_cpu, signal_rows = best_cpu(lambda: sum(1 for _ in store.rows(VIN, [one])))
        all_cpu, all_rows = best_cpu(lambda: sum(1 for _ in store.rows(VIN, names)))
        hashed = digest(store, names) if with_digest else None
    assert isinstance(minute, list) and len(minute) == min(MINUTE_TICKS, hour.last_tick - middle + 1)
    assert signal_rows == all_rows == hour.samples, (signal_rows, all_rows, hour.samples)
    what = f"{hour.samples:,} ticks x {len(names)} signals in {len(hour.payloads)} batches"
    measures: list[Measure] = [
        (
            "receiver ingest, one hour",
            cpu,
            "CPU s",
            f"{what} ({hour.chunks} chunks, {stored:,} values stored), "
            f"decode_batch + store_batch in-process; decode alone {decode_cpu:.2f} s, "
            f"store alone {cpu - decode_cpu:.2f} s; {wall:.2f} s wall (fsync per batch)",
        ),
        (
            "receiver ingest rate",
            hour.samples / cpu,
            "ticks/CPU s",
            f"{values / cpu:,.0f} values per CPU second",
        ),
        ("receiver store size", size / values, "B/value", f"{size:,} bytes on disk (db + WAL) for the hour"),
        (
            "rows(), 1 signal x 1 minute",
            minute_cpu * 1000,
            "CPU ms",
            f"{one}, {len(minute):,} ticks mid-hour",
        ),
        ("rows(), 1 signal x 1 hour", signal_cpu, "CPU s", f"{one}, {hour.samples:,} ticks"),
        ("rows(), all signals x 1 hour", all_cpu, "CPU s", f"{len(names)} signals, {hour.samples:,} ticks"),
    ]
    return measures, hashed


def ingest_rows(hour: Hour, folder: Path, say: Callable[[str], None], runs: int = 2) -> list[Measure]:
    """Receiver ingest per process on each store, the same batches: ``decode_batch`` + ``store_batch`` of
    the hour into a fresh SQLite file and into a fresh database of a PostgreSQL server started here
    (durable: fsync and synchronous_commit on, beside SQLite's synchronous=FULL; one connection over
    loopback TCP), best of ``runs``, in samples per wall second (PostgreSQL's own CPU is another process)."""
    from tests.harness.postgres import Postgres, binaries  # psycopg: only when this row is measured

    def rate(target: str | Path) -> tuple[float, float]:
        saved = gc.get_threshold()
        tune_gc()  # as `edge-receiver run` does
        try:
            return timed(target)
        finally:
            gc.set_threshold(*saved)

    def timed(target: str | Path) -> tuple[float, float]:
        with Store(target) as store:
            cpu, wall = time.process_time(), time.perf_counter()
            for payload in hour.payloads:
                store.store_batch(wire.decode_batch(payload))
            return time.perf_counter() - wall, time.process_time() - cpu

    sqlite = min(rate(folder / f"ingest-{run}.sqlite") for run in range(runs))
    if binaries() is None:
        say("PostgreSQL is not installed (`make test` installs it): no PostgreSQL ingest row")
        return [("receiver ingest, SQLite", hour.samples / sqlite[0], "samples/s", "wall, in-process")]
    say(f"storing the same {len(hour.payloads)} batches in PostgreSQL (a durable server of its own)")
    with Postgres(durable=True) as server:
        version = server.bin.parent.name
        postgresql = min(rate(server.database()) for _ in range(runs))
    what = f"{hour.samples:,} samples x {len(hour.schema.signals)} signals, {len(hour.payloads)} batches"
    return [
        (
            "receiver ingest, SQLite",
            hour.samples / sqlite[0],
            "samples/s",
            f"{what}: decode_batch + store_batch in one process (GC tuned as `run` does), best of {runs}, "
            f"{sqlite[0]:.2f} s wall, "
            f"{sqlite[1]:.2f} CPU s (WAL, synchronous=FULL)",
        ),
        (
            "receiver ingest, PostgreSQL",
            hour.samples / postgresql[0],
            "samples/s",
            f"the same batches into PostgreSQL {version} on this machine (loopback TCP, fsync on), best of "
            f"{runs}: {postgresql[0]:.2f} s wall, receiver {postgresql[1]:.2f} CPU s "
            f"({hour.samples / postgresql[1]:,.0f} samples per receiver CPU s)",
        ),
    ]


def receiver_rows(
    log: Path = DEFAULT_LOG, progress: Callable[[str], None] | None = None, repeats: int = REPEATS
) -> list[Measure]:
    """The receiver store's rows for ``make bench``: (measure, value, unit, note)."""
    say = progress or (lambda _text: None)
    say(f"encoding one hour ({repeats} x {log.name}) as the agent does")
    hour = build_hour(log, repeats)
    say(f"storing {len(hour.payloads)} batches ({hour.samples} samples) in a fresh receiver store")
    with tempfile.TemporaryDirectory(prefix="bench-receiver-") as folder:
        measures, _ = measure(hour, Path(folder))
        measures += ingest_rows(hour, Path(folder), say)  # per process, SQLite beside PostgreSQL
        measures += history_rows(Path(folder) / "day.sqlite", progress=say)  # a day of rollups, SQLite
        measures += postgresql_history_rows(say)
    return measures + fleet_rows(say)


def postgresql_history_rows(say: Callable[[str], None]) -> list[Measure]:
    """The same day's history and export on a PostgreSQL server started here (none when not installed)."""
    from tests.harness.postgres import Postgres, binaries  # psycopg: only when this row is measured

    if binaries() is None:
        return []
    with Postgres(durable=True) as server:
        return history_rows(server.database(), progress=say)


def fleet_rows(progress: Callable[[str], None] | None = None) -> list[Measure]:
    """100 vehicles at once through one, then two ``edge-receiver run`` processes (issue 11): samples/s
    and the P95 latency from publish to ack (:mod:`tests.harness.bench_fleet`, about 30 s)."""
    from tests.harness import bench_fleet

    return bench_fleet.fleet_rows(progress)


def print_measures(measures: Sequence[Measure]) -> None:
    width = max(len(m[0]) + len(m[2]) + 3 for m in measures)
    for name, value, unit, _ in measures:
        print(f"{f'{name} ({unit})':<{width}} {value:>14,.2f}")
    print()
    for name, _, unit, note in measures:
        print(f"- {name} ({unit}): {note}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--log", type=Path, default=DEFAULT_LOG, help="the drive to repeat (default highway)")
    parser.add_argument("--digest", action="store_true", help="print a digest of the exported hour")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    hour = build_hour(args.log)
    print(f"built the hour in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-receiver-") as folder:
        measures, hashed = measure(hour, Path(folder), args.digest)
        measures += ingest_rows(hour, Path(folder), lambda text: print(text, file=sys.stderr))
    print(f"measured in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    print_measures(measures)
    if hashed is not None:
        print(f"\ndigest of rows(all signals): {hashed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
