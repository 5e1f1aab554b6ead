"""Properties of the codec (issue #3's proof): the bound holds, always; batches decode alone, in any order.

For random signals (integers, angles, floats; absent runs; out-of-range values), bounds, predictors, chunk
cuts and batch groupings: every reconstructed value is within ε of the truth (modulo the turn for an
angle; equal for ε = 0 and for floats, bit for bit), absent stays absent, encoding and decoding are
deterministic, and each batch decodes alone in any order. Then seed 001's open-loop scheme is shown to
break its threshold on a real drive where ours does not, and the sizes are held under a generous ceiling.
"""

from __future__ import annotations

import random
import struct
from itertools import accumulate, pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import wire
from agent.decode import build_decoder
from agent.errors import ConfigError
from agent.wire import predictors as predict
from agent.wire.values import ChunkData, RawValue, Schema, SignalSpec
from tests.harness.strategies import Signal, chunks_of, drives

ROOT = Path(__file__).resolve().parent.parent
DBC = ROOT / "dbc" / "reference_ev.dbc"
HIGHWAY = ROOT / "replay_logs" / "highway.log.gz"
BOOT = b"\x07" * 16


def within(spec: SignalSpec, truth: RawValue | None, got: RawValue | None) -> bool:
    if truth is None or got is None:
        return truth is None and got is None
    if spec.is_float:
        return struct.pack("<d", truth) == struct.pack("<d", got)
    code = predict.Coding.parse(spec.predictor)
    if code.period:
        if not code.low <= truth < code.low + code.period:
            return got == truth  # sent exactly
        distance = abs(int(got) - int(truth)) % code.period
        in_range = code.low <= got < code.low + code.period
        return in_range and min(distance, code.period - distance) <= spec.bound_raw
    return abs(int(got) - int(truth)) <= spec.bound_raw


@settings(max_examples=250, deadline=None)
@given(drive=drives(), order=st.randoms(use_true_random=False))
def test_every_value_within_its_bound_in_any_batch_order(
    drive: tuple[list[int], list[Signal], list[int], list[int]], order: random.Random
) -> None:
    ticks, chosen, cuts, groups = drive
    schema, chunks = chunks_of(BOOT, ticks, chosen, cuts)
    blobs = [wire.encode_chunk(schema, chunk) for chunk in chunks]
    assert blobs == [wire.encode_chunk(schema, chunk) for chunk in chunks]  # deterministic bytes
    starts = [0, *accumulate(groups)]
    batches = [blobs[a:b] for a, b in pairwise(starts) if a < len(blobs)]
    payloads = [wire.encode_batch("VIN", schema, batch) for batch in batches]
    positions = list(range(len(payloads)))
    order.shuffle(positions)
    decoded: dict[int, ChunkData] = {}
    for position in positions:  # each batch alone, in a random order
        got = wire.decode_batch(payloads[position])
        assert got.chunks == wire.decode_batch(payloads[position]).chunks or any(
            isinstance(v, float) and v != v for c in got.chunks for col in c.columns for v in col
        )  # deterministic (NaN is not equal to itself)
        for chunk in got.chunks:
            assert chunk.seq not in decoded
            decoded[chunk.seq] = chunk
    assert sorted(decoded) == list(range(len(chunks)))
    for chunk in chunks:
        out = decoded[chunk.seq]
        assert out.ticks == chunk.ticks and out.boot_id == BOOT
        for signal_index, spec in enumerate(schema.signals):
            for truth, got in zip(chunk.columns[signal_index], out.columns[signal_index], strict=True):
                assert within(spec, truth, got), (spec, truth, got)


def test_discrete_signals_stay_lossless_whatever_the_configuration() -> None:
    names = ["Gear.Gear", "Gear.Counter", "DriveSpeed.Checksum", "Pedals.BrakeSwitch", "CellStats.CellMux"]
    decoder = build_decoder([("can0", [DBC], "auto")], names, dict.fromkeys(names, 50.0))
    assert [spec.bound_raw for spec in decoder.signals] == [0] * len(names)
    seeds = build_decoder([("can0", [DBC], "auto")], preset="seeds").signals
    bounds = {spec.name: spec.bound_raw for spec in seeds if spec.bound_raw}
    assert bounds == {
        "DriveSpeed.VehicleSpeed": 321,  # 2 mph = 3.218688 km/h at 0.01 km/h
        "BatteryPower.PackPower": 100,  # 5 kW at 0.05 kW
        "BatteryState.StateOfCharge": 5,  # 0.5 % at 0.1 %
        "Navigation.Heading": 500,  # 5° at 0.01°
    }
    heading = next(spec for spec in seeds if spec.name == "Navigation.Heading")
    assert predict.Coding.parse(heading.predictor).period == 36000


