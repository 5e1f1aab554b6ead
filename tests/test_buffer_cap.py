"""The cap and the eviction ledger (agent/buffer/cap.py): what gives when the backlog is past the limits.

A long outage: an hour of 50 Hz chunks (3,600 chunks of 50 samples) under a byte cap, with each policy,
against a model that says exactly which chunks go; then the drain, in order. The age limit, and the
notices that name every evicted chunk until a receiver's ack says its gap ledger holds them.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import agent.buffer.queue as queue_module
from agent.buffer import Buffer
from agent.chunk import Chunker, SealedChunk
from agent.config import BufferConfig
from agent.wire.values import ChunkId
from tests.harness.buffers import SCHEMA, scratch, seqs

BOOT = b"H" * 16


def hour_of_chunks(seconds: int = 3600) -> list[SealedChunk]:
    """An hour at 50 Hz: one 50-sample chunk a second, two signals, a slow drift plus noise."""
    chunker = Chunker(SCHEMA, BOOT, max_samples=50)
    rnd = random.Random(42)
    a = b = 0
    for tick in range(seconds * 50):
        a += rnd.randint(-3, 3)
        b = (b + rnd.randint(0, 40)) % 20_000
        chunker.add(tick, [a, b])
    return chunker.take()


HOUR = hour_of_chunks()


def model_outage(
    chunks: list[SealedChunk], cap: BufferConfig
) -> tuple[list[int], list[list[int]], list[int]]:
    """Which seqs stay, which go at each append (in order), and which are refused; exactly."""
    kept: list[SealedChunk] = []
    total = 0
    evicted: list[list[int]] = []
    refused: list[int] = []
    for chunk in chunks:
        excess = total + len(chunk.payload) - cap.max_bytes
        if excess > 0 and cap.full_policy == "refuse_new":
            refused.append(chunk.id.seq)
            continue
        if excess > 0:
            freed, n = 0, 0
            while n < len(kept):
                freed, n = freed + len(kept[n].payload), n + 1
                if freed >= excess:
                    break
            evicted.append([c.id.seq for c in kept[:n]])
            total -= freed
            kept = kept[n:]
        kept.append(chunk)
        total += len(chunk.payload)
    return [c.id.seq for c in kept], evicted, refused


def drain(buffer: Buffer) -> list[int]:
    """The uploader after the outage: lease oldest-first batches, ack each, until empty."""
    out: list[int] = []
    cursor = 0
    while batch := buffer.oldest(cursor, max_bytes=16 * 1024):
        out += [c.seq for c in batch]
        cursor = batch[-1].row_id
        assert buffer.delete([(BOOT, batch[0].seq, batch[-1].seq)]) == len(batch)
    return out


@pytest.mark.slow  # thousands of durable commits
@pytest.mark.parametrize("policy", ["drop_oldest", "refuse_new"])
def test_an_hour_past_the_cap_holds_the_policy_exactly(policy: str) -> None:
    cap = BufferConfig(max_bytes=60 * 1024, full_policy=policy)  # type: ignore[arg-type]  # about a third of the hour
    kept, evicted, refused = model_outage(HOUR, cap)
    assert 0 < len(kept) < len(HOUR) // 2  # the outage really is past the cap
    folder = scratch("buffer-cap-")
    try:
        buffer = Buffer(folder / "b.sqlite", check=True)
        sid = buffer.schema_id(SCHEMA)
        got_refused = []
        for chunk in HOUR:  # one commit a second, as the pipeline does with its default interval
            got_refused += [c.id.seq for c in buffer.append(sid, [chunk], cap)]
            assert buffer.stats().payload_bytes <= cap.max_bytes
        assert got_refused == refused
        assert seqs(buffer) == kept
        stats = buffer.stats()
        gone = [s for batch in evicted for s in batch] + refused
        assert stats.dropped_chunks == len(gone) == len(HOUR) - len(kept)
        assert stats.dropped_samples == 50 * len(gone)
        notices = buffer.db.execute(
            "SELECT first_seq, last_seq, reason FROM evictions ORDER BY id"
        ).fetchall()
        if policy == "drop_oldest":
            assert [(b[0], b[-1], "cap") for b in evicted] == [tuple(n) for n in notices]
            assert kept == list(range(len(HOUR) - len(kept), len(HOUR))), "not exactly the oldest went"
        else:
            assert [(s, s, "refused") for s in refused] == [tuple(n) for n in notices]
            first = refused[0]
            # what the code does: a chunk is refused when it does not fit; a smaller one later may fit
            assert kept[:first] == list(range(first))
        buffer.close()
        buffer = Buffer(folder / "b.sqlite", check=True)  # a restart in the middle changes nothing
        assert drain(buffer) == kept, "the drain is not in commit order"
        assert buffer.stats().chunks == 0 and buffer.stats().dropped_chunks == len(gone)
        buffer.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow  # thousands of durable commits
def test_refuse_new_with_equal_chunks_refuses_exactly_the_newest() -> None:
    """The hour again, every payload of one size: the first chunk over the cap and all after it go."""
    same = [SealedChunk(c.id, c.first_tick, c.sample_count, HOUR[0].payload) for c in HOUR[:1200]]
    cap = BufferConfig(max_bytes=len(HOUR[0].payload) * 500, full_policy="refuse_new")
    folder = scratch("buffer-cap-")
    try:
        buffer = Buffer(folder / "b.sqlite")
        sid = buffer.schema_id(SCHEMA)
        refused = [c.id.seq for chunk in same for c in buffer.append(sid, [chunk], cap)]
        assert refused == list(range(500, 1200))
        assert seqs(buffer) == list(range(500))
        buffer.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow  # thousands of durable commits
def test_a_lowered_cap_is_met_by_the_next_append() -> None:
    folder = scratch("buffer-cap-")
    try:
        buffer = Buffer(folder / "b.sqlite")
        sid = buffer.schema_id(SCHEMA)
        tiny = [SealedChunk(ChunkId(BOOT, n), n, 1, b"x" * 10) for n in range(12_001)]
        buffer.append(sid, tiny[:-1])
        buffer.append(sid, tiny[-1:], BufferConfig(max_bytes=100))
        assert buffer.stats().payload_bytes <= 100
        buffer.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_refuse_new_refuses_everything_after_the_first_refusal() -> None:
    folder = scratch("buffer-cap-")
    try:
        buffer = Buffer(folder / "b.sqlite")
        sid = buffer.schema_id(SCHEMA)
        cap = BufferConfig(max_bytes=1000, full_policy="refuse_new")
        refused = []
        for seq, size in enumerate((600, 500, 300)):
            refused += buffer.append(sid, [SealedChunk(ChunkId(BOOT, seq), seq, 1, bytes(size))], cap)
        assert [c.id.seq for c in refused] == [1, 2], f"kept {seqs(buffer)}"
        buffer.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class Clock:
    """Stands in for the ``time`` module inside :mod:`agent.buffer.queue`, so ages are exact."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clocked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Buffer, Clock]]:
    clock = Clock(1_700_000_000.0)
    monkeypatch.setattr(queue_module, "time", clock)
    buffer = Buffer(tmp_path / "b.sqlite")
    try:
        yield buffer, clock
    finally:
        buffer.close()


