"""The chunker: samples into chunks whose span stays bounded, and ticks with gaps that cost a few bytes.

End to end on the committed city drive: a log made of the drive followed by itself (same timestamps)
goes through the real reader, decoder, sampler and chunker, over the wire codec, into a real receiver
store, and both drives are there, none of the second counted as an overlap of the first.
"""

from __future__ import annotations

import gzip
from fractions import Fraction
from pathlib import Path

from agent import wire
from agent.chunk import Chunker
from agent.decode import build_decoder
from agent.sample import Sampler, to_micros
from agent.source import read_log
from agent.wire import telemetry_pb2 as pb
from agent.wire.chunks import decode_chunk
from agent.wire.values import Schema, SignalSpec
from receiver.store import Store

ROOT = Path(__file__).resolve().parent.parent
BOOT = bytes(16)
SCHEMA = Schema(Fraction(50), (SignalSpec("A.x"), SignalSpec("B.y", scale=0.5, integer_scaled=False)))
YEAR_TICKS = 365 * 86_400 * 50


def chunk_ticks(payload: bytes) -> list[int]:
    return decode_chunk(SCHEMA, pb.Chunk.FromString(payload)).ticks


def test_consecutive_ticks_are_cut_every_max_samples() -> None:
    chunker = Chunker(SCHEMA, BOOT, 50)
    for tick in range(1000, 1120):
        chunker.add(tick, [tick, None])
    chunker.seal()
    sealed = chunker.take()
    assert [(c.first_tick, c.sample_count, c.id.seq) for c in sealed] == [
        (1000, 50, 0),
        (1050, 50, 1),
        (1100, 20, 2),
    ]


def test_a_jump_in_ticks_seals_the_chunk_so_its_span_stays_below_max_samples() -> None:
    chunker = Chunker(SCHEMA, BOOT, 50)
    ticks = [*range(0, 10), *range(30, 40), YEAR_TICKS, YEAR_TICKS + 1]
    for tick in ticks:
        chunker.add(tick, [1, 2])
    chunker.seal()
    sealed = chunker.take()
    assert [chunk_ticks(c.payload) for c in sealed] == [
        [*range(0, 10), *range(30, 40)],
        [YEAR_TICKS, YEAR_TICKS + 1],
    ]
    for chunk in sealed:
        ticks_of = chunk_ticks(chunk.payload)
        assert ticks_of[-1] - ticks_of[0] < 50


def test_a_gap_in_ticks_costs_a_few_bytes() -> None:
    def size(ticks: list[int]) -> int:
        chunker = Chunker(SCHEMA, BOOT, 1000)
        for tick in ticks:
            chunker.add(tick, [7, 3])
        sealed = chunker.seal()
        assert sealed is not None and chunk_ticks(sealed.payload) == ticks
        return len(sealed.payload)

    consecutive = size(list(range(100, 140)))
    with_gap = size([*range(100, 120), *range(900, 920)])
    # Consecutive ticks have no tick_dod at all; with a gap, one zero byte per tick before it, then one
    # delta-of-delta out and one back (zigzag varints): bounded by the chunk's length, whatever the gap.
    assert with_gap <= consecutive + 20 + 2 * 3


def test_a_year_s_clock_step_makes_o1_chunks_and_bytes() -> None:
    chunker = Chunker(SCHEMA, BOOT, 50)
    sampler = Sampler(SCHEMA.rate, 2, chunker.add)
    second = 1_000_000
    for i in range(100):
        micros = i * 20_000 + (365 * 86_400 * second if i >= 50 else 0)
        sampler.feed(micros, [(0, i), (1, 2 * i)])
    sampler.finish()
    chunker.seal()
    sealed = chunker.take()
    assert sum(c.sample_count for c in sealed) == 150  # 1 s of each side, and 1 s held before the step
    assert len(sealed) <= 4 and sum(len(c.payload) for c in sealed) < 400
    blob = wire.encode_batch("VIN1", SCHEMA, [c.payload for c in sealed])
    assert [c.ticks for c in wire.decode_batch(blob).chunks] == [chunk_ticks(c.payload) for c in sealed]


def test_a_drive_followed_by_itself_stores_both_drives(tmp_path: Path) -> None:
    city = gzip.decompress((ROOT / "replay_logs" / "city.log.gz").read_bytes())
    (tmp_path / "city.log").write_bytes(city)
    (tmp_path / "twice.log").write_bytes(city + city)
    names = ["DriveSpeed.VehicleSpeed", "BatteryState.StateOfCharge", "Pedals.AccelPedal"]

    def sample(log: Path) -> tuple[Schema, list[bytes], Sampler]:
        decoder = build_decoder([("can0", [ROOT / "dbc" / "reference_ev.dbc"], "auto")], names)
        schema = Schema(Fraction(50), decoder.signals)
        chunker = Chunker(schema, bytes(range(16)), 50)
        sampler = Sampler(schema.rate, len(names), chunker.add, periods=decoder.periods)
        for frame in read_log(log):
            sampler.feed(to_micros(frame.timestamp), decoder.decode(frame))
        sampler.finish()
        chunker.seal()
        return schema, [c.payload for c in chunker.take()], sampler

    _, _, once = sample(tmp_path / "city.log")
    schema, payloads, twice = sample(tmp_path / "twice.log")
    assert twice.stats.frames == 2 * once.stats.frames == 326_160
    assert twice.stats.ticks_emitted == 2 * once.stats.ticks_emitted
    assert (twice.stats.late, twice.stats.jumps_back) == (0, 1)
    with Store(tmp_path / "store.sqlite") as store:
        for start in range(0, len(payloads), 200):
            store.store_batch(
                wire.decode_batch(wire.encode_batch("TWICE1", schema, payloads[start : start + 200]))
            )
        (stats,) = store.stats()
        assert stats.samples == 2 * once.stats.ticks_emitted and stats.overlaps == 0
        rows = list(store.rows("TWICE1", names))
    assert len(rows) == 2 * once.stats.ticks_emitted
    half = len(rows) // 2
    assert [values for _, values in rows[:half]] == [values for _, values in rows[half:]]
    assert rows[half][0] == rows[half - 1][0] + 1  # the second drive right after the first
