"""Bench rows of the agent's own cost: throughput against its libraries, CPU at real time and idle, RSS.

Rows (measure, value, reference, unit, note), each measured beside its reference in the same run:
- throughput: ``edge-agent replay --speed max`` (offline: no broker, ``--drain-timeout 0``), frames per
  CPU second of the whole process (start-up included), as a ratio of the floor: python-can's
  ``can.LogReader`` plus cantools' ``decode`` of every frame of a message in the DBC, frames per CPU
  second, on the same log. Real recordings from ``../shared/realdata/`` (every signal of the DBC sampled),
  repeated with shifted timestamps to a few hundred thousand frames.
- CPU at real time: the daemon replaying a committed drive at 1x for a bounded stretch, % of one core
  (the scheduler's run time of every thread, ``/proc/<pid>/task/*/schedstat``, in nanoseconds, over
  wall time, start-up excluded: utime + stime come in 10 ms ticks, 0.017 % of a minute, too coarse for
  the idle row); idle: the daemon on a live python-can ``virtual`` bus that carries no traffic.
- RSS: the daemon in the package's own environment (a temp venv with ``pip install .``, no extras),
  replaying a long drive during an outage (the broker unreachable), VmHWM.

Every agent runs in the package's own environment (a temp venv with ``pip install .``, built first): in
the development one, python-can imports asammdf, pandas and numpy at start-up (its MF4 reader), which
costs a second of CPU and some 60 MiB that an installed agent never pays. The floor runs in the bench's
own process (its imports are not counted). Runs child processes only; every run is bounded in time.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.status import status_path
from tests.harness.bench import stop_process, timed_run
from tests.harness.bench_buffer import proc_rss_kib
from tests.harness.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
REALDATA = ROOT.parent / "shared" / "realdata"
REPLAY_LOGS = ROOT / "replay_logs"
REFERENCE_DBC = ROOT / "dbc" / "reference_ev.dbc"
TARGET_FRAMES = 538_000
CLK_TCK = os.sysconf("SC_CLK_TCK")
_LINE = re.compile(r"^\((\d+\.\d+)\)\s+(\S+)\s+(.*)$")

Rows = list[tuple[str, float, float | None, str, str]]


@dataclass(frozen=True)
class Drive:
    """A real recording: its candump log, the channel the DBC decodes, and that DBC."""

    name: str
    log: Path
    channel: str
    dbc: Path


def real_drives() -> list[Drive]:
    kona, truck = REALDATA / "hyundai_kona_ev_2019", REALDATA / "j1939_truck_canedge"
    drives = [
        Drive(
            "Kona EV P-CAN",
            kona / "kona_ev_2019_power-off-on-ready-off.candump.log",
            "can0",
            kona / "pcan.cantools-BS_-added.dbc",
        ),
        Drive(
            "J1939 truck",
            truck / "j1939_truck_idle_canedge.candump.log",
            "can0",
            truck / "CSS-Electronics-SAE-J1939-DEMO.dbc",
        ),
    ]
    return [d for d in drives if d.log.exists() and d.dbc.exists()]


def repeated_log(source: Path, channel: str, out: Path, target_frames: int = TARGET_FRAMES) -> int:
    """Write ``out``: the frames of ``channel`` in the candump log ``source``, repeated (each pass shifted
    by the recording's length plus one frame gap) until ``target_frames``; returns the frames written."""
    frames: list[tuple[float, str]] = []
    for line in source.read_text().splitlines():
        match = _LINE.match(line)
        if match and match.group(2) == channel:
            frames.append((float(match.group(1)), match.group(3)))
    if not frames:
        raise ValueError(f"{source}: no frames on {channel}")
    first, last = frames[0][0], frames[-1][0]
    span = last - first + 0.01
    written = 0
    with open(out, "w") as handle:
        passes = 0
        while written < target_frames:
            shift = passes * span
            for stamp, rest in frames:
                handle.write(f"({stamp + shift:.6f}) {channel} {rest}\n")
                written += 1
                if written >= target_frames:
                    break
            passes += 1
    return written


def floor_fps(log: Path, dbc: Path) -> tuple[int, float]:
    """(frames decoded, frames read per CPU second) of python-can's LogReader + cantools' decode of
    every frame of a message in ``dbc`` (J1939 messages matched by PGN, as the agent does)."""
    import can
    import cantools

    from agent.decode import j1939_pgn as pgn_from_frame_id  # integer arithmetic; cantools' is bitstruct

    db = cantools.database.load_file(str(dbc))
    exact = {m.frame_id: m for m in db.messages if m.protocol != "j1939"}
    by_pgn = {pgn_from_frame_id(m.frame_id): m for m in db.messages if m.protocol == "j1939"}
    decoded = frames = 0
    started = time.process_time()
    for frame in can.LogReader(str(log)):
        frames += 1
        message = exact.get(frame.arbitration_id)
        if message is None and frame.is_extended_id and by_pgn:
            message = by_pgn.get(pgn_from_frame_id(frame.arbitration_id))
        if message is None:
            continue
        with contextlib.suppress(cantools.database.errors.Error, ValueError, IndexError):
            message.decode(bytes(frame.data), decode_choices=False, allow_truncated=True)
        decoded += 1
    seconds = time.process_time() - started
    return decoded, frames / seconds if seconds > 0 else 0.0


def agent_config(
    out: Path, log: Path, dbc: Path, channel: str, *, live: bool = False, name: str = "agent"
) -> Path:
    """A config replaying ``log`` (or a live ``virtual`` bus) with every signal of ``dbc``, to a broker
    that is not there (a closed local port): the agent stays offline and keeps everything."""
    config = out / f"{name}.yaml"
    if live:
        source = "source: {kind: bus}\n"
        bus = f"  - {{channel: {channel}, interface: virtual, dbc: [{dbc}]}}\n"
    else:
        source = f"source: {{kind: replay, log: {log}, speed: max}}\n"
        bus = f"  - {{channel: {channel}, dbc: [{dbc}]}}\n"
    config.write_text(
        f"vin: BENCHAGENT0000001\n{source}buses:\n{bus}"
        f"buffer: {{path: {out / name}-buffer.sqlite}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {closed_port()}}}\n"
        "logging: {format: json, level: warning}\n"
    )
    return config


def closed_port() -> int:
    """A local TCP port nobody listens on (bound then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def agent_argv(python: str, *args: object) -> list[str]:
    return [python, "-m", "agent.cli", *map(str, args)]


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_ns(pid: int) -> int:
    """Nanoseconds on a CPU of every live thread of process ``pid`` (the first field of each thread's
    schedstat): exact where utime + stime are counted in ticks."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            total += int((task / "schedstat").read_text().split()[0])
    return total


def hwm_kib(pid: int) -> int:
    """VmHWM of a live process, 0 once it is gone (:func:`tests.harness.bench_buffer.proc_rss_kib`)."""
    figures = proc_rss_kib(pid)
    return 0 if figures is None else figures[1]


def started(process: subprocess.Popen[bytes], buffer: Path, log: Path, timeout: float = 60.0) -> None:
    """Return once the daemon writing ``buffer`` publishes its first status (imports, DBC and buffer
    done: what comes after is its steady state); RuntimeError if it exits or takes past ``timeout``."""
    what = f"{log}: no status within {timeout:.0f} s"
    try:
        wait_for(lambda: status_path(buffer).exists(), timeout, what, process)
    except AssertionError as error:
        raise RuntimeError(f"{error} (exit status {process.poll()})") from None


def ran_for(process: subprocess.Popen[bytes], seconds: float, log: Path) -> None:
    """Let the daemon run ``seconds`` (a measurement window); RuntimeError if it exits within them."""
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        return
    raise RuntimeError(f"the agent exited {process.returncode} while measured: {log}")


def fresh(buffer: Path) -> Path:
    """``buffer`` with no file of an earlier run: its database, WAL and status."""
    for stale in buffer.parent.glob(buffer.name + "*"):
        stale.unlink()
    status_path(buffer).unlink(missing_ok=True)
    return buffer


def whole_agent_fps(
    out: Path, log: Path, dbc: Path, channel: str, frames: int, python: str = sys.executable
) -> tuple[float, float]:
    """(CPU seconds incl. start-up, frames per CPU second) of ``edge-agent replay --speed max``, offline."""
    config = agent_config(out, log, dbc, channel)
    fresh(out / "agent-buffer.sqlite")  # each run starts from an empty buffer
    argv = agent_argv(python, "replay", log, "--config", config, "--speed", "max", "--drain-timeout", "0")
    log_path = out / "agent-replay.log"
    run = timed_run(argv, log_path, timeout=900)
    if "samples committed" not in log_path.read_text():  # offline, it exits 1: everything still pending
        raise RuntimeError(f"replay exited {run.returncode} before its summary: {log_path}")
    return run.cpu_s, frames / run.cpu_s if run.cpu_s > 0 else 0.0


def throughput_rows(
    drives: Iterable[Drive], out: Path, progress: Callable[[str], None], python: str = sys.executable
) -> Rows:
    rows: Rows = []
    for drive in drives:
        log = out / f"{drive.log.stem}-x.log"
        frames = repeated_log(drive.log, drive.channel, log)
        # Best of two each: one run of either varies by 10-20 % on a shared machine.
        decoded, floor = max((floor_fps(log, drive.dbc) for _ in range(2)), key=lambda run: run[1])
        progress(f"{drive.name}: floor {floor:,.0f} frames/s over {frames:,} frames ({decoded:,} in the DBC)")
        cpu, fps = max(
            (whole_agent_fps(out, log, drive.dbc, drive.channel, frames, python) for _ in range(2)),
            key=lambda run: run[1],
        )
        progress(f"{drive.name}: whole agent {fps:,.0f} frames/s ({cpu:.2f} CPU s)")
        rows.append(
            (
                f"agent frames/s, {drive.name}",
                fps,
                floor,
                "frames/s",
                "replay --speed max vs LogReader+decode",
            )
        )
        rows.append(
            (f"agent/floor ratio, {drive.name}", fps / floor if floor else 0.0, 0.6, "ratio", "goal >= 0.6")
        )
    return rows


def sampled_cpu(argv: Sequence[str], out: Path, name: str, window_s: float) -> tuple[float, int]:
    """(% of one core over ``window_s`` once started, VmHWM KiB) of a daemon run named ``name``."""
    log, buffer = out / f"{name}.log", fresh(out / f"{name}-buffer.sqlite")
    with open(log, "wb") as err:
        process = subprocess.Popen(list(argv), cwd=ROOT, stdout=err, stderr=subprocess.STDOUT)
    try:
        started(process, buffer, log)  # start-up (imports, DBC, buffer) is not the steady state measured
        cpu0, wall0 = run_ns(process.pid), time.monotonic()
        ran_for(process, window_s, log)
        cpu1, wall1 = run_ns(process.pid), time.monotonic()
        hwm = hwm_kib(process.pid)
    finally:
        stop_process(process)
    return 100.0 * (cpu1 - cpu0) / 1e9 / (wall1 - wall0), hwm


def realtime_rows(
    out: Path, progress: Callable[[str], None], window_s: float = 30.0, python: str = sys.executable
) -> Rows:
    """CPU % of a core at 1x on a committed drive, and idle on a live bus with no traffic."""
    rows: Rows = []
    log = REPLAY_LOGS / "highway.log.gz"
    config = agent_config(out, log, REFERENCE_DBC, "can0", name="realtime")
    argv_replay = agent_argv(
        python, "replay", log, "--config", config, "--speed", "1", "--drain-timeout", "0"
    )
    pct, _ = sampled_cpu(argv_replay, out, "realtime", window_s)
    progress(f"1x {log.name}: {pct:.2f} % of a core over {window_s:.0f} s")
    rows.append((f"CPU at 1x, {log.name.split('.')[0]}", pct, 3.0, "% core", "goal <= 3 %"))
    idle = agent_config(out, log, REFERENCE_DBC, "bench0", live=True, name="idle")
    pct, _ = sampled_cpu(agent_argv(python, "run", "--config", idle), out, "idle", 2 * window_s)
    progress(f"idle (virtual bus, no traffic): {pct:.3f} % of a core over {2 * window_s:.0f} s")
    rows.append(("CPU idle, live bus without traffic", pct, 0.1, "% core", "goal <= 0.1 %"))
    return rows


def package_env(out: Path, progress: Callable[[str], None]) -> str:
    """A fresh venv with ``pip install .`` (no extras) of the repository; its python."""
    venv = out / "pkg-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    progress("pip install . into a fresh venv (the package's own environment)")
    build = out / "pkg-src"
    shutil.copytree(
        ROOT, build, ignore=shutil.ignore_patterns(".venv", "*.egg-info", ".git", "__pycache__", "build")
    )
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(build)],
        check=True,
        cwd=out,
        stderr=subprocess.DEVNULL,  # pip's warnings about the machine's index settings
    )
    return python


