"""What the buffer's tests share: schemas, chunks (encoded or opaque), scratch folders, the model's folds.

Used from the test thread only; nothing here touches a buffer file except :func:`seqs` (a read).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

from agent.buffer import Buffer
from agent.chunk import Chunker, SealedChunk
from agent.wire.values import ChunkId, Schema, SignalSpec

SCHEMA = Schema(Fraction(50), (SignalSpec("M.a"), SignalSpec("M.b", 0.1, 0.0, False, False)))
OTHER = Schema(Fraction(10), (SignalSpec("M.a"),))


def sealed(boot: bytes, count: int, schema: Schema = SCHEMA) -> list[SealedChunk]:
    """``count`` real chunks of 10 samples each (through the real :class:`Chunker`)."""
    chunker = Chunker(schema, boot, max_samples=10)
    for tick in range(count * 10):
        chunker.add(tick, [tick] * len(schema.signals))
    return chunker.take()


def fill(path: Path, boot: bytes, count: int) -> Path:
    """Append ``count`` sealed chunks of ``boot`` (:data:`SCHEMA`) to the buffer at ``path`` (made when
    new), closed again after: a buffer as an agent leaves it."""
    buffer = Buffer(path)
    try:
        buffer.append(buffer.schema_id(SCHEMA), sealed(boot, count))
    finally:
        buffer.close()
    return path


def opaque(boot: bytes, count: int, size: int = 64, first: int = 0) -> list[SealedChunk]:
    """Chunks whose payloads are opaque bytes: the buffer never looks inside (and the codec is elsewhere)."""
    return [
        SealedChunk(ChunkId(boot, n), n * 10, 10, bytes([n % 256]) * size)
        for n in range(first, first + count)
    ]


def scratch(prefix: str = "buffer-") -> Path:
    """A fresh folder on a tmpfs when there is one (fsync is free there); the caller removes it."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def fold(ids: Iterable[tuple[bytes, int]]) -> list[tuple[bytes, int, int]]:
    """Runs of consecutive seqs of one boot, in the order given (the tests' own, not the wire's)."""
    runs: list[tuple[bytes, int, int]] = []
    for boot, seq in ids:
        if runs and runs[-1][0] == boot and runs[-1][2] + 1 == seq:
            runs[-1] = (boot, runs[-1][1], seq)
        else:
            runs.append((boot, seq, seq))
    return runs


def seqs(buffer: Buffer) -> list[int]:
    """The seqs in the table, in commit order (read directly, beside the buffer's own queries)."""
    return [r[0] for r in buffer.db.execute("SELECT seq FROM chunks ORDER BY id").fetchall()]
