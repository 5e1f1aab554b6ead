"""The codec benchmark: bytes per sample, encode and decode time, largest error, on every drive we have.

Each drive is decoded once with the agent's own stages (:func:`agent.decode.build_decoder`, the Sampler
on the 50 Hz grid), cut into 1-s chunks (what the agent seals at ``commit_interval_s: 1``), coded with
:func:`agent.wire.encode_chunk` and packed 60 chunks to a batch with :func:`agent.wire.encode_batch`
(what the uploader sends from a backlog; see ``--decisions`` for other batch lengths), then decoded with
:func:`agent.wire.decode_batch` and compared with the truth. Baselines, for the same samples:

- JSON: one object per sample, ``{"ts": seconds, "MESSAGE.SIGNAL": value, ...}`` (the seeds' design).
- protobuf: one message per sample, a ``sint64`` field per signal holding its raw value (``double`` for a
  float signal) and the tick; proto3 leaves zeros out, so this is the smallest such message.
- seed 000's packet: 32 bytes per sample, whatever it carries (8 fields of its own, not these signals).
- raw CAN: every frame of the same interval as a SocketCAN ``struct can_frame`` (16 bytes).

Times are CPU seconds of this process (``time.process_time``), best of a few runs, per sample: encode is
``encode_chunk`` + ``encode_batch`` (packing and compression included), decode is ``decode_batch``.

``python -m tests.harness.bench_codec`` prints the table; ``--decisions`` adds the measurements behind
the defaults (predictor, compressor and level, chunk and batch length, packing). :func:`codec_rows` gives
the rows for ``make bench``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from agent import wire
from agent.decode import build_decoder
from agent.sample import Sampler, to_micros
from agent.service import logs
from agent.source import LogStats, read_log
from agent.wire import messages
from agent.wire import telemetry_pb2 as pb
from agent.wire.chunks import schema_message
from agent.wire.predictors import PREDICTORS, Coding
from agent.wire.values import ChunkData, RawValue, Schema, SignalSpec

ROOT = Path(__file__).resolve().parents[2]
REALDATA = ROOT.parent / "shared" / "realdata"
DBC = ROOT / "dbc" / "reference_ev.dbc"
KONA, TRUCK = REALDATA / "hyundai_kona_ev_2019", REALDATA / "j1939_truck_canedge"
CHUNK, BATCH, RUNS = 50, 60, 5
CAN_FRAME_BYTES, SEED000_BYTES = 16, 32
MPH = 1.609344
Row = tuple[str, float, float | None, str, str]


@dataclass(frozen=True)
class Profile:
    name: str
    log: Path
    buses: tuple[tuple[str, tuple[Path, ...], str], ...]
    preset: str  # the reference car takes the "seeds" preset; the real logs the same bounds by analogy
    bounds: tuple[tuple[str, float], ...] = ()
    angles: tuple[tuple[str, float], ...] = ()


REFERENCE = (("can0", (DBC,), "auto"),)
PROFILES = [
    *(
        Profile(p, ROOT / "replay_logs" / f"{p}.log.gz", REFERENCE, "seeds")
        for p in ("highway", "city", "aggressive", "panic_braking")
    ),
    Profile(
        "kona (real)",
        KONA / "kona_ev_2019_power-off-on-ready-off.candump.log",
        (
            ("can0", (KONA / "pcan.cantools-BS_-added.dbc",), "auto"),
            ("can1", (KONA / "hyundai_kia_generic.dbc",), "auto"),
        ),
        "none",
        (("BMS_542.SocDisp", 0.5), ("CLU15.CF_Clu_VehicleSpeed", 2 * MPH)),
    ),
    Profile(
        "j1939 truck (real)",
        TRUCK / "j1939_truck_idle_canedge.candump.log",
        (
            ("can0", (TRUCK / "CSS-Electronics-SAE-J1939-DEMO.dbc",), "auto"),
            ("can1", (TRUCK / "canmod-gps.dbc",), "auto"),
        ),
        "none",
        (
            ("CCVS1.WheelBasedVehicleSpeed", 2 * MPH),
            ("gnss_speed.Speed", 2 * MPH / 3.6),
            ("gnss_attitude.Heading", 5.0),
        ),
        (("gnss_attitude.Heading", 360.0),),
    ),
]


@dataclass
class Drive:
    """A log on the 50 Hz grid: raw values as the agent holds them (only signals seen at least once)."""

    profile: Profile
    names: list[str]
    frames: int
    ticks: list[int]
    columns: list[list[RawValue | None]]


@functools.cache
def drive(profile: Profile) -> Drive:
    decoder = build_decoder(profile.buses)
    ticks: list[int] = []
    columns: list[list[RawValue | None]] = [[] for _ in decoder.signals]

    def emit(tick: int, values: list[RawValue | None]) -> None:
        ticks.append(tick)
        for column, value in zip(columns, values, strict=True):
            column.append(value)

    sampler, stats = Sampler(Fraction(50), len(decoder.signals), emit), LogStats()
    for frame in read_log(profile.log, stats):
        sampler.feed(to_micros(frame.timestamp), decoder.decode(frame))
    sampler.finish()
    seen = [i for i, column in enumerate(columns) if any(v is not None for v in column)]
    return Drive(
        profile, [decoder.signals[i].name for i in seen], stats.frames, ticks, [columns[i] for i in seen]
    )


def schema_of(d: Drive, seeds: bool, predictor: str = "hold") -> Schema:
    """The schema the agent builds for this drive, lossless or at the seeds' bounds."""
    p = d.profile
    decoder = build_decoder(
        p.buses,
        (),  # every signal, as the drive was sampled (a name on two buses is taken from the first)
        dict(p.bounds) if seeds else {},
        predictor,
        dict(p.angles) if seeds else {},
        p.preset if seeds else "none",
    )
    specs = {spec.name: spec for spec in decoder.signals}
    return Schema(Fraction(50), tuple(specs[name] for name in d.names))


