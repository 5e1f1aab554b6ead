"""The MQTT connection settings shared by agent and receiver (:mod:`agent.service.mqtt`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.service.mqtt import MqttConfig


def test_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    assert MqttConfig(username="u", password_file=tmp_path / "pw").password() == "s3cret"
    assert MqttConfig().password() is None
    with pytest.raises(ConfigError, match=r"mqtt\.password_file"):
        MqttConfig(password_file=tmp_path / "missing").password()
