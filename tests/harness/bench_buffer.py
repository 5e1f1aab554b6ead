"""The buffer's rows of `make bench` (issue #4): drain, disk writes per driven hour, memory in an outage.

Each measure of ours stands beside the seeds' naive design (:mod:`tests.harness.naive`) measured in the
same run. The drive is one hour of the highway personality (:func:`agent.sim.simulate`, seed 7),
simulated once into a cache folder (``$EDGE_BENCH_CACHE``, default ``/tmp/edge-bench-cache``; 30-45 s
the first time, keyed by a digest of the simulator and the DBC so that a stale file is never reused).

1. Outage (memory): ``edge-agent replay HOUR --speed max`` with nothing listening on the broker's port, so
   the whole hour stays in its buffer. VmRSS, VmHWM and ``/proc/PID/io`` are polled every 0.2 s; the
   last ``/proc/PID/io`` is read once the process has exited, before it is reaped (``waitid`` with
   ``WNOWAIT``), so nothing written at exit is missed. Progress through the drive comes from the agent's
   own status file (backlog samples). Baseline: the naive agent (JSON per sample, paho at QoS 1) in the
   same outage, on the first 40 % of the hour (at most 30 s): paho keeps every unsent message in memory until its 65,535
   message ids are used up (36 % of the hour), then refuses the rest.
2. Disk: the same hour's chunks appended to a fresh buffer with the agent's own
   :class:`agent.buffer.Buffer`, one chunk per durable transaction (what the pipeline commits each second
   at 1x), plus the status file the daemon rewrites each second (measured on 300 rewrites); "online" also
   deletes each chunk as its ack would (measured on an eighth of the chunks: the buffer stays near empty,
   every commit costs the same). The outage replay's own write_bytes is a row too, but at ``--speed max``
   the pipeline commits once per wall second (about 150 chunks per transaction), far fewer than a driven
   hour's 3,600. Baseline: the naive agent storing each sample as one row with one COMMIT (sqlite3, WAL,
   synchronous=FULL) on the first 3 % of the hour (at most 10 s), scaled to the hour.
3. Drain: the backlog left by (1) is drained by the real daemon (``edge-agent replay EMPTY.log`` on that
   buffer, which exits 0 once the buffer is empty) through Mosquitto to ``edge-receiver run``. Timed from
   the uploader's ``state_changed ONLINE (connected)`` to its ``ONLINE (backlog sent)``, both from the
   agent's own log; fork-to-exit and the CPU seconds of agent, receiver and broker are in the note.
   Baseline: the naive agent's stored rows published as JSON at QoS 1 to the naive receiver (one INSERT +
   COMMIT per sample) for at most 15 s, its rate scaled to the hour.

``write_bytes`` in ``/proc/PID/io`` counts page-cache pages the process dirtied (4 KiB each, counted when
a clean page becomes dirty: after each fsync the next commit's pages count again), not the file
system's journal nor the device's own write amplification. Peak memory is VmHWM, not ``wait4``'s
``ru_maxrss``: Linux starts a child's ``ru_maxrss`` at the peak RSS of the process that forked it.

Run alone: ``python -m tests.harness.bench_buffer rows [--drive-s S]``. The sub-commands ``naive-store``,
``naive-outage`` and ``cadence`` are the processes the rows measure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import apsw
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent import wire
from agent.buffer import Buffer
from agent.chunk import SealedChunk
from agent.status import StatusReport, status_path, write_status_file
from agent.wire.values import ChunkId
from tests.harness import bench, naive
from tests.harness.bench import ROOT, ProcessRun, Row
from tests.harness.broker import Broker, free_port

HOUR_S = 3600
RATE_HZ = 50
CACHE_DIR = Path(os.environ.get("EDGE_BENCH_CACHE", "/tmp/edge-bench-cache"))
PERSONALITY, SEED = "highway", 7
PROBE_EVERY_S = 0.2
MB = 1_000_000
MIB = 1024 * 1024
NAIVE_STORE_PART = 0.03  # of the drive stored by the naive agent (one COMMIT per sample), extrapolated
NAIVE_STORE_MAX_S = 10.0  # ... or what it stores in that time, if less (fsync latency varies with load)
CADENCE_ONLINE_PART = 0.125  # of the drive's chunks appended and deleted one by one, scaled to the drive
STATUS_WRITES = 300  # status file rewrites measured, scaled to one per chunk
NAIVE_OUTAGE_PART = 0.40  # of the drive queued by the naive agent in the outage (past paho's 65,535 mids)
NAIVE_OUTAGE_MAX_S = 30.0  # ... or what it decodes in that time, if less
NAIVE_DRAIN_MAX_S = 15.0  # the naive receiver's time to store the naive store's rows; its rate is scaled

Progress = Callable[[str], None]


# --- the drive -----------------------------------------------------------------------------------------


def drive_log(seconds: int = HOUR_S, cache: Path = CACHE_DIR, progress: Progress | None = None) -> Path:
    """A ``seconds``-long highway drive (seed 7), simulated once and kept in ``cache``."""
    digest = hashlib.sha256(bench.DBC.read_bytes())
    for source in sorted((ROOT / "agent" / "sim").glob("*.py")):
        digest.update(source.read_bytes())
    path = cache / f"{PERSONALITY}-{seconds}s-seed{SEED}-{digest.hexdigest()[:12]}.log.gz"
    if not path.exists():
        from agent.sim import simulate, write_log  # the simulator is needed only here

        say = progress or bench.progress
        say(f"simulating a {seconds} s {PERSONALITY} drive into {path} (once; ~{seconds / 120:.0f} s)")
        started = time.perf_counter()
        frames = write_log(path, simulate(PERSONALITY, seconds, SEED, bench.DBC))  # atomic rename
        say(f"{frames} frames simulated in {time.perf_counter() - started:.1f} s")
    return path


# --- watching a process through /proc -------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    at_s: float  # since the fork
    rss_kib: int  # VmRSS
    hwm_kib: int  # VmHWM: the peak RSS since exec (wait4's ru_maxrss also counts the parent's, see below)
    write_bytes: int
    progress: int  # samples through the drive so far, as the process tells (-1: not known yet)


@dataclass(frozen=True)
class Watched:
    run: ProcessRun
    probes: list[Probe]
    final_io: dict[str, int]  # /proc/PID/io of the exited, not yet reaped process

    @property
    def write_bytes(self) -> int:
        return self.final_io["write_bytes"]

    def first_at(self, samples: int) -> Probe | None:
        """The first probe that found the process at ``samples`` or further through its drive."""
        return next((p for p in self.probes if p.progress >= samples), None)

    @property
    def last(self) -> Probe:
        return self.probes[-1]


def proc_io(pid: int) -> dict[str, int] | None:
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return None
    return {key: int(value) for key, value in (line.split(": ") for line in text.splitlines() if line)}


def proc_rss_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of a live process (a zombie has neither).

    Not ``ru_maxrss``: Linux starts a child's at its parent's peak RSS when it was forked (exec keeps the
    old memory's high-water mark), so a child of a large bench process would report the bench's size.
    """
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    except (OSError, KeyError, ValueError):
        return None


