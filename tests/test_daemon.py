"""The daemon: live buses through the whole pipeline, a graceful stop on SIGTERM within 5 s, and a stage
that fails for real stops the process with exit status 1 and its traceback in the log. A bus that
cannot open is an error (tests/test_journal.py: PRIORITY 3 in a real journal); a missing interface is
waited for, without READY but with the watchdog going."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import can
import pytest

from agent.buffer import Buffer
from agent.config import AgentConfig, BufferConfig, BusConfig, MqttConfig, SamplingConfig, SourceConfig
from agent.daemon import Agent
from agent.sim import simulate
from receiver.store import Store
from tests.harness.broker import Broker
from tests.harness.drive import DBC, ROOT, SIGNALS, agent_config
from tests.harness.waiting import wait_for, wait_for_text

pytestmark = pytest.mark.slow


def test_live_virtual_bus_reaches_the_receiver(broker: Broker, tmp_path: Path) -> None:
    from receiver.config import ReceiverConfig, ReceiverMqttConfig, StoreConfig
    from receiver.ingest import Receiver

    receiver = Receiver(
        ReceiverConfig(
            mqtt=ReceiverMqttConfig(host="127.0.0.1", port=broker.port),
            store=StoreConfig(path=tmp_path / "store.sqlite"),
        )
    )
    receiver.start()
    config = AgentConfig(
        vin="LIVE000000000001",
        source=SourceConfig(kind="bus"),
        buses=(BusConfig(channel="edge-live", dbc=(DBC,), interface="virtual"),),
        sampling=SamplingConfig(signals=tuple(SIGNALS)),
        buffer=BufferConfig(path=tmp_path / "buffer.sqlite", commit_interval_s=0.2),
        mqtt=MqttConfig(host="127.0.0.1", port=broker.port),
    )
    agent = Agent(config)
    agent.start()
    sender = can.Bus(interface="virtual", channel="edge-live")
    try:
        frames = [f for f in simulate("highway", 3.0, seed=3, dbc_path=DBC)]
        start = time.monotonic()
        for frame in frames:  # at the log's own pace, so the bus clock spans 3 s
            delay = start + (frame.timestamp - frames[0].timestamp) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sender.send(frame)
        wait_for(lambda: agent.decoder.stats.frames >= len(frames))  # all taken; the stop commits them
        agent.stop_event.set()
        result = agent.run()
    finally:
        sender.shutdown()
        receiver.stop()
    assert result.backlog.chunks == 0, "everything committed was acked"
    assert 140 <= result.samples_committed <= 160  # 3 s at 50 Hz on the bus's clock
    with Store(tmp_path / "store.sqlite", readonly=True) as store:
        rows = list(store.rows("LIVE000000000001", SIGNALS))
    assert len(rows) == result.samples_committed
    assert all(value is not None for value in rows[-1][1])


def committed_samples(path: Path) -> int:
    buffer = Buffer(path)
    try:
        return buffer.stats().samples
    finally:
        buffer.close()


def test_sigterm_commits_and_exits_within_five_seconds(broker: Broker, tmp_path: Path) -> None:
    log = ROOT / "replay_logs" / "highway.log.gz"
    config = agent_config(tmp_path, broker.port, "TERM000000000001", log, speed="1")
    stderr = tmp_path / "agent.log"
    with open(stderr, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(config)], cwd=ROOT, stderr=out
        )
    wait_for_text(stderr, '"agent_starting"', process=process)  # the buffer is open, the stages started
    buffer = tmp_path / "TERM000000000001.sqlite"
    wait_for(lambda: committed_samples(buffer) >= 100, 30, stderr.read_text, process)  # two seconds committed
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    process.wait(timeout=10)
    assert time.monotonic() - started < 5.0
    errors = stderr.read_text()
    assert process.returncode == 0, errors
    assert "signal_received" in errors and "agent_stopped" in errors
    buffer = Buffer(tmp_path / "TERM000000000001.sqlite")
    try:
        assert buffer.db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # No receiver runs: every sample taken before the stop was committed and kept, the open chunk too.
        stopped = next(json.loads(line) for line in errors.splitlines() if '"agent_stopped"' in line)
        assert buffer.stats().samples == stopped["samples_committed"] > 0
    finally:
        buffer.close()


# A real fault, injected in a real `edge-agent run`: the decoder raises after some frames, on the pipeline's
# thread. Nothing else is replaced (the logger least of all): the test reads the process's own stderr.
FAULTY_RUN = """
import sys
from agent import decode
from agent.cli import main

