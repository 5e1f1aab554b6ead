"""A real uploader on a real buffer, for the uploader's tests: started against a test broker, and waited on."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from agent.buffer import Buffer
from agent.config import MqttConfig, UploadConfig
from agent.upload import Uploader
from tests.harness.broker import Broker

VIN = "TESTVIN0001"


def start_uploader(broker: Broker, path: Path, **kwargs: float) -> tuple[Uploader, threading.Event]:
    """A started uploader for ``VIN``, configured as the config file would (``kwargs``: UploadConfig's)."""
    wake = threading.Event()
    mqtt = MqttConfig(host="127.0.0.1", port=broker.port, client_id=f"agent-{time.monotonic_ns()}")
    uploader = Uploader(VIN, UploadConfig(**kwargs), mqtt, path, wake)  # type: ignore[arg-type]
    uploader.start()
    return uploader, wake


def backlog(path: Path) -> int:
    buffer = Buffer(path)
    try:
        return buffer.stats().chunks
    finally:
        buffer.close()
