"""``edge-receiver pki``: the CA, the broker's and clients' certificates, revocation, and the CLI's errors."""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from receiver import pki
from receiver.cli import main


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    root = tmp_path / "pki"
    pki.init(root, ["broker.example"], ["127.0.0.1", "::1"])
    return root


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0)  # the keys must be 0600 whatever the umask
    try:
        yield
    finally:
        os.umask(previous)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def purposes(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_makes_a_ca_the_brokers_and_a_receivers_certificate(tmp_path: Path, open_umask: None) -> None:
    store = pki.init(tmp_path / "pki", ["broker.example", "localhost"], ["127.0.0.1", "::1"])
    ca = load(store.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    broker = load(store.broker_cert)
    broker.verify_directly_issued_by(ca)
    sans = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["broker.example", "localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert purposes(broker) == [ExtendedKeyUsageOID.SERVER_AUTH]
    receiver = load(store.client("receiver", receiver=True)[0])
    receiver.verify_directly_issued_by(ca)
    assert cn(receiver) == "receiver" and purposes(receiver) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert (
        store.receivers() == ["receiver"] and store.vehicles() == [] and pki.revoked_serials(store) == set()
    )
    keys = [store.ca_key, store.broker_key, store.client("receiver", receiver=True)[1]]
    assert [mode(key) for key in keys] == [0o600] * 3
    assert mode(store.root) == 0o700 and mode(store.root / "receivers") == 0o700


def test_init_refuses_to_overwrite_a_ca(fleet: Path) -> None:
    before = (fleet / "ca.key").read_bytes()
    with pytest.raises(pki.PkiError, match="already holds a CA"):
        pki.init(fleet, ["localhost"], [])
    assert (fleet / "ca.key").read_bytes() == before


def test_init_checks_its_names(tmp_path: Path) -> None:
    with pytest.raises(pki.PkiError, match="--address"):
        pki.init(tmp_path / "a", [], ["not-an-ip"])
    with pytest.raises(pki.PkiError, match="at least one"):
        pki.init(tmp_path / "b", [], [])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_vehicles_certificate_names_its_vin(fleet: Path, open_umask: None) -> None:
    store = pki.issue(fleet, "5YJ3E1EA0KF000001")
    cert_path, key_path = store.client("5YJ3E1EA0KF000001")
    cert = load(cert_path)
    cert.verify_directly_issued_by(load(store.ca_cert))
    assert cn(cert) == "5YJ3E1EA0KF000001" and purposes(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert mode(key_path) == 0o600 and mode(cert_path.parent) == 0o700
    assert store.vehicles() == ["5YJ3E1EA0KF000001"]


@pytest.mark.parametrize(
    "vin", ["", "A/B", "A+", "#", "A B", "x" * 33, "VIN\n", "receiver", "Receiver-2", "ä"]
)
def test_a_vin_must_be_one_topic_level_and_no_receivers_name(fleet: Path, vin: str) -> None:
    with pytest.raises(pki.PkiError, match="VIN"):
        pki.issue(fleet, vin)
    assert pki.Pki(fleet).vehicles() == []


def test_receivers_have_their_own_names(fleet: Path) -> None:
    pki.issue(fleet, "receiver-2", receiver=True)
    assert pki.Pki(fleet).receivers() == ["receiver", "receiver-2"]
    for name in ("VIN-A", "receiver-", "receiver-a/b", "receiver-a+b", "receiver-" + "x" * 33):
        with pytest.raises(pki.PkiError, match="receiver"):
            pki.issue(fleet, name, receiver=True)


def test_issuing_twice_is_refused_and_replace_rotates(fleet: Path) -> None:
    store = pki.issue(fleet, "VIN-A")
    old = load(store.client("VIN-A")[0])
    with pytest.raises(pki.PkiError, match="already issued"):
        pki.issue(fleet, "VIN-A")
    pki.issue(fleet, "VIN-A", replace=True)
    new = load(store.client("VIN-A")[0])
    assert new.serial_number != old.serial_number
    assert pki.revoked_serials(store) == {old.serial_number}


def test_revoke_lists_the_certificate_in_the_crl_and_deletes_its_key(fleet: Path) -> None:
    store = pki.issue(fleet, "VIN-A")
    pki.issue(fleet, "VIN-B")
    cert_path, key_path = store.client("VIN-A")
    serial = load(cert_path).serial_number
    assert pki.revoke(fleet, "VIN-A") == serial
    assert not cert_path.exists() and not key_path.exists()
    assert (fleet / "revoked" / f"VIN-A-{serial:x}.crt").exists()
    crl = x509.load_pem_x509_crl(store.crl.read_bytes())
    assert crl.is_signature_valid(load(store.ca_cert).public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    assert store.vehicles() == ["VIN-B"]
    pki.issue(fleet, "VIN-A")  # the VIN may be enrolled again, with a new key
    with pytest.raises(pki.PkiError, match="no such certificate"):
        pki.revoke(fleet, "VIN-Z")


def test_issue_needs_a_pki(tmp_path: Path) -> None:
    with pytest.raises(pki.PkiError, match="pki init"):
        pki.issue(tmp_path, "VIN-A")


def test_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "pki"
    assert (
        main(["pki", "init", "--dir", str(root), "--name", "broker.example", "--address", "127.0.0.1"]) == 0
    )
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"{root}: CA, CRL, broker (broker.example, 127.0.0.1), receiver"
    assert f"{root}/ca.key" in out.splitlines()
    assert main(["pki", "issue", "--dir", str(root), "VIN-A"]) == 0
    assert capsys.readouterr().out == (
        f"{root}/vehicles/VIN-A.crt\n{root}/vehicles/VIN-A.key\n{root}/vehicles/VIN-A.auth-key\n"
    )
    assert main(["pki", "issue", "--dir", str(root), "--receiver", "receiver-2"]) == 0
    capsys.readouterr()
    assert main(["pki", "revoke", "--dir", str(root), "VIN-A"]) == 0
    assert capsys.readouterr().out.startswith("VIN-A: revoked (serial ")
    assert main(["pki", "list", "--dir", str(root)]) == 0
    assert capsys.readouterr().out == "receivers: receiver receiver-2\nvehicles: -\nrevoked: 1\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["init"], "already holds a CA"),
        (["issue", "A/B"], "VIN 'A/B': expected 1–32 characters"),
        (["issue", "--days", "0", "X"], "--days 0: expected at least 1"),
        (["revoke", "NOPE"], "no such certificate to revoke"),
    ],
)
def test_cli_errors_are_one_line(
    fleet: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["pki", argv[0], "--dir", str(fleet), *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-receiver pki: error: ") and message in err and err.count("\n") == 1


def test_default_broker_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pki", "init", "--dir", str(tmp_path / "pki")]) == 0
    assert "broker (localhost, 127.0.0.1, ::1)" in capsys.readouterr().out
