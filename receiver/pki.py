"""A small PKI for a fleet: one CA, the broker's server certificate, receiver and vehicle client certificates,
and the CA's certificate revocation list (CRL), all through the ``cryptography`` library.

A PKI is a directory (:class:`Pki` names every file in it)::

    ca.crt  ca.key  crl.pem            the CA (keep ca.key offline), its CRL (the broker's crlfile)
    fleet.key                          32 random bytes: the receivers' key to every vehicle's MAC key
    broker.crt  broker.key             the broker's server certificate (SANs: the names and addresses given)
    receivers/NAME.crt  NAME.key       a receiver's client certificate, CN "receiver" or "receiver-<word>"
    vehicles/VIN.crt  VIN.key          a vehicle's client certificate, CN = its VIN (one MQTT topic level)
    vehicles/VIN.auth-key              its MAC key (:func:`agent.wire.auth.derive_key` of fleet.key)
    revoked/NAME-SERIAL.crt            certificates revoked (their keys are deleted)

The broker uses the CN of a client certificate as the MQTT user name (``use_identity_as_username``), so the
CN is the identity that the ACL (:mod:`receiver.broker_config`) grants rights to: a VIN may never look like
a receiver's name. Keys are EC P-256, written 0600 with ``O_EXCL`` (never world-readable, never
overwritten); the directories holding keys are 0700. Functions run on the caller's thread and block on
file I/O only; the caller owns the directory (no locking against a concurrent ``pki`` run).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.errors import EdgeError
from agent.wire import auth

VIN_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")  # the agent's vin rule: one topic level, no wildcards
RECEIVER_PATTERN = re.compile(r"receiver(-[A-Za-z0-9_-]{1,32})?")
CA_DAYS, LEAF_DAYS = 3650, 825
BACKDATE = datetime.timedelta(hours=1)  # tolerate a peer's clock running a little behind
T = TypeVar("T")


class PkiError(EdgeError):
    """A PKI directory is missing, incomplete, or would be overwritten; or a name is invalid."""


@dataclass(frozen=True)
class Pki:
    """The files of one PKI directory (nothing is read until asked)."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    @property
    def broker_cert(self) -> Path:
        return self.root / "broker.crt"

    @property
    def broker_key(self) -> Path:
        return self.root / "broker.key"

    @property
    def fleet_key(self) -> Path:
        return self.root / "fleet.key"

    def auth_key(self, vin: str) -> Path:
        """A vehicle's MAC key file (the agent's ``mqtt.auth_key_file``)."""
        return self.root / "vehicles" / f"{vin}.auth-key"

    def client(self, name: str, receiver: bool = False) -> tuple[Path, Path]:
        """The certificate and key files of a vehicle (or a receiver)."""
        folder = self.root / ("receivers" if receiver else "vehicles")
        return folder / f"{name}.crt", folder / f"{name}.key"

    def receivers(self) -> list[str]:
        """The names (CNs) of the receivers holding a certificate, sorted."""
        return sorted(path.stem for path in (self.root / "receivers").glob("*.crt"))

    def vehicles(self) -> list[str]:
        return sorted(path.stem for path in (self.root / "vehicles").glob("*.crt"))

    def require(self) -> None:
        """Raise :class:`PkiError` unless the CA, its CRL and the broker's certificate are all there."""
        for path in (self.ca_cert, self.ca_key, self.crl, self.broker_cert, self.broker_key):
            if not path.is_file():
                raise PkiError(f"{path}: not found (is {self.root} a PKI made by `edge-receiver pki init`?)")


def check_vin(vin: str) -> str:
    if not VIN_PATTERN.fullmatch(vin):
        raise PkiError(f"VIN {vin!r}: expected 1–32 characters of A-Z, a-z, 0-9, '_' or '-'")
    if vin.lower().startswith("receiver"):
        raise PkiError(f"VIN {vin!r}: names starting with 'receiver' are receivers' (use --receiver)")
    return vin


def check_receiver(name: str) -> str:
    if not RECEIVER_PATTERN.fullmatch(name):
        raise PkiError(
            f"receiver {name!r}: expected 'receiver' or 'receiver-' and 1–32 of A-Z, a-z, 0-9, '_', '-'"
        )
    return name


