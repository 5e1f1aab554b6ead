"""What ``serve`` hears from the broker (:mod:`receiver.fleet`): statuses trusted only with the vehicle's
MAC when the fleet key is set, a last will that keeps what the vehicle last reported, acks as commit notices."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from agent import wire
from agent.service.mqtt import offline_status
from agent.wire import auth
from agent.wire import telemetry_pb2 as pb
from receiver.config import ReceiverConfig, SecurityConfig
from receiver.fleet import FleetWatch

VIN = "KMHFLEET000000001"


def message(topic: str, payload: bytes, retain: bool = False) -> paho.MQTTMessage:
    out = paho.MQTTMessage(topic=topic.encode())
    out.payload, out.retain = payload, retain
    return out


def status(state: str = "ONLINE") -> bytes:
    latest = [pb.LatestValue(name="DriveSpeed.VehicleSpeed", value=42.5, at=1_700_000_010.02)]
    return wire.encode_status(pb.Status(vin=VIN, state=state, updated_at=1_700_000_011.0, latest=latest))


def watch(tmp_path: Path, key: bytes | None) -> tuple[FleetWatch, list[tuple[str, str, Any]]]:
    security = SecurityConfig()
    if key is not None:
        (tmp_path / "fleet.key").write_bytes(key)
        security = SecurityConfig(fleet_key_file=tmp_path / "fleet.key")
    events: list[tuple[str, str, Any]] = []
    fleet = FleetWatch(ReceiverConfig(security=security), lambda *event: events.append(event))
    return fleet, events


def test_with_a_fleet_key_only_a_signed_status_is_believed(tmp_path: Path) -> None:
    key = os.urandom(32)
    fleet, events = watch(tmp_path, key)
    fleet._on_message(fleet._client, None, message(f"fleet/{VIN}/status", status()))
    assert VIN not in fleet.statuses and fleet.statuses_rejected == 1 and events == []
    signed = auth.sign(status(), auth.derive_key(key, VIN), VIN)
    fleet._on_message(fleet._client, None, message(f"fleet/{VIN}/status", signed))
    assert fleet.statuses[VIN].online and events[0][:2] == ("status", VIN)


def test_a_last_will_keeps_the_last_reported_present(tmp_path: Path) -> None:
    fleet, _ = watch(tmp_path, None)
    fleet._on_message(fleet._client, None, message(f"fleet/{VIN}/status", status()))
    fleet._on_message(fleet._client, None, message(f"fleet/{VIN}/status", offline_status(VIN), retain=True))
    now = fleet.statuses[VIN]
    assert (now.state, now.online, now.last_seen) == ("OFFLINE", False, 1_700_000_011.0)
    assert now.latest == {"DriveSpeed.VehicleSpeed": {"value": 42.5, "at": 1_700_000_010.02}}


def test_a_fresh_ack_is_a_commit_notice_and_a_retained_one_is_not(tmp_path: Path) -> None:
    fleet, events = watch(tmp_path, None)
    fleet._on_message(fleet._client, None, message(f"fleet/{VIN}/ack", b"planted", retain=True))
    fleet._on_message(fleet._client, None, message(f"fleet/{VIN}/ack", b"any"))
    fleet._on_message(fleet._client, None, message(f"other/{VIN}/ack", b"any"))
    assert events == [("commit", VIN, None)] and fleet.acks_seen == 1
