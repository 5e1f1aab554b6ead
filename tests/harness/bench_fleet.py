"""100 vehicles at once through one, then two ``edge-receiver run`` processes (issue 11): samples/s, latency.

The data is built before any clock starts, the way the agent builds it: one simulated drive
(:func:`agent.sim.simulate`, highway, :data:`DRIVE_S` seconds, the reference EV's every signal) decoded,
put on the 50 Hz grid and sealed 50 samples to a chunk by the agent's own modules, then packed
:data:`BATCH_CHUNKS` chunks to a batch by :func:`agent.wire.encode_batch` for each of :data:`VEHICLES`
VINs (every vehicle sends the same chunks under its own VIN: the store keys chunks by (vin, boot, seq)).

The load: the vehicles publish concurrently, each on its own MQTT connection (one paho client and its
network thread per vehicle), each as an agent drains its backlog: at most :data:`WINDOW` batches unacked
(``upload.max_inflight_batches``' default), the next one published as soon as an ack frees a place. The
receivers are real processes on a fresh SQLite store in a temporary folder (WAL, ``synchronous=FULL``):
one, then two in one share group on one file, each run on its own fresh store and broker.

Measured per run: samples/s, the samples acked over the seconds from the first publish to the last ack;
the latency of every batch, from its publish call to the ack naming its last chunk, as P50 and P95
(nearest rank). Contract: :func:`fleet_rows` blocks (about 20 s), owns every process and folder it makes
and stops or deletes them before it returns; it raises ``RuntimeError`` with the receivers' logs when a
run does not complete within :data:`RUN_TIMEOUT_S`.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent import wire
from agent.chunk import Chunker
from agent.decode import build_decoder
from agent.sample import Sampler, to_micros
from agent.sim import simulate
from agent.wire.values import Schema
from tests.harness.broker import Broker
from tests.harness.waiting import wait_for_text

ROOT = Path(__file__).resolve().parents[2]
DBC = ROOT / "dbc" / "reference_ev.dbc"
VEHICLES = 100
DRIVE_S = 100.0  # per vehicle: 5,000 samples, 100 chunks
CHUNK_SAMPLES = 50  # one second at 50 Hz: what the agent seals at commit_interval_s 1.0
BATCH_CHUNKS = 10  # 10 s of data per batch: 10 batches per vehicle
WINDOW = 8  # unacked batches per vehicle (upload.max_inflight_batches)
RUN_TIMEOUT_S = 90.0
Measure = tuple[str, float, str, str]


@dataclass(frozen=True)
class Fleet:
    schema: Schema
    batches: dict[str, list[bytes]]  # per VIN, in order
    chunks: int  # per vehicle
    samples: int  # per vehicle


def build_fleet(vehicles: int = VEHICLES, seconds: float = DRIVE_S) -> Fleet:
    """The pre-encoded batches of every vehicle (see the module docstring)."""
    decoder = build_decoder([("can0", [DBC], "auto")])
    schema = Schema(Fraction(50), tuple(decoder.signals))
    chunker = Chunker(schema, bytes(range(16)), CHUNK_SAMPLES)
    sampler = Sampler(schema.rate, len(schema.signals), chunker.add)
    for frame in simulate("highway", seconds, seed=11, dbc_path=DBC):
        sampler.feed(to_micros(frame.timestamp), decoder.decode(frame))
    sampler.finish()
    chunker.seal()
    taken = chunker.take()
    sealed, samples = [c.payload for c in taken], sum(c.sample_count for c in taken)
    batches = {
        vin: [
            wire.encode_batch(vin, schema, sealed[i : i + BATCH_CHUNKS], sent_at=time.time())
            for i in range(0, len(sealed), BATCH_CHUNKS)
        ]
        for vin in (f"FLEET{n:012d}" for n in range(vehicles))
    }
    return Fleet(schema, batches, len(sealed), samples)


class Vehicle:
    """One vehicle's connection: publishes its batches with a window, times each from publish to ack."""

    def __init__(self, vin: str, batches: list[bytes], port: int, done: Callable[[], None]) -> None:
        self.vin, self.batches, self._done = vin, batches, done
        self.sent_at: list[float] = []
        self.latency: list[float] = []
        self.acked_seqs: set[int] = set()
        self.finished_at = 0.0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{vin}", protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe(f"fleet/{vin}/ack", qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_ack
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    def start(self) -> None:
        with self._lock:
            self._fill()

    def _fill(self) -> None:
        """Publish while fewer than WINDOW batches are unacked (under the lock)."""
        while len(self.sent_at) < len(self.batches) and len(self.sent_at) - len(self.latency) < WINDOW:
            self.sent_at.append(time.perf_counter())
            self.client.publish(f"fleet/{self.vin}/telemetry", self.batches[len(self.sent_at) - 1], qos=1)

    def _on_ack(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        _, ranges = wire.decode_ack(bytes(message.payload))
        with self._lock:
            for _, first, last in ranges:
                self.acked_seqs.update(range(first, last + 1))
            while len(self.latency) < len(self.sent_at):  # batches are acked whole, and mostly in order
                index = len(self.latency)
                last_seq = min((index + 1) * BATCH_CHUNKS, len(self.batches) * BATCH_CHUNKS) - 1
                if not all(seq in self.acked_seqs for seq in range(index * BATCH_CHUNKS, last_seq + 1)):
                    break
                self.latency.append(now - self.sent_at[index])
            self._fill()
            complete = len(self.latency) == len(self.batches)
        if complete and not self.finished_at:
            self.finished_at = now
            self._done()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def receivers(folder: Path, port: int, count: int) -> Iterator[list[Path]]:
    """``count`` ``edge-receiver run`` processes on one store, in one share group, subscribed."""
    store = folder / "fleet.sqlite"
    config = folder / "receiver.yaml"
    config.write_text(
        f"mqtt: {{host: 127.0.0.1, port: {port}}}\nstore: {{path: {store}}}\nlogging: {{format: json}}\n"
    )
    logs = [folder / f"receiver-{n}.log" for n in range(count)]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for log in logs:
            with open(log, "wb") as err:
                argv = [sys.executable, "-m", "receiver.cli", "run", "--config", str(config)]
                processes.append(subprocess.Popen(argv, cwd=ROOT, stdout=err, stderr=subprocess.STDOUT))
        for log, process in zip(logs, processes, strict=True):
            wait_for_text(log, '"event": "subscribed"', 30, process)
        yield logs
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass(frozen=True)
class Run:
    receivers: int
    seconds: float
    samples: int
    batches: int
    latencies: list[float]
    split: list[int]  # batches stored by each receiver

    def percentile(self, percent: int) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, -(-percent * len(ordered) // 100) - 1)]


def one_run(fleet: Fleet, count: int) -> Run:
    """Every vehicle's batches through ``count`` receivers on a fresh broker and store."""
    broker = Broker()
    broker.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-fleet-") as folder:
            with receivers(Path(folder), broker.port, count) as logs:
                seconds, latencies = drive_fleet(fleet, broker.port, logs)
            split = [stored_batches(log) for log in logs]  # once they have stopped and said so
    finally:
        broker.close()
    batches = sum(len(b) for b in fleet.batches.values())
    return Run(count, seconds, fleet.samples * len(fleet.batches), batches, latencies, split)


def drive_fleet(fleet: Fleet, port: int, logs: Sequence[Path]) -> tuple[float, list[float]]:
    """Publish every vehicle's batches at once; the seconds to the last ack and every batch's latency."""
    remaining = threading.Semaphore(0)
    vehicles = [Vehicle(vin, batches, port, remaining.release) for vin, batches in fleet.batches.items()]
    try:
        if not all(v.wait_subscribed(10) for v in vehicles):
            raise RuntimeError("a bench vehicle did not get its ack subscription")
        started = time.perf_counter()
        for vehicle in vehicles:
            vehicle.start()
        deadline = time.monotonic() + RUN_TIMEOUT_S
        for _ in vehicles:
            if not remaining.acquire(timeout=max(0.0, deadline - time.monotonic())):
                tails = "\n".join(log.read_text()[-2000:] for log in logs)
                raise RuntimeError(f"the fleet was not acked within {RUN_TIMEOUT_S} s:\n{tails}")
        seconds = max(v.finished_at for v in vehicles) - started
    finally:
        for vehicle in vehicles:
            vehicle.close()
    return seconds, [value for vehicle in vehicles for value in vehicle.latency]


def stored_batches(log: Path) -> int:
    """The batches one receiver stored, from its ``receiver_stopped`` log line (0 if it has none)."""
    for line in reversed(log.read_text().splitlines()):
        if '"receiver_stopped"' in line:
            return int(json.loads(line).get("batches", 0))
    return 0


def rows_of(runs: Sequence[Run], fleet: Fleet) -> list[Measure]:
    """Two rows per run; each note starts with what a 90-character cell of ``make bench`` should show."""
    what = (
        f"{len(fleet.batches)} vehicles x {fleet.chunks // BATCH_CHUNKS} batches of {BATCH_CHUNKS} chunks x "
        f"{CHUNK_SAMPLES} samples x {len(fleet.schema.signals)} signals, at most {WINDOW} unacked each"
    )
    out: list[Measure] = []
    for run in runs:
        label = f"{len(fleet.batches)} vehicles, {run.receivers} receiver{'s' if run.receivers > 1 else ''}"
        split = f"batches stored {' + '.join(map(str, run.split))}, " if run.receivers > 1 else ""
        where = "one share group, one SQLite file" if run.receivers > 1 else "one SQLite file"
        out.append(
            (
                f"{label}: ingest",
                run.samples / run.seconds,
                "samples/s",
                f"{run.samples:,} samples in {run.seconds:.2f} s, first publish to last ack; {split}{where}; "
                f"{what}",
            )
        )
        out.append(
            (
                f"{label}: P95 publish to ack",
                run.percentile(95) * 1000,
                "ms",
                f"P50 {run.percentile(50) * 1000:,.0f} ms; per batch ({run.batches}), publish to the ack of its "
                "last chunk, the whole fleet's backlog at once (queueing behind it)",
            )
        )
    return out


def fleet_rows(progress: Callable[[str], None] | None = None) -> list[Measure]:
    """The fleet rows for ``make bench``: (measure, value, unit, note)."""
    say = progress or (lambda _text: None)
    say(f"pre-encoding {VEHICLES} vehicles x {DRIVE_S:.0f} s of a simulated highway drive")
    fleet = build_fleet()
    runs = []
    for count in (1, 2):
        say(f"{VEHICLES} vehicles publishing at once to {count} edge-receiver run process(es)")
        runs.append(one_run(fleet, count))
    return rows_of(runs, fleet)


if __name__ == "__main__":
    from tests.harness.bench_receiver import print_measures

    started = time.perf_counter()
    print_measures(fleet_rows(lambda text: print(text, file=sys.stderr)))
    print(f"\ntook {time.perf_counter() - started:.1f} s", file=sys.stderr)
