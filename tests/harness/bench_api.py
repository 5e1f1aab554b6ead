"""``make bench``'s live-feed row: from a batch's commit to its values in a WebSocket client of ``/api/live``.

A real Mosquitto, the receiver (:class:`receiver.ingest.Receiver`, in-process, a fresh SQLite store), the
API on uvicorn with its MQTT client (:mod:`tests.harness.api_server`), and a WebSocket client standing in
for the browser. Batches of one chunk (one second of the city drive, as an online agent sends them) are
published one at a time; for each, the delay is from the moment an observer sees the receiver's ack
(published right after the commit, so the commit is a few ms earlier: the figure is a floor by that
much) to the moment the client holds a ``values`` message reaching the batch's last tick. Wall clock, one
machine; the median and the worst of :data:`BATCHES` batches.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as paho
from websockets.sync.client import connect

from agent import wire
from agent.service.mqtt import MqttConfig
from receiver.config import ReceiverConfig, ReceiverMqttConfig, StoreConfig
from receiver.ingest import Receiver
from tests.harness.api_server import serving
from tests.harness.broker import running_broker
from tests.harness.drive import ROOT, SIGNALS
from tests.harness.sampled import payloads, sealed
from tests.harness.waiting import wait_for

BATCHES = 20
VIN = "BENCHLIVE00000001"
Measure = tuple[str, float, str, str]


def live_rows() -> list[Measure]:
    drive = sealed(ROOT / "replay_logs" / "city.log.gz", SIGNALS, bytes(range(16)))
    batches = payloads(VIN, drive, [[i] for i in range(BATCHES + 1)])
    rate = float(drive.schema.rate)
    with tempfile.TemporaryDirectory() as folder, running_broker() as broker:
        mqtt = ReceiverMqttConfig(host="127.0.0.1", port=broker.port)
        config = ReceiverConfig(mqtt=mqtt, store=StoreConfig(path=Path(folder) / "store.sqlite"))
        receiver = Receiver(config)
        receiver.start()
        acks: list[float] = []
        observer = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        observer.on_message = lambda _c, _u, _m: acks.append(time.monotonic())
        observer.connect("127.0.0.1", broker.port)
        observer.subscribe(f"{MqttConfig().prefix}/{VIN}/ack", qos=1)
        observer.loop_start()
        try:
            assert receiver.wait_subscribed(10)
            observer.publish(f"fleet/{VIN}/telemetry", batches[0], qos=1)  # the vin exists before the clients
            wait_for(lambda: len(acks) == 1, 10, "no ack for the first batch")
            with serving(config, watch=True) as base, connect(f"ws{base[4:]}/api/live") as socket:
                assert json.loads(socket.recv(10))["type"] == "hello"
                seen: list[tuple[float, float]] = []  # (when, until)

                def listen() -> None:
                    try:
                        while True:
                            message = json.loads(socket.recv())
                            if message.get("type") == "values":
                                seen.append((time.monotonic(), message["until"]))
                    except Exception:
                        return  # closed at the end

                threading.Thread(target=listen, daemon=True).start()
                wait_for(lambda: healthy(base), 10, "the API's MQTT client did not subscribe")
                delays = []
                for index in range(1, BATCHES + 1):
                    last = wire.decode_batch(batches[index]).chunks[-1].ticks[-1] / rate
                    observer.publish(f"fleet/{VIN}/telemetry", batches[index], qos=1)
                    wait_for(lambda i=index: len(acks) == i + 1, 10, "no ack")
                    wait_for(lambda t=last: any(until >= t - 1e-9 for _, until in seen), 10, "no live values")
                    pushed = min(when for when, until in seen if until >= last - 1e-9)
                    delays.append(pushed - acks[index])
        finally:
            observer.loop_stop()
            observer.disconnect()
            receiver.stop()
    median, worst = statistics.median(delays), max(delays)
    return [
        (
            "live page: commit to WebSocket client",
            median * 1000,
            "ms",
            f"median of {BATCHES} one-second batches (worst {worst * 1000:.0f} ms), from the receiver's ack "
            "(just after the commit) to the values message; the feed coalesces events for 200 ms",
        )
    ]


def healthy(base: str) -> bool:
    with urllib.request.urlopen(f"{base}/health", timeout=5) as answer:
        return bool(json.loads(answer.read())["broker"])
