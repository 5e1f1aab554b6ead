"""The agent's typed YAML configuration (:mod:`agent.config`) and ``edge-agent check-config``."""

from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent.commands import check_config
from agent.config import (
    AGENT_SCHEMA,
    AgentConfig,
    BusConfig,
    MqttConfig,
    SamplingConfig,
    SourceConfig,
    load_agent_config,
    parse_agent_config,
)
from agent.errors import ConfigError
from tests.harness.configs import issue_lines, undocumented

REPO = Path(__file__).resolve().parent.parent
BASE = Path("/srv/edge")
MINIMAL = """\
vin: TEST-1
source:
  kind: replay
  log: logs/drive.log.gz
buses:
  - channel: can0
    dbc: dbc/ev.dbc
"""  # 7 lines: whatever a test appends starts at line 8


def agent(text: str, base: Path = BASE) -> AgentConfig:
    return parse_agent_config(text, "edge-agent.yaml", base)


def problems(text: str) -> list[str]:
    return issue_lines(agent, text)


def test_example_configs_parse() -> None:
    config = load_agent_config(REPO / "config" / "edge-agent.example.yaml")
    assert config.vin == "5YJ3E1EA0KF000001"
    assert config.source == SourceConfig("replay", REPO / "replay_logs" / "highway.log.gz", 1.0)
    assert config.buses == (BusConfig("can0", (REPO / "dbc" / "reference_ev.dbc",), "socketcan", None, None),)
    assert config.sampling == SamplingConfig(50.0, (), {})
    assert config.buffer.path == Path("/var/lib/edge-agent/buffer.sqlite")
    assert config.mqtt.client_id == "edge-agent-5YJ3E1EA0KF000001"
    assert (config.upload.max_batch_bytes, config.logging.level) == (262144, "info")


def test_every_example_key_is_documented() -> None:
    """Every key of every section appears in the example file (which parses, so no key is unknown)."""
    assert undocumented(AGENT_SCHEMA, REPO / "config" / "edge-agent.example.yaml") == []


def test_minimal_config_and_defaults() -> None:
    config = agent(MINIMAL)
    assert config.source.log == BASE / "logs" / "drive.log.gz"
    assert config.buses[0].dbc == (BASE / "dbc" / "ev.dbc",)
    assert config.buses[0].interface == "socketcan" and config.buses[0].j1939 is None
    assert config.sampling.rate_hz == 50.0 and config.sampling.bound("A.B") == 0.0
    assert config.mqtt == MqttConfig(client_id="edge-agent-TEST-1")