FLOAT_DBC = """VERSION ""
NS_ :
BS_:
BU_: A
BO_ 256 Nav: 8 A
 SG_ Lat : 0|32@1- (1,0) [-90|90] "deg" A
 SG_ Course : 32|16@1+ (0.007,0) [0|360] "deg" A
SIG_VALTYPE_ 256 Lat : 1;
"""


def test_a_bound_or_angle_on_a_float_signal_is_refused_and_a_preset_skips_it(tmp_path: Path) -> None:
    dbc = tmp_path / "nav.dbc"
    dbc.write_text(FLOAT_DBC)
    buses = [("can0", [dbc], "auto")]
    with pytest.raises(ConfigError, match=r"Nav\.Lat is an IEEE float signal"):
        build_decoder(buses, ["Nav.Lat"], {"Nav.Lat": 0.001})
    with pytest.raises(ConfigError, match=r"Nav\.Lat is an IEEE float signal"):
        build_decoder(buses, ["Nav.Lat"], angles={"Nav.Lat": 360})
    with pytest.raises(ConfigError, match=r"a turn of 360 is not a whole number of raw units of 0\.007"):
        build_decoder(buses, ["Nav.Course"], angles={"Nav.Course": 360})
    with pytest.raises(ConfigError, match=r"sampling\.bounds names signals that are not sampled: Nav\.Lon"):
        build_decoder(buses, [], {"Nav.Lon": 1})
    assert build_decoder(buses, preset="seeds").signals[0].bound_raw == 0  # the preset names none of these


def test_an_angles_range_comes_from_its_dbc() -> None:
    heading = build_decoder(
        [("can0", [DBC], "auto")], ["Navigation.Heading"], angles={"Navigation.Heading": 360}
    )
    assert heading.signals[0].predictor == "hold angle 36000 0" and heading.signals[0].bound_raw == 0


# --- a real drive --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def highway() -> tuple[Schema, list[ChunkData]]:
    from tests.harness import bench_codec

    profile = next(p for p in bench_codec.PROFILES if p.name == "highway")
    drive = bench_codec.drive(profile)
    return bench_codec.schema_of(drive, seeds=True), bench_codec.chunks(drive)


def seed_001(actual: list[float], threshold: float, resync: int = 1500) -> list[float]:
    """Seed 001 as written: the client's smoothing sees the truth, the server's only what it got."""
    client = server = actual[0]
    received = []
    for index, value in enumerate(actual):
        send = index % resync == 0 or abs(value - client) > threshold
        client = 0.3 * value + 0.7 * client  # fed the actual value, which the server never sees
        here = value if send else server  # the server fills the omitted field with its prediction
        server = 0.3 * here + 0.7 * server
        received.append(here)
    return received


def test_seed_001s_open_loop_scheme_breaks_its_threshold_and_ours_never_does(
    highway: tuple[Schema, list[ChunkData]],
) -> None:
    schema, chunks = highway
    column = schema.names.index("DriveSpeed.VehicleSpeed")
    spec = schema.signals[column]
    truth = [spec.to_physical(v) for c in chunks for v in c.columns[column] if v is not None]
    threshold = 2 * 1.609344  # 2 mph in km/h
    theirs = seed_001(truth, threshold)
    worst = max(abs(a - b) for a, b in zip(truth, theirs, strict=True))
    assert worst > 3 * threshold  # drifts far past its threshold before a resync catches it
    blobs = [wire.encode_chunk(schema, c) for c in chunks]
    ours = [
        spec.to_physical(v)
        for i in range(0, len(blobs), 60)
        for c in wire.decode_batch(wire.encode_batch("V", schema, blobs[i : i + 60])).chunks
        for v in c.columns[column]
        if v is not None
    ]
    assert max(abs(a - b) for a, b in zip(truth, ours, strict=True)) <= threshold


def test_sizes_stay_under_a_generous_ceiling(highway: tuple[Schema, list[ChunkData]]) -> None:
    """Not a benchmark (see tests/harness/bench_codec.py): a regression guard with room to spare."""
    seeds, chunks = highway
    lossless = Schema(seeds.rate, tuple(s._replace(bound_raw=0) for s in seeds.signals))
    samples = sum(len(c) for c in chunks)
    for schema, ceiling in ((lossless, 8.0), (seeds, 7.0)):
        blobs = [wire.encode_chunk(schema, c) for c in chunks]
        sent = sum(len(wire.encode_batch("V", schema, blobs[i : i + 60])) for i in range(0, len(blobs), 60))
        assert sent / samples <= ceiling
