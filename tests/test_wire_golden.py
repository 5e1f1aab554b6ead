"""The wire format, pinned: fixed inputs encode to exactly these bytes, and decode to exactly these values.

The digests were taken from the codec before it was rearranged into :mod:`agent.wire` (issue 8); any
change to a byte of a stored chunk, a batch (packed or as stored), an ack or a status fails here. A
deliberate change of the wire format bumps ``WIRE_VERSION`` and re-pins these values in the same commit.

Re-pinned for wire version 2 (issue 11: latency), deliberately: chunks carry their seal time
(``sealed_at_ms``, inside the stored chunk; in a packed batch as differences) and a batch says how many of
its first chunks are backlog (``backlog_chunks``); batches are sent at envelope version 2, acks and
statuses still at 1 (their pins did not change). Chunks 0-4 are stamped (chunk 4 earlier than chunk 3: a
negative difference), chunk 5 is not, as a version-1 agent stored it: its pin is the version-1 one,
unchanged. ``DECODED`` changed for every batch because a decoded chunk now shows its seal time. The
version-1 packed batch is pinned too (``VERSION_1``: the pre-issue-11 pin, byte for byte): this side still
reads it, with no seal times (latency unknown).

Re-pinned for wire version 3 (issue 13: the schema once), deliberately: every batch names its schema by
``schema_hash`` (18 bytes more; the header fields are written before the schema, as protobuf does), a
body that compression would not shrink goes uncompressed, and ``by hash`` pins a version-3 batch: the
packed batch with no schema and its residuals sparse. The version-1 pin stays byte for byte (it is the
packed batch without ``schema_hash``); chunks, acks and statuses did not change. ``DECODED`` changed
because a decoded batch now shows its schema's hash.

The inputs cover each kind of column: lossless and lossy integers, every predictor, steady ones, a float signal with
NaN and infinities, angles (one with an out-of-range marker sent exactly), a discrete signal with absent
runs, 64-bit raw values; chunks with jitter, a gap and a refresh at 30 s; batches of one chunk, of
several (packed), of none (eviction notices alone), and two that travel as stored (a chunk that does not
fit the schema; a batch whose residual stream would overflow 64 bits).
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import replace
from fractions import Fraction

import pytest
import zstandard

from agent import wire
from agent.wire import telemetry_pb2 as pb
from agent.wire.values import ChunkData, ChunkId, RawValue, Schema, SignalSpec

BOOT = bytes(range(16))
OTHER_BOOT = bytes(range(16, 32))
SCHEMA = Schema(
    Fraction(50),
    (
        SignalSpec("Drive.Speed", 0.01, 0.0, False, False, 0, "hold"),
        SignalSpec("Battery.Power", 0.05, -500.0, False, False, 7, "linear"),
        SignalSpec("Nav.Lat", 1.0, 0.0, True, False, 0, "hold"),
        SignalSpec("Nav.Heading", 0.01, 0.0, False, False, 500, "hold angle 36000 0"),
        SignalSpec("Gear.Gear", 1.0, 0.0, False, True, 0, "hold"),
        SignalSpec("Cell.Volt", 0.001, 0.0, False, False, 3, "swing"),
        SignalSpec("Bms.Soc", 0.1, 0.0, False, False, 0, "smoothing"),
        SignalSpec("Odo.Total", 1.0, 0.0, False, True, 0, "linear"),
        SignalSpec("Steer.Angle", 0.1, 0.0, False, False, 4, "linear angle 3600 -1800"),
        SignalSpec("Door.Locked", 1.0, 0.0, False, True, 0, "hold"),
        SignalSpec("Motor.Rpm", 1.0, 0.0, False, True, 0, "linear"),
    ),
)
NARROW = Schema(SCHEMA.rate, SCHEMA.signals[:2])


def column(kind: int, ticks: list[int]) -> list[RawValue | None]:
    """Deterministic values of signal ``kind`` at ``ticks`` (integer arithmetic only)."""
    out: list[RawValue | None] = []
    for tick in ticks:
        wobble = (tick * 7919) % 13 - 6
        value: RawValue | None
        if kind == 0:
            value = 5000 + tick * 3 + wobble
        elif kind == 1:
            value = 10_000 + (tick % 40) * 25 + wobble * 11
        elif kind == 2:
            value = (float("nan"), float("inf"), -0.0, 1e300)[tick % 4] if tick % 9 == 0 else tick / 7
        elif kind == 3:
            value = 65535 if tick % 17 == 5 else (35_800 + tick * 37) % 36000
        elif kind == 4:
            value = (tick // 10) % 6
        elif kind == 5:
            value = 3700 + (tick % 25) * 2 + wobble
        elif kind == 6:
            value = 800 - tick // 20
        elif kind == 7:
            value = (2**64 - 1 - tick) if tick % 23 == 0 else 2**40 + tick * 1000
        elif kind == 8:
            value = ((tick * 53) % 3600) - 1800
        elif kind == 9:
            value = 1
        else:
            value = 3000 + tick * 12 + wobble * (tick % 3)
        absent = (kind == 4 and 12 <= tick % 50 < 20) or (kind == 1 and tick % 31 == 3)
        out.append(None if absent or (kind == 2 and tick % 11 == 4) else value)
    return out


def chunk(
    seq: int, ticks: list[int], schema: Schema = SCHEMA, boot: bytes = BOOT, sealed: int = 0
) -> ChunkData:
    return ChunkData(boot, seq, ticks, [column(kind, ticks) for kind in range(len(schema.signals))], sealed)


SEALED = 1_700_000_000_000  # ms since the epoch
CHUNKS = [
    chunk(0, list(range(0, 50)), sealed=SEALED),
    chunk(1, [50, 51, 53, 54, 55, 58, *range(60, 100)], sealed=SEALED + 1000),  # jitter and a gap
    chunk(2, list(range(100, 150)), sealed=SEALED + 2003),
    chunk(3, [150], sealed=SEALED + 2004),  # a single sample
    chunk(4, list(range(1600, 1650)), sealed=SEALED + 1999),  # a refresh; sealed earlier (a clock step)
    chunk(0, list(range(2000, 2020)), boot=OTHER_BOOT),  # a new boot, not stamped (a version-1 agent's)
]
BLOBS = [wire.encode_chunk(SCHEMA, c) for c in CHUNKS]
UNSTAMPED = [wire.encode_chunk(SCHEMA, replace(c, sealed_at_ms=0)) for c in CHUNKS]
EVICTED = [(BOOT, 7, 9), (OTHER_BOOT, 0, 0)]
OVERFLOW_SCHEMA = Schema(Fraction(50), (SignalSpec("Big.Value"),))
OVERFLOW = [  # each chunk fits 64 bits; the stream would not: 2^62 - (-2^62) = 2^63
    wire.encode_chunk(OVERFLOW_SCHEMA, ChunkData(BOOT, 0, [0, 1], [[2**62, -(2**62)]])),
    wire.encode_chunk(OVERFLOW_SCHEMA, ChunkData(BOOT, 1, [2, 3], [[2**62, 2**62]])),
]


def payloads() -> dict[str, bytes]:
    """Every pinned byte string, by name."""
    return {
        "schema": wire.schema_bytes(SCHEMA),
        **{f"chunk {index}": blob for index, blob in enumerate(BLOBS)},
        "batch of one": wire.encode_batch("VIN1", SCHEMA, BLOBS[:1], compress="none"),
        "packed batch": wire.encode_batch(
            "VIN1", SCHEMA, BLOBS, EVICTED, 1234.5, compress="none", backlog_chunks=2
        ),
        "by hash": wire.encode_batch(
            "VIN1", SCHEMA, BLOBS, EVICTED, 1234.5, compress="none", backlog_chunks=2, schema_by_hash=True
        ),
        "notices alone": wire.encode_batch("VIN1", SCHEMA, [], EVICTED, 99.0, compress="none"),
        "unfit chunk": wire.encode_batch(
            "VIN1", SCHEMA, [wire.encode_chunk(NARROW, chunk(9, [5, 6, 7], NARROW))], compress="none"
        ),
        "overflowing stream": wire.encode_batch("VIN1", OVERFLOW_SCHEMA, OVERFLOW, compress="none"),
        "ack": wire.encode_ack(
            "VIN1", [ChunkId(BOOT, 1), ChunkId(BOOT, 2), ChunkId(OTHER_BOOT, 0)], [(BOOT, 7, 9)]
        ),
        "status": wire.encode_status(
            pb.Status(
                vin="VIN1",
                state="DRAINING",
                backlog_chunks=12,
                backlog_samples=600,
                backlog_bytes=12_345,
                oldest_age_s=12.5,
                last_ack_at=1700000000.25,
                dropped_chunks=3,
                agent_version="1.2.3",
                updated_at=1700000001.5,
            )
        ),
    }


# name: (length, sha256 of the bytes); the short ones also in full, to read a failure at a glance
GOLDEN: dict[str, tuple[int, str]] = {
    "ack": (80, "3a55f6a4a9ae062325c16cba91bd1ff2ee8e0f0b8100439cece4af83111b72f9"),
    "by hash": (3831, "3ec9f87d3d15e2c07c679598b237926515d534093911b40e8b0324e9bc412121"),
    "batch of one": (1374, "41905356dbb785e240d0c99bf3e98fe62c2bfac06257a8da2060821df6614d10"),
    "chunk 0": (930, "abdeb765301e70689742f16ce704c86db7800dea5d5a106e6a31610f1aa97e81"),
    "chunk 1": (851, "ab086156c27b1a725415ea0d1df7dd801f6c1b9afbaa17e0ea33c7b7d99715a1"),
    "chunk 2": (901, "359b4b383d7775c2a71187976655d029c465f746fa4e96d2965127f7d3b61e6d"),
    "chunk 3": (82, "e51305bf43a123e3b4a5cc945eaa4fba237df40a4f7e513d03bdbb38800292f0"),
    "chunk 4": (918, "908ddac3c1cefc8fac11e506b6765bae701b767672961c5a9570d5c7b9762b2e"),
    "chunk 5": (387, "8f8eaaf27ec8f5b0615850d2642f3b698785709201e6494310208d52803511d9"),
    "notices alone": (415, "8be576bcf75d88bad18bec097d638f8eb0ae5e5599b7f22f5786a38e92111c2f"),
    "overflowing stream": (149, "34dc452aaaa3d0a655c9fcb6554a62d3c0094fe5a73d7ee71652a06390fd50a3"),
    "packed batch": (4574, "60ea070a9f19af20948360c9f697b02cd1247b33e2b80957ca5c7d9db817d7a7"),
    "schema": (304, "0c5a1bd7240ee93b253123ce29649ec7292f8f85964589fc0ad04e28f8b47413"),
    "status": (66, "029acdeb2d9d089554e546156a3ca33706e1fe048786f9f1228d3299ff4efc5c"),
    "unfit chunk": (378, "3a9d76be17c607fc514fce64b42da25d0dd0a89747f28c44866fb926328283a1"),
}
SHORT: dict[str, str] = {
    "ack": "08011002224a0a0456494e3112160a10000102030405060708090a0b0c0d0e0f1001180212120a10101112131415161718191a1b1c1d1e1f1a160a10000102030405060708090a0b0c0d0e0f10071809",
    "chunk 3": "0a10000102030405060708090a0b0c0d0e0f100318ac0220013a158a55920b0a06a008b20ce0a792808040e90102804b420b01010001010101010101014a0c1a08dbb66ddbb66d3540380250d4df95ffbc31",
    "status": "08011003223c0a0456494e311208445241494e494e47180c20d80428b9603100000000000029403900001040fc54d94140034a05312e322e335100006040fc54d941",
}
# the packed batch compressed: the output is the library's own, pinned for (library version, digest)
COMPRESSED: dict[str, tuple[str, str]] = {
    "zlib": ("1.2.13", "ed562e3435c8d9eb9fbc852aaae4897c54914a294b9d8b7dd7ae4068b69fc003"),
    "zstd": ("1.5.7", "5bc9c33d4c7c80eecd6784b14c084b99892523c6bbe6d858c02b24918a07a400"),
}
# sha256 of repr(decode_batch(...)): every value, tick and id as decoded
DECODED: dict[str, str] = {
    "batch of one": "b4173502facfc279384fcd07b176f1d8150fbc041793306a329a869cfc491dd7",
    "packed batch": "eb59bbab75830a35f95edaf70cf40a4550c2dea2c5ec874d47d8297c08226c22",
    "notices alone": "1377b1d6dd55ff631f1d277f7cd3af049b0c09beb8c1f87987433393eb525764",
    "overflowing stream": "b246da5efad521ef6a6bca84ba1179388de6d01b481ca3c0b23e89ed3aa47fd7",
}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("name", sorted(payloads()))
def test_bytes_are_exactly_the_pinned_ones(name: str) -> None:
    data = payloads()[name]
    if name in SHORT:
        assert data.hex() == SHORT[name]
    assert (len(data), digest(data)) == GOLDEN[name]


def test_batches_that_cannot_be_packed_travel_as_stored() -> None:
    for name in ("unfit chunk", "overflowing stream"):
        batch = pb.Batch.FromString(pb.Envelope.FromString(payloads()[name]).body)
        assert not batch.HasField("packed") and len(batch.chunks) in (1, 2), name
    packed = pb.Batch.FromString(pb.Envelope.FromString(payloads()["packed batch"]).body)
    assert packed.HasField("packed") and list(packed.packed.sample_count) == [len(c) for c in CHUNKS]


@pytest.mark.parametrize("compression", ["zlib", "zstd"])
def test_compressed_batches_are_the_pinned_ones(compression: str) -> None:
    library, expected = COMPRESSED[compression]
    here = ".".join(map(str, zstandard.ZSTD_VERSION)) if compression == "zstd" else zlib.ZLIB_RUNTIME_VERSION
    if library != here:
        pytest.skip(f"pinned with {compression} {library}, this is {here}: the other checks still hold")
    payload = wire.encode_batch(
        "VIN1", SCHEMA, BLOBS, EVICTED, 1234.5, compress=compression, backlog_chunks=2
    )
    assert digest(payload) == expected
    assert repr(wire.decode_batch(payload)) == repr(wire.decode_batch(payloads()["packed batch"]))


@pytest.mark.parametrize("name", ["batch of one", "packed batch", "notices alone", "overflowing stream"])
def test_pinned_batches_decode_to_the_pinned_values(name: str) -> None:
    decoded = wire.decode_batch(payloads()[name])
    assert digest(repr(decoded).encode()) == DECODED[name]


def test_a_batch_by_hash_decodes_like_the_batch_that_carries_its_schema() -> None:
    by_hash, whole = payloads()["by hash"], wire.decode_batch(payloads()["packed batch"])
    assert pb.Envelope.FromString(by_hash).version == 3
    batch = pb.Batch.FromString(pb.Envelope.FromString(by_hash).body)
    assert not batch.HasField("schema") and batch.packed.HasField("sparse")
    got = wire.decode_batch(by_hash, schemas={wire.schema_hash(SCHEMA): SCHEMA}.get)
    assert repr(got.chunks) == repr(whole.chunks) and got.schema == SCHEMA
    assert whole.schema_hash == wire.schema_hash(SCHEMA) and whole.schema_body == wire.schema_bytes(SCHEMA)


def version_1_packed_batch() -> bytes:
    """The packed batch as an agent before wire version 2 sent it: no seal times, no backlog count."""
    envelope = pb.Envelope.FromString(
        wire.encode_batch("VIN1", SCHEMA, UNSTAMPED, EVICTED, 1234.5, compress="none")
    )
    batch = pb.Batch.FromString(envelope.body)
    batch.ClearField("schema_hash")  # version 3's: a version-1 agent did not send it
    envelope.version, envelope.body = 1, batch.SerializeToString()
    return envelope.SerializeToString()


# the packed batch's pin before wire version 2 (issue 11), unchanged
VERSION_1 = (4534, "6ed4552e110969028acbeb6e6d78ac047d060db67d60fe21fb82abe54c2242fa")


def test_a_version_1_batch_is_still_read_without_seal_times() -> None:
    data = version_1_packed_batch()
    assert (len(data), digest(data)) == VERSION_1
    old, new = wire.decode_batch(data), wire.decode_batch(payloads()["packed batch"])
    assert [c.sealed_at_ms for c in old.chunks] == [0] * len(CHUNKS) and old.backlog_chunks == 0
    assert [c.sealed_at_ms for c in new.chunks] == [c.sealed_at_ms for c in CHUNKS]
    assert new.backlog_chunks == 2
    assert repr([replace(c, sealed_at_ms=0) for c in new.chunks]) == repr(old.chunks)
    assert UNSTAMPED[5] == BLOBS[5]  # an unstamped chunk: the bytes a version-1 agent stored


def test_pinned_chunks_decode_like_the_batch_that_carries_them() -> None:
    decoded = wire.decode_batch(payloads()["packed batch"])
    assert [(c.boot_id, c.seq, c.ticks) for c in decoded.chunks] == [
        (c.boot_id, c.seq, c.ticks) for c in CHUNKS
    ]
    assert decoded.evicted == EVICTED and decoded.sent_at == 1234.5 and decoded.vin == "VIN1"
    vin, stored = wire.decode_ack(payloads()["ack"])
    assert (vin, stored) == ("VIN1", [(BOOT, 1, 2), (OTHER_BOOT, 0, 0)])
    assert wire.ack_noted(payloads()["ack"]) == [(BOOT, 7, 9)]
    assert wire.decode_status(payloads()["status"]).backlog_bytes == 12_345