def test_values_of_every_kind() -> None:
    config = agent(
        MINIMAL.replace("kind: replay", "kind: replay\n  speed: max")
        + "  - {channel: 1, dbc: [/abs/a.dbc, ~/b.dbc, ../c.dbc], j1939: true, bitrate: 500000}\n"
        "sampling: {rate_hz: 1000, signals: [A.x, B.y], bounds: {A.x: 0.5, B.y: 2}}\n"
        "mqtt: {tls: true, ca_file: ca.pem, username: u, password_file: pw}\n"
    )
    assert math.isinf(config.source.speed) and config.source.as_fast_as_possible
    bus = config.buses[1]
    assert bus.channel == "1" and bus.j1939 is True and bus.bitrate == 500000
    assert bus.dbc == (Path("/abs/a.dbc"), Path.home() / "b.dbc", Path("/srv/c.dbc"))
    assert config.sampling.bounds == {"A.x": 0.5, "B.y": 2.0} and config.sampling.bound("B.y") == 2.0
    assert config.mqtt.ca_file == BASE / "ca.pem" and config.mqtt.password_file == BASE / "pw"


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "agent.yaml"
    path.write_text(MINIMAL + "buffer: {path: ../var/buffer.sqlite}\n")
    config = load_agent_config(path)
    assert config.source.log == tmp_path / "etc" / "logs" / "drive.log.gz"
    assert config.buffer.path == tmp_path / "var" / "buffer.sqlite"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "sampling:\n  rate_hx: 5\n",
            "edge-agent.yaml:9: sampling.rate_hx: unknown key (did you mean 'rate_hz'?)",
        ),
        (
            "sampling:\n  rate_hz: fast\n",
            "edge-agent.yaml:9: sampling.rate_hz: expected a number > 0 and ≤ 1000, got 'fast'",
        ),
        (
            "sampling:\n  rate_hz: 1001\n",
            "edge-agent.yaml:9: sampling.rate_hz: expected a number > 0 and ≤ 1000",
        ),
        ("mqtt:\n  port: 0\n", "edge-agent.yaml:9: mqtt.port: expected an integer from 1 to 65535, got 0"),
        ("mqtt:\n  tls: 'yes'\n", "edge-agent.yaml:9: mqtt.tls: expected true or false, got 'yes'"),
        ("mqtt:\n  prefix: a/+/b\n", "edge-agent.yaml:9: mqtt.prefix: expected a string of topic levels"),
        (
            "upload: {max_batch_bytes: 10}\n",
            "edge-agent.yaml:8: upload.max_batch_bytes: expected an integer ≥ 1024",
        ),
        ("logging:\n  level: verbose\n", "edge-agent.yaml:9: logging.level: expected one of 'debug', 'info'"),
        (
            "logging:\n  format: jsn\n",
            "edge-agent.yaml:9: logging.format: expected one of 'auto', 'console', ",
        ),
        ("buffer: [x]\n", "edge-agent.yaml:8: buffer: expected a mapping, got a list"),
        ("  - {channel: can1}\n", "edge-agent.yaml:8: buses[1]: missing required key 'dbc'"),
        ("  - {channel: can1, dbc: []}\n", "edge-agent.yaml:8: buses[1].dbc: expected a non-empty list"),
        ("  - {channel: can1, dbc: a.dbc, j1939: no}\n", None),
        (
            "  - {channel: can1, dbc: a.dbc, j1939: sometimes}\n",
            "buses[1].j1939: expected true or false or 'auto'",
        ),
        (
            "  - {channel: can0, dbc: a.dbc}\n",
            "edge-agent.yaml:8: buses[1].channel: duplicate 'can0' (first at line 6)",
        ),
        (
            "sampling: {signals: [A]}\n",
            "edge-agent.yaml:8: sampling.signals[0]: expected a string of the form MES",
        ),
        (
            "sampling: {bounds: {A.B.C: 1}}\n",
            "edge-agent.yaml:8: sampling.bounds['A.B.C']: expected a string of",
        ),
        (
            "sampling: {bounds: {A.B: -1}}\n",
            "edge-agent.yaml:8: sampling.bounds['A.B']: expected a number ≥ 0, got -1",
        ),
        (
            "sampling:\n  signals: [A.B]\n  bounds:\n    A.C: 1\n",
            "edge-agent.yaml:11: sampling.bounds['A.C']: signal 'A.C' is not in sampling.signals (did",
        ),
        ("sampling: {bounds: {A.C: 1}}\n", None),  # no signals listed: every signal is sampled
        ("mqtt:\n  ca_file: ca.pem\n", "edge-agent.yaml:9: mqtt.ca_file: is set but tls is false"),
        ("mqtt:\n  host: a\n  host: b\n", "edge-agent.yaml:10: mqtt.host: duplicate key (first at line 9)"),
        ("extra: 1\n", "edge-agent.yaml:8: extra: unknown key"),
        ("sourec: {}\n", "edge-agent.yaml:8: sourec: unknown key (did you mean 'source'?)"),
    ],
)
def test_each_kind_of_error_names_file_line_and_key(extra: str, expected: str | None) -> None:
    if expected is None:
        agent(MINIMAL + extra)
    else:
        assert any(expected in line for line in problems(MINIMAL + extra)), problems(MINIMAL + extra)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ["edge-agent.yaml:1: missing required top-level key 'vin'"]),
        ("vin: [x, y]\n", ["edge-agent.yaml:1: vin: expected a string of 1–32 characters"]),
        ("vin: 'a b'\n", ["edge-agent.yaml:1: vin: expected a string of 1–32 characters"]),
        ("vin: 12345\n", ["vin: expected a string of 1–32 characters", "got 12345 (quote it"]),
        ("- a\n", ["edge-agent.yaml:1: expected a mapping, got a list"]),
        (MINIMAL.replace("  kind: replay\n", ""), ["edge-agent.yaml:3: source: missing required key 'kind'"]),
        (
            MINIMAL.replace("  log: logs/drive.log.gz\n", ""),
            ["edge-agent.yaml:3: source: missing required key 'log'"],
        ),
        (
            MINIMAL.replace("kind: replay", "kind: bus"),
            ["edge-agent.yaml:4: source.log: is only used when kind"],
        ),
        (
            MINIMAL.replace("kind: replay", "kind: buss"),
            ["source.kind: expected one of 'replay', 'bus', got 'buss'"],
        ),
        (
            MINIMAL.replace("drive.log.gz", "drive.txt"),
            ["edge-agent.yaml:4: source.log: expected a path ending in"],
        ),
        (
            MINIMAL.replace("replay\n", "replay\n  speed: 0\n"),
            ["source.speed: expected a number > 0 or 'max'"],
        ),
        (MINIMAL.replace("dbc: dbc/ev.dbc", "dbc: 5"), ["edge-agent.yaml:7: buses[0].dbc: expected a path"]),
    ],
)
def test_top_level_and_source_errors(text: str, expected: list[str]) -> None:
    message = "\n".join(problems(text))
    for part in expected:
        assert part in message


