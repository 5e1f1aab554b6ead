"""``edge-receiver serve`` end to end: a real broker, ``edge-receiver run``, a real replay, the API as its
own process. The live feed pushes each commit's values (the commit notice is the receiver's ack), the
fleet table says online and then offline from the retained status and the last will, and ``/metrics``
counts what ``run`` stored."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
from websockets.sync.client import connect

from tests.harness.broker import Broker, free_port
from tests.harness.drive import ROOT, agent_config
from tests.harness.processes import receiver_yaml, running_api, running_receiver, start_replay
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.slow
VIN = "KMHLIVE0000000001"


def get(port: int, path: str) -> object:
    with urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        return json.loads(answer.read()) if path != "/metrics" else answer.read().decode()


def test_live_feed_fleet_table_and_metrics_follow_a_replay(broker: Broker, tmp_path: Path) -> None:
    store, port = tmp_path / "store.sqlite", free_port()
    config = receiver_yaml(
        tmp_path / "receiver.yaml", broker.port, store, f"api: {{listen: '127.0.0.1:{port}'}}\n"
    )
    messages: list[tuple[float, dict[str, object]]] = []
    with (
        running_receiver(config, tmp_path / "receiver.log"),
        running_api(config, tmp_path / "api.log"),
        connect(f"ws://127.0.0.1:{port}/api/live", open_timeout=10) as socket,
    ):
        hello = json.loads(socket.recv(timeout=10))
        assert hello["type"] == "hello"

        def listen() -> None:
            try:
                while True:
                    messages.append((time.monotonic(), json.loads(socket.recv())))
            except Exception:
                return  # the socket closed at the end of the test

        threading.Thread(target=listen, daemon=True).start()
        drive = ROOT / "replay_logs" / "city.log.gz"
        agent_yaml = agent_config(tmp_path, broker.port, VIN, drive, speed="30")
        with agent_yaml.open("a") as out:
            out.write("status: {signals: [DriveSpeed.VehicleSpeed]}\n")
        agent = start_replay(drive, agent_yaml, tmp_path / "agent.log")

        def values() -> list[dict[str, object]]:
            return [m for _, m in messages if m.get("type") == "values" and m.get("vin") == VIN]

        def states() -> list[object]:
            return [m["vehicle"]["state"] for _, m in messages if m.get("type") == "status"]  # type: ignore[index]

        wait_for(lambda: len(values()) >= 3, 60, "no live values pushed", agent)
        assert "ONLINE" in states() or "DRAINING" in states()
        assert agent.wait(120) == 0

        def vehicle() -> dict[str, Any]:
            fleet = get(port, "/api/vehicles")["vehicles"]  # type: ignore[index]
            return next(v for v in fleet if v["vin"] == VIN)

        wait_for(
            lambda: vehicle()["online"] is False, 10, lambda: f"not offline after a clean stop: {vehicle()}"
        )
        assert vehicle()["state"] == "OFFLINE"  # the will, which a clean stop asks the broker to publish
        wait_for(
            lambda: values()[-1]["until"] == vehicle()["stored_until"],
            10,
            "the live feed did not reach the last stored tick",
        )
        present = vehicle()["latest"]["DriveSpeed.VehicleSpeed"]  # the agent's own word (status.signals)
        assert present["at"] == pytest.approx(vehicle()["stored_until"], abs=0.05)
        untils = [m["until"] for m in values()]
        assert untils == sorted(untils)  # each push starts after the last one: nothing twice, in order
    # `run` records its totals at stop; the store outlives both processes
    with running_api(config, tmp_path / "api2.log"):
        metrics = get(port, "/metrics")
        assert f'edge_receiver_samples_total{{vin="{VIN}"}}' in metrics  # type: ignore[operator]
        assert "edge_receiver_latency_seconds_bucket" in metrics  # type: ignore[operator]
