"""Lossless coding of real recordings against "just compress the log": bytes per 50 Hz tick.

For each real recording of ``../shared/realdata/`` and several signal sets (every signal of the DBCs,
the physically interesting ones: wheel speeds, accelerations, torque, state of charge, IMU, ...), the
drive is sampled on the 50 Hz grid as the agent does (:func:`tests.harness.bench_codec.drive`), coded
lossless and packed 60 1-s chunks to a batch with the real compression (what the uploader sends from a
backlog: :func:`tests.harness.bench_codec.run_codec`), and set beside the reference: zstd at level 19
over the raw frames of the messages that carry the sampled signals (those whose frames the agent's
decoder gives a sampled value for), each frame as ``<time delta µs: u32><id: u32><length: u8><data>``,
the whole recording in one frame. Both are divided by the same number of 50 Hz ticks. The raw frames
are counted at their own rate (a 10 Hz message is 10 frames a second), the samples on the 50 Hz grid.

Also given per set: the sum over signals of the order-0 entropy of each signal's first differences
(bits per sample), a rough floor for a per-signal coder with a hold predictor and no context.

``python -m tests.harness.bench_lossless`` prints the table; :func:`lossless_rows` gives the rows for
``make bench``. Pure measurement: reads the logs, writes nothing.
"""

from __future__ import annotations

import math
import struct
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import zstandard

from agent import wire
from agent.decode import build_decoder
from agent.service import logs
from agent.source import read_log
from agent.wire.values import Schema
from tests.harness import bench_codec as bc

ZSTD_LEVEL = 19
TARGET = 0.5  # the goal: at most half of zstd -19 over the raw frames
Row = bc.Row

KONA_PCAN = bc.Profile(
    "kona P-CAN (real)",
    bc.KONA / "kona_ev_2019_power-off-on-ready-off.candump.log",
    (("can0", (bc.KONA / "pcan.cantools-BS_-added.dbc",), "auto"),),
    "none",
)
TRUCK = next(p for p in bc.PROFILES if p.name.startswith("j1939"))
KONA_20 = (
    *(f"IEB_386_WHEEL.WHL_SPD_{w}" for w in ("FL", "FR", "RL", "RR")),
    *(f"IEB_387_WHEEL.WHL_PUL_{w}" for w in ("FL", "FR", "RL", "RR")),
    "StabilityControl.LAT_ACCEL",
    "StabilityControl.LONG_ACCEL",
    "StabilityControl.YAW_RATE",
    "StabilityControl.CYL_PRES",
    "Steering.Angle",
    "VCU_540.Torque_actual",
    "VCU_201.Torque_desired",
    "VCU_200.Accel_Pedal_Pos2",
    "BMS_542.SocDisp",
    "Batt_HV_Status.IBatt",
    "Batt_HV_Status.VBatt",
    "InverterStatus.V_Inverter",
)
TRUCK_MOTION = (
    "CCVS1.WheelBasedVehicleSpeed",
    "EEC1.EngineSpeed",
    *(f"gnss_imu.Acceleration{a}" for a in "XYZ"),
    *(f"gnss_imu.AngularRate{a}" for a in "XYZ"),
    "gnss_speed.Speed",
    "gnss_attitude.Heading",
    "gnss_attitude.Pitch",
    "gnss_attitude.Roll",
    "gnss_pos.Latitude",
    "gnss_pos.Longitude",
    "gnss_altitude.Altitude",
)


@dataclass(frozen=True)
class SignalSet:
    name: str
    profile: bc.Profile
    names: tuple[str, ...] = ()  # empty: every signal the drive carries


KONA_BOTH = next(p for p in bc.PROFILES if p.name.startswith("kona"))  # P-CAN and C-CAN
SETS = (
    SignalSet("kona P-CAN, every signal", KONA_PCAN),
    SignalSet("kona P-CAN + C-CAN, every signal", KONA_BOTH),
    SignalSet(f"kona P-CAN, {len(KONA_20)} physical signals", KONA_PCAN, KONA_20),
    SignalSet("j1939 truck, every signal", TRUCK),
    SignalSet(f"j1939 truck, {len(TRUCK_MOTION)} motion signals", TRUCK, TRUCK_MOTION),
)


@dataclass
class Measured:
    name: str
    ticks: int
    signals: int
    frames: int  # raw frames of the carrying messages
    ours: int  # bytes of the packed, compressed batches, each carrying its schema (version 2)
    by_hash: int  # the same batches naming their schema by hash (version 3, once a receiver has it)
    raw: int  # bytes of zstd -19 over the raw frames
    entropy_bits: float  # per sample, sum over signals of H0 of first differences

    @property
    def ratio(self) -> float:
        return self.ours / self.raw


