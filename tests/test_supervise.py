"""sd_notify and the watchdog (agent.service.supervise): the protocol on our own NOTIFY_SOCKET, then the daemon.

The daemon tests listen where systemd would: a datagram socket named by NOTIFY_SOCKET, with WATCHDOG_USEC
set. One runs the real ``edge-agent run`` (READY, WATCHDOG at half of WATCHDOG_USEC, STATUS, STOPPING on
SIGTERM); the other runs the Agent in-process and stalls its pipeline for real, by holding the buffer's
write lock from here (the pipeline's commit waits on SQLite), and checks that the pings stop and resume.
They wait on what the listener receives (a number of pings, a status), never for a fixed time.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import apsw
import pytest

from agent.service.supervise import (
    STALL_MARGIN,
    Heartbeat,
    Notifier,
    Supervisor,
    Watchdog,
    socket_address,
    stall_threshold,
    watchdog_timeout,
)
from tests.harness.broker import Broker

ROOT = Path(__file__).resolve().parent.parent
HIGHWAY = ROOT / "replay_logs" / "highway.log.gz"
DBC = ROOT / "dbc" / "reference_ev.dbc"


# --- a NOTIFY_SOCKET of our own ----------------------------------------------------------------------------


@dataclass
class Listener:
    """A bound AF_UNIX datagram socket that records every notification with its arrival time."""

    sock: socket.socket
    env_value: str
    messages: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Listener:
        self.sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            pairs = (line.partition("=") for line in data.decode().splitlines())
            self.messages.append((time.monotonic(), {key: value for key, _, value in pairs}))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
        self.sock.close()

    def times(self, key: str, value: str | None = None) -> list[float]:
        return [t for t, m in self.messages if key in m and (value is None or m[key] == value)]

    def wait_for(self, key: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.times(key)
            if found:
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"no {key} within {timeout} s; got {[m for _, m in self.messages]}")

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``condition`` (on what has arrived so far) until it holds, or fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout} s; got {[m for _, m in self.messages]}")
            time.sleep(0.02)

    def pings_after(self, since: float) -> list[float]:
        return [t for t in self.times("WATCHDOG", "1") if t > since]

    def statuses(self) -> list[str]:
        return [m["STATUS"] for _, m in self.messages if "STATUS" in m]


def bind_abstract() -> Listener:
    name = f"edge-agent-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    return Listener(sock, "@" + name)


@pytest.fixture
def listener() -> Iterator[Listener]:
    instance = bind_abstract().start()
    try:
        yield instance
    finally:
        instance.close()


# --- the protocol --------------------------------------------------------------------------------------


def test_socket_address_forms() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@/org/freedesktop/systemd1/notify/1") == "\0/org/freedesktop/systemd1/notify/1"
    assert socket_address("") is None
    assert socket_address("@") is None
    assert socket_address("vsock:2:1234") is None  # systemd ≥ 254 form: not supported, so no-op


def test_watchdog_timeout_honours_watchdog_pid() -> None:
    assert watchdog_timeout({"WATCHDOG_USEC": "30000000"}, pid=42) == 30.0
    assert watchdog_timeout({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=42) == 30.0
    assert watchdog_timeout({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "41"}, pid=42) is None
    assert watchdog_timeout({"WATCHDOG_USEC": "0"}, pid=42) is None
    assert watchdog_timeout({"WATCHDOG_USEC": "soon"}, pid=42) is None
    assert watchdog_timeout({}, pid=42) is None


def test_notifier_sends_each_message_to_a_path_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(1.0)
    notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "4000000"})
    try:
        assert notifier.enabled and notifier.watchdog_interval() == 2.0
        assert notifier.ready("ONLINE, backlog 0 chunks")
        assert sock.recv(4096) == b"READY=1\nSTATUS=ONLINE, backlog 0 chunks"
        assert notifier.status("two\nlines")
        assert sock.recv(4096) == b"STATUS=two lines"  # STATUS= is one line
        assert notifier.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert notifier.stopping()
        assert sock.recv(4096) == b"STOPPING=1"
    finally:
        notifier.close()
        sock.close()


def test_notifier_reaches_an_abstract_socket(listener: Listener) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": listener.env_value})
    assert notifier.ready()
    assert notifier.watchdog_interval() is None  # no WATCHDOG_USEC: no watchdog
    listener.wait_for("READY", 2.0)
    notifier.close()


def test_notifier_is_a_no_op_outside_systemd() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready() and not notifier.watchdog() and not notifier.stopping()
    assert notifier.watchdog_interval() is None


def test_notifier_survives_a_vanished_manager(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert notifier.failures == 2


# --- the watchdog and the status, on a fake clock -------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder(Notifier):
    def __init__(self, watchdog_usec: int | None = 2_000_000) -> None:
        env = {"NOTIFY_SOCKET": "/nonexistent"}
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        super().__init__(env)
        self.sent: list[tuple[str, ...]] = []

    def notify(self, *assignments: str) -> bool:
        self.sent.append(assignments)
        return True


def beat(clock: Clock, period_s: float = 0.1, ago: float = 0.0) -> Heartbeat:
    """A heartbeat of declared ``period_s`` on the fake clock, last beaten ``ago`` seconds before now."""
    heartbeat = Heartbeat(period_s, clock)
    clock.now -= ago
    heartbeat.beat()
    clock.now += ago
    return heartbeat


def test_watchdog_pings_at_half_the_timeout_while_every_stage_beats() -> None:
    clock = Clock()
    notifier = Recorder(watchdog_usec=2_000_000)
    watchdog = Watchdog(notifier, clock=clock)
    assert watchdog.interval_s == 1.0 and watchdog.stall_after_s == 1.0
    pipeline, uploader = beat(clock), beat(clock)
    pinged = []
    for _ in range(31):  # 3 s of a supervisor loop ticking every 0.1 s; the pipeline beats every 0.3 s
        uploader.beat()
        if round(clock.now * 10) % 3 == 0:
            pipeline.beat()
        pinged.append(watchdog.tick({"pipeline": pipeline, "uploader": uploader, "done": None}))
        clock.now += 0.1
    assert [i for i, p in enumerate(pinged) if p] == [0, 10, 20, 30]
    assert notifier.sent == [("WATCHDOG=1",)] * 4


def test_watchdog_withholds_pings_while_a_stage_is_stalled() -> None:
    clock = Clock()
    notifier = Recorder(watchdog_usec=2_000_000)
    watchdog = Watchdog(notifier, clock=clock)
    pipeline, uploader = beat(clock), beat(clock)
    assert watchdog.tick({"pipeline": pipeline})
    clock.now += 1.05
    assert not watchdog.tick({"pipeline": pipeline})  # silent 1.05 s > 1 s: stalled
    assert set(watchdog.stalled) == {"pipeline"}
    for _ in range(50):
        clock.now += 0.1
        uploader.beat()
        assert not watchdog.tick({"pipeline": pipeline, "uploader": uploader})
    pipeline.beat()
    assert watchdog.tick({"pipeline": pipeline, "uploader": uploader})  # it beats again: ping at once
    assert watchdog.stalled == {}
    assert watchdog.pings == 2


def test_watchdog_without_systemd_tracks_stalls_but_never_pings() -> None:
    clock = Clock()
    watchdog = Watchdog(Notifier({}), clock=clock)
    assert not watchdog.enabled and watchdog.stall_after_s == 15.0
    clock.now += 20
    assert not watchdog.tick({"pipeline": beat(clock, ago=16)})
    assert set(watchdog.stalled) == {"pipeline"}


def test_the_stall_threshold_follows_each_stages_declared_period() -> None:
    """WATCHDOG_USEC=1 s: pings every 0.5 s, and 0.5 s is also the uploader's idle wait. Its threshold
    is STALL_MARGIN periods, so a healthy idle turn (a beat every 0.5 s and a little) is never a stall,
    while a stage of short period is still held to the watchdog's own threshold."""
    clock = Clock()
    notifier = Recorder(watchdog_usec=1_000_000)
    watchdog = Watchdog(notifier, clock=clock)
    assert watchdog.stall_after_s == 0.5 and STALL_MARGIN >= 2
    idle, quick = beat(clock, period_s=0.5), beat(clock, period_s=0.05)
    assert watchdog.threshold(idle) == stall_threshold(0.5, 0.5) == STALL_MARGIN * 0.5
    assert watchdog.threshold(quick) == 0.5  # never below the watchdog's own threshold
    pings = 0
    for step in range(60):  # 6 s; the idle stage beats every 0.6 s: its wait, plus a slow scheduler
        clock.now += 0.1
        quick.beat()
        if step % 6 == 5:
            idle.beat()
        pings += watchdog.tick({"uploader": idle, "pipeline": quick})
        assert watchdog.stalled == {}, f"a healthy idle stage was reported stalled at step {step}"
    assert pings >= 11  # every 0.5 s
    clock.now += STALL_MARGIN * 0.5 + 0.05  # silent past its own threshold: that is a stall
    quick.beat()
    assert not watchdog.tick({"uploader": idle, "pipeline": quick})
    assert set(watchdog.stalled) == {"uploader"}
    clock.now += 0.55  # and the quick stage, silent past the watchdog's 0.5 s, stalls as well
    assert not watchdog.tick({"uploader": idle, "pipeline": quick})
    assert set(watchdog.stalled) == {"uploader", "pipeline"}


