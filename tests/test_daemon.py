"""The daemon: live buses through the whole pipeline, and a graceful stop on SIGTERM within 5 s."""

from __future__ import annotations

import json
import signal
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
from tests.test_e2e import DBC, ROOT, SIGNALS, agent_config

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
        time.sleep(1.0)
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


def test_sigterm_commits_and_exits_within_five_seconds(broker: Broker, tmp_path: Path) -> None:
    log = ROOT / "replay_logs" / "highway.log.gz"
    config = agent_config(tmp_path, broker.port, "TERM000000000001", log, speed="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3.0)
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    _, errors = process.communicate(timeout=10)
    assert time.monotonic() - started < 5.0
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