def init(root: Path, names: list[str], addresses: list[str], days: int = LEAF_DAYS) -> Pki:
    """Create a CA, its (empty) CRL, the broker's certificate for ``names`` and ``addresses`` and the
    receiver certificate "receiver". Refuses a directory that already holds a CA."""
    pki = Pki(root)
    if pki.ca_cert.exists() or pki.ca_key.exists():
        raise PkiError(f"{root}: already holds a CA ({pki.ca_cert.name}); refusing to overwrite it")
    try:
        sans: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
        sans += [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
    except ValueError as error:
        raise PkiError(f"--name/--address: {error}") from error
    if not sans:
        raise PkiError("the broker's certificate needs at least one --name or --address")
    _mkdir(root)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    subject = _name("edge fleet CA")
    ca = _builder(subject, subject, ca_key.public_key(), CA_DAYS)
    ca = ca.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    ca = ca.add_extension(_usage(cert_sign=True), critical=True)
    ca_cert = ca.sign(ca_key, hashes.SHA256())
    _write_key(pki.ca_key, ca_key)
    _write(pki.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_crl(pki, [], ca_cert, ca_key, 1)
    _write(pki.fleet_key, os.urandom(auth.KEY_BYTES), mode=0o600)
    cert, key = _leaf(pki, "broker", days, ExtendedKeyUsageOID.SERVER_AUTH, x509.SubjectAlternativeName(sans))
    _write_key(pki.broker_key, key)
    _write(pki.broker_cert, cert)
    issue(root, "receiver", receiver=True, days=days)
    return pki


def issue(root: Path, name: str, receiver: bool = False, days: int = LEAF_DAYS, replace: bool = False) -> Pki:
    """Issue a client certificate whose CN is ``name`` (a VIN, or a receiver's name with ``receiver``).

    An existing certificate of that name is an error, unless ``replace``: then it is revoked (rotation)."""
    pki = Pki(root)
    pki.require()
    if receiver:
        check_receiver(name)
    else:
        check_vin(name)
    cert_path, key_path = pki.client(name, receiver)
    if cert_path.exists():
        if not replace:
            raise PkiError(f"{cert_path}: already issued (rotate with --replace, or `pki revoke` it first)")
        revoke(root, name, receiver)
    _mkdir(cert_path.parent)
    cert, key = _leaf(pki, name, days, ExtendedKeyUsageOID.CLIENT_AUTH, None)
    _write_key(key_path, key)
    _write(cert_path, cert)
    if not receiver:
        if not pki.fleet_key.exists():  # a PKI made before message authentication: give it a fleet key
            _write(pki.fleet_key, os.urandom(auth.KEY_BYTES), mode=0o600)
        if not pki.auth_key(name).exists():  # derived: the same key whenever the certificate is rotated
            fleet_key = _load(pki.fleet_key, lambda data: data)
            if len(fleet_key) != auth.KEY_BYTES:
                raise PkiError(f"{pki.fleet_key}: {len(fleet_key)} bytes, not a {auth.KEY_BYTES}-byte key")
            _write(pki.auth_key(name), auth.derive_key(fleet_key, name), mode=0o600)
    return pki


def revoke(root: Path, name: str, receiver: bool = False) -> int:
    """Add ``name``'s certificate to the CRL, move it to ``revoked/`` and delete its key; returns its serial.

    The broker refuses it once it has loaded the new ``crl.pem`` (copy it there, then SIGHUP or restart)."""
    pki = Pki(root)
    pki.require()
    cert_path, key_path = pki.client(name, receiver)
    if not cert_path.is_file():
        raise PkiError(f"{cert_path}: no such certificate to revoke")
    cert = _load(cert_path, x509.load_pem_x509_certificate)
    ca_cert, ca_key = _load_ca(pki)
    crl = _load(pki.crl, x509.load_pem_x509_crl)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    revoked = [entry for entry in crl if entry.serial_number != cert.serial_number]
    entry = x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
    revoked.append(entry.revocation_date(_now()).build())
    _write_crl(pki, revoked, ca_cert, ca_key, number + 1)
    _mkdir(pki.root / "revoked")
    os.replace(cert_path, pki.root / "revoked" / f"{name}-{cert.serial_number:x}.crt")
    key_path.unlink(missing_ok=True)
    return cert.serial_number


def revoked_serials(pki: Pki) -> set[int]:
    return {entry.serial_number for entry in _load(pki.crl, x509.load_pem_x509_crl)}


# --- helpers -------------------------------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _usage(cert_sign: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs; a leaf only signs its TLS handshakes (EC keys)."""
    unused = ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement")
    flags = dict.fromkeys((*unused, "encipher_only", "decipher_only"), False)
    return x509.KeyUsage(
        digital_signature=not cert_sign, key_cert_sign=cert_sign, crl_sign=cert_sign, **flags
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _load_ca(pki: Pki) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = _load(pki.ca_cert, x509.load_pem_x509_certificate)
    key = _load(pki.ca_key, lambda data: serialization.load_pem_private_key(data, password=None))
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{pki.ca_key}: not an EC private key")
    return cert, key


def _load(path: Path, loader: Callable[[bytes], T]) -> T:
    try:
        return loader(path.read_bytes())
    except (OSError, ValueError, TypeError) as error:  # unreadable, not PEM, or encrypted
        raise PkiError(f"{path}: cannot load: {error}") from error


def _leaf(
    pki: Pki, name: str, days: int, purpose: x509.ObjectIdentifier, sans: x509.SubjectAlternativeName | None
) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = _load_ca(pki)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _builder(_name(name), ca_cert.subject, key.public_key(), days)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    builder = builder.add_extension(_usage(cert_sign=False), critical=True)
    builder = builder.add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    builder = builder.add_extension(aki, critical=False)
    if sans is not None:
        builder = builder.add_extension(sans, critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), key


def _write_crl(
    pki: Pki,
    revoked: list[x509.RevokedCertificate],
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    number: int,
) -> None:
    builder = x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
    builder = builder.last_update(_now() - BACKDATE).next_update(ca_cert.not_valid_after_utc)
    builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    for entry in revoked:
        builder = builder.add_revoked_certificate(entry)
    pem = builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    temporary = pki.crl.with_suffix(".tmp")
    temporary.unlink(missing_ok=True)
    _write(temporary, pem)
    os.replace(temporary, pki.crl)  # the broker never reads half a CRL


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise PkiError(f"{path}: cannot create: {error.strerror}") from error


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as error:
        raise PkiError(f"{path}: already exists; refusing to overwrite it") from error
    except OSError as error:
        raise PkiError(f"{path}: cannot create: {error.strerror}") from error
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(path, pem, mode=0o600)
