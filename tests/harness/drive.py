"""One drive set-up for the end-to-end suites (``test_e2e``, ``test_chaos``, ``test_daemon``).

The reference EV's DBC, the seven signals the suites sample, and :func:`agent_config`: the YAML of an
agent that replays a log to a broker on loopback, its buffer beside the config. Pure: it writes only the
file it is asked for.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
DBC = ROOT / "dbc" / "reference_ev.dbc"
SIGNALS = [
    "DriveSpeed.VehicleSpeed",
    "MotorStatus.MotorRPM",
    "Gear.Gear",
    "BatteryState.StateOfCharge",
    "CellStats.CellVoltageMin",
    "CellStats.CellTempMax",
    "Thermal.CoolantTemp",
]


def agent_config(tmp_path: Path, port: int, vin: str, log: Path, speed: str = "max") -> Path:
    """Write ``<tmp_path>/<vin>.yaml``: replay ``log`` at ``speed`` to the broker on ``port``."""
    path = tmp_path / f"{vin}.yaml"
    path.write_text(
        f"vin: {vin}\nsource: {{kind: replay, log: {log}, speed: {speed}}}\n"
        f"buses:\n  - {{channel: can0, dbc: [{DBC}]}}\n"
        f"sampling: {{signals: [{', '.join(SIGNALS)}]}}\n"
        f"buffer: {{path: {tmp_path / vin}.sqlite, commit_interval_s: 0.2}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {port}}}\nupload: {{ack_timeout_s: 3}}\nlogging: {{format: json}}\n"
    )
    return path