def test_a_beat_before_an_idle_wait_allows_the_longer_silence_once() -> None:
    """A stage about to wait long for work (the pipeline on an idle bus) says so in its beat: that wait is
    no stall, while the next working turn is held to its declared period again."""
    clock = Clock()
    watchdog = Watchdog(Recorder(watchdog_usec=2_000_000), clock=clock)
    pipeline = beat(clock, period_s=0.1)
    pipeline.beat(allow_s=5.0)
    assert pipeline.allowed_s == 5.0 and watchdog.threshold(pipeline) == STALL_MARGIN * 5.0
    clock.now += 4.9
    assert watchdog.tick({"pipeline": pipeline}) and watchdog.stalled == {}
    pipeline.beat()  # a working turn: the declared period again
    assert pipeline.allowed_s == 0.1
    clock.now += 1.05
    assert not watchdog.tick({"pipeline": pipeline}) and set(watchdog.stalled) == {"pipeline"}
    pipeline.beat(allow_s=0.01)  # never less than the declared period
    assert pipeline.allowed_s == 0.1


def test_a_heartbeat_declares_a_positive_period() -> None:
    with pytest.raises(ValueError, match="period"):
        Heartbeat(0.0)


def test_supervisor_sends_status_only_when_it_changed() -> None:
    notifier = Recorder(watchdog_usec=None)
    supervisor = Supervisor(notifier)
    supervisor.ready("OFFLINE: backlog 0 chunks / 0 samples, last ack never")
    supervisor.ready("again")  # once only
    for text in (
        "OFFLINE: backlog 0 chunks / 0 samples, last ack never",
        "ONLINE: backlog 1 chunks",
        "ONLINE: backlog 1 chunks",
    ):
        supervisor.status(text)
    supervisor.stopping()
    assert notifier.sent == [
        ("READY=1", "STATUS=OFFLINE: backlog 0 chunks / 0 samples, last ack never"),
        ("STATUS=ONLINE: backlog 1 chunks",),
        ("STOPPING=1", "STATUS=stopping"),
    ]