def test_all_errors_are_reported_at_once_in_line_order() -> None:
    text = (
        "vin: TEST1\nsource: {kind: nope}\nbuses:\n  - {channel: a, dbc: x.dbc, colour: red}\n"
        "sampling: {rate_hz: -1}\nmqtt: {port: http}\nlogging: {level: loud}\n"
    )
    lines = problems(text)
    assert [line.split(":")[1] for line in lines] == ["2", "4", "5", "6", "7"]
    assert "buses[0].colour: unknown key" in lines[1]


def test_configs_can_be_built_in_code() -> None:
    config = AgentConfig(
        "V1", SourceConfig("bus"), (BusConfig("vcan0", (Path("a.dbc"),), interface="virtual"),)
    )
    assert config.mqtt.client_id == "edge-agent-V1" and config.sampling.signals == ()


def _write_setup(tmp_path: Path, **replace: str) -> Path:
    (tmp_path / "dbc").mkdir()
    (tmp_path / "dbc" / "ev.dbc").write_text(  # check-config loads it and resolves A.b and C.d
        'VERSION ""\nBU_: E\nBO_ 1 A: 8 E\n SG_ b : 0|8@1+ (1,0) [0|255] "" E\n'
        'BO_ 2 C: 8 E\n SG_ d : 0|8@1+ (1,0) [0|255] "" E\n'
    )
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "drive.log.gz").write_bytes(b"")
    text = MINIMAL + "sampling: {signals: [A.b, C.d]}\n"
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_setup(tmp_path)
    assert check_config.run(argparse.Namespace(config=path)) == 0
    out = capsys.readouterr().out
    assert (
        out
        == f"{path}: ok (vin TEST-1, 1 bus, 2 signals, source replay {tmp_path}/logs/drive.log.gz at 1x)\n"
    )
    path.write_text(MINIMAL.replace("kind: replay\n  log: logs/drive.log.gz", "kind: bus"))
    assert check_config.run(argparse.Namespace(config=path)) == 0
    assert "1 bus, all signals, source bus socketcan:can0" in capsys.readouterr().out


def test_check_config_requires_the_named_files(tmp_path: Path) -> None:
    path = _write_setup(
        tmp_path, **{"dbc: dbc/ev.dbc": "dbc: [dbc/ev.dbc, dbc/gone.dbc]", "drive.log": "gone.log"}
    )
    with pytest.raises(ConfigError) as caught:
        check_config.run(argparse.Namespace(config=path))
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}:4: source.log: file not found: {tmp_path}/logs/gone.log.gz"
    assert lines[1] == f"{path}:7: buses[0].dbc[1]: file not found: {tmp_path}/dbc/gone.dbc"
    agent(path.read_text())  # without check_files the same text is fine


