"""Chunking stage: samples into sealed, encoded chunks (the unit of the buffer and of the ack).

Contract: used by the pipeline thread only. ``add`` copies the sampler's values into column lists;
``seal`` closes the current chunk, encodes it with :func:`agent.wire.encode_chunk` (closed-loop, so the
stored bytes are exactly what the receiver will decode) and returns it, or ``None`` when empty. A chunk
is sealed when it holds ``max_samples`` and at every commit, so a crash loses at most one commit
interval. Chunk sequence numbers start at 0 for every boot id and never repeat within it. Each chunk is
stamped with the wall time it was sealed (``clock``, ms; inside the stored bytes, so a chunk sent from a
backlog keeps it): the receiver's latency histograms start there.

Ticks need not be consecutive: the sampler emits no tick at which every signal is absent, so after a
silence the next tick may be far ahead (the chunk's tick delta-of-delta codes such a jump in a few
bytes). A chunk never spans ``max_samples`` tick numbers or more: a tick that far from the open
chunk's first seals it first, so a chunk's span (last - first tick) stays below ``max_samples``, which
is what the receiver's overlap search (``max_span``) relies on to stay cheap.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent import wire
from agent.wire.values import ChunkData, ChunkId, RawValue, Schema


def new_boot_id() -> bytes:
    return os.urandom(16)


@dataclass(frozen=True)
class SealedChunk:
    id: ChunkId
    first_tick: int
    sample_count: int
    payload: bytes


class Chunker:
    def __init__(
        self, schema: Schema, boot_id: bytes, max_samples: int, clock: Callable[[], float] = time.time
    ) -> None:
        if max_samples < 1:
            raise ValueError("a chunk holds at least one sample")
        self.clock = clock  # the wall clock, seconds: each chunk's seal time
        self.schema = schema
        self.boot_id = boot_id
        self.max_samples = max_samples
        self.next_seq = 0
        self._ticks: list[int] = []
        self._width = len(schema.signals)
        # Per sample a copy of its row (a C-speed copy, not a Python loop per value); columns at the seal.
        self._rows: list[list[RawValue | None]] = []
        self.sealed: list[SealedChunk] = []  # sealed, not yet handed to the buffer

    def add(self, tick: int, values: list[RawValue | None]) -> None:
        if self._ticks and tick - self._ticks[0] >= self.max_samples:
            self.seal()  # a jump over a silence: the chunk's span stays below max_samples
        if len(values) != self._width:
            raise ValueError(f"a sample of {len(values)} values for {self._width} signals")
        self._ticks.append(tick)
        self._rows.append(values.copy())
        if len(self._ticks) >= self.max_samples:
            self.seal()

    def __len__(self) -> int:
        return len(self._ticks)

    def seal(self) -> SealedChunk | None:
        if not self._ticks:
            return None
        columns: list[list[RawValue | None]] = [list(column) for column in zip(*self._rows, strict=True)]
        data = ChunkData(self.boot_id, self.next_seq, self._ticks, columns, int(self.clock() * 1000))
        chunk = SealedChunk(data.id, self._ticks[0], len(self._ticks), wire.encode_chunk(self.schema, data))
        self.next_seq += 1
        self._ticks = []
        self._rows = []
        self.sealed.append(chunk)
        return chunk

    def take(self) -> list[SealedChunk]:
        """Hand the sealed chunks to the caller (the buffer commit)."""
        taken, self.sealed = self.sealed, []
        return taken