def test_chunks_past_the_age_limit_go_at_the_next_append(clocked: tuple[Buffer, Clock]) -> None:
    buffer, clock = clocked
    sid = buffer.schema_id(SCHEMA)
    chunks = [SealedChunk(ChunkId(BOOT, n), n, 5, bytes([n]) * 20) for n in range(6)]
    for chunk in chunks[:4]:
        buffer.append(sid, [chunk])
        clock.now += 10.0
    assert buffer.append(sid, chunks[4:5], BufferConfig(max_age_s=25.0)) == []  # now: 40 s after seq 0
    assert seqs(buffer) == [2, 3, 4]  # created 20 s and 10 s ago: kept; 40 s and 30 s: gone
    assert [n[1:] for n in buffer.notices()] == [(BOOT, 0, 1)]
    stats = buffer.stats()
    assert (stats.dropped_chunks, stats.dropped_samples, stats.payload_bytes) == (2, 10, 60)
    assert buffer.append(sid, chunks[5:], BufferConfig()) == []  # no limits: nothing goes
    assert seqs(buffer) == [2, 3, 4, 5]


def test_notices_are_forgotten_only_when_an_ack_names_their_ranges(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "b.sqlite")
    sid = buffer.schema_id(SCHEMA)
    other = b"O" * 16
    chunks = [SealedChunk(ChunkId(BOOT, n), n, 1, bytes(100)) for n in range(4)]
    buffer.append(sid, chunks)
    buffer.append(sid, [SealedChunk(ChunkId(other, 0), 0, 1, bytes(300))], BufferConfig(max_bytes=300))
    buffer.append(
        sid,
        [SealedChunk(ChunkId(other, 1), 1, 1, bytes(400))],
        BufferConfig(max_bytes=300, full_policy="refuse_new"),
    )
    assert [n[1:] for n in buffer.notices()] == [(BOOT, 0, 3), (other, 1, 1)]
    buffer.clear_noted([(BOOT, 0, 2), (b"X" * 16, 0, 3)])  # not the noted range, and an unknown boot
    assert len(buffer.notices()) == 2
    buffer.clear_noted([(BOOT, 0, 3)])
    assert [n[1:] for n in buffer.notices()] == [(other, 1, 1)]
    assert buffer.stats().dropped_chunks == 5  # the counters keep the history; only the notices go
    buffer.close()
