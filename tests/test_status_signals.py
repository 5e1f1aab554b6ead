"""``status.signals``: the agent's retained status carries the latest sampled value of each configured
signal (issue 12), checked against ``edge-agent sample`` of the same log; config errors name the key.

Real processes: a Mosquitto, an edge-receiver and ``edge-agent replay`` on the committed city drive; a
paho subscriber records every status the agent published.
"""

from __future__ import annotations

import csv
import io
import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from agent import wire
from agent.config import parse_agent_config
from agent.errors import ConfigError
from agent.wire import telemetry_pb2 as pb
from tests.harness.broker import Broker
from tests.harness.drive import ROOT, agent_config
from tests.harness.processes import cli, truth
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.slow
CITY = ROOT / "replay_logs" / "city.log.gz"
WATCHED = ["DriveSpeed.VehicleSpeed", "BatteryState.StateOfCharge"]


def with_status(config: Path, signals: list[str]) -> Path:
    config.write_text(config.read_text() + f"status: {{signals: [{', '.join(signals)}]}}\n")
    return config


def test_status_signals_must_be_sampled_named_by_key(tmp_path: Path) -> None:
    text = agent_config(tmp_path, 1883, "STATUS0000000001", CITY).read_text()
    with pytest.raises(ConfigError) as error:
        parse_agent_config(text + "status: {signals: [DriveSpeed.VehicleSped]}\n", "a.yaml", tmp_path)
    assert "status.signals[0]" in str(error.value) and "did you mean 'DriveSpeed.VehicleSpeed'" in str(
        error.value
    )
    many = ", ".join(f"M.S{i}" for i in range(17))
    with pytest.raises(ConfigError, match=r"status\.signals.*at most 16"):
        parse_agent_config(text + f"status: {{signals: [{many}]}}\n", "a.yaml", tmp_path)
    assert parse_agent_config(text, "a.yaml", tmp_path).status.signals == ()


def statuses(port: int, vin: str) -> tuple[paho.Client, list[pb.Status], threading.Event]:
    seen: list[pb.Status] = []
    subscribed = threading.Event()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, message: seen.append(wire.decode_status(message.payload))
    client.on_subscribe = lambda *_args: subscribed.set()
    client.on_connect = lambda c, *_args: c.subscribe(f"fleet/{vin}/status", qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client, seen, subscribed


@pytest.mark.parametrize("signals", [WATCHED, []])
def test_replay_status_carries_the_last_sampled_values(
    broker: Broker, receiver: Path, tmp_path: Path, signals: list[str]
) -> None:
    vin = f"STATUS00000000{len(signals):02d}"
    config = with_status(agent_config(tmp_path, broker.port, vin, CITY), signals)
    client, seen, subscribed = statuses(broker.port, vin)
    try:
        wait_for(subscribed.is_set, 10, "the subscription")
        result = cli("agent.cli", "replay", str(CITY), "--config", str(config))
        assert result.returncode == 0, result.stderr
        wait_for(lambda: any(s.state == "OFFLINE" for s in seen), 10, "the will's OFFLINE")
    finally:
        client.loop_stop()
        client.disconnect()
    last = [s for s in seen if s.state != "OFFLINE"][-1]
    if not signals:
        assert len(last.latest) == 0
        return
    rows = list(csv.DictReader(io.StringIO(truth(CITY))))
    for name in signals:
        row = [r for r in rows if r[name] != ""][-1]  # the last tick at which it was present
        (entry,) = [e for e in last.latest if e.name == name]
        assert (entry.value, entry.at) == (float(row[name]), float(row["timestamp"]))
    assert [e.name for e in last.latest] == signals
    assert last.drain_eta_known and last.drain_eta_s >= 0
