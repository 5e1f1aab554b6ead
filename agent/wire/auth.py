"""End-to-end authentication of envelopes: a MAC under the vehicle's key, which the broker cannot forge.

MQTT does not tell a subscriber who published a message, so an open broker (or a loose ACL) lets anyone
publish an ack that deletes a vehicle's backlog or a batch that pre-fills its timeline. The defence is in
the messages: every envelope a vehicle publishes (batch, status) and every ack a receiver sends it
carries ``Envelope.mac``, an HMAC-SHA256 truncated to :data:`MAC_BYTES` under that vehicle's key.

Keys
- The fleet key: :data:`KEY_BYTES` random bytes, kept by the receivers (``edge-receiver pki init``).
- A vehicle's key: :func:`derive_key` = HMAC-SHA256(fleet key, ``"edge-agent vehicle key v1\\0" + VIN``),
  given to that vehicle only (``edge-receiver pki issue``): a vehicle can sign for itself, never for
  another, and a receiver needs only the fleet key.

The MAC covers a domain tag, the VIN, the kind, the compression and the body as sent (each field
length-prefixed), so a MAC for one VIN or kind never validates another, and a receiver checks it before
it decompresses or parses anything. The version is not covered: a side refuses an unknown version anyway.
An envelope without a MAC encodes exactly as before the field existed.

Contract: pure functions, no I/O, no state: any thread. :func:`verify` and :func:`sign` raise
:class:`agent.errors.WireError` on a payload that is not an envelope; :func:`verify` raises it, naming
"bad or missing MAC", when the MAC is absent or wrong. Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from google.protobuf.message import DecodeError

from agent.errors import WireError
from agent.wire import telemetry_pb2 as pb

KEY_BYTES = 32  # the fleet key's and every vehicle key's length
MAC_BYTES = 16  # HMAC-SHA256, truncated: 128 bits
KEY_TAG = b"edge-agent vehicle key v1\0"
MAC_TAG = b"edge-agent envelope mac v1\0"
BAD_MAC = "bad or missing MAC"


def derive_key(fleet_key: bytes, vin: str) -> bytes:
    """The key of vehicle ``vin`` under the fleet key (what ``pki issue`` writes as VIN.auth-key)."""
    if len(fleet_key) < KEY_BYTES:
        raise ValueError(f"a fleet key has at least {KEY_BYTES} bytes, not {len(fleet_key)}")
    return hmac.new(fleet_key, KEY_TAG + vin.encode("utf-8"), hashlib.sha256).digest()


def mac(key: bytes, vin: str, kind: int, compression: int, body: bytes) -> bytes:
    """The MAC of one envelope's fields under ``key`` (a vehicle's key)."""
    name = vin.encode("utf-8")
    head = MAC_TAG + struct.pack(">I", len(name)) + name + struct.pack(">IIQ", kind, compression, len(body))
    digest = hmac.new(key, head, hashlib.sha256)
    digest.update(body)
    return digest.digest()[:MAC_BYTES]


def _parse(payload: bytes) -> pb.Envelope:
    try:
        return pb.Envelope.FromString(payload)
    except DecodeError as error:
        raise WireError(f"not an envelope ({len(payload)} bytes): {error}") from error


def sign(payload: bytes, key: bytes, vin: str) -> bytes:
    """``payload`` (an encoded envelope, from ``encode_batch``/``encode_ack``/``encode_status``) with its
    MAC under ``key`` for ``vin`` (replacing any MAC it had)."""
    wrapped = _parse(payload)
    wrapped.mac = mac(key, vin, wrapped.kind, wrapped.compression, wrapped.body)
    return wrapped.SerializeToString()


def verify(payload: bytes, key: bytes, vin: str) -> None:
    """Return if ``payload`` carries a valid MAC under ``key`` for ``vin``; else raise :class:`WireError`."""
    wrapped = _parse(payload)
    if not wrapped.mac:
        raise WireError(f"{BAD_MAC}: the envelope has none")
    expected = mac(key, vin, wrapped.kind, wrapped.compression, wrapped.body)
    if not hmac.compare_digest(wrapped.mac, expected):
        raise WireError(f"{BAD_MAC}: it does not verify under {vin}'s key")
