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


def agent_config(
    tmp_path: Path,
    port: int,
    vin: str,
    log: Path,
    speed: str = "max",
    name: str | None = None,
    auth_key: Path | None = None,
    rate_hz: int = 50,
) -> Path:
    """Write ``<tmp_path>/<name or vin>.yaml``: replay ``log`` at ``speed`` to the broker on ``port``,
    sampled at ``rate_hz``, its envelopes signed with the key in ``auth_key`` when there is one."""
    name = name or vin
    path = tmp_path / f"{name}.yaml"
    key = "" if auth_key is None else f", auth_key_file: {auth_key}"
    path.write_text(
        f"vin: {vin}\nsource: {{kind: replay, log: {log}, speed: {speed}}}\n"
        f"buses:\n  - {{channel: can0, dbc: [{DBC}]}}\n"
        f"sampling: {{signals: [{', '.join(SIGNALS)}], rate_hz: {rate_hz}}}\n"
        f"buffer: {{path: {tmp_path / name}.sqlite, commit_interval_s: 0.2}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {port}{key}}}\nupload: {{ack_timeout_s: 3}}\nlogging: {{format: json}}\n"
    )
    return path