def chunks(d: Drive, size: int = CHUNK) -> list[ChunkData]:
    return [
        ChunkData(b"\x01" * 16, seq, d.ticks[at : at + size], [c[at : at + size] for c in d.columns])
        for seq, at in enumerate(range(0, len(d.ticks), size))
    ]


def best(fn: Callable[[], object], runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        started = time.process_time()
        fn()
        times.append(time.process_time() - started)
    return min(times)


@dataclass
class Result:
    bytes: int
    samples: int
    encode_s: float
    decode_s: float
    errors: dict[str, tuple[float, float, str]]  # name -> (largest error, ε, unit-ish note)

    @property
    def per_sample(self) -> float:
        return self.bytes / self.samples

    @property
    def us(self) -> float:
        return (self.encode_s + self.decode_s) / self.samples * 1e6


def run_codec(
    d: Drive,
    schema: Schema,
    *,
    size: int = CHUNK,
    batch: int = BATCH,
    compress: bool | str = True,
    timed: bool = True,
) -> Result:
    cut = chunks(d, size)

    def encode() -> list[bytes]:
        blobs = [wire.encode_chunk(schema, chunk) for chunk in cut]
        return [
            wire.encode_batch("BENCH", schema, blobs[i : i + batch], compress=compress)
            for i in range(0, len(blobs), batch)
        ]

    payloads = encode()
    decoded = [c for p in payloads for c in wire.decode_batch(p).chunks]
    encode_s = best(encode) if timed else 0.0
    decode_s = best(lambda: [wire.decode_batch(p) for p in payloads]) if timed else 0.0
    return Result(sum(map(len, payloads)), len(d.ticks), encode_s, decode_s, max_errors(schema, cut, decoded))


def max_errors(
    schema: Schema, truth: Sequence[ChunkData], got: Sequence[ChunkData]
) -> dict[str, tuple[float, float, str]]:
    """Largest |error| per lossy signal in its unit (modulo the turn for an angle), beside ε."""
    out: dict[str, tuple[float, float, str]] = {}
    for index, spec in enumerate(schema.signals):
        if not spec.bound_raw:
            worst = max(
                (1 for a, b in zip(truth, got, strict=True) if a.columns[index] != b.columns[index]),
                default=0,
            )
            if worst:
                out[spec.name] = (float("inf"), 0.0, "lossless signal changed")
            continue
        period = Coding.parse(spec.predictor).period
        largest = 0
        for a, b in zip(truth, got, strict=True):
            for x, y in zip(a.columns[index], b.columns[index], strict=True):
                if (x is None) != (y is None):
                    largest = 1 << 62
                elif x is not None and y is not None:
                    e = abs(int(x) - int(y))
                    largest = max(largest, min(e % period, period - e % period) if period else e)
        unit = f"angle of {period * abs(spec.scale):g}" if period else ""
        out[spec.name] = (largest * abs(spec.scale), spec.bound_raw * abs(spec.scale), unit)
    return out


# --- baselines -----------------------------------------------------------------------------------------


def json_bytes(d: Drive, schema: Schema) -> int:
    total = 0
    specs = schema.signals
    for k, tick in enumerate(d.ticks):
        sample: dict[str, object] = {"ts": tick / 50}
        for spec, column in zip(specs, d.columns, strict=True):
            if column[k] is not None:
                sample[spec.name] = spec.to_physical(column[k])  # type: ignore[arg-type]
        total += len(json.dumps(sample).encode())
    return total


def _sample_class(specs: Sequence[SignalSpec]) -> Any:
    kinds = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="bench_sample.proto", package="bench", syntax="proto3")
    message = file.message_type.add(name="Sample")
    message.field.add(name="tick", number=1, type=kinds.TYPE_SINT64, label=kinds.LABEL_OPTIONAL)
    for number, spec in enumerate(specs, start=2):
        kind = kinds.TYPE_DOUBLE if spec.is_float else kinds.TYPE_SINT64
        message.field.add(name=f"s{number}", number=number, type=kind, label=kinds.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("bench.Sample"))


