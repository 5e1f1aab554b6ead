"""The broker is the wall: a real Mosquitto running what ``edge-receiver broker-config`` generates.

Every forbidden case has an allowed twin on the same broker, so a silent or broken broker fails: what
must arrive is waited for, and "nothing arrives" is judged after an allowed sentinel, published later on
the same path, has arrived (Mosquitto delivers to one client in order). The checks are functions that
return what leaked; ``test_the_checks_catch_a_loosened_acl`` runs them against a loosened ACL and
expects each to report the leak, so none of them passes vacuously.
"""

from __future__ import annotations

import datetime
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from agent.service import mqtt
from agent.service.mqtt import MqttConfig
from receiver import pki
from tests.harness.broker import SecureBroker, require_mosquitto, serving

TIMEOUT = 10.0
A, B = "VIN-A", "VIN-B"


class Client:
    """One MQTT v5 client over TLS; paho's thread records, the test's thread waits on :attr:`changed`."""

    def __init__(
        self, broker: SecureBroker, cert: tuple[Path, Path] | None, client_id: str = "", tls: bool = True
    ) -> None:
        self.changed = threading.Condition()
        self.messages: list[tuple[str, bytes]] = []
        self.outcome: str | None = None  # "connected" or why not
        self.disconnects = 0
        self.acked: dict[int, str] = {}  # mid -> PUBACK reason
        self.granted: dict[int, list[str]] = {}  # mid -> SUBACK reasons
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.reconnect_delay_set(60, 60)  # one attempt is what a test judges
        if tls:
            certfile, keyfile = (str(cert[0]), str(cert[1])) if cert else (None, None)
            self.client.tls_set(
                str(broker.pki / "ca.crt"), certfile, keyfile, tls_version=ssl.PROTOCOL_TLS_CLIENT
            )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda _c, _u, m: self._record(self.messages.append, (m.topic, m.payload))
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self._record(
            self.acked.__setitem__, mid, str(rc)
        )
        self.client.on_subscribe = lambda _c, _u, mid, rcs, _p: self._record(
            self.granted.__setitem__, mid, [str(rc) for rc in rcs]
        )
        try:
            self.client.connect("127.0.0.1", broker.port, keepalive=30)
        except (OSError, ssl.SSLError) as error:  # the handshake failed in connect()
            self.outcome = f"handshake: {error}"
            return
        self.client.loop_start()

    def _record(self, action: Callable[..., None], *args: Any) -> None:
        with self.changed:
            action(*args)
            self.changed.notify_all()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._record(
            lambda: setattr(self, "outcome", "refused: " + str(reason) if reason.is_failure else "connected")
        )

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        def note() -> None:
            self.disconnects += 1
            if self.outcome is None:
                self.outcome = f"disconnected: {reason}"

        self._record(note)

    def wait(self, condition: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
        with self.changed:
            return self.changed.wait_for(condition, timeout)

    def connected(self) -> bool:
        self.wait(lambda: self.outcome is not None)
        return self.outcome == "connected"

    def subscribe(self, *topics: str) -> None:
        for topic in topics:
            mid = self.client.subscribe(topic, qos=1)[1]
            assert self.wait(lambda: mid in self.granted), f"no SUBACK for {topic}"  # noqa: B023

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> str:
        """Publish at QoS 1 and return the PUBACK's reason (the broker has routed it by then)."""
        mid = self.client.publish(topic, payload, qos=1, retain=retain).mid
        assert self.wait(lambda: mid in self.acked), f"no PUBACK for {topic}"
        return self.acked[mid]

    def got(self, topic: str, payload: bytes) -> bool:
        return self.wait(lambda: (topic, payload) in self.messages)

    def payloads(self) -> set[bytes]:
        with self.changed:
            return {payload for _, payload in self.messages}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki") / "pki"
    pki.init(root, ["localhost"], ["127.0.0.1"])
    for vin in (A, B):
        pki.issue(root, vin)
    return root


@pytest.fixture(scope="module")
def broker(fleet: Path) -> Iterator[SecureBroker]:
    require_mosquitto()
    with serving(SecureBroker(fleet)) as instance:
        yield instance


@pytest.fixture
def clients(broker: SecureBroker) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(
        name: str | None,
        receiver: bool = False,
        client_id: str = "",
        connect: bool = True,
        cert: tuple[Path, Path] | None = None,
        tls: bool = True,
    ) -> Client:
        if cert is None and name is not None:
            cert = pki.Pki(broker.pki).client(name, receiver)
        client = Client(broker, cert, client_id, tls)
        made.append(client)
        assert not connect or client.connected(), f"{name}: {client.outcome}"
        return client

    yield make
    for client in made:
        client.close()


# --- the checks: each returns what leaked (empty = the wall held) --------------------------------------


def forged_publishes(make: Callable[..., Client], tag: bytes) -> set[bytes]:
    """B publishes on A's telemetry, ack and status; A's receiver and A itself must receive none of it."""
    receiver, a, b = make("receiver", receiver=True), make(A), make(B)
    receiver.subscribe("$share/receivers/fleet/+/telemetry", "fleet/+/status", "fleet/+/ack")
    a.subscribe(f"fleet/{A}/ack")
    for topic in (f"fleet/{A}/telemetry", f"fleet/{A}/ack", f"fleet/{A}/status"):
        b.publish(topic, f"forged {topic} ".encode() + tag)
    assert a.publish(f"fleet/{A}/telemetry", b"sentinel " + tag) == "Success"
    assert a.publish(f"fleet/{A}/status", b"status " + tag) == "Success"
    assert receiver.publish(f"fleet/{A}/ack", b"ack " + tag) == "Success"
    assert receiver.got(f"fleet/{A}/telemetry", b"sentinel " + tag)
    assert receiver.got(f"fleet/{A}/status", b"status " + tag)
    assert a.got(f"fleet/{A}/ack", b"ack " + tag)
    assert receiver.got(f"fleet/{A}/ack", b"ack " + tag)  # what `serve` hears as the commit notice
    return {p for p in receiver.payloads() | a.payloads() if p.startswith(b"forged")}


def eavesdropping(make: Callable[..., Client], tag: bytes) -> set[bytes]:
    """B subscribes to A's telemetry, acks and status (also by wildcard); B must receive only its own ack."""
    receiver, a, b = make("receiver", receiver=True), make(A), make(B)
    receiver.subscribe("$share/receivers/fleet/+/telemetry")
    a.subscribe(f"fleet/{A}/ack")
    b.subscribe(f"fleet/{A}/telemetry", f"fleet/{A}/ack", f"fleet/{A}/status", "fleet/+/telemetry", "fleet/#")
    b.subscribe(f"fleet/{B}/ack")
    assert a.publish(f"fleet/{A}/telemetry", b"secret telemetry " + tag) == "Success"
    assert a.publish(f"fleet/{A}/status", b"secret status " + tag, retain=True) == "Success"
    assert receiver.publish(f"fleet/{A}/ack", b"secret ack " + tag) == "Success"
    assert receiver.got(f"fleet/{A}/telemetry", b"secret telemetry " + tag)
    assert a.got(f"fleet/{A}/ack", b"secret ack " + tag)
    assert receiver.publish(f"fleet/{B}/ack", b"sentinel " + tag) == "Success"  # after the others
    assert b.got(f"fleet/{B}/ack", b"sentinel " + tag)
    late = make(B, client_id="late")  # a retained status is checked too, when a subscription is made
    late.subscribe(f"fleet/{A}/status", f"fleet/{B}/ack")
    assert receiver.publish(f"fleet/{B}/ack", b"late sentinel " + tag) == "Success"
    assert late.got(f"fleet/{B}/ack", b"late sentinel " + tag)
    return {p for p in b.payloads() | late.payloads() if p.startswith(b"secret")}


def receiver_forgeries(make: Callable[..., Client], tag: bytes) -> set[bytes]:
    """A receiver may ack, not speak for a vehicle: its publish on A's telemetry reaches nobody."""
    receiver, a = make("receiver", receiver=True), make(A)
    receiver.subscribe("$share/receivers/fleet/+/telemetry")
    receiver.publish(f"fleet/{A}/telemetry", b"forged " + tag)
    assert a.publish(f"fleet/{A}/telemetry", b"sentinel " + tag) == "Success"
    assert receiver.got(f"fleet/{A}/telemetry", b"sentinel " + tag)
    return {p for p in receiver.payloads() if p.startswith(b"forged")}


CHECKS = (forged_publishes, eavesdropping, receiver_forgeries)


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_the_wall_holds(check: Callable[..., set[bytes]], clients: Callable[..., Client]) -> None:
    assert check(clients, check.__name__.encode()) == set()


def test_a_forged_publish_is_answered_not_authorized(clients: Callable[..., Client]) -> None:
    receiver, b = clients("receiver", receiver=True), clients(B)
    receiver.subscribe("$share/receivers/fleet/+/telemetry", "fleet/+/ack")
    assert b.publish(f"fleet/{A}/ack", b"forged") == "Not authorized"
    assert b.publish(f"fleet/{A}/telemetry", b"forged") == "Not authorized"
    assert b.publish(f"fleet/{B}/telemetry", b"own") == "Success"


def test_the_checks_catch_a_loosened_acl(fleet: Path, tmp_path: Path) -> None:
    loose = SecureBroker(fleet)
    acl = loose.workdir / "tls" / "acl"
    acl.write_text(acl.read_text() + "pattern readwrite fleet/#\n")  # what a careless edit might add
    loose.start()
    made: list[Client] = []

    def make(name: str, receiver: bool = False, client_id: str = "") -> Client:
        made.append(Client(loose, pki.Pki(fleet).client(name, receiver), client_id))
        assert made[-1].connected()
        return made[-1]

    try:
        for check in CHECKS:
            assert check(make, b"loose") != set(), f"{check.__name__} did not notice the loosened ACL"
    finally:
        for client in made:
            client.close()
        loose.close()


def test_only_the_fleets_certificates_connect(
    broker: SecureBroker, clients: Callable[..., Client], tmp_path: Path
) -> None:
    assert clients(A).connected()  # the control: the broker is up and accepts a vehicle
    refused = {
        "anonymous over TLS": clients(None, connect=False),
        "anonymous without TLS": clients(None, connect=False, tls=False),
        "self-signed with A's VIN": clients(None, connect=False, cert=_self_signed(tmp_path, A)),
    }
    stranger = pki.init(tmp_path / "other", ["localhost"], ["127.0.0.1"])  # a CA of the same name
    pki.issue(stranger.root, A)
    refused["another CA's certificate for A"] = clients(None, connect=False, cert=stranger.client(A))
    ours = pki.Pki(broker.pki)
    refused["the broker's own (server) certificate"] = clients(
        None, connect=False, cert=(ours.broker_cert, ours.broker_key)
    )
    assert {case: client.connected() for case, client in refused.items()} == dict.fromkeys(refused, False)
    assert all(client.outcome for client in refused.values())  # each was told, none just timed out


def test_a_revoked_certificate_is_refused_after_a_reload(
    broker: SecureBroker, clients: Callable[..., Client], tmp_path: Path
) -> None:
    pki.issue(broker.pki, "VIN-C")
    assert clients("VIN-C").connected()
    stolen = tmp_path / "VIN-C.crt", tmp_path / "VIN-C.key"  # what a stolen vehicle still holds
    for source, copy in zip(pki.Pki(broker.pki).client("VIN-C"), stolen, strict=True):
        copy.write_bytes(source.read_bytes())
    pki.revoke(broker.pki, "VIN-C")
    broker.reload()
    assert not clients("VIN-C", connect=False, cert=stolen).connected()
    assert clients(A).connected()  # the others still connect


def test_a_vehicle_cannot_take_over_another_vehicles_session(clients: Callable[..., Client]) -> None:
    receiver, a = clients("receiver", receiver=True), clients(A, client_id=f"edge-agent-{A}")
    receiver.subscribe("$share/receivers/fleet/+/telemetry")
    clients(B, client_id=f"edge-agent-{A}")  # the broker makes its client id its CN: B
    assert a.publish(f"fleet/{A}/telemetry", b"still here") == "Success"
    assert receiver.got(f"fleet/{A}/telemetry", b"still here") and a.disconnects == 0


def test_an_agent_client_built_from_its_config_connects(
    broker: SecureBroker, clients: Callable[..., Client]
) -> None:
    receiver = clients("receiver", receiver=True)
    receiver.subscribe("$share/receivers/fleet/+/telemetry")
    cert, key = pki.Pki(broker.pki).client(A)
    config = MqttConfig(
        host="127.0.0.1",
        port=broker.port,
        tls=True,
        ca_file=broker.pki / "ca.crt",
        cert_file=cert,
        key_file=key,
    )
    client = mqtt.make_client(config, f"edge-agent-{A}", persistent=True)
    connected = threading.Event()
    client.on_connect = lambda _c, _u, _f, reason, _p: None if reason.is_failure else connected.set()
    mqtt.connect(client, config, persistent=True)
    try:
        assert connected.wait(TIMEOUT)
        client.publish(f"fleet/{A}/telemetry", b"from the agent", qos=1).wait_for_publish(TIMEOUT)
        assert receiver.got(f"fleet/{A}/telemetry", b"from the agent")
    finally:
        client.disconnect()
        client.loop_stop()


def test_the_receiver_service_subscribes_through_the_secure_broker(
    broker: SecureBroker, clients: Callable[..., Client], tmp_path: Path
) -> None:
    from receiver.config import ReceiverConfig, ReceiverMqttConfig, StoreConfig
    from receiver.ingest import Receiver

    store = pki.Pki(broker.pki)
    cert, key = store.client("receiver", receiver=True)
    settings = ReceiverMqttConfig(
        host="127.0.0.1", port=broker.port, tls=True, ca_file=store.ca_cert, cert_file=cert, key_file=key
    )
    receiver = Receiver(ReceiverConfig(mqtt=settings, store=StoreConfig(tmp_path / "store.sqlite")))
    receiver.start()
    try:
        assert receiver.wait_subscribed(TIMEOUT)
        # A PUBACK says "Success" only when a subscription matched: the receiver's shared one.
        assert clients(A).publish(f"fleet/{A}/telemetry", b"not a batch") == "Success"
    finally:
        receiver.stop()


def _self_signed(folder: Path, cn: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    builder = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
    builder = builder.serial_number(x509.random_serial_number()).not_valid_before(now)
    cert = builder.not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    cert_path, key_path = folder / "self.crt", folder / "self.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_a_receiver_may_publish_alerts_and_a_vehicle_may_not(clients: Callable[..., Client]) -> None:
    receiver, b = clients("receiver", receiver=True), clients(B)
    receiver.subscribe("fleet/+/alerts")  # what serve does, with a receiver certificate of its own
    b.subscribe("fleet/+/alerts", f"fleet/{B}/ack")
    assert b.publish(f"fleet/{A}/alerts", b"forged") == "Not authorized"
    assert b.publish(f"fleet/{B}/alerts", b"forged") == "Not authorized"
    assert receiver.publish(f"fleet/{A}/alerts", b"alert") == "Success"
    assert receiver.got(f"fleet/{A}/alerts", b"alert")
    assert receiver.publish(f"fleet/{B}/ack", b"sentinel") == "Success"
    assert b.got(f"fleet/{B}/ack", b"sentinel")
    assert not b.payloads() - {b"sentinel"}  # a vehicle hears no one's alerts