def subset(s: SignalSet) -> tuple[bc.Drive, Schema]:
    """The drive cut down to the set's signals (those that appear in it), and its lossless schema."""
    d = bc.drive(s.profile)
    schema = bc.schema_of(d, seeds=False)
    keep = [i for i, n in enumerate(d.names) if not s.names or n in s.names]
    small = bc.Drive(d.profile, [d.names[i] for i in keep], d.frames, d.ticks, [d.columns[i] for i in keep])
    return small, Schema(schema.rate, tuple(schema.signals[i] for i in keep))


def raw_frames(profile: bc.Profile, names: Sequence[str]) -> tuple[int, bytes]:
    """(how many, the binary log of) the frames that carry a value of ``names``."""
    decoder = build_decoder(profile.buses)  # every signal, as the drive was sampled
    wanted = {i for i, spec in enumerate(decoder.signals) if spec.name in set(names)}
    out, last, count = bytearray(), None, 0
    for frame in read_log(profile.log):
        if not any(column in wanted for column, _ in decoder.decode(frame)):
            continue
        micros = round(frame.timestamp * 1e6)
        delta = 0 if last is None else max(0, micros - last)
        last, count = micros, count + 1
        data = bytes(frame.data)
        out += struct.pack("<IIB", min(delta, 0xFFFFFFFF), frame.arbitration_id, len(data)) + data
    return count, bytes(out)


def entropy_bits(d: bc.Drive) -> float:
    total = 0.0
    for column in d.columns:
        values = [v for v in column if v is not None]
        diffs = [b - a for a, b in pairwise(values)]
        if diffs:
            counts, n = Counter(diffs), len(diffs)
            total += -sum(c / n * math.log2(c / n) for c in counts.values()) * n / len(d.ticks)
    return total


def measure(s: SignalSet, codec: Callable[[bc.Drive, Schema], int] | None = None) -> Measured:
    """One signal set; ``codec`` (drive, schema) -> bytes replaces the agent's batch encoding."""
    d, schema = subset(s)
    ours = codec(d, schema) if codec else bc.run_codec(d, schema, timed=False).bytes
    count, log = raw_frames(s.profile, d.names)
    raw = len(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(log))
    by_hash = batches(d, schema, schema_by_hash=True)
    return Measured(s.name, len(d.ticks), len(d.names), count, ours, by_hash, raw, entropy_bits(d))


def batches(d: bc.Drive, schema: Schema, schema_by_hash: bool = False) -> int:
    """Bytes of the drive as the uploader sends a backlog: 1-s chunks, 60 to a batch, compressed."""
    blobs = [wire.encode_chunk(schema, chunk) for chunk in bc.chunks(d)]
    return sum(
        len(wire.encode_batch("BENCH", schema, blobs[i : i + bc.BATCH], schema_by_hash=schema_by_hash))
        for i in range(0, len(blobs), bc.BATCH)
    )


def lossless_rows(progress: Callable[[str], None] = lambda _: None) -> list[Row]:
    """(measure, ours, baseline, unit, note) per signal set: bytes per 50 Hz tick, and the ratio."""
    rows: list[Row] = []
    for s in SETS:
        if not s.profile.log.exists():
            progress(f"{s.name}: {s.profile.log.name} is absent, skipped")
            continue
        m = measure(s)
        progress(f"{s.name}: {m.ours / m.ticks:.2f} B vs {m.raw / m.ticks:.2f} B per tick")
        rows.append(
            (
                f"{s.name}: lossless bytes per 50 Hz tick",
                m.ours / m.ticks,
                m.raw / m.ticks,
                "B",
                f"baseline: zstd -{ZSTD_LEVEL} over the {m.frames} raw frames (time delta, id, data) of the "
                f"messages carrying the {m.signals} signals, same {m.ticks} ticks; ours: 60-s packed batches, "
                f"compressed, schema carried (by hash: {m.by_hash / m.ticks:.2f} B); ratio {m.ratio:.3f} (goal <= {TARGET}); sum of per-signal H0 of first "
                f"differences {m.entropy_bits / 8:.2f} B",
            )
        )
    return rows


def main() -> int:
    logs.configure("error", "console")
    bc.print_rows(lossless_rows(print))
    return 0


if __name__ == "__main__":
    sys.exit(main())