def protobuf_baseline(d: Drive, schema: Schema) -> tuple[int, float]:
    """Bytes of one message per sample, and encode + decode CPU seconds for all of them."""
    sample = _sample_class(schema.signals)
    names = [f"s{n}" for n in range(2, len(schema.signals) + 2)]
    rows = [
        {"tick": t, **{n: c[k] for n, c in zip(names, d.columns, strict=True) if c[k] is not None}}
        for k, t in enumerate(d.ticks)
    ]
    encoded = [sample(**row).SerializeToString() for row in rows]

    def roundtrip() -> None:
        for row in rows:
            message = sample.FromString(sample(**row).SerializeToString())
            [getattr(message, n) for n in names]

    return sum(map(len, encoded)), best(roundtrip, 1)


def raw_can_bytes(d: Drive) -> int:
    return d.frames * CAN_FRAME_BYTES


# --- the rows ------------------------------------------------------------------------------------------


def profiles(names: Sequence[str] | None = None) -> list[Profile]:
    chosen = [p for p in PROFILES if names is None or p.name.split()[0] in names]
    return [p for p in chosen if p.log.exists()]


def codec_rows(names: Sequence[str] | None = None) -> list[Row]:
    """(measure, ours, baseline or None, unit, note) for ``make bench``; ``names`` picks profiles."""
    rows: list[Row] = []
    worst: dict[str, tuple[float, float, str]] = {}
    for profile in profiles(names):
        d = drive(profile)
        lossless_schema = schema_of(d, seeds=False)
        seeds_schema = schema_of(d, seeds=True)
        lossless, seeds = run_codec(d, lossless_schema), run_codec(d, seeds_schema)
        n = len(d.ticks)
        few = seed_signals(d, seeds_schema)
        proto, proto_s = protobuf_baseline(d, lossless_schema)
        js, can = json_bytes(d, lossless_schema) / n, raw_can_bytes(d) / n
        others = (
            f"{n} samples x {len(d.names)} signals, {BATCH}-s batches; JSON per sample {js:,.1f} B, seed "
            f"000's packet {SEED000_BYTES} B (8 fields of its own only), raw CAN frames {can:,.1f} B "
            f"({CAN_FRAME_BYTES} B per frame)"
        )
        fewer = 100 * (1 - seeds.per_sample / (proto / n))
        rows.append(
            (
                f"{profile.name}: bytes/sample lossless",
                lossless.per_sample,
                proto / n,
                "B",
                f"baseline: one protobuf message per sample; {others}",
            )
        )
        rows.append(
            (
                f"{profile.name}: bytes/sample at the seeds' bounds",
                seeds.per_sample,
                proto / n,
                "B",
                f"{fewer:.1f} % fewer than one protobuf message per sample; "
                + ", ".join(
                    f"{name} max |error| {e:.4g} (ε {eps:.4g})" for name, (e, eps, _) in seeds.errors.items()
                ),
            )
        )
        if few is not None:
            small, schema = few
            mine, theirs = run_codec(small, schema, timed=False), protobuf_baseline(small, schema)[0] / n
            rows.append(
                (
                    f"{profile.name}: bytes/sample, only the seeds' signals at their bounds",
                    mine.per_sample,
                    theirs,
                    "B",
                    f"{100 * (1 - mine.per_sample / theirs):.1f} % fewer than one protobuf message per sample of "
                    f"the same {len(small.names)} signals ({', '.join(small.names)}): seed 001's own comparison; "
                    f"{BATCH}-s batches (10-s batches: "
                    f"{run_codec(small, schema, batch=10, timed=False).per_sample:.3f} B)",
                )
            )
        rows.append(
            (
                f"{profile.name}: encode+decode time per sample",
                lossless.us,
                proto_s / n * 1e6,
                "µs",
                f"ours: encode {lossless.encode_s / n * 1e6:.2f} + decode {lossless.decode_s / n * 1e6:.2f} "
                "µs (CPU, lossless); baseline: one protobuf message per sample, serialize + parse",
            )
        )
        for name, (e, eps, unit) in seeds.errors.items():
            if e > worst.get(name, (-1.0, 0.0, ""))[0]:
                worst[name] = (e, eps, unit)
    for name, (e, eps, unit) in sorted(worst.items()):
        rows.append(
            (
                f"largest error {name}",
                e,
                eps,
                "signal unit",
                f"baseline column: its bound ε{'; ' + unit if unit else ''}; over every drive above",
            )
        )
    return rows


