"""The receiver's configuration (:mod:`receiver.config`): the example, defaults, and one line per problem."""

from __future__ import annotations

from pathlib import Path

from receiver.config import RECEIVER_SCHEMA, ReceiverConfig, load_receiver_config, parse_receiver_config
from tests.harness.configs import issue_lines, undocumented

REPO = Path(__file__).resolve().parent.parent
BASE = Path("/srv/edge")
EXAMPLE = REPO / "config" / "edge-receiver.example.yaml"


def test_the_example_parses_and_documents_every_key() -> None:
    receiver = load_receiver_config(EXAMPLE)
    assert receiver.mqtt.share_group == "receivers"
    assert receiver.mqtt.client_id is not None and receiver.mqtt.client_id.startswith("edge-receiver-")
    assert receiver.store.path == Path("/var/lib/edge-receiver/store.sqlite")
    assert undocumented(RECEIVER_SCHEMA, EXAMPLE) == []


def test_an_empty_file_is_every_default() -> None:
    assert parse_receiver_config("", "r.yaml", BASE).store.path == Path("/var/lib/edge-receiver/store.sqlite")
    assert ReceiverConfig().mqtt.client_id is not None  # built in code: a client id of its own


def test_receiver_errors_share_the_agent_sections() -> None:
    lines = issue_lines(
        lambda text: parse_receiver_config(text, "edge-receiver.yaml", BASE),
        "mqtt:\n  hots: x\n  share_group: a/b\n  keepalive_s: -1\nstore: {path: ''}\nlogging: {format: xml}\n",
    )
    assert lines[0] == "edge-receiver.yaml:2: mqtt.hots: unknown key (did you mean 'host'?)"
    assert lines[1].startswith("edge-receiver.yaml:3: mqtt.share_group: expected a string of one topic level")
    assert lines[2].startswith("edge-receiver.yaml:4: mqtt.keepalive_s: expected an integer from 0 to 65535")
    assert lines[3].startswith("edge-receiver.yaml:5: store.path: expected a path, got ''")
    assert lines[4].startswith("edge-receiver.yaml:6: logging.format: expected one of")
    config = parse_receiver_config("mqtt: {share_group: g, client_id: me}\n", "r.yaml", BASE)
    assert (config.mqtt.share_group, config.mqtt.client_id) == ("g", "me")


def test_relative_store_path_resolves_against_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "receiver.yaml"
    path.parent.mkdir()
    path.write_text("store: {path: ../var/store.sqlite}\n")
    assert load_receiver_config(path).store.path == tmp_path / "var" / "store.sqlite"


def test_a_postgresql_store_is_a_dsn_never_beside_a_path() -> None:
    config = parse_receiver_config("store: {dsn: 'postgresql://edge:pw@db/telemetry'}\n", "r.yaml", BASE)
    assert config.store.target == "postgresql://edge:pw@db/telemetry"
    assert config.store.shown == "postgresql://edge:***@db/telemetry" and config.store.retention_days == 90
    assert parse_receiver_config("", "r.yaml", BASE).store.target == Path(
        "/var/lib/edge-receiver/store.sqlite"
    )
    lines = issue_lines(
        lambda text: parse_receiver_config(text, "r.yaml", BASE),
        "store:\n  path: /x.sqlite\n  dsn: postgresql://db/t\n",
    )
    assert lines == [
        "r.yaml:3: store.dsn: is set with store.path: give one, a SQLite file (path) or a PostgreSQL URL (dsn)"
    ]
    (line,) = issue_lines(
        lambda text: parse_receiver_config(text, "r.yaml", BASE), "store: {dsn: mysql://db}\n"
    )
    assert line.startswith("r.yaml:1: store.dsn: expected a string of postgresql://")
