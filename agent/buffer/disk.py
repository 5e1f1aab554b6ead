"""The buffer's disk: the reserve file, the headroom kept free, a full file system, and the chunks that wait.

Contract
- A :class:`BufferWriter` belongs to the pipeline thread (made once, before the thread starts; then used
  by that thread alone) and is the only way sealed chunks go into the buffer: ``commit`` hands them to
  the :class:`~agent.buffer.queue.Buffer` connection of that thread, under the config's cap, in one
  durable transaction. It blocks on SQLite and on the file system (a few small statements; the reserve
  is rewritten only after a full disk).
- Headroom: before each commit, when the space the buffer may still use (the file system's free space
  plus the free pages inside the file) would fall under :func:`headroom`, the oldest chunks go first
  (reason ``disk_full``, counted and noted): SQLite needs free space even to delete rows.
- A full disk all the same (ENOSPC): the reserve file is given back, the WAL checkpointed, the commit
  retried; if it still fails, old chunks go and it is retried once more. The reserve is taken back only
  when the disk has room to spare.
- A commit that fails (disk full beyond that, I/O error) is logged; its chunks wait in memory and go
  first at the next commit. None is ever dropped from memory: once :data:`MAX_PENDING_CHUNKS` wait
  (:attr:`BufferWriter.full`), the pipeline stops taking frames until a commit succeeds (back-pressure
  onto the reader: a replay waits, a live bus backs up into the kernel's socket buffer, which counts
  its own drops).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.buffer.queue import Buffer
from agent.chunk import SealedChunk
from agent.config import BufferConfig
from agent.errors import StorageError, StorageFullError
from agent.service.logs import get_logger

HEADROOM_BYTES = 16 << 20  # free space kept on the buffer's file system (less on a tiny one)
MAX_PENDING_CHUNKS = 3600  # an hour at one chunk a second: past it, the pipeline takes no more frames


class DiskReserve:
    """A file of spare bytes beside the buffer, given back to the file system when the disk fills up.

    SQLite needs a little free space even to delete rows (the WAL grows first); without this, a disk that
    is full to the last byte could refuse the very eviction that would make room.
    """

    def __init__(self, buffer_path: Path, size: int = 2 << 20) -> None:
        self.path = buffer_path.with_name(buffer_path.name + ".reserve")
        self.size = size
        self.restore()

    def restore(self) -> bool:
        try:
            if not self.path.exists() or self.path.stat().st_size < self.size:
                with open(self.path, "wb") as out:
                    out.write(b"\0" * self.size)
                    out.flush()
                    os.fsync(out.fileno())
            return True
        except OSError:
            self.path.unlink(missing_ok=True)
            return False

    def restore_if_room(self) -> bool:
        """Take the reserve back only when the disk has room to spare beyond it (else it would eat the
        space the WAL needs for the very next commit)."""
        try:
            stats = os.statvfs(self.path.parent)
        except OSError:
            return False
        if stats.f_bavail * stats.f_frsize < 4 * self.size:
            return False
        return self.restore()

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def headroom(total_bytes: int, reserve: DiskReserve) -> int:
    """The free space kept on a file system of ``total_bytes``: 16 MiB, an eighth of a small one, and
    never less than twice the reserve."""
    return max(2 * reserve.size, min(HEADROOM_BYTES, total_bytes // 8))


@dataclass(frozen=True)
class Commit:
    """What one :meth:`BufferWriter.commit` did."""

    ok: bool  # False: the buffer failed; the chunks wait for the next commit
    committed: list[SealedChunk] = field(default_factory=list)  # durable now
    refused: list[SealedChunk] = field(default_factory=list)  # refuse_new turned them away (noted)


class BufferWriter:
    def __init__(self, config: BufferConfig, log: Any = None) -> None:
        """The writer of the buffer at ``config.path`` under ``config``'s cap; creates the reserve file.

        ``log`` is the caller's logger (events keep its context, such as the VIN).
        """
        self.config = config
        self.reserve = DiskReserve(config.path)
        self.log = log if log is not None else get_logger("agent.buffer")
        self.pending: list[SealedChunk] = []  # handed in, not committed yet (a commit failed)

    @property
    def full(self) -> bool:
        """As many chunks wait as memory may hold: take no more frames until a commit succeeds."""
        return len(self.pending) >= MAX_PENDING_CHUNKS

    def commit(self, buffer: Buffer, schema_id: int, chunks: Sequence[SealedChunk]) -> Commit:
        """Commit what waits and ``chunks`` through ``buffer`` (this thread's connection), in order."""
        self.pending.extend(chunks)
        if not self.pending:
            return Commit(True)
        try:
            self._keep_headroom(buffer)
            try:
                refused = buffer.append(schema_id, self.pending, self.config)
            except StorageFullError as error:
                refused = self._commit_on_full_disk(buffer, schema_id, error)
        except StorageError as error:
            self.log.error("commit_failed", reason=str(error), pending_chunks=len(self.pending))
            return Commit(False)
        if refused:
            self.log.warning(
                "buffer_full_refused", chunks=len(refused), samples=sum(c.sample_count for c in refused)
            )
        refused_ids = {c.id for c in refused}
        committed = [c for c in self.pending if c.id not in refused_ids]
        self.pending = []
        return Commit(True, committed, refused)

    def _keep_headroom(self, buffer: Buffer) -> None:
        """Evict before the disk is full, not after: SQLite needs free space even to delete rows.

        The space the buffer may still use is the file system's free space plus the free pages inside
        the database file; below the headroom, the oldest chunks go (counted, reported as disk_full).
        """
        try:
            disk = os.statvfs(self.config.path.parent)
        except OSError:
            return
        keep = headroom(disk.f_blocks * disk.f_frsize, self.reserve)
        incoming = sum(len(c.payload) for c in self.pending)
        available = disk.f_bavail * disk.f_frsize + buffer.free_pages_bytes()
        if available - 2 * incoming < keep:
            buffer.free_space(keep - available + 2 * incoming, "disk_full", truncate=False)

    def _commit_on_full_disk(self, buffer: Buffer, schema_id: int, error: Exception) -> list[SealedChunk]:
        """The disk is full: give back the reserve and the WAL's space first; drop old data only if needed."""
        self.log.critical("disk_full", reason=str(error), pending_chunks=len(self.pending))
        self.reserve.release()
        try:
            buffer.checkpoint()
            return buffer.append(schema_id, self.pending, self.config)
        except StorageFullError:
            incoming = sum(len(c.payload) for c in self.pending)
            buffer.free_space(max(2 * incoming, 256 * 1024), "disk_full")
            return buffer.append(schema_id, self.pending, self.config)
        finally:
            self.reserve.restore_if_room()