def seed_signals(d: Drive, seeds: Schema) -> tuple[Drive, Schema] | None:
    """The drive cut down to the signals that carry a seed bound (seed 001's message), or ``None``."""
    keep = [i for i, spec in enumerate(seeds.signals) if spec.bound_raw]
    if not keep:
        return None
    small = Drive(d.profile, [d.names[i] for i in keep], d.frames, d.ticks, [d.columns[i] for i in keep])
    return small, Schema(seeds.rate, tuple(seeds.signals[i] for i in keep))


def print_rows(rows: Sequence[Row]) -> None:
    width = max(len(r[0]) + len(r[3]) + 3 for r in rows)
    print(f"{'measure':<{width}} {'ours':>10} {'baseline':>10}")
    for measure, ours, base, unit, _ in rows:
        b = "" if base is None else f"{base:>10.4g}"
        print(f"{measure + ' (' + unit + ')':<{width}} {ours:>10.4g} {b}")
    print()
    for measure, _, _, _, note in rows:
        print(f"- {measure}: {note}")


# --- the decisions -------------------------------------------------------------------------------------


def _verbatim(schema: Schema, blobs: Sequence[bytes], compress: bool | str) -> bytes:
    """A batch of stored chunks as they are (not packed): what encode_batch did before packing."""
    batch = pb.Batch(vin="BENCH", schema=schema_message(schema))
    for blob in blobs:
        batch.chunks.add().MergeFromString(blob)
    return messages.envelope(pb.BODY_KIND_BATCH, batch.SerializeToString(), compress)


def decide_predictor(ds: Sequence[Drive]) -> list[str]:
    out = ["bytes/sample by predictor (zstd, 1-s chunks, 60-s batches): lossless | at the seeds' bounds"]
    for d in ds:
        cells = []
        for predictor in PREDICTORS:
            a = run_codec(d, schema_of(d, False, predictor), timed=False).per_sample
            b = run_codec(d, schema_of(d, True, predictor), timed=False).per_sample
            cells.append(f"{predictor} {a:6.3f} | {b:6.3f}")
        out.append(f"  {d.profile.name:<20} " + "   ".join(cells))
    return out


