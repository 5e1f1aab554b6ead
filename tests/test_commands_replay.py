"""``edge-agent replay`` tells the truth (issue 10): exit 0 only when every frame was sampled and every
sample acked; otherwise the exit status and the report say what was lost, by whom and why.

Real processes: a Mosquitto, an edge-receiver and the agent's CLI, on the committed city drive.
"""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pytest

from tests.harness.broker import Broker
from tests.harness.drive import ROOT, agent_config
from tests.harness.processes import cli

pytestmark = pytest.mark.slow
CITY = ROOT / "replay_logs" / "city.log.gz"


def replay(config: Path, log: Path, report: Path) -> tuple[subprocess.CompletedProcess[str], dict]:  # type: ignore[type-arg]
    result = cli("agent.cli", "replay", str(log), "--config", str(config), "--report", str(report))
    return result, json.loads(report.read_text())


def test_a_drive_followed_by_itself_stores_both_and_exits_0(
    broker: Broker, receiver: Path, tmp_path: Path
) -> None:
    once = gzip.decompress(CITY.read_bytes())
    twice = tmp_path / "twice.log"
    twice.write_bytes(once + once)  # the same timestamps twice: a jump back of a whole drive
    alone, _ = replay(
        agent_config(tmp_path, broker.port, "REPLAY0000000001", CITY), CITY, tmp_path / "a.json"
    )
    assert alone.returncode == 0, alone.stderr
    config = agent_config(tmp_path, broker.port, "REPLAY0000000002", twice)
    result, report = replay(config, twice, tmp_path / "b.json")
    assert result.returncode == 0, result.stderr
    single = json.loads((tmp_path / "a.json").read_text())["samples_committed"]
    assert report["samples_committed"] == 2 * single  # both drives, none merged or dropped
    assert report["sampling"]["jumps_back"] == 1 and report["outcome"] == "complete"
    assert "1 backward time jumps" in result.stderr and result.stderr.rstrip().endswith("complete")


def test_a_bad_line_exits_4_naming_it(broker: Broker, receiver: Path, tmp_path: Path) -> None:
    lines = gzip.decompress(CITY.read_bytes()).splitlines(keepends=True)
    broken = tmp_path / "broken.log"
    broken.write_bytes(b"".join([*lines[:100], b"this is no frame\n", *lines[100:]]))
    config = agent_config(tmp_path, broker.port, "REPLAY0000000003", broken)
    result, report = replay(config, broken, tmp_path / "c.json")
    assert result.returncode == 4, result.stderr
    assert report["unsampled"] == {"bad_log_lines": 1} and report["outcome"] == "unsampled"
    assert "NEVER SAMPLED: 1 bad_log_lines" in result.stderr


def test_a_wrong_channel_exits_4_listing_the_log_s_channels(
    broker: Broker, receiver: Path, tmp_path: Path
) -> None:
    config = agent_config(tmp_path, broker.port, "REPLAY0000000004", CITY)
    config.write_text(config.read_text().replace("channel: can0", "channel: vcan0"))
    result, report = replay(config, CITY, tmp_path / "d.json")
    assert result.returncode == 4, result.stderr
    assert report["unsampled"]["unknown_channel_frames"] == report["frames"]
    assert "no frames on configured channel vcan0; the frames are on can0" in result.stderr