def rss_rows(
    out: Path, progress: Callable[[str], None], python: str, window_s: float = 60.0, speed: float = 60.0
) -> Rows:
    """VmHWM of the daemon in the package's env (``python``) replaying committed drives at ``speed`` x
    during an outage: ``window_s`` of wall time covers ``window_s * speed`` s of drive time."""
    drives = sorted(REPLAY_LOGS.glob("*.log.gz"))
    long_log = out / "outage-drive.log"
    _concat_drives(drives, long_log, seconds=window_s * speed)
    config = agent_config(out, long_log, REFERENCE_DBC, "can0", name="outage")
    argv = [
        python,
        "-m",
        "agent.cli",
        "replay",
        str(long_log),
        "--config",
        str(config),
        "--speed",
        str(speed),
        "--drain-timeout",
        "0",
    ]
    env_cwd = out  # not the repository: the installed package, not the source tree, is imported
    log, buffer = out / "outage.log", fresh(out / "outage-buffer.sqlite")
    with open(log, "wb") as err:
        process = subprocess.Popen(argv, cwd=env_cwd, stdout=err, stderr=subprocess.STDOUT)
    try:
        started(process, buffer, log)
        idle_hwm = hwm = hwm_kib(process.pid)
        deadline = time.monotonic() + window_s
        while time.monotonic() < deadline:  # VmHWM twice a second, until the window ends or the drive does
            try:
                process.wait(0.5)
                break
            except subprocess.TimeoutExpired:
                hwm = max(hwm, hwm_kib(process.pid))
    finally:
        stop_process(process)
    hours = window_s * speed / 3600
    progress(f"RSS (package env, outage, {hours:.1f} h of drive at {speed:g}x): VmHWM {hwm / 1024:.1f} MiB")
    return [
        ("RSS at start, package env", idle_hwm / 1024, 50.0, "MiB", "VmHWM, pip install . (no extras)"),
        (
            f"RSS through {hours:.1f} h outage, package env",
            hwm / 1024,
            50.0,
            "MiB",
            f"VmHWM, replay at {speed:g}x, broker unreachable",
        ),
    ]