def decide_compressor(ds: Sequence[Drive]) -> list[str]:
    import zstandard

    out = [
        "compressor over the packed batch body (lossless, 1-s chunks, 60-s batches): B/sample, "
        "compress µs/batch and µs/sample, decompress µs/sample"
    ]
    methods: list[tuple[str, Callable[[bytes], bytes], Callable[[bytes], bytes]]] = [("none", bytes, bytes)]
    for level in (1, 6, 9):
        methods.append((f"zlib-{level}", functools.partial(zlib.compress, level=level), zlib.decompress))
    for level in (3, 9, 13, 15, 19):
        zc = zstandard.ZstdCompressor(level=level)
        methods.append((f"zstd-{level}", zc.compress, zstandard.ZstdDecompressor().decompress))
    for d in ds:
        schema = schema_of(d, False)
        blobs = [wire.encode_chunk(schema, c) for c in chunks(d)]
        bodies = [
            pb.Envelope.FromString(
                wire.encode_batch("BENCH", schema, blobs[i : i + BATCH], compress=False)
            ).body
            for i in range(0, len(blobs), BATCH)
        ]
        out.append(f"  {d.profile.name} ({len(bodies)} batches)")
        for name, squeeze, unsqueeze in methods:
            packed = [squeeze(b) for b in bodies]
            c_s = best(lambda: [squeeze(b) for b in bodies])  # noqa: B023
            u_s = best(lambda: [unsqueeze(b) for b in packed])  # noqa: B023
            n = len(d.ticks)
            out.append(
                f"    {name:<8} {sum(map(len, packed)) / n:7.3f} B/sample  compress {c_s / len(bodies) * 1e3:6.2f}"
                f" ms/batch {c_s / n * 1e6:5.2f} µs/sample  decompress {u_s / n * 1e6:5.2f} µs/sample"
            )
    return out


def decide_layout(ds: Sequence[Drive]) -> list[str]:
    out = ["layout (lossless, zstd): B/sample and encode_batch / decode_batch µs/sample (CPU)"]
    for d in ds:
        schema, n = schema_of(d, False), len(d.ticks)
        out.append(f"  {d.profile.name}")
        for size in (50, 250, 1500):
            blobs = [wire.encode_chunk(schema, c) for c in chunks(d, size)]
            per = max(1, 3000 // size)
            groups = [blobs[i : i + per] for i in range(0, len(blobs), per)]
            for label, make in (
                ("packed", lambda g, s=schema: wire.encode_batch("BENCH", s, g)),
                ("as stored", lambda g, s=schema: _verbatim(s, g, True)),
            ):
                payloads = [make(g) for g in groups]
                e_s = best(lambda: [make(g) for g in groups])  # noqa: B023
                d_s = best(lambda: [wire.decode_batch(p) for p in payloads])  # noqa: B023
                out.append(
                    f"    chunks of {size:>4} samples, {label:<9}: {sum(map(len, payloads)) / n:6.3f} B/sample"
                    f"  pack+compress {e_s / n * 1e6:5.2f}  decode {d_s / n * 1e6:5.2f}"
                )
        blobs = [wire.encode_chunk(schema, c) for c in chunks(d)]
        cells = []
        for per in (1, 5, 10, 30, 60, 120, 360):
            total = sum(
                len(wire.encode_batch("BENCH", schema, blobs[i : i + per])) for i in range(0, len(blobs), per)
            )
            cells.append(f"{per} s: {total / n:.2f}")
        out.append("    batch length (1-s chunks, packed, zstd), B/sample: " + ", ".join(cells))
        stored = sum(len(b) for b in blobs) / n
        out.append(
            f"    stored in the agent's buffer (chunks as sealed, uncompressed): {stored:.2f} B/sample"
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profiles", nargs="*", help="first words of profile names (default: all)")
    parser.add_argument(
        "--decisions", action="store_true", help="also print the measurements behind the defaults"
    )
    args = parser.parse_args(argv)
    logs.configure("error", "console")  # the real logs' short frames are expected: no warnings here
    chosen = profiles(args.profiles)
    print_rows(codec_rows([p.name.split()[0] for p in chosen]))
    if args.decisions:
        ds = [drive(p) for p in chosen]
        for lines in (decide_predictor(ds), decide_compressor(ds[:2] + ds[4:5]), decide_layout(ds[:2])):
            print()
            print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