def watched_run(
    argv: Sequence[str],
    log: Path,
    timeout: float,
    progress_of: Callable[[], int] = lambda: -1,
    stdout: int | None = None,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> Watched:
    """Run ``argv`` to its end, polling its RSS and I/O; the last I/O figures are read from the zombie."""
    with open(log, "wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, cwd=ROOT, stdout=err if stdout is None else stdout, stderr=err)
    if on_start is not None:
        on_start(process)
    probes: list[Probe] = []
    next_probe = started
    try:
        while True:
            now = time.perf_counter()
            if now >= next_probe:
                io, rss = proc_io(process.pid), proc_rss_kib(process.pid)
                if io is not None and rss is not None:
                    probes.append(Probe(now - started, *rss, io["write_bytes"], progress_of()))
                next_probe += PROBE_EVERY_S
            if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                final = proc_io(process.pid)
                _, status, usage = os.wait4(process.pid, 0)
                process.returncode = os.waitstatus_to_exitcode(status)
                run = ProcessRun(
                    time.perf_counter() - started,
                    process.returncode,
                    usage.ru_maxrss,
                    usage.ru_utime + usage.ru_stime,
                )
                if final is None:
                    raise RuntimeError(f"/proc/{process.pid}/io was not readable after {argv[2]} exited")
                if not probes:
                    probes.append(Probe(run.seconds, 0, 0, final["write_bytes"], progress_of()))
                return Watched(run, probes, final)
            if now - started > timeout:
                raise TimeoutError(f"{argv[2]} did not finish within {timeout:.0f} s (log: {log})")
            time.sleep(0.005)
    finally:
        if process.returncode is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def self_write_bytes() -> int:
    io = proc_io(os.getpid())
    assert io is not None
    return io["write_bytes"]


# --- ours: the outage, the commit cadence, the drain ---------------------------------------------------


@dataclass
class Outage:
    watched: Watched
    report: dict[str, Any]
    buffer: Path
    at_tenth: Probe  # the first probe at 10 % of the drive or further

    @property
    def samples(self) -> int:
        return int(self.report["samples_committed"])


def tenth(watched: Watched, drive_s: int) -> Probe:
    """The first probe at 10 % of the drive or further; for a drive too short for that (the agent rewrites
    its status file once a second), the first probe past half the run's wall time."""
    found = watched.first_at(drive_s * RATE_HZ // 10)
    if found is None:
        half = watched.run.seconds / 2
        found = next((p for p in watched.probes if p.at_s >= half), watched.probes[-1])
    return found


def status_samples(path: Path) -> Callable[[], int]:
    def read() -> int:
        try:
            return int(json.loads(path.read_text())["backlog_samples"])
        except (OSError, ValueError, KeyError, TypeError):
            return -1

    return read


def our_outage(out: Path, log: Path, drive_s: int, progress: Progress) -> Outage:
    """``edge-agent replay LOG --speed max`` with nothing listening on the broker's port."""
    config = bench.write_agent_config(out, free_port(), log)  # a free port: nobody listens there
    buffer, report = out / "agent-buffer.sqlite", out / "outage-report.json"
    progress(f"edge-agent replay {log.name} --speed max, broker down (the drive stays in the buffer)")
    argv = bench.python_m(
        "agent.cli", "replay", log, config=config, speed="max", report=report, drain_timeout=0.1
    )
    watched = watched_run(argv, out / "outage.log", 30 + drive_s / 5, status_samples(status_path(buffer)))
    if watched.run.returncode not in (0, 1) or not report.exists():
        raise RuntimeError(
            f"edge-agent replay exited {watched.run.returncode}:\n{bench.tail(out / 'outage.log')}"
        )
    figures: dict[str, Any] = json.loads(report.read_text())
    if figures["complete"] or figures["pending_chunks"] != figures["chunks_committed"]:
        raise RuntimeError(f"the outage replay sent something (was a broker listening?): {figures}")
    at_tenth = tenth(watched, drive_s)
    progress(
        f"edge-agent: {figures['frames']} frames, {figures['samples_committed']} samples in "
        f"{figures['chunks_committed']} chunks kept in {watched.run.seconds:.1f} s; "
        f"write_bytes {watched.write_bytes / MB:.1f} MB, RSS {at_tenth.rss_kib / 1024:.1f} MiB at "
        f"{at_tenth.progress / (drive_s * RATE_HZ):.0%} -> {watched.last.rss_kib / 1024:.1f} MiB"
    )
    return Outage(watched, figures, buffer, at_tenth)


@dataclass(frozen=True)
class Cadence:
    chunks: int  # of the drive, each committed in its own transaction (offline)
    offline_bytes: int  # the buffer's commits, every chunk of the drive
    online_chunks: int  # the part of the drive run online (append, then delete as its ack would)
    online_bytes: int  # the buffer's commits and deletes of that part
    status_writes: int
    status_bytes: int  # of ``status_writes`` rewrites of the status file
    seconds: float

    @property
    def status_per_write(self) -> float:
        return self.status_bytes / self.status_writes

    def offline(self) -> float:
        """Bytes written for the drive: its commits and one status file per chunk (one a second)."""
        return self.offline_bytes + self.chunks * self.status_per_write

    def online(self) -> float:
        """The online part scaled to the drive (its buffer stays small: every commit costs the same)."""
        return (self.online_bytes / self.online_chunks + self.status_per_write) * self.chunks


def our_cadence(out: Path, backlog: Path, progress: Progress) -> Cadence:
    """The backlog's chunks committed one per transaction into fresh buffers, in its own process."""
    report = out / "cadence-report.json"
    progress("committing the drive's chunks one per transaction (the car's 1 commit/s), offline and online")
    argv = bench.python_m(
        "tests.harness.bench_buffer",
        "cadence",
        backlog,
        out=out,
        report=report,
        online_part=CADENCE_ONLINE_PART,
    )
    run = bench.timed_run(argv, out / "cadence.log", timeout=300)
    if run.returncode != 0:
        raise RuntimeError(f"the cadence writer exited {run.returncode}:\n{bench.tail(out / 'cadence.log')}")
    f = json.loads(report.read_text())
    cadence = Cadence(
        f["chunks"], f["offline_bytes"], f["online_chunks"], f["online_bytes"], f["status_writes"],
        f["status_bytes"], run.seconds,
    )  # fmt: skip
    progress(
        f"{cadence.chunks} commits: offline {cadence.offline() / MB:.1f} MB, online "
        f"{cadence.online() / MB:.1f} MB (from {cadence.online_chunks} chunks) in {run.seconds:.1f} s"
    )
    return cadence


def run_cadence(args: argparse.Namespace) -> int:
    """Sub-command ``cadence``: what the pipeline writes at 1x, one chunk per commit, measured on itself.

    Offline: every chunk of the backlog appended to a fresh buffer in its own transaction. Online: the
    first ``--online-part`` of them, each appended then deleted (its ack). Status file: rewritten
    ``--status-writes`` times on its own (each rewrite dirties the same pages, whatever the buffer does).
    """
    source = apsw.Connection(str(args.backlog), flags=apsw.SQLITE_OPEN_READONLY)
    rows: list[Any] = source.execute(
        "SELECT c.boot_id, c.seq, c.first_tick, c.sample_count, c.payload, s.body"
        " FROM chunks c JOIN schemas s ON s.id = c.schema_id ORDER BY c.id"
    ).fetchall()
    source.close()
    if not rows:
        raise SystemExit(f"{args.backlog}: no chunks")
    schema = wire.schema_from_bytes(rows[0][5])
    chunks = [SealedChunk(ChunkId(bytes(r[0]), r[1]), r[2], r[3], bytes(r[4])) for r in rows]
    online = chunks[: max(1, round(len(chunks) * args.online_part))]
    figures: dict[str, Any] = {"chunks": len(chunks), "online_chunks": len(online)}
    started = time.perf_counter()
    for mode, part in (("offline", chunks), ("online", online)):
        before = self_write_bytes()
        buffer = Buffer(Path(args.out) / f"cadence-{mode}.sqlite", check=True)
        schema_id = buffer.schema_id(schema)
        for chunk in part:
            buffer.append(schema_id, [chunk])
            if mode == "online":
                buffer.delete([(chunk.id.boot_id, chunk.id.seq, chunk.id.seq)])
        buffer.close()
        figures[f"{mode}_bytes"] = self_write_bytes() - before
    status = status_path(Path(args.out) / "cadence-offline.sqlite")
    before = self_write_bytes()
    writes = min(args.status_writes, len(chunks))  # one a second: no more than the drive has
    for _ in range(writes):
        report = StatusReport(
            vin="CADENCE", state="OFFLINE", backlog_chunks=len(chunks), backlog_samples=len(chunks) * 50,
            backlog_bytes=1 << 22, oldest_age_s=3600.0, last_ack_at=None, dropped_chunks=0,
            dropped_samples=0, drain_eta_s=None, pid=os.getpid(), boot_id="00" * 16, updated_at=time.time(),
        )  # fmt: skip
        write_status_file(status, report)
    figures["status_writes"], figures["status_bytes"] = writes, self_write_bytes() - before
    figures["seconds"] = time.perf_counter() - started
    Path(args.report).write_text(json.dumps(figures) + "\n")
    return 0


@dataclass(frozen=True)
class Drain:
    seconds: float  # connected -> backlog sent, from the agent's own log
    watched: Watched
    report: dict[str, Any]
    chunks: int
    samples: int
    cpu_s: dict[str, float] = field(default_factory=dict)  # user + system seconds spent during the drain
    from_log: bool = (
        True  # timed by the agent's state changes (a backlog too small to be DRAINING: fork to exit)
    )


def log_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def drain_span(events: list[dict[str, Any]]) -> float | None:
    """Seconds from the uploader's first ONLINE (connected) to its last ONLINE (backlog sent)."""

    def at(event: dict[str, Any]) -> float:
        return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()

    changes = [e for e in events if e.get("event") == "state_changed" and e.get("state") == "ONLINE"]
    connected = next((e for e in changes if str(e.get("reason", "")).startswith("connected")), None)
    sent = [e for e in changes if e.get("reason") == "backlog sent"]
    if connected is None or not sent:
        return None
    return at(sent[-1]) - at(connected)


def proc_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a live process so far (``nan`` if it cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return math.nan


def our_drain(out: Path, backlog: Path, broker: Broker, client: bench.Client, progress: Progress) -> Drain:
    """The real daemon drains ``backlog`` to a real receiver: ``edge-agent replay`` of an empty log."""
    port = broker.port
    source = Buffer(backlog)
    stats = source.stats()
    first = source.oldest(0, max_chunks=1)[0]
    warmup = wire.encode_batch(
        bench.WARMUP_VIN, source.schema(first.schema_id), [first.payload], sent_at=time.time()
    )
    source.close()
    empty = out / "empty.log"
    empty.write_bytes(b"")
    config = bench.write_agent_config(out, port, empty)  # the same buffer path as the outage's
    receiver = bench.OurReceiver(out, "receiver-drain", port, client, warmup)
    try:
        report = out / "drain-report.json"
        progress(
            f"edge-agent draining {stats.chunks} chunks ({stats.samples} samples, "
            f"{stats.payload_bytes / MB:.2f} MB) to edge-receiver"
        )
        argv = bench.python_m("agent.cli", "replay", empty, config=config, report=report, drain_timeout=300)
        pids = {
            "receiver": None if receiver.process is None else receiver.process.pid,
            "mosquitto": None if broker.process is None else broker.process.pid,
        }
        cpu_before = {name: proc_cpu_s(pid) for name, pid in pids.items()}
        watched = watched_run(argv, out / "drain.log", 330)
        cpu = {name: proc_cpu_s(pid) - cpu_before[name] for name, pid in pids.items()}
        cpu["agent"] = watched.run.cpu_s
    finally:
        receiver.stop()
    if watched.run.returncode != 0:
        raise RuntimeError(f"the drain exited {watched.run.returncode}:\n{bench.tail(out / 'drain.log')}")
    figures: dict[str, Any] = json.loads(report.read_text())
    acked = len(client.acked.get(bench.AGENT_VIN, ()))
    if figures["chunks_acked"] != stats.chunks or acked != stats.chunks:
        raise RuntimeError(f"drain: {stats.chunks} chunks pending, agent says {figures}, acks name {acked}")
    span = drain_span(log_events(out / "drain.log"))
    seconds = watched.run.seconds if span is None else span
    progress(
        f"drained in {seconds:.2f} s (fork to exit {watched.run.seconds:.2f} s), "
        f"{figures['batches_sent']} batches, {figures['bytes_sent']} bytes"
    )
    progress("CPU seconds during the drain: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    return Drain(seconds, watched, figures, stats.chunks, stats.samples, cpu, span is not None)


# --- the naive side ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NaiveStore:
    watched: Watched
    samples: int
    before_close: int  # write_bytes just before the database was closed (its last checkpoint)

    def per_drive(self, drive_samples: int) -> float:
        """write_bytes scaled to the whole drive; the close-time checkpoint counted once, not scaled."""
        return self.before_close * drive_samples / self.samples + (
            self.watched.write_bytes - self.before_close
        )


def naive_store(out: Path, log: Path, max_samples: int, progress: Progress) -> NaiveStore:
    db, report = out / "naive-store.sqlite", out / "naive-store.json"
    progress(
        f"naive agent storing the first {max_samples} samples (at most {NAIVE_STORE_MAX_S:.0f} s), "
        "one row + COMMIT each (WAL, FULL)"
    )
    argv = bench.python_m(
        "tests.harness.bench_buffer",
        "naive-store",
        log,
        db=db,
        max_samples=max_samples,
        max_seconds=NAIVE_STORE_MAX_S,
        report=report,
    )
    watched = watched_run(argv, out / "naive-store.log", 300)
    if watched.run.returncode != 0:
        raise RuntimeError(
            f"naive store exited {watched.run.returncode}:\n{bench.tail(out / 'naive-store.log')}"
        )
    figures = json.loads(report.read_text())
    result = NaiveStore(watched, figures["samples"], figures["write_bytes_before_close"])
    progress(
        f"naive store: {result.samples} samples committed in {watched.run.seconds:.1f} s, "
        f"write_bytes {watched.write_bytes / MB:.1f} MB"
    )
    return result


def run_naive_store(args: argparse.Namespace) -> int:
    """Sub-command ``naive-store``: the naive agent keeping every sample on disk, one COMMIT per sample."""
    conn = naive.open_db(args.db)
    stats = naive.NaiveStats()
    rate = naive.grid_rate(args.rate_hz)
    deadline = time.monotonic() + (args.max_seconds or math.inf)
    for tick, values in naive.samples(args.log, bench.DBC, args.rate_hz, stats):
        text = naive.to_json(tick, values, rate).decode()
        conn.execute(
            "INSERT INTO telemetry (vin, ts, data) VALUES (?, ?, ?)",
            (args.vin, tick * rate.denominator / rate.numerator, text),
        )
        conn.commit()
        if stats.samples >= args.max_samples or time.monotonic() > deadline:
            break
    before_close = self_write_bytes()
    conn.close()
    figures = {"samples": stats.samples, "frames": stats.frames, "write_bytes_before_close": before_close}
    Path(args.report).write_text(json.dumps(figures) + "\n")
    return 0


def stored_payloads(db: Path) -> list[bytes]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [text.encode() for (text,) in conn.execute("SELECT data FROM telemetry ORDER BY rowid")]
    finally:
        conn.close()


@dataclass
class NaiveOutage:
    watched: Watched
    samples: int
    refused: int  # publishes paho refused (MQTT_ERR_QUEUE_SIZE): those samples are lost
    at_tenth: Probe
    first_refused_at: int | None  # the sample count at the first refusal


@dataclass
class _Lines:
    """The last progress line of a child's stdout, read on a thread."""

    latest: int = -1
    first_refused: int | None = None
    thread: threading.Thread | None = field(default=None, repr=False)

    def start(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            words = raw.split()
            if len(words) >= 2 and words[0] == b"samples":
                self.latest = int(words[1])
                if len(words) >= 3 and int(words[2]) > 0 and self.first_refused is None:
                    self.first_refused = self.latest


def naive_outage(out: Path, log: Path, drive_s: int, max_samples: int, progress: Progress) -> NaiveOutage:
    report = out / "naive-outage.json"
    progress(
        f"naive agent, broker down, first {max_samples} samples (at most {NAIVE_OUTAGE_MAX_S:.0f} s; paho "
        "queues every unsent message)"
    )
    argv = bench.python_m(
        "tests.harness.bench_buffer",
        "naive-outage",
        log,
        port=free_port(),
        max_samples=max_samples,
        max_seconds=NAIVE_OUTAGE_MAX_S,
        every=max(1, drive_s * RATE_HZ // 200),
        report=report,
    )
    lines = _Lines()
    watched = watched_run(
        argv, out / "naive-outage.log", 300, lambda: lines.latest, subprocess.PIPE, lines.start
    )
    if watched.run.returncode != 0:
        raise RuntimeError(
            f"naive outage exited {watched.run.returncode}:\n{bench.tail(out / 'naive-outage.log')}"
        )
    figures = json.loads(report.read_text())
    at_tenth = tenth(watched, drive_s)
    result = NaiveOutage(watched, figures["samples"], figures["refused"], at_tenth, figures["first_refused"])
    progress(
        f"naive outage: {result.samples} samples in {watched.run.seconds:.1f} s, {result.refused} refused by "
        f"paho; RSS {at_tenth.rss_kib / 1024:.1f} MiB at {at_tenth.progress / (drive_s * RATE_HZ):.0%} -> "
        f"{watched.last.rss_kib / 1024:.1f} MiB"
    )
    return result


def run_naive_outage(args: argparse.Namespace) -> int:
    """Sub-command ``naive-outage``: :func:`tests.harness.naive.run_agent` with the broker down.

    Connects in the background (``connect_async``: the naive agent's blocking ``connect`` would just fail)
    and publishes every sample at QoS 1 as the naive agent does; paho keeps each one in its queue. Prints
    ``samples N REFUSED`` every ``--every`` samples.
    """
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"naive-agent-{args.vin}")
    client.connect_async(args.host, args.port, keepalive=30)
    client.loop_start()
    stats = naive.NaiveStats()
    topic, rate = naive.TOPIC.format(vin=args.vin), naive.grid_rate(args.rate_hz)
    refused, first_refused = 0, None
    deadline = time.monotonic() + (args.max_seconds or math.inf)
    try:
        for tick, values in naive.samples(args.log, bench.DBC, args.rate_hz, stats):
            payload = naive.to_json(tick, values, rate)
            stats.bytes_sent += len(payload)
            if client.publish(topic, payload, qos=1).rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                refused += 1
                first_refused = first_refused or stats.samples
            if stats.samples % args.every == 0:
                print(f"samples {stats.samples} {refused}", flush=True)
            if stats.samples >= args.max_samples or time.monotonic() > deadline:
                break
        print(f"samples {stats.samples} {refused}", flush=True)
    finally:
        client.loop_stop()
    figures = {**vars(stats), "refused": refused, "first_refused": first_refused}
    Path(args.report).write_text(json.dumps(figures) + "\n")
    return 0


# --- the rows ------------------------------------------------------------------------------------------


@dataclass
class Results:
    drive_s: int
    log: Path
    outage: Outage
    cadence: Cadence
    store: NaiveStore
    naive_out: NaiveOutage
    drain: Drain
    naive_drain_s: float
    naive_drained: int
    load: tuple[float, float] = (math.nan, math.nan)  # 1-minute load average before and after


def measure(
    drive_s: int = HOUR_S,
    cache: Path = CACHE_DIR,
    progress: Progress | None = None,
    naive_bound_s: float = NAIVE_DRAIN_MAX_S,
) -> Results:
    say = progress or bench.progress
    drive_samples = drive_s * RATE_HZ
    load_before = os.getloadavg()[0]
    log = drive_log(drive_s, cache, say)
    log.read_bytes()  # into the page cache once, so no run pays for the first read
    out = Path(tempfile.mkdtemp(prefix="edge-bench-buffer-"))
    broker: Broker | None = None
    client: bench.Client | None = None
    try:
        outage = our_outage(out, log, drive_s, say)
        cadence = our_cadence(out, outage.buffer, say)
        store = naive_store(out, log, max(1, round(drive_samples * NAIVE_STORE_PART)), say)
        naive_out = naive_outage(out, log, drive_s, round(drive_samples * NAIVE_OUTAGE_PART), say)
        broker = Broker()
        broker.start()
        client = bench.Client(broker.port, "bench-buffer-publisher")
        drain = our_drain(out, outage.buffer, broker, client, say)
        payloads = stored_payloads(out / "naive-store.sqlite")
        naive_s, drained = bench.naive_receiver(out, broker.port, payloads, naive_bound_s)
        say(f"naive receiver: {drained} samples stored in {naive_s:.2f} s")
    finally:
        if client is not None:
            client.close()
        if broker is not None:
            broker.close()
        shutil.rmtree(out, ignore_errors=True)
    load = (load_before, os.getloadavg()[0])
    say(f"1-minute load average: {load[0]:.2f} before these rows, {load[1]:.2f} after")
    return Results(drive_s, log, outage, cadence, store, naive_out, drain, naive_s, drained, load)


def rows_of(r: Results) -> list[Row]:
    hours = r.drive_s / HOUR_S
    drive_samples = r.drive_s * RATE_HZ
    span = "the hour" if r.drive_s == HOUR_S else f"the {r.drive_s} s drive"
    outage, cadence, drain, store, nout = r.outage, r.cadence, r.drain, r.store, r.naive_out
    naive_drain_s = r.naive_drain_s * drive_samples / r.naive_drained
    naive_disk = store.per_drive(drive_samples) / hours
    ours_growth = (outage.watched.last.rss_kib - outage.at_tenth.rss_kib) / 1024
    naive_growth = (nout.watched.last.rss_kib - nout.at_tenth.rss_kib) / 1024
    refused = (
        f"paho refused {nout.refused} publishes from sample {nout.first_refused_at} on (its 65,535 message ids "
        "are all taken by unacked messages; the naive agent ignores publish()'s return: those samples are lost), "
        "so its RSS stops growing there and the data stops being kept"
        if nout.refused
        else "paho refused none"
    )
    naive_store_note = (
        f"naive: the naive agent storing each sample as one JSON row with one COMMIT (sqlite3, WAL, "
        f"synchronous=FULL), run on the first {store.samples} samples and scaled to {span} "
        f"({store.before_close / MB:.1f} MB before its close, {(store.watched.write_bytes - store.before_close) / MB:.1f} MB "
        "at close counted once)"
    )
    write_bytes = (
        "write_bytes of /proc/PID/io: page-cache pages the process dirtied, 4 KiB each, counted when a clean page "
        "turns dirty (so after each fsync the next commit counts again), not the file system's journal"
    )
    return [
        Row(
            "drain 1 h backlog",
            drain.seconds / hours,
            naive_drain_s / hours,
            "s",
            f"ours: {drain.chunks} chunks ({drain.samples} samples of {r.log.name}, left in the buffer by the outage "
            f"row) drained by the real daemon (edge-agent replay of an empty log on that buffer) through Mosquitto to "
            f"edge-receiver, "
            + (
                "from the uploader's ONLINE (connected) to its ONLINE (backlog sent) in the agent's log: "
                if drain.from_log
                else "fork to exit (the backlog was too small for the uploader to go DRAINING): "
            )
            + f"{drain.seconds:.2f} s; fork to exit {drain.watched.run.seconds:.2f} s; {drain.report['batches_sent']} "
            f"batches, {drain.report['bytes_sent']} bytes; CPU seconds meanwhile: "
            + ", ".join(f"{name} {cpu:.2f}" for name, cpu in drain.cpu_s.items())
            + f"; naive: {r.naive_drained} JSON samples published at QoS 1 to "
            f"the naive receiver (one INSERT + COMMIT each) in {r.naive_drain_s:.2f} s, scaled to "
            f"{drive_samples} samples; the machine's 1-minute load average was {r.load[0]:.2f} before these rows "
            f"and {r.load[1]:.2f} after (anything above 0 is someone else's work on the same 2 cores)",
            higher_is_better=False,
            digits=1,
        ),
        Row(
            "drain speed",
            3600 / (drain.seconds / hours),
            3600 / (naive_drain_s / hours),
            "x real time",
            "one hour of driving / the drain's seconds (the issue asks for 360x or more)",
        ),
        Row(
            "disk written per driven hour, 1 commit/s, offline",
            cadence.offline() / MB / hours,
            naive_disk / MB,
            "MB",
            f"ours: the {cadence.chunks} chunks of {span} committed one per durable transaction with agent.buffer "
            f"(what the pipeline commits each second at 1x), {cadence.offline_bytes / MB:.1f} MB, plus the status "
            f"file the daemon rewrites each second (fsync + rename), {cadence.status_per_write:.0f} B a rewrite "
            f"(measured on {cadence.status_writes}), in one process measured on itself; the 1 MiB disk reserve "
            f"written at the first start is not counted; {naive_store_note}; {write_bytes}",
            higher_is_better=False,
            digits=1,
        ),
        Row(
            "disk written per driven hour, 1 commit/s, online",
            cadence.online() / MB / hours,
            naive_disk / MB,
            "MB",
            f"ours: each chunk appended, then deleted in its own transaction as its ack would, plus the status "
            f"file; measured on the first {cadence.online_chunks} chunks ({cadence.online_bytes / MB:.1f} MB) "
            f"and scaled to {cadence.chunks} (the buffer stays near empty: every commit costs the same); naive: "
            "its offline figure (a naive agent that also deleted each row once PUBACKed would write more)",
            higher_is_better=False,
            digits=1,
        ),
        Row(
            "disk written per driven hour, replay --speed max",
            outage.watched.write_bytes / MB / hours,
            naive_disk / MB,
            "MB",
            f"ours: edge-agent replay {r.log.name} --speed max with the broker down, write_bytes of the process at "
            f"its exit: it commits once per wall second, {outage.report['chunks_committed']} chunks in about "
            f"{max(1, round(outage.watched.run.seconds))} transactions, so this is far below a driven hour's "
            "(row above); includes the 1 MiB disk reserve and the close-time checkpoint",
            higher_is_better=False,
            digits=1,
        ),
        Row(
            "RSS at the end of a 1 h outage",
            outage.watched.last.rss_kib / 1024,
            nout.watched.last.rss_kib / 1024,
            "MiB",
            f"VmRSS polled every {PROBE_EVERY_S} s; ours: edge-agent replay --speed max with nothing listening on "
            f"the broker's port, {outage.at_tenth.rss_kib / 1024:.1f} MiB at "
            f"{outage.at_tenth.progress / drive_samples:.0%} of {span} (the agent's status file) and "
            f"{outage.watched.last.rss_kib / 1024:.1f} MiB at its end (peak VmHWM {outage.watched.last.hwm_kib / 1024:.1f}); "
            f"naive: its agent with connect_async to the same kind of dead port, run on the first {nout.samples} "
            f"samples ({nout.samples / drive_samples:.0%}): {nout.at_tenth.rss_kib / 1024:.1f} MiB at "
            f"{nout.at_tenth.progress / drive_samples:.0%}, {nout.watched.last.rss_kib / 1024:.1f} MiB at "
            f"{nout.samples / drive_samples:.0%} (peak VmHWM {nout.watched.last.hwm_kib / 1024:.1f}); {refused}",
            higher_is_better=False,
            digits=1,
        ),
        Row(
            "RSS growth through a 1 h outage",
            ours_growth,
            naive_growth,
            "MiB",
            f"RSS at the end minus RSS at 10 % of the drive (ours over {span}, naive over its "
            f"{nout.samples / drive_samples:.0%}); a growth of 0 or less shows as n/a in the ratio",
            higher_is_better=False,
            digits=1,
        ),
    ]


def buffer_rows(
    drive_s: int = HOUR_S,
    cache: Path = CACHE_DIR,
    progress: Progress | None = None,
    naive_bound_s: float = NAIVE_DRAIN_MAX_S,
) -> list[Row]:
    """The rows of issue #4 for ``make bench`` (see the module docstring)."""
    return rows_of(measure(drive_s, cache, progress, naive_bound_s))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rows = sub.add_parser("rows", help="measure and print these rows alone")
    rows.add_argument("--drive-s", type=int, default=HOUR_S, help="seconds of driving (default 3600)")
    cadence = sub.add_parser("cadence", help="commit a buffer's chunks one per transaction (measured)")
    cadence.add_argument("backlog")
    cadence.add_argument("--out", required=True)
    cadence.add_argument("--report", required=True)
    cadence.add_argument("--online-part", type=float, default=CADENCE_ONLINE_PART)
    cadence.add_argument("--status-writes", type=int, default=STATUS_WRITES)
    store = sub.add_parser("naive-store", help="the naive agent storing a row + COMMIT per sample")
    outage = sub.add_parser("naive-outage", help="the naive agent publishing with the broker down")
    for command in (store, outage):
        command.add_argument("log")
        command.add_argument("--vin", default=bench.AGENT_VIN)
        command.add_argument("--rate-hz", type=float, default=float(RATE_HZ))
        command.add_argument("--max-samples", type=int, required=True)
        command.add_argument("--max-seconds", type=float, default=0.0, help="also stop after this (0: no)")
        command.add_argument("--report", required=True)
    store.add_argument("--db", required=True)
    outage.add_argument("--host", default="127.0.0.1")
    outage.add_argument("--port", type=int, required=True)
    outage.add_argument("--every", type=int, default=900)
    args = parser.parse_args(argv)
    if args.command == "cadence":
        return run_cadence(args)
    if args.command == "naive-store":
        return run_naive_store(args)
    if args.command == "naive-outage":
        return run_naive_outage(args)
    started = time.monotonic()
    table = buffer_rows(args.drive_s)
    bench.print_table(table, [bench.machine(), f"took {time.monotonic() - started:.0f} s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
