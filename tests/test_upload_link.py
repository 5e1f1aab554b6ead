"""An operator always sees why: each broker failure is one log line with its reason, the broker and the
next retry; a receiver that never acks shows as NOT_ACKED (real Mosquitto, real Uploader)."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.buffer import Buffer
from agent.config import UploadConfig
from agent.service.mqtt import MqttConfig
from agent.status import State, StatusReport
from agent.upload import Uploader
from tests.harness.broker import Broker, free_port
from tests.harness.buffers import SCHEMA, sealed
from tests.harness.uploaders import VIN
from tests.harness.waiting import wait_for


class PasswordBroker(Broker):
    """A broker that admits only user "agent" with password "right"."""

    def listener_config(self) -> str:
        passwords = self.workdir / "passwords"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "agent", "right"], check=True)
        self.workdir.chmod(0o755)  # run as root, Mosquitto reads it as its own user
        passwords.chmod(0o644)
        return f"listener {self.port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"


def failing_uploader(tmp_path: Path, **mqtt: Any) -> Uploader:
    config = MqttConfig(client_id=f"agent-{time.monotonic_ns()}", **mqtt)
    return Uploader(VIN, UploadConfig(), config, tmp_path / "buffer.sqlite", threading.Event())


def one_line_per_reason(uploader: Uploader, reason: str, broker: str) -> None:
    with capture_logs() as logs:
        uploader.start()
        try:
            wait_for(lambda: uploader.counters.connect_failures >= 2, timeout=20)  # paho retried
        finally:
            uploader.stop()
    lines = [e for e in logs if e["event"] == "broker_unreachable"]
    assert len(lines) == 1, lines
    assert lines[0]["reason"] == reason and lines[0]["broker"] == broker, lines[0]
    assert 0 < lines[0]["retry_in_s"] <= 40


def test_a_wrong_password_is_said_once(tmp_path: Path) -> None:
    broker = PasswordBroker()
    broker.start()
    secret = tmp_path / "password"
    secret.write_text("wrong\n")
    try:
        uploader = failing_uploader(
            tmp_path, host="127.0.0.1", port=broker.port, username="agent", password_file=secret
        )
        one_line_per_reason(uploader, "not authorized", f"127.0.0.1:{broker.port}")
    finally:
        broker.close()


def test_a_closed_port_is_said_once(tmp_path: Path) -> None:
    port = free_port()
    uploader = failing_uploader(tmp_path, host="127.0.0.1", port=port)
    one_line_per_reason(uploader, "refused", f"127.0.0.1:{port}")


def test_an_unresolvable_name_is_said_once(tmp_path: Path) -> None:
    uploader = failing_uploader(tmp_path, host="no-such-host.invalid", port=1883)
    one_line_per_reason(uploader, "name resolution", "no-such-host.invalid:1883")


def test_tls_spoken_to_a_plain_listener_is_said_once(broker: Broker, tmp_path: Path) -> None:
    uploader = failing_uploader(tmp_path, host="127.0.0.1", port=broker.port, tls=True)
    one_line_per_reason(uploader, "TLS", f"127.0.0.1:{broker.port}")


def test_an_open_connection_is_warned_about(broker: Broker, tmp_path: Path) -> None:
    uploader = failing_uploader(tmp_path, host="127.0.0.1", port=broker.port)
    with capture_logs() as logs:
        uploader.start()
        uploader.stop()
    assert [e["broker"] for e in logs if e["event"] == "mqtt_insecure"] == [f"127.0.0.1:{broker.port}"]


@pytest.mark.parametrize("ack_timeout_s", [0.5])
def test_no_receiver_shows_as_not_acked(broker: Broker, tmp_path: Path, ack_timeout_s: float) -> None:
    path = tmp_path / "buffer.sqlite"
    buffer = Buffer(path)
    buffer.append(buffer.schema_id(SCHEMA), sealed(b"N" * 16, 3))
    stats = buffer.stats()
    buffer.close()
    config = MqttConfig(host="127.0.0.1", port=broker.port, client_id="agent-not-acked")
    uploader = Uploader(VIN, UploadConfig(ack_timeout_s=ack_timeout_s), config, path, threading.Event())
    with capture_logs() as logs:
        uploader.start()
        try:
            wait_for(lambda: uploader.status().state is State.NOT_ACKED)
            status = uploader.status()
            wait_for(lambda: uploader.counters.resends >= 3)  # still resending, still NOT_ACKED, once
        finally:
            uploader.stop()
    assert status.unacked_for_s is not None and status.unacked_for_s > 3 * ack_timeout_s
    changes = [e for e in logs if e["event"] == "state_changed" and e["state"] == "NOT_ACKED"]
    assert len(changes) == 1 and "has not acked for" in changes[0]["reason"]
    report = StatusReport.from_stats(VIN, status.state.value, stats, unacked_for_s=status.unacked_for_s)
    assert report.line().startswith("NOT_ACKED (connected, but the receiver has not acked for ")
