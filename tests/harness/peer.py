"""A peer that plays the agents against a receiver through a real broker: publishes batches, collects acks.

:class:`Peer` is one paho client (MQTT 5) subscribed to every vehicle's ack topic; paho's network thread
puts each ack in :attr:`Peer.acks`, the test's thread takes them (:meth:`Peer.ack` blocks up to
:data:`TIMEOUT`). The caller owns the peer and closes it.
"""

from __future__ import annotations

import os
import queue
import threading

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from agent import wire
from tests.harness.batches import VIN
from tests.harness.broker import Broker

TIMEOUT = 10.0


class Peer:
    """Plays the agents: publishes telemetry and collects every ack."""

    def __init__(self, broker: Broker) -> None:
        self.acks: queue.Queue[tuple[str, bytes]] = queue.Queue()
        subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"peer-{os.getpid()}-{id(self)}", protocol=paho.MQTTv5
        )
        self.client.on_message = lambda _c, _u, message: self.acks.put(
            (message.topic, bytes(message.payload))
        )
        self.client.on_subscribe = lambda *_args: subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.client.subscribe("fleet/+/ack", qos=1)
        assert subscribed.wait(TIMEOUT)

    def publish(self, data: bytes, vin: str = VIN, topic: str | None = None) -> None:
        self.client.publish(topic or f"fleet/{vin}/telemetry", data, qos=1).wait_for_publish(TIMEOUT)

    def ack(self) -> tuple[str, str, list[tuple[bytes, int, int]]]:
        topic, data = self.acks.get(timeout=TIMEOUT)
        return (topic, *wire.decode_ack(data))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
