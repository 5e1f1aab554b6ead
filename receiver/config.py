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
from agent.service.mqtt import MQTT_CHECKS, MQTT_FIELDS, TOPIC_WORD, MqttConfig, read_key_file
from agent.service.schema import (
    FilePath,
    Integer,
    Nullable,
    Section,
    SectionView,
    String,
    load_document,
    parse_document,
)
from agent.wire.chunks import Limits
from receiver.alert_rules import ALERTS_SECTION, AlertsConfig
from receiver.backend import redacted

DEFAULT_RECEIVER_CONFIG = Path("/etc/edge-receiver/config.yaml")


@dataclass(frozen=True)
class ReceiverMqttConfig(MqttConfig):
    """The agent's MQTT settings plus the shared-subscription group (``$share/<group>/...``)."""

    share_group: str = "receivers"


@dataclass(frozen=True)
class StoreConfig:
    """Where batches are stored: a SQLite file (``path``, the default) or a PostgreSQL database (``dsn``, a
    ``postgresql://`` URL; not both), and how long: ``retention_days`` (0 keeps everything)."""

    path: Path = Path("/var/lib/edge-receiver/store.sqlite")
    dsn: str | None = None
    retention_days: int = 90

    @property
    def target(self) -> str | Path:
        """What :func:`receiver.store.open_store` takes: the URL when one is set, else the file."""
        return self.dsn if self.dsn is not None else self.path

    @property
    def shown(self) -> str:
        """The target for logs and messages (a URL's password as ``***``)."""
        return str(self.path) if self.dsn is None else redacted(self.dsn)


DSN = r"postgres(ql)?://\S*"  # libpq's URL form: postgresql://[user[:password]@][host][:port][/db][?param=value]


def _one_store(store: StoreConfig, view: SectionView) -> None:
    if store.dsn is not None and "path" in view.given:
        view.error("dsn", "is set with store.path: give one, a SQLite file (path) or a PostgreSQL URL (dsn)")


@dataclass(frozen=True)
class SecurityConfig:
    """``fleet_key_file``: the fleet key (``pki init``'s fleet.key); with it, batches must carry a MAC."""

    fleet_key_file: Path | None = None

    def fleet_key(self) -> bytes | None:
        """The 32 bytes of ``fleet_key_file``, or ``None`` when batches are not authenticated."""
        if self.fleet_key_file is None:
            return None
        return read_key_file(self.fleet_key_file, "security.fleet_key_file")


@dataclass(frozen=True)
class LimitsConfig:
    """What one batch may be, checked before it is decoded (bytes) or its values allocated (the rest).

    Defaults: an agent's drain batch is at most ``upload.max_batch_bytes`` (256 KiB) of stored chunks,
    sent in about as many bytes or fewer; 4 MiB leaves 16x headroom. Samples and values: see
    :class:`agent.wire.chunks.Limits` (500,000 samples and 13.1 M values at most from a default agent).
    """

    max_batch_bytes: int = 4 * 1024 * 1024
    max_samples_per_batch: int = 1_000_000
    max_values_per_batch: int = 16_000_000

    def wire(self) -> Limits:
        return Limits(self.max_samples_per_batch, self.max_values_per_batch)


LISTEN = r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}"  # host:port, an IPv6 address in brackets


@dataclass(frozen=True)
class ApiConfig:
    """``edge-receiver serve``: where it listens (``host:port``; default loopback only, put a reverse proxy
    with TLS and authentication in front of it to open it wider)."""

    listen: str = "127.0.0.1:8080"

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


def _port_in_range(api: ApiConfig, view: SectionView) -> None:
    if not 1 <= api.port <= 65535:
        view.error("listen", f"port {api.port} is not from 1 to 65535")


@dataclass(frozen=True)
class ReceiverConfig:
    """The whole receiver config. ``mqtt.client_id`` defaults to ``edge-receiver-<hostname>-<pid>``."""

    mqtt: ReceiverMqttConfig = field(default_factory=ReceiverMqttConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)

    def __post_init__(self) -> None:
        if self.mqtt.client_id is None:
            client_id = f"edge-receiver-{socket.gethostname()}-{os.getpid()}"
            object.__setattr__(self, "mqtt", replace(self.mqtt, client_id=client_id))


def _no_agent_key(mqtt: MqttConfig, view: SectionView) -> None:
    if mqtt.auth_key_file is not None:
        view.error("auth_key_file", "is the agent's key; a receiver takes security.fleet_key_file")


RECEIVER_SCHEMA = Section(
    ReceiverConfig,
    {
        "mqtt": Section(
            ReceiverMqttConfig,
            {
                **MQTT_FIELDS,
                "share_group": String(pattern=TOPIC_WORD, rule="one topic level without '+', '#'"),
            },
            (*MQTT_CHECKS, _no_agent_key),
        ),
        "store": Section(
            StoreConfig,
            {
                "path": FilePath(),
                "dsn": Nullable(String(pattern=DSN, rule="postgresql://[user@]host[:port]/database")),
                "retention_days": Integer(min=0, max=100_000),
            },
            (_one_store,),
        ),
        "logging": LOGGING_SECTION,
        "api": Section(ApiConfig, {"listen": String(pattern=LISTEN, rule="host:port")}, (_port_in_range,)),
        "alerts": ALERTS_SECTION,
        "security": Section(SecurityConfig, {"fleet_key_file": Nullable(FilePath(must_exist=True))}),
        "limits": Section(
            LimitsConfig,
            {
                "max_batch_bytes": Integer(min=1024),
                "max_samples_per_batch": Integer(min=1),
                "max_values_per_batch": Integer(min=1),
            },
        ),
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
