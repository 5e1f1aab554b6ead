"""Why the broker cannot be reached, said once per reason, with the broker and the next retry.

Contract
- :func:`describe_error` (a failed attempt: paho's ``reconnect`` raised) and :func:`describe_refusal`
  (the broker answered CONNACK with a failure) turn a failure into a short, stable reason class
  ("name resolution", "refused", "timed out", "TLS", "not authorized", ...) and a
  detail. Pure functions, any thread.
- :class:`BrokerEvents` holds paho's callbacks, which run on paho's network thread: each only posts an
  event (connected, refused, unreachable, disconnected, ack, retained_ack) to its queue and sets
  ``wake``; the uploader's thread takes them and decides (:mod:`agent.upload`).
- :class:`FailureLog` belongs to the uploader's thread (not thread-safe, never blocks): it logs
  ``broker_unreachable`` once per reason class until a connection succeeds (:meth:`FailureLog.connected`),
  with ``broker`` (host:port) and ``retry_in_s``, the delay before paho's next attempt. It mirrors paho's
  backoff (the first wait is ``min_delay``, then doubled up to ``max_delay``, reset by a CONNACK success).
"""

from __future__ import annotations

import queue
import socket
import ssl
import threading
from typing import Any

import paho.mqtt.client as paho

NOT_AUTHORIZED = 135  # MQTT v5 CONNACK reason codes
BAD_CREDENTIALS = 134
BAD_CREDENTIALS_V3 = 4  # MQTT 3.1.1: bad user name or password
NOT_AUTHORIZED_V3 = 5


class BrokerEvents:
    """paho's callbacks: post an event, wake the uploader, nothing else (see the module's contract)."""

    def __init__(self, ack_topic: str, wake: threading.Event) -> None:
        self.ack_topic = ack_topic
        self.wake = wake
        self.queue: queue.Queue[tuple[str, Any]] = queue.Queue()

    def attach(self, client: paho.Client) -> None:
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_connect_fail = self._on_connect_fail

    def _post(self, kind: str, detail: Any) -> None:
        self.queue.put((kind, detail))
        self.wake.set()

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self.queue.put(("refused", reason))  # paho's disconnect follows: that one wakes
            return
        client.subscribe(self.ack_topic, qos=1)
        self._post("connected", (str(reason), getattr(properties, "MaximumPacketSize", 0)))

    def _on_connect_fail(self, client: paho.Client, _u: Any) -> None:
        self._post("unreachable", getattr(client, "last_connect_error", None))

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._post("disconnected", str(reason))

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        if message.retain:  # kept by the broker from some earlier publisher: never a receiver's fresh ack
            self._post("retained_ack", len(message.payload))
        else:
            self._post("ack", message.payload)


def describe_error(error: BaseException | None, tls: bool = False) -> tuple[str, str]:
    """(reason class, detail) of an attempt that failed before any CONNACK (``tls``: TLS configured)."""
    if error is None:
        return "connection failed", "no reason given"
    detail = str(error) or type(error).__name__
    if isinstance(error, socket.gaierror):
        return "name resolution", detail
    if isinstance(error, ssl.SSLError | ssl.CertificateError):
        return "TLS", detail
    if isinstance(error, ConnectionRefusedError):
        return "refused", detail
    if isinstance(error, TimeoutError | socket.timeout):
        return "timed out", detail
    if isinstance(error, ConnectionResetError | BrokenPipeError):
        if tls:  # the broker hung up on the handshake: most often a plain listener, or a refused certificate
            return "TLS", f"{detail} during the TLS handshake (is the port a TLS listener?)"
        return "connection reset", detail
    return "connection failed", detail


def describe_refusal(reason: Any) -> tuple[str, str]:
    """(reason class, detail) of a CONNACK failure (paho's ``ReasonCode``)."""
    code, detail = int(getattr(reason, "value", -1)), str(reason)
    if code in (NOT_AUTHORIZED, NOT_AUTHORIZED_V3, BAD_CREDENTIALS, BAD_CREDENTIALS_V3):
        # One class: brokers differ (Mosquitto answers a wrong password with "Not authorized").
        return "not authorized", f"{detail} (check mqtt.username, the password or the client certificate)"
    return "refused by the broker", detail


class FailureLog:
    """Log each reason class of connection failure once, until the next successful connection."""

    def __init__(self, log: Any, broker: str, min_delay: float, max_delay: float) -> None:
        self.log, self.broker = log, broker
        self.min_delay, self.max_delay = min_delay, max_delay
        self._logged: set[str] = set()
        self._delay: float | None = None
        self.failures = 0

    def failed(self, reason: str, detail: str) -> None:
        """One failed attempt: log it if its reason class is new since the last connection."""
        self._delay = self.min_delay if self._delay is None else min(self._delay * 2, self.max_delay)
        self.failures += 1
        if reason in self._logged:
            return
        self._logged.add(reason)
        self.log.error(
            "broker_unreachable",
            broker=self.broker,
            reason=reason,
            detail=detail,
            retry_in_s=round(self._delay, 1),
        )

    def connected(self) -> None:
        """A CONNACK success: paho's backoff starts again, and so do the reasons."""
        if self._logged:
            self.log.info("broker_reachable", broker=self.broker, failed_attempts=self.failures)
        self._logged.clear()
        self._delay = None
        self.failures = 0
