"""End to end, with real processes: a recorded drive → edge-agent → Mosquitto → edge-receiver → export."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import apsw
import pytest

from agent.sim import simulate, write_log
from tests.harness.broker import Broker
from tests.harness.drive import DBC, agent_config
from tests.harness.processes import (
    cli,
    exported,
    receiver_yaml,
    replaying,
    running_receiver,
    start_replay,
    truth,
)
from tests.harness.waiting import wait_for, wait_for_text

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


def stored_ids(store: Path) -> set[tuple[bytes, int]]:
    if not store.exists():
        return set()
    with contextlib.closing(apsw.Connection(str(store), flags=apsw.SQLITE_OPEN_READONLY)) as db:
        return {(bytes(boot), seq) for boot, seq in db.execute("SELECT boot_id, seq FROM chunks")}


def test_a_receiver_whose_store_lacks_the_schema_asks_for_it_and_nothing_is_lost(
    broker: Broker, tmp_path: Path
) -> None:
    drive = tmp_path / "city.log.gz"
    write_log(drive, simulate("city", 30.0, seed=12, dbc_path=DBC))
    config = agent_config(tmp_path, broker.port, "E2E0000000000009", drive, speed="2")  # 15 s
    log, report = tmp_path / "agent.log", tmp_path / "report.json"
    first, second = tmp_path / "first.sqlite", tmp_path / "second.sqlite"
    with replaying(drive, config, log, "--report", str(report)) as agent:
        with running_receiver(receiver_yaml(tmp_path / "first.yaml", broker.port, first), tmp_path / "1.log"):
            # Stored and acked: from here the agent names the schema by hash.
            wait_for(lambda: len(stored_ids(first)) >= 4, 30, log.read_text, agent)
        # Another receiver with a store of its own (a new database, a restored backup): by hash, it
        # cannot decode the batches; it must ask, not drop them, and the agent must answer.
        with running_receiver(
            receiver_yaml(tmp_path / "second.yaml", broker.port, second), tmp_path / "2.log"
        ):
            agent.wait(timeout=90)
    assert agent.returncode == 0, log.read_text()
    figures = json.loads(report.read_text())
    assert figures["complete"] and figures["chunks_acked"] == figures["chunks_committed"]
    both = stored_ids(first) | stored_ids(second)
    assert len(both) == figures["chunks_committed"]  # every chunk in one store or the other
    assert stored_ids(second) - stored_ids(first)  # the second stored what came after
    assert '"event": "schema_requested"' in (tmp_path / "2.log").read_text()
    assert '"event": "schema_resent"' in log.read_text()