def _concat_drives(drives: Sequence[Path], out: Path, seconds: float) -> None:
    """Committed drives back to back (each shifted after the previous) up to ``seconds`` of drive time."""
    import gzip

    offset, written_until = 0.0, 0.0
    with open(out, "w") as handle:
        while written_until < seconds:
            for drive in drives:
                first = last = None
                with gzip.open(drive, "rt") as lines:
                    for line in lines:
                        match = _LINE.match(line)
                        if not match:
                            continue
                        stamp = float(match.group(1))
                        first = stamp if first is None else first
                        last = stamp
                        handle.write(f"({stamp - first + offset:.6f}) {match.group(2)} {match.group(3)}\n")
                if first is not None and last is not None:
                    offset += last - first + 0.02
                    written_until = offset
                if written_until >= seconds:
                    return


def agent_rows(progress: Callable[[str], None]) -> Rows:
    """Every row of this module (see its docstring); about four minutes (pip install included)."""
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        out = Path(tmp)
        python = package_env(out, progress)  # every figure in the package's own environment
        rows = throughput_rows(real_drives(), out, progress, python)
        rows += realtime_rows(out, progress, python=python)
        rows += rss_rows(out, progress, python)
    return rows


if __name__ == "__main__":
    for row in agent_rows(lambda text: print(text, file=sys.stderr)):
        print(row)
