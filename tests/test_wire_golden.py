"""The wire format, pinned: fixed inputs encode to exactly these bytes, and decode to exactly these values.

The digests were taken from the codec before it was rearranged into :mod:`agent.wire` (issue 8); any
change to a byte of a stored chunk, a batch (packed or as stored), an ack or a status fails here. A
deliberate change of the wire format bumps ``WIRE_VERSION`` and re-pins these values in the same commit.

The inputs cover each kind of column: lossless and lossy integers, every predictor, steady ones, a float signal with
NaN and infinities, angles (one with an out-of-range marker sent exactly), a discrete signal with absent
runs, 64-bit raw values; chunks with jitter, a gap and a refresh at 30 s; batches of one chunk, of
several (packed), of none (eviction notices alone), and two that travel as stored (a chunk that does not
fit the schema; a batch whose residual stream would overflow 64 bits).
"""

from __future__ import annotations

import hashlib
import zlib
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


def chunk(seq: int, ticks: list[int], schema: Schema = SCHEMA, boot: bytes = BOOT) -> ChunkData:
    return ChunkData(boot, seq, ticks, [column(kind, ticks) for kind in range(len(schema.signals))])


CHUNKS = [
    chunk(0, list(range(0, 50))),
    chunk(1, [50, 51, 53, 54, 55, 58, *range(60, 100)]),  # jitter and a gap
    chunk(2, list(range(100, 150))),
    chunk(3, [150]),  # a single sample
    chunk(4, list(range(1600, 1650))),  # 30 s after the first: a refresh
    chunk(0, list(range(2000, 2020)), boot=OTHER_BOOT),  # a new boot
]
BLOBS = [wire.encode_chunk(SCHEMA, c) for c in CHUNKS]
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
        "packed batch": wire.encode_batch("VIN1", SCHEMA, BLOBS, EVICTED, 1234.5, compress="none"),
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
    "batch of one": (1348, "1c01c4a88c740bec66acad3687e0f268c9e6a0b5d909370900d30d0153418972"),
    "chunk 0": (923, "0bdae42a5b58c31598ecb2503dea34fcc433b8c55024d9d9871d34572c6f17ec"),
    "chunk 1": (844, "627fb35bf88b131d25a03475ca656b42d4e4b26697655753d0998442bdef2476"),
    "chunk 2": (894, "7d7e82ffd5440e2c3946feb04548014b9190265dd4788c4b94b522c56abbb954"),
    "chunk 3": (75, "d1dd3c1bda2f06c7768c7905c1e1d0c92157503c712bcd46cb17bb6619e22ada"),
    "chunk 4": (911, "a4435fd3e19f2bf67dc3df8e5b6e5bc1bd0e8d2cb6889e92650f66c6b350f6b5"),
    "chunk 5": (387, "8f8eaaf27ec8f5b0615850d2642f3b698785709201e6494310208d52803511d9"),
    "notices alone": (397, "70c1f3b22d0262fce4d5cc5194c1fecbacfa155c39b20f61843059cfe2be2238"),
    "overflowing stream": (130, "81126718bbe9dca9571b87194d04e05fc315759bc6106929b40b0ac20e2179a0"),
    "packed batch": (4534, "6ed4552e110969028acbeb6e6d78ac047d060db67d60fe21fb82abe54c2242fa"),
    "schema": (304, "0c5a1bd7240ee93b253123ce29649ec7292f8f85964589fc0ad04e28f8b47413"),
    "status": (66, "029acdeb2d9d089554e546156a3ca33706e1fe048786f9f1228d3299ff4efc5c"),
    "unfit chunk": (360, "95f1f976547d71fe93f3a07cdbb8382b9b27aee53cbf09bc9c2d858af5754318"),
}
SHORT: dict[str, str] = {
    "ack": "08011002224a0a0456494e3112160a10000102030405060708090a0b0c0d0e0f1001180212120a10101112131415161718191a1b1c1d1e1f1a160a10000102030405060708090a0b0c0d0e0f10071809",
    "chunk 3": "0a10000102030405060708090a0b0c0d0e0f100318ac0220013a158a55920b0a06a008b20ce0a792808040e90102804b420b01010001010101010101014a0c1a08dbb66ddbb66d35403802",
    "status": "08011003223c0a0456494e311208445241494e494e47180c20d80428b9603100000000000029403900001040fc54d94140034a05312e322e335100006040fc54d941",
}
# the packed batch compressed: the output is the library's own, pinned for (library version, digest)
COMPRESSED: dict[str, tuple[str, str]] = {
    "zlib": ("1.2.13", "21c1f1afe16cf7b6f62510336f5eddb243369b75fff8e5529ce585aed2434830"),
    "zstd": ("1.5.7", "a02c67660f1e0da88d001d294af3f4977622b2fb40f3cedbb56a0486020bb0c7"),
}
# sha256 of repr(decode_batch(...)): every value, tick and id as decoded
DECODED: dict[str, str] = {
    "batch of one": "2a2a20900d9d46e4cac9243ffedb1c864936d059470b5ad7d927b33773a40ca0",
    "packed batch": "538034174edfeed3f8f290712fa88ecd4462cc660fb0518b0c80f312319c460d",
    "notices alone": "e9c8b099ac4785c84f8313bef9f3f15654e62afe13881547c70ef582e223ecc7",
    "overflowing stream": "9d01b050820df844e0299560087c9d1456ec4911b8ae3aa356100fce89607599",
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
    payload = wire.encode_batch("VIN1", SCHEMA, BLOBS, EVICTED, 1234.5, compress=compression)
    assert digest(payload) == expected
    assert repr(wire.decode_batch(payload)) == repr(wire.decode_batch(payloads()["packed batch"]))


@pytest.mark.parametrize("name", ["batch of one", "packed batch", "notices alone", "overflowing stream"])
def test_pinned_batches_decode_to_the_pinned_values(name: str) -> None:
    decoded = wire.decode_batch(payloads()[name])
    assert digest(repr(decoded).encode()) == DECODED[name]


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
