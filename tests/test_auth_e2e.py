"""The attacks of issue 9 end to end, on an open broker (no TLS, no ACL): the messages' MACs alone must hold.

Real processes (``edge-agent replay``, ``edge-receiver run``) and a real Mosquitto; the test plays the
attacker with its own paho client or with a real agent that has the wrong key, or none. Each test fails if
the MAC check on its side is removed: a forged ack would delete chunks that the receiver never stored (the
export would miss them), a forged batch would be stored first (the export would show its values).
"""

from __future__ import annotations

import json
import os
import queue
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent import wire
from agent.sim import simulate, write_log
from agent.wire import auth
from agent.wire import telemetry_pb2 as pb
from agent.wire.messages import envelope
from tests.harness.broker import Broker
from tests.harness.drive import DBC, agent_config
from tests.harness.processes import cli, exported, receiver_yaml, running_receiver, start_replay, truth
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.slow

VIN = "AUTH000000000001"
OTHER = "AUTH000000000002"


def key_file(path: Path, key: bytes) -> Path:
    path.write_bytes(key)
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def drives(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The vehicle's real drive, and an attacker's: the same ticks, other values."""
    folder = tmp_path_factory.mktemp("drives")
    real, forged = folder / "real.log.gz", folder / "forged.log.gz"
    write_log(real, simulate("city", 20.0, seed=21, dbc_path=DBC))
    write_log(forged, simulate("aggressive", 20.0, seed=99, dbc_path=DBC))
    return real, forged


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    fleet = os.urandom(auth.KEY_BYTES)
    return {
        "fleet": key_file(tmp_path / "fleet.key", fleet),
        VIN: key_file(tmp_path / f"{VIN}.auth-key", auth.derive_key(fleet, VIN)),
        OTHER: key_file(tmp_path / f"{OTHER}.auth-key", auth.derive_key(fleet, OTHER)),
    }


@pytest.fixture
def receiver_config(broker: Broker, tmp_path: Path, keys: dict[str, Path]) -> Path:
    security = f"security: {{fleet_key_file: {keys['fleet']}}}\n"
    return receiver_yaml(tmp_path / "receiver.yaml", broker.port, tmp_path / "store.sqlite", security)


class Attacker:
    """Anyone on the open broker: reads the vehicle's telemetry, publishes on its ack topic."""

    def __init__(self, broker: Broker) -> None:
        self.batches: queue.Queue[bytes] = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = lambda _c, _u, message: self.batches.put(bytes(message.payload))
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.client.subscribe(f"fleet/{VIN}/telemetry", qos=1)

    def forge_acks(self, boot: bytes, wrong_key: bytes) -> None:
        """Every ack an attacker can make for ``boot``'s seqs 0..10^6: unsigned, and signed with another key."""
        ack = pb.Ack(vin=VIN)
        ack.stored.add(boot_id=boot, first_seq=0, last_seq=10**6)
        unsigned = envelope(pb.BODY_KIND_ACK, ack.SerializeToString(), compress=False)
        for payload in (unsigned, auth.sign(unsigned, wrong_key, VIN), auth.sign(unsigned, wrong_key, OTHER)):
            self.client.publish(f"fleet/{VIN}/ack", payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_forged_acks_with_the_receiver_down_delete_nothing(
    broker: Broker, receiver_config: Path, keys: dict[str, Path], drives: tuple[Path, Path], tmp_path: Path
) -> None:
    real, _ = drives
    config = agent_config(tmp_path, broker.port, VIN, real, auth_key=keys[VIN])
    report, log = tmp_path / "report.json", tmp_path / "agent.log"
    attacker = Attacker(broker)
    agent = start_replay(real, config, log, "--report", str(report), "--drain-timeout", "90")
    try:
        boot = wire.decode_batch(attacker.batches.get(timeout=30)).chunks[0].id[0]  # boot ids travel in clear
        attacker.forge_acks(boot, keys[OTHER].read_bytes())
        wait_for(lambda: log.read_text().count('"event": "ack_rejected"') >= 1, timeout=30)
        with running_receiver(receiver_config, tmp_path / "receiver.log"):
            assert agent.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        attacker.close()
        if agent.poll() is None:
            agent.kill()
    figures = json.loads(report.read_text())
    assert figures["complete"] and figures["chunks_acked"] == figures["chunks_committed"]
    assert exported(tmp_path / "store.sqlite", VIN) == truth(real)  # nothing was deleted unstored


def test_forged_and_squatting_batches_are_refused_and_the_real_data_is_stored_exactly(
    broker: Broker, receiver_config: Path, keys: dict[str, Path], drives: tuple[Path, Path], tmp_path: Path
) -> None:
    real, forged = drives
    receiver_log = tmp_path / "receiver.log"
    attackers = {  # each claims VIN: its own random boot, the real drive's ticks
        "unsigned": agent_config(tmp_path, broker.port, VIN, forged, name="unsigned"),
        "other-key": agent_config(tmp_path, broker.port, VIN, forged, name="other", auth_key=keys[OTHER]),
        "1-hz": agent_config(tmp_path, broker.port, VIN, forged, name="slow", rate_hz=1),
    }
    with running_receiver(receiver_config, receiver_log):
        for name, config in attackers.items():
            result = cli("agent.cli", "replay", str(forged), "--config", str(config), "--drain-timeout", "2")
            assert result.returncode == 1, (name, result.stderr[-2000:])  # never acked
        rejected = receiver_log.read_text().count('"event": "batch_rejected"')
        assert rejected >= len(attackers), receiver_log.read_text()[-3000:]
        config = agent_config(tmp_path, broker.port, VIN, real, auth_key=keys[VIN])
        result = cli("agent.cli", "replay", str(real), "--config", str(config))
        assert result.returncode == 0, result.stderr[-3000:]  # the control: the vehicle's own key is stored
    assert "bad or missing MAC" in receiver_log.read_text()
    assert exported(tmp_path / "store.sqlite", VIN) == truth(real)