def test_check_config_parser_defaults() -> None:
    parser = argparse.ArgumentParser()
    check_config.add_arguments(parser)
    assert parser.parse_args(["--config", "x.yaml"]).config == Path("x.yaml")
    assert check_config.HELP


SECTIONS = ["", "source", "sampling", "buffer", "mqtt", "upload", "logging", "buses"]
BASE_DATA: dict[str, Any] = yaml.safe_load(MINIMAL)


@settings(max_examples=60, deadline=None)
@given(
    section=st.sampled_from(SECTIONS),
    key=st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True),
    value=st.one_of(st.integers(), st.text(max_size=5), st.none(), st.booleans()),
)
def test_random_unknown_keys_are_always_rejected(section: str, key: str, value: object) -> None:
    data, fields = copy.deepcopy(BASE_DATA), cast(dict[str, Any], AGENT_SCHEMA.fields)
    if section == "":
        target, path = data, key
    elif section == "buses":
        target, path, fields = data["buses"][0], f"buses[0].{key}", fields["buses"].item.fields
    else:
        target, path, fields = data.setdefault(section, {}), f"{section}.{key}", fields[section].fields
    assume(key not in fields)
    target[key] = value
    text = yaml.safe_dump(data, sort_keys=False)
    lines = problems(text)
    assert len(lines) == 1 and f": {path}: unknown key" in lines[0]
    line = int(lines[0].split(":")[1])
    assert text.splitlines()[line - 1].lstrip(" -").startswith(f"{key}:")


@settings(max_examples=60, deadline=None)
@given(rate=st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-5, 2000)))
def test_rate_bounds(rate: float) -> None:
    text = MINIMAL + yaml.safe_dump({"sampling": {"rate_hz": rate}})
    if 0 < rate <= 1000:
        assert agent(text).sampling.rate_hz == float(rate)
    else:
        assert problems(text)[0].startswith("edge-agent.yaml:9: sampling.rate_hz: expected a number > 0")


def test_bounds_presets_angles_predictor_and_compression() -> None:
    config = agent(
        MINIMAL
        + "sampling:\n  bounds_preset: seeds\n  bounds: {DriveSpeed.VehicleSpeed: 1.5, X.y: 2}\n"
        + "  angles: {X.y: 360}\n  predictor: linear\nupload: {compression: zlib}\n"
    )
    sampling = config.sampling
    assert sampling.bound("DriveSpeed.VehicleSpeed") == 1.5  # the configured bound wins over the preset's
    assert sampling.bound("BatteryPower.PackPower") == 5.0 and sampling.bound("A.B") == 0.0
    assert sampling.angle("Navigation.Heading") == 360.0 and sampling.angle("X.y") == 360.0
    assert sampling.bound("Navigation.Heading") == 5.0 and sampling.bound("BatteryState.StateOfCharge") == 0.5
    assert sampling.predictor == "linear" and config.upload.compression == "zlib"
    defaults = agent(MINIMAL)
    assert defaults.sampling.bounds_preset == "none" and defaults.upload.compression == "zstd"
    assert defaults.sampling.angle("Navigation.Heading") == 0.0


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "sampling: {bounds_preset: seed}\n",
            "sampling.bounds_preset: expected one of 'none', 'seeds', got 'seed'",
        ),
        ("sampling: {predictor: kalman}\n", "sampling.predictor: expected one of 'hold', 'linear'"),
        ("sampling: {angles: {A.b: 0}}\n", "sampling.angles['A.b']: expected a number > 0, got 0"),
        (
            "sampling: {signals: [A.b], angles: {A.c: 360}}\n",
            "sampling.angles['A.c']: signal 'A.c' is not in",
        ),
        ("upload: {compression: lz4}\n", "upload.compression: expected one of 'zstd', 'zlib', 'none'"),
    ],
)
def test_codec_keys_are_checked(extra: str, expected: str) -> None:
    assert any(expected in line for line in problems(MINIMAL + extra)), problems(MINIMAL + extra)
