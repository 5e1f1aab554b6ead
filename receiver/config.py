"""The receiver's configuration: a YAML file read into frozen dataclasses (:class:`ReceiverConfig`).

Every key is documented in ``config/edge-receiver.example.yaml``. The ``mqtt`` and ``logging`` sections
use the agent's schemas (:mod:`agent.config`), with one more ``mqtt`` key, ``share_group``. Relative
paths resolve against the config file's directory; every key has a default, so an empty file is valid.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path

from agent.service.logs import LOGGING_SECTION, LoggingConfig
from agent.service.mqtt import MQTT_CHECKS, MQTT_FIELDS, TOPIC_WORD, MqttConfig
from agent.service.schema import FilePath, Section, String, load_document, parse_document

DEFAULT_RECEIVER_CONFIG = Path("/etc/edge-receiver/config.yaml")


@dataclass(frozen=True)
class ReceiverMqttConfig(MqttConfig):
    """The agent's MQTT settings plus the shared-subscription group (``$share/<group>/...``)."""

    share_group: str = "receivers"


@dataclass(frozen=True)
class StoreConfig:
    path: Path = Path("/var/lib/edge-receiver/store.sqlite")


@dataclass(frozen=True)
class ReceiverConfig:
    """The whole receiver config. ``mqtt.client_id`` defaults to ``edge-receiver-<hostname>-<pid>``."""

    mqtt: ReceiverMqttConfig = field(default_factory=ReceiverMqttConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self) -> None:
        if self.mqtt.client_id is None:
            client_id = f"edge-receiver-{socket.gethostname()}-{os.getpid()}"
            object.__setattr__(self, "mqtt", replace(self.mqtt, client_id=client_id))


RECEIVER_SCHEMA = Section(
    ReceiverConfig,
    {
        "mqtt": Section(
            ReceiverMqttConfig,
            {
                **MQTT_FIELDS,
                "share_group": String(pattern=TOPIC_WORD, rule="one topic level without '+', '#'"),
            },
            MQTT_CHECKS,
        ),
        "store": Section(StoreConfig, {"path": FilePath()}),
        "logging": LOGGING_SECTION,
    },
)


def parse_receiver_config(
    text: str, source_name: str, base_dir: Path, *, check_files: bool = False
) -> ReceiverConfig:
    """Parse the YAML ``text`` (named ``source_name`` in errors); relative paths resolve against ``base_dir``.

    Raises :class:`~agent.errors.ConfigError` listing every problem, one per line.
    """
    return parse_document(text, source_name, base_dir, RECEIVER_SCHEMA, check_files=check_files)


def load_receiver_config(path: Path | str, *, check_files: bool = False) -> ReceiverConfig:
    """Read and parse the receiver's config file at ``path`` (see :func:`parse_receiver_config`)."""
    return load_document(path, RECEIVER_SCHEMA, check_files=check_files)
