"""One place that turns the ``mqtt`` configuration section into a connected-on-demand paho client.

Both the agent's uploader and the receiver use it, so TLS, credentials, MQTT v5 and reconnect backoff
are set up the same way on both sides. The client runs paho's own network thread (``loop_start``);
paho reconnects by itself with exponential backoff between ``min_delay`` and ``max_delay``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.errors import ConfigError
from agent.service.logs import get_logger
from agent.service.schema import Boolean, Check, FilePath, Integer, Nullable, SectionView, String, Value

TOPIC_WORD = r"[^+#/\s\x00]+"  # one MQTT topic level without wildcards
SESSION_EXPIRY_S = 24 * 3600  # acks queued by the broker survive a day's outage of the agent


class MqttSettings(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def keepalive_s(self) -> int: ...
    @property
    def username(self) -> str | None: ...
    @property
    def tls(self) -> bool: ...
    @property
    def ca_file(self) -> Path | None: ...
    @property
    def cert_file(self) -> Path | None: ...
    @property
    def key_file(self) -> Path | None: ...

    def password(self) -> str | None: ...


class Client(paho.Client):
    """paho's client, remembering why the last attempt to connect failed (paho's ``on_connect_fail``
    is told nothing): ``last_connect_error`` is set on paho's network thread before that callback runs."""

    last_connect_error: OSError | None = None

    def reconnect(self) -> MQTTErrorCode:
        try:
            result = super().reconnect()
        except OSError as error:  # name resolution, refused, timed out, TLS: paho retries after it
            self.last_connect_error = error
            raise
        self.last_connect_error = None
        return result


PUBACK_BYTES = 4  # an MQTT 5 PUBACK of a success without properties: type, length, packet id


def publish_bytes(topic: str, payload: int) -> int:
    """What an MQTT 5 QoS-1 PUBLISH of ``payload`` bytes on ``topic`` (no properties) takes on TCP: the
    type byte, the remaining length (a varint), topic length and topic, packet id, property length."""
    remaining = 2 + len(topic.encode()) + 2 + 1 + payload
    length = 1 if remaining < 128 else 2 if remaining < 16_384 else 3 if remaining < 2_097_152 else 4
    return 1 + length + remaining


def make_client(
    settings: MqttSettings, client_id: str, persistent: bool, reconnect: tuple[int, int] = (1, 30)
) -> Client:
    client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.reconnect_delay_set(min_delay=reconnect[0], max_delay=reconnect[1])
    if settings.username:
        client.username_pw_set(settings.username, settings.password())
    if settings.tls:
        try:
            client.tls_set(
                ca_certs=str(settings.ca_file) if settings.ca_file else None,
                certfile=str(settings.cert_file) if settings.cert_file else None,
                keyfile=str(settings.key_file) if settings.key_file else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (OSError, ssl.SSLError) as error:  # a file unreadable, or the key not the certificate's
            files = ", ".join(str(p) for p in (settings.ca_file, settings.cert_file, settings.key_file) if p)
            raise ConfigError(f"mqtt: cannot load the TLS files ({files}): {error}") from error
    client.user_data_set({"persistent": persistent})
    return client


def connect(client: paho.Client, settings: MqttSettings, persistent: bool) -> None:
    """Start connecting in the background; paho keeps reconnecting after any failure.

    Warns once in the log when the connection is neither TLS nor authenticated (no username, no client
    certificate): anyone on the broker may then read, forge or delete this client's messages."""
    if not settings.tls and not settings.username:
        get_logger("agent.service.mqtt").warning(
            "mqtt_insecure",
            broker=f"{settings.host}:{settings.port}",
            reason="neither TLS nor authenticated (set mqtt.tls with a client certificate, or a username)",
        )
    properties: Any = None
    if persistent:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
    client.connect_async(
        settings.host, settings.port, settings.keepalive_s, clean_start=not persistent, properties=properties
    )
    client.loop_start()


def offline_status(vin: str, auth_key: bytes | None = None) -> bytes:
    """The retained status the broker publishes for us when we vanish (our last will), signed with
    ``auth_key`` when there is one (:mod:`agent.wire.auth`)."""
    from agent import wire
    from agent.wire import auth
    from agent.wire import telemetry_pb2 as pb

    payload = wire.encode_status(pb.Status(vin=vin, state="OFFLINE"))
    return payload if auth_key is None else auth.sign(payload, auth_key, vin)


@dataclass(frozen=True)
class MqttConfig:
    """The broker connection (shared by agent and receiver). ``client_id`` is filled in by the root."""

    host: str = "localhost"
    port: int = 1883
    prefix: str = "fleet"
    client_id: str | None = None
    keepalive_s: int = 30
    username: str | None = None
    password_file: Path | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None  # a client certificate (PEM) and its key: the broker's proof of identity
    key_file: Path | None = None
    auth_key_file: Path | None = None  # the vehicle's MAC key (agent/wire/auth.py); agent only

    def password(self) -> str | None:
        """The password read from ``password_file`` (trailing newline stripped), or ``None``."""
        if self.password_file is None:
            return None
        try:
            return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"mqtt.password_file: cannot read {self.password_file}: {error}") from error

    def auth_key(self) -> bytes | None:
        """The vehicle's MAC key read from ``auth_key_file`` (exactly 32 bytes), or ``None``."""
        if self.auth_key_file is None:
            return None
        return read_key_file(self.auth_key_file, "mqtt.auth_key_file")


def read_key_file(path: Path, key: str) -> bytes:
    """The 32 raw bytes of a key file (``pki init``'s fleet.key, ``pki issue``'s VIN.auth-key)."""
    from agent.wire.auth import KEY_BYTES

    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{key}: cannot read {path}: {error.strerror}") from error
    if len(data) != KEY_BYTES:
        raise ConfigError(f"{key}: {path} holds {len(data)} bytes, not a {KEY_BYTES}-byte key")
    return data


def check_mqtt(mqtt: MqttConfig, view: SectionView) -> None:
    if mqtt.ca_file is not None and not mqtt.tls:
        view.error("ca_file", "is set but tls is false (set tls: true or remove ca_file)")
    if (mqtt.cert_file is None) != (mqtt.key_file is None):
        key, other = ("cert_file", "key_file") if mqtt.cert_file else ("key_file", "cert_file")
        view.error(key, f"is set without {other} (a client certificate needs both)")
    elif mqtt.cert_file is not None and not mqtt.tls:
        view.error("cert_file", "is set but tls is false (set tls: true, or remove cert_file and key_file)")
    if mqtt.password_file is not None and mqtt.username is None:
        view.error("password_file", "is set without a username (MQTT sends a password only with one)")


MQTT_FIELDS: dict[str, Value[Any]] = {
    "host": String(),
    "port": Integer(min=1, max=65535),
    "prefix": String(
        pattern=f"{TOPIC_WORD}(/{TOPIC_WORD})*", rule="topic levels without '+', '#' or an edge '/'"
    ),
    "client_id": Nullable(String()),
    "keepalive_s": Integer(min=0, max=65535),
    "username": Nullable(String()),
    "password_file": Nullable(FilePath(must_exist=True)),
    "tls": Boolean(),
    "ca_file": Nullable(FilePath(must_exist=True)),
    "cert_file": Nullable(FilePath(must_exist=True)),
    "key_file": Nullable(FilePath(must_exist=True)),
    "auth_key_file": Nullable(FilePath(must_exist=True)),
}
MQTT_CHECKS: tuple[Check[MqttConfig], ...] = (check_mqtt,)
