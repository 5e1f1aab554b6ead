"""`make bench`: our pipeline beside the seeds' naive design (:mod:`tests.harness.naive`), in one run.

Everything is real and on this machine: one Mosquitto on a free port, ``edge-receiver run`` and
``edge-agent replay`` as their own processes, and the naive agent and receiver as theirs. One table goes to
stdout; progress goes to stderr. Rows:

1. Agent frames/s at full replay speed: ``edge-agent replay LOG --speed max`` against the broker and a
   running receiver, timed from process start until it exits 0 (every sample acked after the receiver's
   commit), beside the naive agent (JSON per sample at QoS 1, exits once every PUBACK is in), timed the
   same way. Peak RSS and CPU seconds of each process come from ``wait4``.
2. Receiver samples/s: the drive pre-encoded into batches with the agent's own modules, published with a
   separate client and timed from the first publish until the acks name every chunk; beside the naive
   receiver (one INSERT + COMMIT per JSON sample), timed until its database holds every sample.
3. Wire bytes per sample: MQTT payload bytes of each design for the same drive.
4. The cost of TLS: the agent's CPU per driven hour (row 1's run) and the receiver's samples/s (row 2)
   in the secure setup of `make demo` (:class:`tests.harness.broker.SecureBroker` on a fresh fleet PKI:
   TLS, client certificates, the generated ACL, a MAC on every batch and ack) beside the same on the open
   broker, in alternating passes, medians of :data:`TLS_PASSES` each.
5. The buffer through one hour of driving (issue #4): drain, disk bytes written per driven hour and memory
   through an outage, from :mod:`tests.harness.bench_buffer`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent import wire
from agent.chunk import Chunker, new_boot_id
from agent.config import load_agent_config
from agent.sample import Sampler, to_micros
from agent.schemas import build_schema
from agent.source import LogStats, read_log
from agent.wire import auth
from agent.wire.values import ChunkId, Schema
from receiver import pki as fleet_pki
from receiver.pki import Pki
from tests.harness import naive
from tests.harness.broker import Broker, SecureBroker
from tests.harness.demo import tls_config

ROOT = Path(__file__).resolve().parents[2]
DBC = ROOT / "dbc" / "reference_ev.dbc"
DEFAULT_LOG = ROOT / "replay_logs" / "highway.log.gz"
AGENT_VIN = "BENCH0EV000000001"
RECEIVER_VIN = "BENCH0EV000000002"
WARMUP_VIN = "BENCH0WARMUP00001"
CHUNK_SAMPLES = 50  # what the agent seals per chunk at 50 Hz with commit_interval_s 1.0
BATCH_CHUNKS = 60  # per batch in the receiver row (the uploader packs what is committed, to 256 KiB)
TLS_PASSES = 3  # of each setup in the TLS rows (the open broker's first is rows 1 and 2's run)
TLS = "TLS + client certs + MACs"  # what the TLS rows' label says of the secure setup
NOTE_WIDTH = 110
STARTED = time.monotonic()


# --- the table -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One measure of ours beside the naive design's; ``note`` says what exactly was measured."""

    measure: str
    ours: float
    naive: float
    unit: str
    note: str = ""
    higher_is_better: bool = True
    digits: int = 0
    versus: str = ""  # what the baseline column holds when it is not the naive design, e.g. "no TLS"

    @property
    def name(self) -> str:
        return f"{self.measure} ({self.unit})"

    def cell(self, value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value:,.{self.digits}f}"

    @property
    def ratio(self) -> str:
        """How many times better ours is (by the row's own sense of better), e.g. ``12.3x better``."""
        if math.isnan(self.ours) or math.isnan(self.naive) or self.ours <= 0 or self.naive <= 0:
            return "n/a"
        factor = self.ours / self.naive if self.higher_is_better else self.naive / self.ours
        times = factor if factor >= 1 else 1 / factor
        text = f"{times:,.2f}x" if times < 10 else f"{times:,.1f}x"
        text = f"{text} better" if factor >= 1 else f"{text} worse"
        return f"{text} vs {self.versus}" if self.versus else text


