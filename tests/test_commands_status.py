"""``edge-agent status`` (agent/commands/status.py), when the daemon is not running: it reads the buffer
file read-only and never creates the buffer's folder, database or tables (run as root before the
service's first start, a file it made would be root's and the service could not open it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.harness.buffers import fill

ROOT = Path(__file__).resolve().parent.parent
DBC = ROOT / "dbc" / "reference_ev.dbc"


def config_for(tmp_path: Path, buffer: Path) -> Path:
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"vin: STATUS0001\nsource: {{kind: bus}}\nbuses: [{{channel: vcan0, dbc: [{DBC}]}}]\n"
        f"buffer: {{path: {buffer}}}\n"
    )
    return config


def status(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "status", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "RUNTIME_DIRECTORY": ""},  # no live daemon's status file is looked for there
    )


@pytest.mark.parametrize("extra", [(), ("--json",)], ids=["text", "json"])
def test_no_buffer_yet_says_so_and_creates_nothing(tmp_path: Path, extra: tuple[str, ...]) -> None:
    buffer = tmp_path / "state" / "buffer.sqlite"
    result = status(config_for(tmp_path, buffer), *extra)
    assert result.returncode == 1, result
    assert result.stderr.strip() == f"edge-agent status: no buffer yet at {buffer} (the agent has not run)"
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert not (tmp_path / "state").exists(), "status created the buffer's folder"
    (tmp_path / "state").mkdir()  # the folder is there (made by the package), the file is not
    assert status(config_for(tmp_path, buffer), *extra).returncode == 1
    assert list((tmp_path / "state").iterdir()) == [], "status created a file in the buffer's folder"


def test_a_stopped_agent_s_buffer_is_read_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    fill(path, b"S" * 16, 3)
    before = path.read_bytes()
    result = status(config_for(tmp_path, path), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["state"], report["source"]) == ("STOPPED", "buffer file")
    assert (report["backlog_chunks"], report["backlog_samples"]) == (3, 30)
    assert path.read_bytes() == before


def test_run_as_root_it_leaves_no_file_owned_by_root(tmp_path: Path) -> None:
    """What SQLite may add beside an existing database (its -wal and -shm) is owned like the database."""
    if os.geteuid() != 0:
        pytest.skip("needs root, as the bug did")
    folder = tmp_path / "state"
    folder.mkdir()
    path = folder / "buffer.sqlite"
    fill(path, b"R" * 16, 2)
    service = 65534  # nobody: the service's own user
    for item in (folder, *folder.iterdir()):
        os.chown(item, service, service)
    result = status(config_for(tmp_path, path))
    assert result.returncode == 0, result.stderr
    assert "backlog:        2 chunks, 20 samples" in result.stdout
    assert {p.name: p.stat().st_uid for p in folder.iterdir() if p.stat().st_uid != service} == {}


def test_a_buffer_that_is_no_database_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    path.write_bytes(b"not a database " * 100)
    result = status(config_for(tmp_path, path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(path) in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.corrupt-*")), "status quarantined (a writer's job)"


def test_a_running_daemons_buses_are_shown_with_what_they_lost(tmp_path: Path) -> None:
    from agent.buffer import BufferStats
    from agent.bushealth import BusReport
    from agent.status import StatusReport, status_path, write_status_file

    buffer = tmp_path / "buffer.sqlite"
    fill(buffer, b"\x01" * 16, 1)
    sick = BusReport(
        "vcan0", "bus-off", kernel_dropped=12, bus_errors=3, bus_off=1, receive_buffer_bytes=8_388_608
    )
    stats = BufferStats(
        chunks=1, samples=1, payload_bytes=1, oldest_created=None, last_ack_at=None, dropped_chunks=0
    )
    report = replace(StatusReport.from_stats("STATUS0001", "ONLINE", stats, pid=os.getpid()), buses=(sick,))
    write_status_file(status_path(buffer), report)
    shown = status(config_for(tmp_path, buffer))
    assert shown.returncode == 0, shown.stderr
    assert (
        "bus vcan0:      bus-off; 12 frames dropped by the kernel, 0 by the controller; 3 bus errors, "
        "bus-off 1 times, receive buffer 8,388,608 B"
    ) in shown.stdout
