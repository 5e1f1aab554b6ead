"""``edge-receiver broker-config``: the generated mosquitto.conf and ACL; the agent's mqtt.cert_file/key_file.

What the files make a real Mosquitto do is tests/test_broker_acl.py's; here, their text and the checks.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from agent.config import parse_agent_config
from agent.errors import ConfigError
from agent.service import mqtt
from agent.service.mqtt import MqttConfig
from receiver import pki
from receiver.broker_config import BrokerSettings, render_acl, render_config, write
from receiver.cli import main
from tests.harness.configs import issue_lines

AGENT = "vin: TEST-1\nsource: {kind: bus}\nbuses: [{channel: can0, dbc: ev.dbc}]\n"  # mqtt: starts at line 4


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    root = tmp_path / "pki"
    pki.init(root, ["localhost"], ["127.0.0.1"])
    pki.issue(root, "VIN-A")
    return root


def directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_the_config_is_tls_only_with_client_certificates() -> None:
    text = render_config(BrokerSettings(8883, bind="10.0.0.5"), Path("/etc/mosquitto/fleet"))
    assert directives(text) == [
        "listener 8883 10.0.0.5",
        "protocol mqtt",
        "cafile /etc/mosquitto/fleet/ca.crt",
        "certfile /etc/mosquitto/fleet/broker.crt",
        "keyfile /etc/mosquitto/fleet/broker.key",
        "crlfile /etc/mosquitto/fleet/crl.pem",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "allow_anonymous false",
        "acl_file /etc/mosquitto/fleet/acl",
    ]
    assert directives(render_config(BrokerSettings(1884), Path("/x")))[0] == "listener 1884"


def test_the_acl_grants_what_design_md_says() -> None:
    text = render_acl(BrokerSettings(8883, prefix="acme/fleet"), ["receiver", "receiver-2"])
    vehicles = ["pattern write acme/fleet/%u/telemetry", "pattern write acme/fleet/%u/status"]
    vehicles.append("pattern read acme/fleet/%u/ack")
    receiver = [
        "topic read acme/fleet/+/telemetry",
        "topic read acme/fleet/+/status",
        "topic readwrite acme/fleet/+/ack",
        "topic readwrite acme/fleet/+/alerts",
    ]
    assert directives(text) == [*vehicles, "user receiver", *receiver, "user receiver-2", *receiver]
    assert directives(render_acl(BrokerSettings(8883), [])) == [
        line.replace("acme/", "") for line in vehicles
    ]


def test_write_copies_the_brokers_files_and_lists_only_valid_receivers(fleet: Path, tmp_path: Path) -> None:
    pki.issue(fleet, "receiver-2", receiver=True)
    pki.issue(fleet, "receiver-old", receiver=True)
    pki.revoke(fleet, "receiver-old", receiver=True)
    out = tmp_path / "broker"
    paths = write(pki.Pki(fleet), out, BrokerSettings(8883))
    names = ["ca.crt", "broker.crt", "broker.key", "crl.pem", "acl", "mosquitto.conf"]
    assert [path.name for path in paths] == names
    for name in names[:4]:
        assert (out / name).read_bytes() == (fleet / name).read_bytes()
    assert stat.S_IMODE((out / "broker.key").stat().st_mode) == 0o600
    acl = (out / "acl").read_text()
    assert "user receiver\n" in acl and "user receiver-2\n" in acl and "receiver-old" not in acl
    assert f"cafile {out.resolve()}/ca.crt\n" in (out / "mosquitto.conf").read_text()
    write(pki.Pki(fleet), out, BrokerSettings(8883, install_dir=Path("/etc/mosquitto/fleet")))  # replaces
    assert "acl_file /etc/mosquitto/fleet/acl\n" in (out / "mosquitto.conf").read_text()
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (BrokerSettings(0), "--port 0"),
        (BrokerSettings(70000), "--port 70000"),
        (BrokerSettings(8883, prefix="a/+"), "--prefix 'a/+'"),
        (BrokerSettings(8883, prefix="/a"), "--prefix '/a'"),
        (BrokerSettings(8883, install_dir=Path("/my dir")), "white space"),
    ],
)
def test_bad_settings(fleet: Path, tmp_path: Path, settings: BrokerSettings, message: str) -> None:
    with pytest.raises(pki.PkiError, match=re.escape(message)):
        write(pki.Pki(fleet), tmp_path / "out", settings)
    assert not (tmp_path / "out").exists()


def test_the_cli(fleet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "broker"
    argv = ["broker-config", "--pki", str(fleet), "--port", "8883", "--out", str(out), "--prefix", "acme"]
    assert main([*argv, "--bind", "127.0.0.1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{out}/mosquitto.conf"
    assert "listener 8883 127.0.0.1\n" in (out / "mosquitto.conf").read_text()
    assert "pattern write acme/%u/telemetry\n" in (out / "acl").read_text()
    assert main(["broker-config", "--pki", str(tmp_path / "none"), "--port", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-receiver broker-config: error: ") and "pki init" in err


# --- the agent's side: mqtt.cert_file and mqtt.key_file -----------------------------------------------


def test_the_agent_config_takes_a_client_certificate(tmp_path: Path) -> None:
    text = AGENT + "mqtt: {tls: true, port: 8883, ca_file: ca.crt, cert_file: v.crt, key_file: v.key}\n"
    config = parse_agent_config(text, "edge-agent.yaml", tmp_path)
    assert (config.mqtt.cert_file, config.mqtt.key_file) == (tmp_path / "v.crt", tmp_path / "v.key")


@pytest.mark.parametrize(
    ("mqtt_section", "message"),
    [
        ("{tls: true, cert_file: v.crt}", "mqtt.cert_file: is set without key_file"),
        ("{tls: true, key_file: v.key}", "mqtt.key_file: is set without cert_file"),
        ("{cert_file: v.crt, key_file: v.key}", "mqtt.cert_file: is set but tls is false"),
    ],
)
def test_the_agent_config_checks_the_pair(tmp_path: Path, mqtt_section: str, message: str) -> None:
    text = AGENT + f"mqtt: {mqtt_section}\n"
    lines = issue_lines(lambda t: parse_agent_config(t, "edge-agent.yaml", tmp_path), text)
    assert len(lines) == 1 and lines[0].startswith(f"edge-agent.yaml:4: {message}")


def test_check_files_requires_the_certificate_to_exist(tmp_path: Path) -> None:
    (tmp_path / "ev.dbc").write_text("")
    text = AGENT + "mqtt: {tls: true, cert_file: v.crt, key_file: v.key}\n"
    lines = issue_lines(lambda t: parse_agent_config(t, "a.yaml", tmp_path, check_files=True), text)
    assert any(f"mqtt.cert_file: file not found: {tmp_path}/v.crt" in line for line in lines)


def test_a_key_that_is_not_the_certificates_is_a_config_error(fleet: Path) -> None:
    pki.issue(fleet, "VIN-B")
    store = pki.Pki(fleet)
    settings = MqttConfig(
        tls=True, ca_file=store.ca_cert, cert_file=store.client("VIN-A")[0], key_file=store.client("VIN-B")[1]
    )
    with pytest.raises(ConfigError, match=r"mqtt: cannot load the TLS files \("):
        mqtt.make_client(settings, "edge-agent-VIN-A", persistent=True)
