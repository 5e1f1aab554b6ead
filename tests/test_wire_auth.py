"""Envelope MACs (agent.wire.auth): a MAC binds the VIN, the kind, the compression and every body byte.

Unsigned envelopes are unchanged (tests/test_wire_golden.py pins them); the signed ones are pinned here,
under a fixed fleet key, so a change of the key derivation or of the MAC's input fails.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction

import pytest

from agent import wire
from agent.errors import WireError
from agent.wire import auth, messages
from agent.wire import telemetry_pb2 as pb
from agent.wire.values import ChunkData, ChunkId, Schema, SignalSpec

FLEET = bytes(range(32))
VIN, OTHER = "VIN-A", "VIN-B"
KEY = auth.derive_key(FLEET, VIN)
BOOT = bytes(range(16))
SCHEMA = Schema(Fraction(50), (SignalSpec("Drive.Speed", 0.01, 0.0, False, False, 0, "hold"),))


def batch(compress: bool | str = "zlib") -> bytes:
    chunk = wire.encode_chunk(SCHEMA, ChunkData(BOOT, 0, list(range(10)), [[5000 + i for i in range(10)]]))
    return wire.encode_batch(VIN, SCHEMA, [chunk], [], sent_at=1.5, compress=compress)


def ack() -> bytes:
    return wire.encode_ack(VIN, [ChunkId(BOOT, seq) for seq in range(5)])


def test_the_vehicle_key_is_the_documented_hmac() -> None:
    import hmac

    expected = hmac.new(FLEET, b"edge-agent vehicle key v1\0VIN-A", hashlib.sha256).digest()
    assert expected == KEY and len(KEY) == 32
    assert auth.derive_key(FLEET, OTHER) != KEY
    with pytest.raises(ValueError):
        auth.derive_key(b"short", VIN)


@pytest.mark.parametrize("make", [batch, ack, lambda: wire.encode_status(pb.Status(vin=VIN, state="ONLINE"))])
def test_a_signed_envelope_verifies_and_still_decodes(make: object) -> None:
    assert callable(make)
    plain = make()
    signed = auth.sign(plain, KEY, VIN)
    auth.verify(signed, KEY, VIN)
    assert signed[: len(plain)] == plain and len(signed) == len(plain) + 2 + auth.MAC_BYTES
    assert auth.sign(signed, KEY, VIN) == signed  # signing again replaces the MAC, does not add one
    wrapped = pb.Envelope.FromString(signed)
    wrapped.ClearField("mac")
    assert wrapped.SerializeToString() == plain  # without a MAC, the envelope is exactly as before


def test_decoders_read_signed_envelopes() -> None:
    assert wire.decode_batch(auth.sign(batch(), KEY, VIN)) == wire.decode_batch(batch())
    assert wire.decode_ack(auth.sign(ack(), KEY, VIN)) == wire.decode_ack(ack())


def test_missing_mac_fails() -> None:
    with pytest.raises(WireError, match="bad or missing MAC: the envelope has none"):
        auth.verify(ack(), KEY, VIN)


def test_wrong_vin_fails() -> None:
    # Signed by B for B, checked as A's; and A's key checked for another VIN.
    b_key = auth.derive_key(FLEET, OTHER)
    with pytest.raises(WireError, match="bad or missing MAC"):
        auth.verify(auth.sign(ack(), b_key, OTHER), KEY, VIN)
    with pytest.raises(WireError, match="bad or missing MAC"):
        auth.verify(auth.sign(ack(), KEY, VIN), KEY, OTHER)
    with pytest.raises(WireError, match="bad or missing MAC"):  # B's key, claiming to be A
        auth.verify(auth.sign(ack(), b_key, VIN), KEY, VIN)


def test_wrong_kind_fails() -> None:
    signed = pb.Envelope.FromString(auth.sign(ack(), KEY, VIN))
    signed.kind = pb.BODY_KIND_STATUS
    with pytest.raises(WireError, match="bad or missing MAC"):
        auth.verify(signed.SerializeToString(), KEY, VIN)


def test_wrong_compression_fails() -> None:
    signed = pb.Envelope.FromString(auth.sign(batch("none"), KEY, VIN))
    signed.compression = pb.COMPRESSION_ZLIB
    with pytest.raises(WireError, match="bad or missing MAC"):
        auth.verify(signed.SerializeToString(), KEY, VIN)


@pytest.mark.parametrize("make", [batch, ack])
def test_every_flipped_bit_of_the_body_or_mac_fails(make: object) -> None:
    assert callable(make)
    signed = pb.Envelope.FromString(auth.sign(make(), KEY, VIN))
    for field in ("body", "mac"):
        original = getattr(signed, field)
        for bit in range(len(original) * 8):
            flipped = bytearray(original)
            flipped[bit // 8] ^= 1 << (bit % 8)
            setattr(signed, field, bytes(flipped))
            with pytest.raises(WireError, match="bad or missing MAC"):
                auth.verify(signed.SerializeToString(), KEY, VIN)
        setattr(signed, field, original)
    auth.verify(signed.SerializeToString(), KEY, VIN)


def test_garbage_is_a_wire_error() -> None:
    with pytest.raises(WireError, match="not an envelope"):
        auth.verify(b"\xff\xff\xff", KEY, VIN)


# Golden: the signed envelopes, byte for byte (sha256), under FLEET. The batch was re-pinned for wire
# version 2 (batches are sent at version 2; its chunk has no seal time, so only the envelope's version
# byte changed): with the version set back to 1 it is the version-1 pin, MAC included, since the MAC does
# not cover the version (test_a_version_1_batch_keeps_its_mac). Re-pinned for wire version 3: the batch
# names its schema's hash (Batch.schema_hash); without it, it is the version-1 pin still.
GOLDEN = {
    "ack": "2292b182d793970e789ccde46ac4294177646194f509cfac71698e8be02ba2f9",
    "batch-zlib": "c86e9fe3099ab04e02f9bbd6aa1ebcfc94ac802df5d12b26ede7201918e2ea15",
}
GOLDEN_VERSION_1_BATCH = "b70ead3e466a670911edb866c3f3eb4d34c828274a0fede942202043a28a03c8"


def test_signed_envelopes_are_the_pinned_ones() -> None:
    got = {
        "ack": hashlib.sha256(auth.sign(ack(), KEY, VIN)).hexdigest(),
        "batch-zlib": hashlib.sha256(auth.sign(batch("zlib"), KEY, VIN)).hexdigest(),
    }
    assert got == GOLDEN
    assert auth.mac(KEY, VIN, pb.BODY_KIND_ACK, pb.COMPRESSION_NONE, b"").hex() == MAC_OF_EMPTY


MAC_OF_EMPTY = "adf9af95fcae2437fef80aac309e060a"


def test_a_version_1_batch_keeps_its_mac() -> None:
    assert pb.Envelope.FromString(auth.sign(batch("zlib"), KEY, VIN)).version == 2
    body = pb.Batch.FromString(pb.Envelope.FromString(batch("none")).body)
    body.ClearField("schema_hash")  # version 3's; the rest is what an agent before version 2 sent
    old = auth.sign(messages.envelope(pb.BODY_KIND_BATCH, body.SerializeToString(), "zlib", 1), KEY, VIN)
    assert hashlib.sha256(old).hexdigest() == GOLDEN_VERSION_1_BATCH
    auth.verify(old, KEY, VIN)
    assert wire.decode_batch(old).chunks[0].sealed_at_ms == 0