def test_supervisor_status_names_a_stalled_stage() -> None:
    clock = Clock()
    notifier = Recorder(watchdog_usec=2_000_000)
    supervisor = Supervisor(notifier, clock=clock)
    pipeline, uploader = beat(clock, ago=5.0), beat(clock)
    assert not supervisor.tick({"pipeline": pipeline, "uploader": uploader})
    supervisor.status("ONLINE: backlog 3 chunks")
    assert notifier.sent == [("STATUS=STALLED (pipeline silent 5.0 s); ONLINE: backlog 3 chunks",)]
    pipeline.beat()
    assert supervisor.tick({"pipeline": pipeline, "uploader": uploader})
    supervisor.status("ONLINE: backlog 3 chunks")
    assert notifier.sent[1:] == [("WATCHDOG=1",), ("STATUS=ONLINE: backlog 3 chunks",)]
    assert supervisor.describe() == {"notify": True, "watchdog_interval_s": 1.0, "stall_after_s": 1.0}


# --- the daemon --------------------------------------------------------------------------------------------


def write_config(tmp_path: Path, port: int, vin: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(
        f"vin: {vin}\nsource: {{kind: replay, log: {HIGHWAY}, speed: 1}}\n"
        f"buses:\n  - {{channel: can0, dbc: [{DBC}]}}\n"
        "sampling: {signals: [DriveSpeed.VehicleSpeed, MotorStatus.MotorRPM, BatteryState.StateOfCharge]}\n"
        f"buffer: {{path: {tmp_path / 'buffer.sqlite'}, commit_interval_s: 0.2}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {port}}}\nlogging: {{format: json}}\n"
    )
    return path


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


@pytest.mark.slow
def test_daemon_notifies_ready_watchdog_status_stopping(
    broker: Broker, listener: Listener, tmp_path: Path
) -> None:
    config = write_config(tmp_path, broker.port, "NOTIFY0000000001")
    env = {**os.environ, "NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = listener.wait_for("READY", 10.0)
        listener.wait_until(  # 3.5 s of pings at 0.5 s, with the broker up
            lambda: (
                len(listener.pings_after(ready)) >= 8
                and any(s.startswith(("ONLINE:", "DRAINING:")) for s in listener.statuses())
            ),
            timeout=20.0,
            what="8 pings and an ONLINE status",
        )
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, errors
    listener.wait_for("STOPPING", 2.0)
    pings = listener.times("WATCHDOG", "1")
    stopping = listener.times("STOPPING")[0]
    assert all(t >= ready for t in pings), "no ping before READY"
    during = [t for t in pings if t < stopping]
    assert len(during) >= 8, f"pings every 0.5 s for 3.5 s, got {len(during)}"
    intervals = gaps(during)
    assert max(intervals) < 1.0, f"a gap as long as WATCHDOG_USEC: {intervals}"
    assert 0.4 <= sorted(intervals)[len(intervals) // 2] <= 0.7, intervals  # half of WATCHDOG_USEC
    statuses = [m["STATUS"] for _, m in listener.messages if "STATUS" in m and "STOPPING" not in m]
    assert all(s.split(":")[0] in ("OFFLINE", "ONLINE", "DRAINING") and " backlog " in s for s in statuses)
    assert any(s.startswith(("ONLINE:", "DRAINING:")) for s in statuses), statuses  # the broker is up
    assert "READY" in listener.messages[0][1], "READY is the first notification"


@pytest.mark.slow
def test_stalled_pipeline_stops_the_watchdog_pings(
    broker: Broker, listener: Listener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.config import load_agent_config
    from agent.daemon import Agent

    monkeypatch.setenv("NOTIFY_SOCKET", listener.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # pings every 1 s; a stage silent 1 s is stalled
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    agent = Agent(load_agent_config(write_config(tmp_path, broker.port, "STALL00000000001")))
    agent.start()
    runner = threading.Thread(target=agent.run, name="supervisor", daemon=True)
    runner.start()
    lock: apsw.Connection | None = None
    try:
        ready = listener.wait_for("READY", 10.0)
        listener.wait_until(lambda: len(listener.pings_after(ready)) >= 3, 15.0, "3 pings before the stall")
        # Stall the pipeline for real: hold the buffer's write lock, so its next commit waits in SQLite
        # (5 s busy timeout, then it retries after the next commit interval, and waits again).
        lock = apsw.Connection(str(tmp_path / "buffer.sqlite"))
        lock.setbusytimeout(5000)
        lock.execute("BEGIN EXCLUSIVE")
        locked_at = time.monotonic()
        listener.wait_until(  # the supervisor says so, and systemd would have seen no ping for 3 s
            lambda: (
                any(s.startswith("STALLED (pipeline silent") for s in listener.statuses())
                and time.monotonic() - max(listener.times("WATCHDOG", "1")) > 3.2
            ),
            timeout=15.0,
            what="a STALLED status and no ping for 3 s",
        )
        lock.execute("ROLLBACK")
        released_at = time.monotonic()
        listener.wait_until(
            lambda: len(listener.pings_after(released_at + 1.0)) >= 1, 15.0, "the pings resume"
        )
    finally:
        if lock is not None:
            lock.close()
        agent.stop_event.set()
        runner.join(15.0)
    assert not runner.is_alive()
    pings = listener.times("WATCHDOG", "1")
    before = [t for t in pings if t < locked_at]
    assert len(before) >= 3 and max(gaps(before)) < 1.6, gaps(before)
    longest = max(gaps([t for t in pings if t > locked_at - 1.5]))
    assert longest > 3.0, f"systemd (WATCHDOG_USEC=2 s) would have restarted it: longest gap {longest:.1f} s"
    after = [t for t in pings if t > released_at + 1.0]
    assert len(after) >= 1, "the pings resume once the pipeline commits again"
    assert any(s.startswith("STALLED (pipeline silent") for s in listener.statuses()), listener.statuses()
    assert listener.times("STOPPING"), "STOPPING=1 on shutdown"


@pytest.mark.slow
def test_receiver_notifies_ready_watchdog_status_stopping(
    broker: Broker, listener: Listener, tmp_path: Path
) -> None:
    config = tmp_path / "receiver.yaml"
    config.write_text(
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}}}\nstore: {{path: {tmp_path / 'store.sqlite'}}}\n"
        "logging: {format: json}\n"
    )
    env = {**os.environ, "NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": "2000000"}
    env.pop("WATCHDOG_PID", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "receiver.cli", "run", "--config", str(config)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = listener.wait_for("READY", 10.0)
        listener.wait_until(
            lambda: (
                len(listener.pings_after(ready)) >= 2
                and any(s.startswith("subscribed: 0 batches stored") for s in listener.statuses())
            ),
            timeout=15.0,
            what="2 pings and a subscribed status",
        )
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, errors
    listener.wait_for("STOPPING", 2.0)
    assert len(listener.times("WATCHDOG", "1")) >= 2
    assert "READY" in listener.messages[0][1]
