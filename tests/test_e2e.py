"""End to end, with real processes: a recorded drive → edge-agent → Mosquitto → edge-receiver → export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.sim import simulate, write_log
from tests.harness.broker import Broker
from tests.harness.drive import DBC, agent_config
from tests.harness.processes import cli, exported, start_replay, truth
from tests.harness.waiting import wait_for_text

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("drive") / "city.log.gz"
    write_log(path, simulate("city", 40.0, seed=11, dbc_path=DBC))
    return path


def test_replay_is_stored_exactly_as_sample_prints_it(
    broker: Broker, receiver: Path, drive: Path, tmp_path: Path
) -> None:
    config = agent_config(tmp_path, broker.port, "E2E0000000000001", drive)
    report = tmp_path / "report.json"
    result = cli("agent.cli", "replay", str(drive), "--config", str(config), "--report", str(report))
    assert result.returncode == 0, result.stderr
    figures = json.loads(report.read_text())
    assert figures["complete"] and figures["pending_chunks"] == 0
    assert figures["chunks_acked"] == figures["chunks_committed"]
    expected = truth(drive)
    assert exported(receiver, "E2E0000000000001") == expected
    assert figures["samples_committed"] == len(expected.splitlines()) - 1 > 1990  # 40 s at 50 Hz


def test_broker_restart_mid_drive_loses_nothing(
    broker: Broker, receiver: Path, drive: Path, tmp_path: Path
) -> None:
    config = agent_config(tmp_path, broker.port, "E2E0000000000002", drive, speed="4")
    log = tmp_path / "agent.log"
    agent = start_replay(drive, config, log)
    wait_for_text(log, '"state": "ONLINE"', process=agent)
    broker.stop(kill=True)  # mid-drive: the log lasts 10 s at 4x
    wait_for_text(log, '"state": "OFFLINE"', process=agent)  # the agent saw it: it buffers meanwhile
    broker.start()
    agent.wait(timeout=120)
    assert agent.returncode == 0, log.read_text()
    assert exported(receiver, "E2E0000000000002") == truth(drive)


def test_replay_without_a_receiver_times_out_and_says_what_is_pending(
    broker: Broker, drive: Path, tmp_path: Path
) -> None:
    config = agent_config(tmp_path, broker.port, "E2E0000000000003", drive)
    result = cli("agent.cli", "replay", str(drive), "--config", str(config), "--drain-timeout", "2")
    assert result.returncode == 1
    assert "INCOMPLETE" in result.stderr and "still pending" in result.stderr
    status = cli("agent.cli", "status", "--config", str(config))
    assert status.returncode == 0 and "backlog:" in status.stdout and " samples" in status.stdout
