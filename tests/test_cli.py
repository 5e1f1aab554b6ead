"""The command line: one clear line for bad input (file, line or key named), never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DBC = ROOT / "dbc" / "reference_ev.dbc"


def edge_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_version() -> None:
    result = edge_agent("--version")
    assert result.returncode == 0 and result.stdout.startswith("edge-agent ")


def test_check_config_names_file_line_and_key(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"vin: X1\nsource: {{kind: replay, log: {ROOT}/replay_logs/city.log.gz}}\n"
        f"buses: [{{channel: can0, dbc: [{DBC}]}}]\nsampling:\n  rte_hz: 50\n"
    )
    assert_one_clear_line(
        edge_agent("check-config", "--config", str(config)),
        "agent.yaml:5",
        "sampling.rte_hz",
        "did you mean 'rate_hz'",
    )


def test_example_config_checks(tmp_path: Path) -> None:
    text = (ROOT / "config" / "edge-agent.example.yaml").read_text()
    config = ROOT / "config" / "edge-agent.example.yaml"
    result = edge_agent("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout and text


def test_sample_with_a_dbc_that_does_not_parse(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dbc"
    bad.write_text(DBC.read_text().replace("BO_ 257", "BO_ x257", 1))
    assert_one_clear_line(
        edge_agent(
            "sample",
            str(ROOT / "replay_logs" / "city.log.gz"),
            "--dbc",
            str(bad),
            "--signals",
            "DriveSpeed.VehicleSpeed",
        ),
        "bad.dbc: does not load",
    )


def test_sample_with_an_unknown_signal_suggests(tmp_path: Path) -> None:
    assert_one_clear_line(
        edge_agent(
            "sample",
            str(ROOT / "replay_logs" / "city.log.gz"),
            "--dbc",
            str(DBC),
            "--signals",
            "DriveSpeed.VehicleSpede",
        ),
        "DriveSpeed.VehicleSpede (did you mean 'DriveSpeed.VehicleSpeed'?)",
    )


def test_sample_skips_malformed_lines_and_names_them(tmp_path: Path) -> None:
    log = tmp_path / "drive.log"
    log.write_text(
        "(1.000000) can0 101#0000000000000000\n(1.010000) can0 101#zz\n(1.040000) can0 101#1027000000000000\n"
    )
    result = edge_agent("sample", str(log), "--dbc", str(DBC), "--signals", "DriveSpeed.VehicleSpeed")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "timestamp,DriveSpeed.VehicleSpeed",
        "1.000000,0.0",
        "1.020000,0.0",
        "1.040000,100.0",
    ]
    assert "drive.log:2" in result.stderr and "1 malformed lines" in result.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (
            ["sample", "missing.log", "--dbc", str(DBC), "--signals", "DriveSpeed.VehicleSpeed"],
            "missing.log: cannot open",
        ),
        (
            ["sample", "drive.xyz", "--dbc", str(DBC), "--signals", "DriveSpeed.VehicleSpeed"],
            "unknown log format",
        ),
        (["check-config", "--config", "nowhere.yaml"], "nowhere.yaml"),
    ],
)
def test_missing_and_unknown_files(args: list[str], needle: str) -> None:
    assert_one_clear_line(edge_agent(*args), needle)