real = decode.Decoder.decode
frames = 0


def decode_then_fail(self, frame):
    global frames
    frames += 1
    if frames > 500:
        raise RuntimeError("injected fault: the decoder broke")
    return real(self, frame)


decode.Decoder.decode = decode_then_fail
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def test_a_stage_that_fails_is_logged_critical_with_its_traceback_and_the_agent_exits_1(
    broker: Broker, tmp_path: Path
) -> None:
    log = ROOT / "replay_logs" / "highway.log.gz"
    config = agent_config(tmp_path, broker.port, "FAIL000000000001", log, speed="1")
    process = subprocess.run(
        [sys.executable, "-c", FAULTY_RUN, str(config)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert process.returncode == 1, process.stderr  # systemd's Restart=on-failure starts it again
    events = [json.loads(line) for line in process.stderr.splitlines() if line.startswith("{")]
    [failed] = [e for e in events if e["event"] == "stage_failed"]
    assert failed["level"] == "critical" and failed["stage"] == "pipeline"
    assert failed["reason"] == "RuntimeError: injected fault: the decoder broke"
    trace = failed["exception"]
    assert trace.startswith("Traceback (most recent call last)")
    assert "in run_once" in trace and "in decode_then_fail" in trace  # from the stage's loop to the raise
    [stopped] = [e for e in events if e["event"] == "agent_stopped"]
    assert stopped["failed_stages"] == ["pipeline"]
    assert "signal_received" not in process.stderr  # it stopped itself
    assert not any(line.startswith("Traceback") for line in process.stderr.splitlines())  # only as JSON


def live_config(tmp_path: Path, port: int, vin: str, channel: str) -> Path:
    config = tmp_path / f"{vin}.yaml"
    config.write_text(
        f"vin: {vin}\nsource: {{kind: bus}}\n"
        f"buses:\n  - {{interface: socketcan, channel: {channel}, dbc: [{DBC}]}}\n"
        f"sampling: {{signals: [{', '.join(SIGNALS)}]}}\n"
        f"buffer: {{path: {tmp_path / vin}.sqlite}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {port}}}\nlogging: {{format: auto}}\n"
    )
    return config


def test_a_missing_interface_is_waited_for_with_the_watchdog_going_and_no_ready(
    broker: Broker, tmp_path: Path
) -> None:
    config = live_config(tmp_path, broker.port, "WAIT000000000001", "can9")
    config.write_text(config.read_text().replace("format: auto", "format: json"))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(20)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "2000000"}
    env.pop("WATCHDOG_PID", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        seen: list[str] = []
        while sum("WATCHDOG=1" in m for m in seen) < 3:  # the watchdog goes on while it waits
            seen.append(notify.recv(4096).decode())
        assert not any("READY=1" in m for m in seen)  # not bound: not ready
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        notify.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stderr is not None
    events = [json.loads(line) for line in process.stderr.read().splitlines() if line.startswith("{")]
    waiting = [e for e in events if e["event"] == "bus_waiting"]
    assert len(waiting) == 1  # logged once, however many retries
    assert (
        waiting[0]["level"] == "warning" and waiting[0]["reason"] == "network interface can9 does not exist"
    )


def offline_live_config(tmp_path: Path, vin: str, channel: str) -> AgentConfig:
    """A live virtual bus ``channel``, a buffer in ``tmp_path``, and a broker that is not there."""
    return AgentConfig(
        vin=vin,
        source=SourceConfig(kind="bus"),
        buses=(BusConfig(channel=channel, dbc=(DBC,), interface="virtual"),),
        sampling=SamplingConfig(signals=tuple(SIGNALS)),
        buffer=BufferConfig(path=tmp_path / "buffer.sqlite"),
        mqtt=MqttConfig(host="127.0.0.1", port=1),
    )


def test_an_unchanged_status_is_not_rewritten_until_its_refresh_is_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent import daemon

    agent = Agent(
        offline_live_config(tmp_path, "STATUS0000000001", "edge-status")
    )  # not started: nothing changes between two reports
    try:
        agent.publish_status(only_if_changed=True)
        assert agent.status_file.exists()
        agent.status_file.unlink()
        agent.publish_status(only_if_changed=True)  # the same status, within STATUS_REFRESH_S: no write
        assert not agent.status_file.exists()
        monkeypatch.setattr(daemon, "STATUS_REFRESH_S", 0.0)  # the refresh is due: written again
        agent.publish_status(only_if_changed=True)
        assert agent.status_file.exists()
    finally:
        agent.buffer.close()


def test_a_live_buses_errors_reach_the_status(tmp_path: Path) -> None:
    from agent import bushealth
    from agent.status import StatusReport

    agent = Agent(offline_live_config(tmp_path, "BUSOFF0000000001", "edge-sick"))
    agent.start()
    sender = can.Bus(interface="virtual", channel="edge-sick")
    try:
        for error_class in (bushealth.ERR_PROT, bushealth.ERR_BUSOFF):
            sender.send(can.Message(arbitration_id=error_class, is_error_frame=True, data=bytes(8)))
        wait_for(lambda: agent.report().buses[0].bus_off == 1, timeout=10)
        report = agent.report()
        assert report.buses[0].bus_errors == 1 and report.buses[0].state == "bus-off"
        assert "edge-sick: BUS-OFF, 1 bus errors, bus-off 1x" in report.line()
        assert StatusReport.from_json(json.loads(json.dumps(report.as_json()))).buses == report.buses
        sent = report.to_proto("test").buses[0]
        assert (sent.channel, sent.state, sent.bus_off, sent.bus_errors) == ("edge-sick", "bus-off", 1, 1)
    finally:
        sender.shutdown()
        agent.stop_event.set()
        agent.run()


def test_the_brokers_status_waits_its_interval_while_only_its_figures_change(
    broker: Broker, tmp_path: Path
) -> None:
    """status.publish_interval_s: a new state goes to the broker at once; a status whose figures alone
    changed (samples committed) is written locally but not sent until its interval has passed."""
    from dataclasses import replace

    from agent import wire
    from agent.config import StatusConfig
    from agent.status import State
    from tests.harness.peer import Peer

    config = replace(
        offline_live_config(tmp_path, "PACED00000000001", "edge-paced"),
        mqtt=MqttConfig(host="127.0.0.1", port=broker.port),
        status=StatusConfig(publish_interval_s=3600.0),
    )
    peer = Peer(broker)
    peer.client.subscribe("fleet/PACED00000000001/status", qos=1)
    agent = Agent(config)
    agent.start()
    sender = can.Bus(interface="virtual", channel="edge-paced")
    try:
        wait_for(lambda: agent.uploader.status().state is not State.OFFLINE, timeout=15)
        first = agent.publish_status(only_if_changed=True)  # a new state: sent at once
        assert first is not None
        # One frame at a time, each once the agent has taken the last (its reader hands frames over after
        # a quiet 50 ms): the frames span ticks of the live clock, until a commit holds a sample.
        deadline = time.monotonic() + 15
        for taken, frame in enumerate(itertools.cycle(simulate("highway", 0.5, seed=4, dbc_path=DBC))):
            if agent.pipeline.samples_committed > 0:
                break
            assert time.monotonic() < deadline, "no sample committed in 15 s"
            sender.send(frame)
            wait_for(lambda: agent.decoder.stats.frames > taken, timeout=15)  # noqa: B023
        figures = agent.publish_status(only_if_changed=True)  # figures only: the file, not the broker
        assert figures is not None and figures.state == first.state
        assert json.loads(agent.status_file.read_text())["updated_at"] == figures.updated_at
        forced = agent.publish_status()  # a forced one (as at shutdown) always goes
        assert forced is not None
        sent: list[float] = []
        while not sent or sent[-1] != forced.updated_at:
            _topic, payload = peer.acks.get(timeout=10)
            sent.append(wire.decode_status(payload).updated_at)
        assert sent == [first.updated_at, forced.updated_at], "the figures-only status was not sent"
    finally:
        sender.shutdown()
        peer.close()
        agent.stop_event.set()
        agent.run()
