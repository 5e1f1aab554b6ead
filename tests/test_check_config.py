"""``edge-agent check-config`` loads every DBC and resolves every signal, as ``run`` would.

So a unit's ``ExecStartPre`` stops what would make the service restart-loop: one line on stderr,
exit 2, naming the config and the DBC file. The real CLI runs in a subprocess for the one-line checks.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.commands import check_config
from agent.config import parse_agent_config
from agent.errors import ConfigError, DbcError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "edge-agent.example.yaml"
GOOD_DBC = """VERSION ""
BU_: ECU
BO_ 256 Speed: 8 ECU
 SG_ Value : 0|16@1+ (0.01,0) [0|655.35] "km/h" ECU
BO_ 512 Battery: 8 ECU
 SG_ Soc : 0|8@1+ (0.5,0) [0|100] "%" ECU
"""


def setup(tmp_path: Path, dbc: str, signals: str = "[Speed.Value]", vin: str = "TEST-VIN-1") -> Path:
    (tmp_path / "car.dbc").write_text(dbc)
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"vin: {vin}\nsource: {{kind: bus}}\nbuses: [{{channel: can0, dbc: car.dbc}}]\n"
        f"sampling: {{signals: {signals}}}\nbuffer: {{path: {tmp_path / 'buffer.sqlite'}}}\n"
    )
    return config


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_a_dbc_with_two_messages_on_one_frame_id_fails_in_one_line(tmp_path: Path) -> None:
    config = setup(tmp_path, GOOD_DBC.replace("BO_ 512 Battery", "BO_ 256 Battery"))
    result = check(config)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"edge-agent check-config: error: {config}: {tmp_path / 'car.dbc'}: frame id 0x100 is defined twice, "
        "by Speed and Battery (cantools would keep only the last)"
    ]


def test_an_empty_dbc_fails_saying_it_has_no_messages(tmp_path: Path) -> None:
    result = check(setup(tmp_path, ""))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("car.dbc: has no messages (the file is empty)")
    assert ">>!<<" not in result.stderr


def test_a_good_config_is_ok_and_the_example_vin_is_a_warning(tmp_path: Path) -> None:
    result = check(setup(tmp_path, GOOD_DBC, vin=check_config.EXAMPLE_VIN))
    assert result.returncode == 0 and ": ok (" in result.stdout
    assert f"warning: vin {check_config.EXAMPLE_VIN} is the example configuration's" in result.stderr
    assert yaml.safe_load(EXAMPLE.read_text())["vin"] == check_config.EXAMPLE_VIN


def test_no_warning_for_a_vehicle_s_own_vin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config.run(argparse.Namespace(config=setup(tmp_path, GOOD_DBC))) == 0
    out, err = capsys.readouterr()
    assert "ok (vin TEST-VIN-1, 1 bus, 1 signal, source bus socketcan:can0)" in out and err == ""


@pytest.mark.parametrize(
    "dbc, signals, error, needle",
    [
        (GOOD_DBC.replace("0|16@1+", "60|16@1+"), "[Speed.Value]", DbcError, "car.dbc: does not load"),
        (GOOD_DBC.replace("BO_ 256", "BO_ x256"), "[Speed.Value]", DbcError, "car.dbc: does not load"),
        (GOOD_DBC, "[Speed.Valeu]", DbcError, "Speed.Valeu (did you mean"),
        ('VERSION ""\n', "[]", DbcError, "car.dbc: has no messages"),
    ],
)
def test_what_run_would_fail_on_fails_here(
    tmp_path: Path, dbc: str, signals: str, error: type[Exception], needle: str
) -> None:
    config = setup(tmp_path, dbc, signals)
    with pytest.raises(error) as caught:
        check_config.run(argparse.Namespace(config=config))
    message = str(caught.value)
    assert message.startswith(f"{config}: ") and needle in message and "\n" not in message


def test_a_bound_on_a_float_signal_fails_here_too(tmp_path: Path) -> None:
    dbc = GOOD_DBC + "SIG_VALTYPE_ 256 Value : 1;\n"
    config = setup(tmp_path, dbc.replace("0|16@1+", "0|32@1+"))
    config.write_text(config.read_text().replace("{signals: [Speed.Value]}", "{bounds: {Speed.Value: 1}}"))
    with pytest.raises(ConfigError, match=r"IEEE float signal"):
        check_config.run(argparse.Namespace(config=config))


def test_max_hold_s_is_auto_or_a_number_of_seconds(tmp_path: Path) -> None:
    base = "vin: V1\nsource: {kind: bus}\nbuses: [{channel: can0, dbc: car.dbc}]\n"
    assert parse_agent_config(base, "a.yaml", tmp_path).sampling.max_hold_s is None
    for text, value in (("auto", None), ("2.5", 2.5)):
        config = parse_agent_config(base + f"sampling: {{max_hold_s: {text}}}\n", "a.yaml", tmp_path)
        assert config.sampling.max_hold_s == value
    with pytest.raises(ConfigError, match=r"a.yaml:4: sampling.max_hold_s: "):
        parse_agent_config(base + "sampling: {max_hold_s: 0}\n", "a.yaml", tmp_path)