def render_table(rows: Sequence[Row], footer: Sequence[str] = ()) -> str:
    header = ("measure", "ours", "naive (seeds)", "ratio")
    cells = [header, *((r.name, r.cell(r.ours), r.cell(r.naive), r.ratio) for r in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        first, *numbers = values
        parts = [first.ljust(widths[0]), *(v.rjust(w) for v, w in zip(numbers, widths[1:], strict=True))]
        return " | ".join(parts).rstrip()

    out = [line(header), "-+-".join("-" * w for w in widths)]
    out += [line(values) for values in cells[1:]]
    notes = [
        textwrap.fill(f"- {r.name}: {r.note}", NOTE_WIDTH, subsequent_indent="  ", break_on_hyphens=False)
        for r in rows
        if r.note
    ]
    if notes:
        out += ["", *notes]
    if footer:
        out += ["", *footer]
    return "\n".join(out) + "\n"


def print_table(rows: Sequence[Row], footer: Sequence[str] = (), file: TextIO | None = None) -> None:
    (file or sys.stdout).write(render_table(rows, footer))
    (file or sys.stdout).flush()


def machine() -> str:
    model = "unknown CPU"
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                model = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def progress(text: str) -> None:
    print(f"[bench {time.monotonic() - STARTED:6.1f}s] {text}", file=sys.stderr, flush=True)


# --- processes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessRun:
    seconds: float  # wall time from just before the fork until the exit was reaped
    returncode: int
    max_rss_kib: int
    cpu_s: float


def python_m(module: str, *args: object, **options: object) -> list[str]:
    """``python -m module args --option value ...``; ``drain_timeout=`` gives ``--drain-timeout``."""
    argv = [sys.executable, "-m", module, *map(str, args)]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def timed_run(argv: Sequence[str], log: Path, timeout: float) -> ProcessRun:
    """Run ``argv`` to its end: its peak RSS (VmHWM, polled) and CPU time (``wait4``)."""
    with open(log, "wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, cwd=ROOT, stdout=err, stderr=subprocess.STDOUT)
        peak_kib = 0  # VmHWM polled from /proc: ru_maxrss would start at the bench's own peak (fork)
        try:
            while True:
                status_line = Path(f"/proc/{process.pid}/status")
                with contextlib.suppress(OSError, ValueError, IndexError):
                    hwm = [line for line in status_line.read_text().splitlines() if line.startswith("VmHWM")]
                    peak_kib = max(peak_kib, int(hwm[0].split()[1]))
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    seconds = time.perf_counter() - started
                    process.returncode = os.waitstatus_to_exitcode(status)
                    return ProcessRun(seconds, process.returncode, peak_kib, usage.ru_utime + usage.ru_stime)
                if time.perf_counter() - started > timeout:
                    raise TimeoutError(f"{argv[2]} did not finish within {timeout:.0f} s (log: {log})")
                time.sleep(0.01)
        finally:
            if process.returncode is None:
                process.kill()
                process.wait()


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM (the services' graceful stop), SIGKILL after 15 s; closes the pipes the bench holds."""
    if process is None:
        return
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- the broker side: a paho client of the bench's own ---------------------------------------------------


class Client:
    """A paho client that publishes at QoS 1 and gathers the receiver's acks (chunk ids per vin).

    With ``pki`` it connects over TLS with the certificate of vehicle ``client_id`` (its VIN: the secure
    broker takes the certificate's CN as client id and lets it publish and read acks as that VIN only)."""

    def __init__(self, port: int, client_id: str, pki: Pki | None = None) -> None:
        self.acked: dict[str, set[ChunkId]] = {}
        self.changed = threading.Condition()
        self._subscribed = threading.Event()
        self._acks = "fleet/+/ack" if pki is None else f"fleet/{client_id}/ack"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if pki is not None:
            cert, key = pki.client(client_id)
            self.client.tls_set(str(pki.ca_cert), str(cert), str(key), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError("the bench's MQTT client did not get its subscription")

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe(self._acks, qos=1)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        if not any(code.is_failure for code in codes):
            self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        vin, ranges = wire.decode_ack(bytes(message.payload))
        with self.changed:
            ids = self.acked.setdefault(vin, set())
            ids.update(ChunkId(boot, seq) for boot, first, last in ranges for seq in range(first, last + 1))
            self.changed.notify_all()

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")

    def forget(self, vin: str) -> None:
        """Drop the acks gathered for ``vin`` (before its chunks are published again, to a new receiver)."""
        with self.changed:
            self.acked.pop(vin, None)

    def wait_acked(self, vin: str, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.acked.get(vin, ())) >= count, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def open_mqtt_yaml(port: int) -> str:
    """The ``mqtt:`` section of a config that reaches the open broker on ``port`` (anonymous, no TLS)."""
    return f"mqtt: {{host: 127.0.0.1, port: {port}}}\n"


class Network:
    """A broker that our rows run against, what our processes' configs say to reach it, and the bench's
    clients on it.

    Open (no ``pki``): anonymous, no TLS, no MACs; one client publishes as every VIN. Secure: the setup of
    `make demo` (``broker`` a :class:`SecureBroker` on ``pki``): TLS, client certificates, the ACL, and a MAC
    on every batch and ack; one client per VIN, each with that vehicle's certificate."""

    def __init__(self, broker: Broker, pki: Pki | None = None) -> None:
        self.broker, self.pki = broker, pki
        self._clients: dict[str, Client] = {}

    @property
    def port(self) -> int:
        return self.broker.port

    def client(self, vin: str) -> Client:
        """The bench's client that publishes as ``vin`` (connected on first use, kept until :meth:`close`)."""
        name = "bench-publisher" if self.pki is None else vin
        if name not in self._clients:
            self._clients[name] = Client(self.port, name, self.pki)
        return self._clients[name]

    def sign(self, vin: str, batch: bytes) -> bytes:
        """``batch`` as vehicle ``vin`` publishes it: with its MAC when the receiver holds the fleet key."""
        return batch if self.pki is None else auth.sign(batch, self.pki.auth_key(vin).read_bytes(), vin)

    def agent_yaml(self, vin: str) -> str:
        """The ``mqtt:`` section of agent ``vin``'s config (with its MAC key on the secure broker)."""
        if self.pki is None:
            return open_mqtt_yaml(self.port)
        return f"{tls_config(self.pki, self.port, vin)}  auth_key_file: {self.pki.auth_key(vin)}\n"

    def receiver_yaml(self) -> str:
        """The ``mqtt:`` (and on the secure broker ``security:``) sections of the receiver's config."""
        if self.pki is None:
            return open_mqtt_yaml(self.port)
        mqtt_section = tls_config(self.pki, self.port, "receiver", receiver=True)
        return f"{mqtt_section}security: {{fleet_key_file: {self.pki.fleet_key}}}\n"

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self.broker.close()


def secure_network(out: Path) -> Network:
    """A fresh fleet PKI in ``out/pki`` (as ``pki init`` and ``pki issue`` make it: the CA, the broker's
    certificate for 127.0.0.1, the receiver's, one per bench VIN) and a started :class:`SecureBroker`."""
    pki = fleet_pki.init(out / "pki", ["localhost"], ["127.0.0.1"])
    for vin in (AGENT_VIN, RECEIVER_VIN, WARMUP_VIN):
        fleet_pki.issue(pki.root, vin)
    broker = SecureBroker(pki.root)
    try:
        broker.start()
    except BaseException:
        broker.close()
        raise
    return Network(broker, pki)


# --- our side ------------------------------------------------------------------------------------------


@dataclass
class Encoded:
    schema: Schema
    frames: int
    samples: int
    chunks: list[bytes]


def encode_drive(config: Path, log: Path) -> Encoded:
    """The drive as the agent encodes it: its decoder and schema, Sampler, Chunker and chunk codec."""
    decoder, schema = build_schema(load_agent_config(config, check_files=True))
    chunker = Chunker(schema, new_boot_id(), CHUNK_SAMPLES)
    sampler = Sampler(schema.rate, len(schema.signals), chunker.add)
    stats = LogStats()
    decode, feed = decoder.decode, sampler.feed
    for frame in read_log(log, stats):
        feed(to_micros(frame.timestamp), decode(frame))
    sampler.finish()
    chunker.seal()
    sealed = chunker.take()
    return Encoded(schema, stats.frames, sum(c.sample_count for c in sealed), [c.payload for c in sealed])


def write_agent_config(
    out: Path, port: int, log: Path, name: str = "agent", mqtt_yaml: str | None = None
) -> Path:
    """``out/NAME.yaml``: agent :data:`AGENT_VIN` replaying ``log``, its buffer ``out/NAME-buffer.sqlite``,
    its ``mqtt:`` section ``mqtt_yaml`` (default: the open broker on ``port``)."""
    config = out / f"{name}.yaml"
    config.write_text(
        f"vin: {AGENT_VIN}\nsource: {{kind: replay, log: {log}, speed: max}}\n"
        f"buses:\n  - {{channel: can0, dbc: [{DBC}]}}\n"
        f"buffer: {{path: {out / name}-buffer.sqlite}}\n"
        f"{mqtt_yaml or open_mqtt_yaml(port)}logging: {{format: json}}\n"
    )
    return config


class OurReceiver:
    """``edge-receiver run`` on a fresh store, started and proven subscribed by an acked warm-up batch
    (``client`` publishes it as :data:`WARMUP_VIN`); ``mqtt_yaml`` its ``mqtt:`` (and ``security:``)
    sections, by default the open broker on ``port``."""

    def __init__(
        self, out: Path, name: str, port: int, client: Client, warmup: bytes, mqtt_yaml: str | None = None
    ) -> None:
        self.log = out / f"{name}.log"
        config = out / f"{name}.yaml"
        config.write_text(
            f"{mqtt_yaml or open_mqtt_yaml(port)}store: {{path: {out / name}.sqlite}}\n"
            "logging: {format: json}\n"
        )
        with open(self.log, "wb") as err:
            argv = python_m("receiver.cli", "run", config=config)
            self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
                argv, cwd=ROOT, stdout=err, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while not client.wait_acked(WARMUP_VIN, 1, 0.5):  # the shared subscription drops until it exists
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"edge-receiver did not ack a warm-up batch:\n{tail(self.log)}")
            client.publish(f"fleet/{WARMUP_VIN}/telemetry", warmup)
        client.forget(WARMUP_VIN)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


def warmup_batch(encoded: Encoded, net: Network) -> bytes:
    batch = wire.encode_batch(WARMUP_VIN, encoded.schema, encoded.chunks[:1], sent_at=time.time())
    return net.sign(WARMUP_VIN, batch)


def our_receiver_process(out: Path, name: str, net: Network, encoded: Encoded) -> OurReceiver:
    """An :class:`OurReceiver` on ``net``, warmed up by the bench's client for :data:`WARMUP_VIN`."""
    warmup = warmup_batch(encoded, net)
    return OurReceiver(out, name, net.port, net.client(WARMUP_VIN), warmup, net.receiver_yaml())


def our_agent(
    out: Path, net: Network, log: Path, encoded: Encoded, name: str = "agent"
) -> tuple[ProcessRun, dict[str, Any]]:
    """``edge-agent replay`` of ``log`` at full speed to a running receiver on ``net``, timed to its exit."""
    config = write_agent_config(out, net.port, log, name, net.agent_yaml(AGENT_VIN))
    receiver = our_receiver_process(out, f"receiver-{name}-row", net, encoded)
    try:
        report, agent_log = out / f"{name}-report.json", out / f"{name}.log"
        progress(f"edge-agent replay {log.name} --speed max (receiver running, acks after its commit)")
        argv = python_m(
            "agent.cli", "replay", log, config=config, speed="max", report=report, drain_timeout=60
        )
        run = timed_run(argv, agent_log, timeout=120)
    finally:
        receiver.stop()
    if run.returncode != 0:
        raise RuntimeError(f"edge-agent replay exited {run.returncode}:\n{tail(agent_log)}")
    figures: dict[str, Any] = json.loads(report.read_text())
    progress(
        f"edge-agent: {figures['frames']} frames in {run.seconds:.2f} s, {figures['bytes_sent']} bytes sent"
    )
    return run, figures


def our_receiver(
    out: Path, net: Network, encoded: Encoded, name: str = "receiver-store-row"
) -> tuple[float, int, int]:
    """Seconds from the first publish until every chunk is acked, batches, and payload bytes."""
    batches = [
        net.sign(
            RECEIVER_VIN,
            wire.encode_batch(
                RECEIVER_VIN, encoded.schema, encoded.chunks[i : i + BATCH_CHUNKS], sent_at=time.time()
            ),
        )
        for i in range(0, len(encoded.chunks), BATCH_CHUNKS)
    ]
    client = net.client(RECEIVER_VIN)
    receiver = our_receiver_process(out, name, net, encoded)
    client.forget(RECEIVER_VIN)  # a pass before this one had the same chunks acked
    try:
        progress(f"publishing {len(batches)} batches ({encoded.samples} samples) to edge-receiver")
        started = time.perf_counter()
        for batch in batches:
            client.publish(f"fleet/{RECEIVER_VIN}/telemetry", batch)
        if not client.wait_acked(RECEIVER_VIN, len(encoded.chunks), 120):
            raise RuntimeError(f"edge-receiver did not ack every chunk in 120 s:\n{tail(receiver.log)}")
        seconds = time.perf_counter() - started
    finally:
        receiver.stop()
    return seconds, len(batches), sum(map(len, batches))


# --- the naive side ------------------------------------------------------------------------------------


def naive_agent_argv(log: Path, vin: str, port: int, report: Path, timeout: float) -> list[str]:
    """The naive agent's command line (:func:`tests.harness.naive.run_agent`)."""
    options = {"dbc": DBC, "vin": vin, "port": port, "report": report, "timeout": timeout}
    return python_m("tests.harness.naive", "agent", log, **options)


def naive_agent(out: Path, port: int, log: Path) -> tuple[ProcessRun, dict[str, Any]]:
    report = out / "naive-report.json"
    progress(f"naive agent {log.name} (JSON per sample, QoS 1, exits on the last PUBACK)")
    run = timed_run(naive_agent_argv(log, AGENT_VIN, port, report, 110), out / "naive-agent.log", timeout=120)
    if run.returncode != 0:
        raise RuntimeError(f"naive agent exited {run.returncode}:\n{tail(out / 'naive-agent.log')}")
    figures: dict[str, Any] = json.loads(report.read_text())
    progress(
        f"naive agent: {figures['frames']} frames in {run.seconds:.2f} s, {figures['bytes_sent']} bytes sent"
    )
    return run, figures


def naive_payloads(log: Path) -> list[bytes]:
    rate = naive.grid_rate(50.0)
    return [naive.to_json(tick, values, rate) for tick, values in naive.samples(log, DBC, 50.0)]


def start_naive_receiver(db: Path, port: int, log: Path, timeout: float = 20.0) -> subprocess.Popen[bytes]:
    """The naive receiver process, once it says its subscription is granted."""
    with open(log, "wb") as err:
        argv = python_m("tests.harness.naive", "receiver", db=db, port=port)
        process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=err)
    ready = threading.Event()

    def watch(stdout: IO[bytes]) -> None:
        if stdout.readline().strip() == b"ready":
            ready.set()

    assert process.stdout is not None
    threading.Thread(target=watch, args=(process.stdout,), daemon=True).start()
    if not ready.wait(timeout):
        stop_process(process)
        raise RuntimeError(f"the naive receiver did not subscribe within {timeout:.0f} s:\n{tail(log)}")
    return process


def count_rows(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM telemetry").fetchone()[0])
    finally:
        conn.close()


def wait_rows(db: Path, count: int, timeout: float, alive: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        if count_rows(db) >= count:
            return True
        time.sleep(0.01)
    return False


def naive_receiver(out: Path, port: int, payloads: Sequence[bytes], bound_s: float) -> tuple[float, int]:
    """(seconds, samples stored) from the first publish until the naive receiver's database holds every
    payload, or until ``bound_s`` has passed (then the samples stored by then: the rate still compares)."""
    db = out / "naive-receiver.sqlite"
    process = start_naive_receiver(db, port, out / "naive-receiver.log")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-naive-publisher")
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    try:
        progress(
            f"publishing {len(payloads)} JSON samples to the naive receiver (bounded to {bound_s:.0f} s)"
        )
        started = time.perf_counter()
        for payload in payloads:
            client.publish(f"naive/{RECEIVER_VIN}/telemetry", payload, qos=1)
        alive = process.poll
        complete = wait_rows(
            db, len(payloads), bound_s - (time.perf_counter() - started), lambda: alive() is None
        )
        seconds, stored = time.perf_counter() - started, count_rows(db)
        if process.poll() is not None:
            raise RuntimeError(
                f"the naive receiver exited {process.returncode}:\n{tail(out / 'naive-receiver.log')}"
            )
        if not complete:
            progress(f"naive receiver: bound reached, {stored} of {len(payloads)} samples stored")
        return seconds, stored
    finally:
        client.disconnect()
        client.loop_stop()
        stop_process(process)


def floor_process(out: Path) -> ProcessRun:
    """What any of the agents costs before its first frame: Python plus the libraries both designs import."""
    argv = [sys.executable, "-c", "import can, cantools, paho.mqtt.client"]
    return timed_run(argv, out / "floor.log", timeout=60)


# --- the cost of TLS -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pass:
    """Rows 1 and 2 of ours once on one network: the agent's CPU seconds, the receiver's ingest seconds."""

    agent_cpu_s: float
    ingest_s: float


def one_pass(out: Path, net: Network, log: Path, encoded: Encoded, name: str) -> Pass:
    """Our agent (to a running receiver) and our receiver (the pre-encoded batches) once more on ``net``."""
    run, figures = our_agent(out, net, log, encoded, f"agent-{name}")
    if figures["frames"] != encoded.frames or figures["samples_committed"] != encoded.samples:
        raise RuntimeError(f"edge-agent ({name}) did not send the whole drive: {figures}")
    seconds, _, _ = our_receiver(out, net, encoded, f"receiver-store-{name}")
    progress(f"{name}: agent CPU {run.cpu_s:.2f} s; {encoded.samples} samples acked in {seconds:.2f} s")
    return Pass(run.cpu_s, seconds)


def tls_passes(
    out: Path, plain: Network, log: Path, encoded: Encoded, first: Pass, passes: int = TLS_PASSES
) -> tuple[list[Pass], list[Pass]]:
    """``passes`` each on the open network (``first`` among them, made before) and on a secure one,
    alternating: (open, secure)."""
    secure = secure_network(out)
    progress(f"secure mosquitto on 127.0.0.1:{secure.port} (TLS, client certificates, ACL), MACs on")
    opened, secured = [first], []
    try:
        for i in range(passes):
            secured.append(one_pass(out, secure, log, encoded, f"tls-{i + 1}"))
            if len(opened) < passes:
                opened.append(one_pass(out, plain, log, encoded, f"plain-{i + 2}"))
    finally:
        secure.close()
    return opened, secured


def driven_hours(samples: int, rate: float) -> float:
    """The hours a drive of ``samples`` on a ``rate`` Hz grid lasted."""
    return samples / rate / 3600.0


def per_driven_hour(cpu_s: float, floor_cpu_s: float, hours: float) -> float:
    """CPU seconds per driven hour of a run, less ``floor_cpu_s``: its start, paid once, not every hour."""
    return (cpu_s - floor_cpu_s) / hours


def tls_rows(
    opened: Sequence[Pass], secured: Sequence[Pass], samples: int, hours: float, floor_cpu_s: float
) -> list[Row]:
    """The TLS rows: medians of the secure passes ("ours") beside those of the open ones (baseline)."""
    cpus = [[p.agent_cpu_s for p in secured], [p.agent_cpu_s for p in opened]]
    ingests = [[p.ingest_s for p in secured], [p.ingest_s for p in opened]]
    cpu, ingest = [statistics.median(v) for v in cpus], [statistics.median(v) for v in ingests]

    def listed(values: Sequence[float]) -> str:
        return ", ".join(f"{value:.2f}" for value in values)

    setup = (
        "ours in the secure setup of `make demo` (SecureBroker: TLS 1.2, client certificates, the ACL; "
        "a MAC on every batch, status and ack) beside ours on the open broker (no TLS, no MACs) in the "
        f"naive column, in this run, medians of {len(secured)} and {len(opened)} alternating passes"
    )
    return [
        Row(
            f"agent CPU per driven hour, {TLS}",
            per_driven_hour(cpu[0], floor_cpu_s, hours),
            per_driven_hour(cpu[1], floor_cpu_s, hours),
            "s",
            f"{setup}; CPU seconds of the row 'agent CPU' run (TLS: {listed(cpus[0])}; open: "
            f"{listed(cpus[1])}) less the {floor_cpu_s:.2f} s the floor process (Python importing can, "
            f"cantools and paho) takes, paid once per start, divided by the drive's {hours * 60:.1f} "
            "driven minutes",
            higher_is_better=False,
            digits=1,
            versus="no TLS",
        ),
        Row(
            f"receiver ingest, {TLS}",
            samples / ingest[0],
            samples / ingest[1],
            "samples/s",
            f"{setup}; the row 'receiver ingest' (seconds, TLS: {listed(ingests[0])}; open: "
            f"{listed(ingests[1])}), the bench's client publishing as {RECEIVER_VIN} with that vehicle's "
            "certificate, each batch signed (auth.sign) before the clock starts; the receiver checks each "
            "MAC before it decodes and signs its acks",
            versus="no TLS",
        ),
    ]


# --- the run -------------------------------------------------------------------------------------------


def bench(log: Path, naive_receiver_samples: int | None, naive_bound_s: float) -> list[Row]:
    out = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    plain: Network | None = None
    try:
        log.read_bytes()  # into the page cache once, so neither agent pays for the first read
        floor = floor_process(out)
        plain = Network(Broker())
        config = write_agent_config(out, plain.port, log)
        progress(f"encoding {log.name} with the agent's modules (schema, Sampler, Chunker, wire)")
        encoded = encode_drive(config, log)
        progress(f"{encoded.frames} frames, {encoded.samples} samples, {len(encoded.chunks)} chunks")
        plain.broker.start()
        progress(f"mosquitto on 127.0.0.1:{plain.port}")

        ours_run, ours_fig = our_agent(out, plain, log, encoded)
        naive_run, naive_fig = naive_agent(out, plain.port, log)
        frames = int(ours_fig["frames"])
        if frames != naive_fig["frames"] or ours_fig["samples_committed"] != naive_fig["samples"]:
            raise RuntimeError(f"the two agents disagree on the log: ours {ours_fig}, naive {naive_fig}")

        ours_s, batches, batch_bytes = our_receiver(out, plain, encoded)
        progress(f"edge-receiver: {encoded.samples} samples stored and acked in {ours_s:.2f} s")
        progress(f"encoding {log.name} as the naive agent does (cantools, JSON)")
        payloads = naive_payloads(log)
        if naive_receiver_samples is not None:
            payloads = payloads[:naive_receiver_samples]
        naive_s, naive_stored = naive_receiver(out, plain.port, payloads, naive_bound_s)
        progress(f"naive receiver: {naive_stored} samples stored in {naive_s:.2f} s")
        opened, secured = tls_passes(out, plain, log, encoded, Pass(ours_run.cpu_s, ours_s))
    finally:
        if plain is not None:
            plain.close()
        shutil.rmtree(out, ignore_errors=True)

    samples = encoded.samples
    mib = 1024.0
    if naive_stored == samples:
        same = "the same samples"
    elif naive_stored == len(payloads):
        same = f"the first {naive_stored} samples of the drive (--naive-receiver-samples)"
    else:
        same = (
            f"the first {naive_stored} of {len(payloads)} samples published, those stored within the "
            f"{naive_bound_s:.0f} s bound"
        )
    return [
        Row(
            "agent, whole pipeline",
            frames / ours_run.seconds,
            frames / naive_run.seconds,
            "frames/s",
            f"{log.name}, {frames} frames, {samples} samples x {len(encoded.schema.signals)} signals; "
            f"wall time from fork to exit 0: ours {ours_run.seconds:.2f} s (replay --speed max, exit "
            "once the receiver acked every sample after its commit), naive "
            f"{naive_run.seconds:.2f} s (exit once the broker PUBACKed every sample; nothing on disk, "
            "nobody subscribed); both include starting Python and importing can, cantools and paho, "
            f"which alone takes {floor.seconds:.2f} s",
        ),
        Row(
            "agent peak RSS",
            ours_run.max_rss_kib / mib,
            naive_run.max_rss_kib / mib,
            "MiB",
            f"VmHWM of the agent process (polled from /proc every 10 ms); Python importing can, cantools and paho alone "
            f"(python-can imports asammdf and pandas when they are installed) peaks at "
            f"{floor.max_rss_kib / mib:.1f} MiB",
            higher_is_better=False,
            digits=1,
        ),
        Row(
            "agent CPU",
            ours_run.cpu_s,
            naive_run.cpu_s,
            "s",
            "user + system seconds of the agent process "
            "(wait4); ours includes its SQLite buffer and the receiver's acks",
            higher_is_better=False,
            digits=2,
        ),
        Row(
            "receiver ingest",
            samples / ours_s,
            naive_stored / naive_s,
            "samples/s",
            f"ours: {samples} samples in {batches} batches of {BATCH_CHUNKS} chunks x {CHUNK_SAMPLES} "
            "samples, "
            f"{ours_s:.2f} s from the first publish to the ack naming the last chunk (one transaction per "
            f"batch, a row per value); naive: {same}, one JSON message each, {naive_s:.2f} s from the first "
            "publish until its database holds them (one INSERT + COMMIT each); both WAL, "
            "synchronous=FULL",
        ),
        Row(
            "wire bytes per sample",
            ours_fig["bytes_sent"] / samples,
            naive_fig["bytes_sent"] / samples,
            "B",
            f"MQTT payload bytes of the agent run: ours {ours_fig['bytes_sent']} in "
            f"{ours_fig['batches_sent']} "
            f"batches (protobuf + zlib; the pre-encoded batches of the receiver row: {batch_bytes}), naive "
            f"{naive_fig['bytes_sent']} in {naive_fig['samples']} JSON messages",
            higher_is_better=False,
            digits=1,
        ),
        *tls_rows(opened, secured, samples, driven_hours(samples, float(encoded.schema.rate)), floor.cpu_s),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--log", type=Path, default=DEFAULT_LOG, help="drive to replay (default highway)")
    parser.add_argument(
        "--naive-receiver-samples",
        type=int,
        default=None,
        metavar="N",
        help="store only the drive's first N samples in the naive receiver (default: all of them)",
    )
    parser.add_argument(
        "--naive-bound",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds the naive receiver is given; past them its rate is taken over what it stored (60)",
    )
    args = parser.parse_args(argv)
    rows = bench(args.log.resolve(), args.naive_receiver_samples, args.naive_bound)
    sys.modules.setdefault("tests.harness.bench", sys.modules[__name__])  # one module when run as __main__
    from tests.harness.bench_buffer import buffer_rows  # it imports this module: not at the top

    rows += buffer_rows(progress=progress)
    footer = [
        machine(),
        "ratio = how many times better ours is",
        f"rows '..., {TLS}': ours in the full secure setup that `make demo` and users run; their naive",
        "column holds ours without TLS (ratio 'vs no TLS'), measured in the same run: the cost of TLS",
    ]
    print_table(rows, footer)
    from tests.harness.bench_codec import codec_rows
    from tests.harness.bench_receiver import receiver_rows

    progress("codec: bytes per sample and time per sample on every drive and the real recordings")
    print_plain("codec (baseline: one protobuf message per sample; for errors: the bound ε)", codec_rows())
    progress("receiver store: one hour of batches, in-process")
    print_plain("receiver store", [(m, v, None, u, n) for m, v, u, n in receiver_rows(progress=progress)])
    from tests.harness.bench_api import live_rows

    progress("live page: commit to a WebSocket client of /api/live, 20 batches")
    print_plain("API", [(m, v, None, u, n) for m, v, u, n in live_rows()])
    from tests.harness.bench_agent import agent_rows
    from tests.harness.bench_lossless import lossless_rows
    from tests.harness.bench_online import online_rows

    progress("link bytes online vs drained, on the committed drives")
    print_plain("link bytes (reference: the same drive drained)", online_rows(), ratio=True)
    progress("lossless on the real recordings vs zstd -19 over their raw frames")
    print_plain(
        "lossless, real recordings (reference: zstd -19, raw frames)", lossless_rows(progress), ratio=True
    )
    progress("the agent's own cost: throughput, CPU at 1x and idle, RSS in the package's environment")
    print_plain("agent cost (reference: the library floor, or the goal)", agent_rows(progress), ratio=True)
    print(f"\nbench took {time.monotonic() - STARTED:.0f} s")
    progress("done")
    return 0


def print_plain(
    title: str, rows: Sequence[tuple[str, float, float | None, str, str]], ratio: bool = False
) -> None:
    """A second table for measures with no naive twin (or with a bound as their baseline); ``ratio``
    adds ours / reference."""
    print(f"\n{title}")
    if not rows:
        print("(nothing measured: see the progress lines)")
        return
    width = max(len(f"{measure} ({unit})") for measure, _, _, unit, _ in rows)
    for measure, value, baseline, unit, note in rows:
        base = "" if baseline is None else f"  | {baseline:>12,.3f}"
        if ratio and baseline:
            base += f"  {value / baseline:>6.2f}x"
        print(f"{f'{measure} ({unit})':<{width}}  {value:>12,.3f}{base}  {note[:110]}")


if __name__ == "__main__":
    sys.exit(main())
