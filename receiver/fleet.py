"""What ``edge-receiver serve`` hears from the broker: each vehicle's retained status, and a signal per commit.

Contract
- One MQTT client (clean start, no session; paho reconnects with its own backoff) subscribed to
  ``{prefix}/+/status`` (retained: a new subscriber gets every vehicle's last status, or its last will,
  ``OFFLINE``, at once), ``{prefix}/+/ack`` and ``{prefix}/+/alerts``. It never publishes.
- An ack is published by a receiver only after the batch's commit (:mod:`receiver.ingest`), so it is the
  commit notice: the page's live values are read from the store when one arrives, never polled for.
  The ack's content is not trusted for anything (the store is read); a status is trusted only with a
  valid MAC under the vehicle's key when ``security.fleet_key_file`` is set (others are counted and
  dropped), as ingest trusts batches.
- Threads: paho's network thread runs the callbacks; it updates :attr:`FleetWatch.statuses` (a dict of
  immutable :class:`VehicleStatus`, replaced whole per vin) and calls ``on_event(kind, vin, detail)``
  (``"status"``, ``"commit"``, ``"alert"``), which must not block (the API hands it to its event loop).
  Readers in other threads read the dict's values without a lock (a replaced value is whole).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho

from agent import wire
from agent.errors import WireError
from agent.service import mqtt
from agent.service.logs import get_logger
from agent.wire import auth
from receiver.config import ReceiverConfig

Event = Callable[[str, str, Any], None]


@dataclass(frozen=True)
class VehicleStatus:
    """A vehicle's last status as its agent reported it (``updated_at``: the agent's wall clock)."""

    vin: str
    state: str
    backlog_chunks: int = 0
    backlog_samples: int = 0
    backlog_bytes: int = 0
    oldest_age_s: float | None = None
    last_ack_at: float | None = None
    dropped_chunks: int = 0
    drain_eta_s: float | None = None
    agent_version: str = ""
    last_seen: float | None = None  # when the agent last said anything (its clock); kept across its will
    latest: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> {value, at}

    @property
    def online(self) -> bool:
        return self.state not in ("OFFLINE", "STOPPED")


def parse_status(vin: str, payload: bytes, previous: VehicleStatus | None) -> VehicleStatus:
    """A decoded status (``WireError`` for garbage); a last will (no time) keeps the previous last seen."""
    status = wire.decode_status(payload)
    if status.vin != vin:
        raise WireError(f"status is for vin {status.vin!r} but was published under vin {vin!r}")
    eta = status.drain_eta_s  # meaningful only with drain_eta_known (an older agent sends neither)
    latest = {item.name: {"value": item.value, "at": item.at} for item in getattr(status, "latest", ())}
    seen = status.updated_at or (previous.last_seen if previous else None)
    return VehicleStatus(
        vin=vin,
        state=status.state or "UNKNOWN",
        backlog_chunks=status.backlog_chunks,
        backlog_samples=status.backlog_samples,
        backlog_bytes=status.backlog_bytes,
        oldest_age_s=status.oldest_age_s or None,
        last_ack_at=status.last_ack_at or None,
        dropped_chunks=status.dropped_chunks,
        drain_eta_s=eta if getattr(status, "drain_eta_known", False) else None,
        agent_version=status.agent_version,
        last_seen=seen,
        # A last will (no time, no values) keeps the present the vehicle last reported.
        latest=latest or (previous.latest if previous and not status.updated_at else {}),
    )


class FleetWatch:
    """The API's MQTT client; see the module docstring."""

    def __init__(self, config: ReceiverConfig, on_event: Event | None = None) -> None:
        self.config, self.prefix = config, config.mqtt.prefix
        self.on_event: Event = on_event or (lambda kind, vin, detail: None)
        self.statuses: dict[str, VehicleStatus] = {}
        self.acks_seen = 0
        self.statuses_rejected = 0
        self.log = get_logger("receiver.fleet")
        self._fleet_key = config.security.fleet_key()
        self.subscribed = threading.Event()
        self._stopping = False
        client_id = f"edge-receiver-api-{socket.gethostname()}-{os.getpid()}"
        self._client = mqtt.make_client(config.mqtt, client_id, persistent=False)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    def start(self) -> None:
        mqtt.connect(self._client, self.config.mqtt, persistent=False)

    def stop(self) -> None:
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return self.subscribed.is_set()

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.log.warning("connect_refused", reason=str(reason))
            return
        client.subscribe([(f"{self.prefix}/+/{kind}", 1) for kind in ("status", "ack", "alerts")])

    def _on_subscribe(self, _c: paho.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        if any(code.is_failure for code in codes):
            self.log.error("subscribe_refused", reasons=[str(code) for code in codes])
            return
        self.subscribed.set()

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.subscribed.clear()
        if not self._stopping:
            self.log.warning("disconnected", reason=str(reason))

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        parts = message.topic.split("/")
        head = self.prefix.split("/")
        if len(parts) != len(head) + 2 or parts[: len(head)] != head:
            return
        vin, kind, payload = parts[-2], parts[-1], bytes(message.payload)
        try:
            if kind == "status":
                if self._fleet_key is not None:
                    auth.verify(payload, auth.derive_key(self._fleet_key, vin), vin)
                status = parse_status(vin, payload, self.statuses.get(vin))
                self.statuses[vin] = status
                self.on_event("status", vin, status)
            elif kind == "ack" and not message.retain:
                self.acks_seen += 1
                self.on_event("commit", vin, None)
            elif kind == "alerts":
                self.on_event("alert", vin, json.loads(payload))
        except (WireError, ValueError) as error:
            self.statuses_rejected += 1
            self.log.warning("message_ignored", topic=message.topic, reason=str(error))
