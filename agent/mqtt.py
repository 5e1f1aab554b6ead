"""One place that turns the ``mqtt`` configuration section into a connected-on-demand paho client.

Both the agent's uploader and the receiver use it, so TLS, credentials, MQTT v5 and reconnect backoff
are set up the same way on both sides. The client runs paho's own network thread (``loop_start``);
paho reconnects by itself with exponential backoff between ``min_delay`` and ``max_delay``.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

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

    def password(self) -> str | None: ...


def make_client(
    settings: MqttSettings, client_id: str, persistent: bool, reconnect: tuple[int, int] = (1, 30)
) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.reconnect_delay_set(min_delay=reconnect[0], max_delay=reconnect[1])
    if settings.username:
        client.username_pw_set(settings.username, settings.password())
    if settings.tls:
        client.tls_set(
            ca_certs=str(settings.ca_file) if settings.ca_file else None, tls_version=ssl.PROTOCOL_TLS_CLIENT
        )
    client.user_data_set({"persistent": persistent})
    return client


def connect(client: paho.Client, settings: MqttSettings, persistent: bool) -> None:
    """Start connecting in the background; paho keeps reconnecting after any failure."""
    properties: Any = None
    if persistent:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
    client.connect_async(
        settings.host, settings.port, settings.keepalive_s, clean_start=not persistent, properties=properties
    )
    client.loop_start()


def offline_status(vin: str) -> bytes:
    """The retained status the broker publishes for us when we vanish (our last will)."""
    from agent import telemetry_pb2 as pb
    from agent import wire

    return wire.encode_status(pb.Status(vin=vin, state="OFFLINE"))
