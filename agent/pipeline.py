"""The pipeline thread: decode, sample, chunk and commit to the buffer, in that order, on one thread.

Contract
- Consumes frame lists from a :class:`agent.source.FrameFeed` (blocking at most until the next commit is
  due), so it never blocks a reader for longer than one commit.
- Commits every ``commit_interval_s`` of wall time (and at the end): the open chunk is sealed and every
  sealed chunk goes to the buffer in one durable transaction, then ``wake`` tells the uploader.
  Between commits, samples live only in memory: that interval bounds what a crash can lose.
- A buffer that refuses a commit (disk full, I/O error) is logged and retried at the next commit with the
  same chunks, so nothing is silently dropped here (the buffer's cap policy decides what gives).
- ``alive_at`` (monotonic) moves on every loop: the supervisor's watchdog reads it.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from agent.buffer import Buffer, Cap, DiskReserve
from agent.chunk import Chunker, SealedChunk
from agent.decode import Decoder
from agent.errors import StorageError, StorageFullError
from agent.sample import Sampler, to_micros
from agent.service.logs import get_logger
from agent.source import FrameFeed
from agent.wire.values import Schema

HEADROOM_BYTES = 16 << 20  # free space kept on the buffer's file system (less on a tiny one)
MAX_PENDING_CHUNKS = 3600  # an hour at one chunk a second, kept in memory while the buffer fails


class Pipeline:
    def __init__(
        self,
        decoder: Decoder,
        schema: Schema,
        feed: FrameFeed,
        buffer_path: Path,
        boot_id: bytes,
        chunk_samples: int,
        commit_interval_s: float,
        wake: threading.Event,
        vin: str,
        cap: Cap | None = None,
    ) -> None:
        self.decoder = decoder
        self.schema = schema
        self.feed = feed
        self.buffer_path = buffer_path
        self.chunker = Chunker(schema, boot_id, chunk_samples)
        self.sampler = Sampler(schema.rate, len(schema.signals), self.chunker.add)
        self.commit_interval_s = commit_interval_s
        self.cap = cap
        self.reserve = DiskReserve(buffer_path)
        self.wake = wake
        self.log = get_logger("agent.pipeline", vin=vin)
        self.alive_at = time.monotonic()
        self.finished = threading.Event()  # the source ended and the last commit succeeded
        self.stop_event = threading.Event()
        self.samples_committed = 0
        self.chunks_committed = 0
        self.chunks_refused = 0  # refuse_new turned them away: counted and reported, not committed
        self.lost_in_memory = 0  # dropped from memory after the buffer failed for too long
        self._pending: list[SealedChunk] = []
        self.thread = threading.Thread(target=self.run, name="pipeline", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def run(self) -> None:
        buffer = Buffer(self.buffer_path)
        schema_id = buffer.schema_id(self.schema)
        decode, feed_sampler = self.decoder.decode, self.sampler.feed
        next_commit = time.monotonic() + self.commit_interval_s
        try:
            while not self.stop_event.is_set():
                self.alive_at = now = time.monotonic()
                frames = self.feed.get(timeout=max(0.0, min(next_commit - now, 0.5)))
                if frames is None:
                    break
                for frame in frames:
                    feed_sampler(to_micros(frame.timestamp), decode(frame))
                if time.monotonic() >= next_commit:
                    self.commit(buffer, schema_id)
                    next_commit = time.monotonic() + self.commit_interval_s
            else:
                self.commit(buffer, schema_id)  # stopped: keep what was sampled
                return
            self.sampler.finish()
            if self.commit(buffer, schema_id):
                self.finished.set()
        finally:
            buffer.close()

    def commit(self, buffer: Buffer, schema_id: int) -> bool:
        """Seal the open chunk and commit every pending chunk; False if the buffer refused."""
        self.chunker.seal()
        self._pending.extend(self.chunker.take())
        if not self._pending:
            return True
        if len(self._pending) > MAX_PENDING_CHUNKS:  # the buffer has failed for an hour: bound the memory
            lost = self._pending[: len(self._pending) - MAX_PENDING_CHUNKS]
            self._pending = self._pending[len(lost) :]
            self.lost_in_memory += len(lost)
            self.log.critical(
                "pending_chunks_dropped", chunks=len(lost), samples=sum(c.sample_count for c in lost)
            )
        try:
            self._keep_headroom(buffer)
            try:
                refused = buffer.append(schema_id, self._pending, self.cap)
            except StorageFullError as error:
                refused = self._commit_on_full_disk(buffer, schema_id, error)
        except StorageError as error:
            self.log.error("commit_failed", reason=str(error), pending_chunks=len(self._pending))
            return False
        if refused:
            self.log.warning(
                "buffer_full_refused", chunks=len(refused), samples=sum(c.sample_count for c in refused)
            )
        refused_ids = {c.id for c in refused}
        kept = [c for c in self._pending if c.id not in refused_ids]
        self.chunks_committed += len(kept)
        self.samples_committed += sum(c.sample_count for c in kept)
        self.chunks_refused += len(refused)
        self._pending = []
        self.wake.set()
        return True

    def _keep_headroom(self, buffer: Buffer) -> None:
        """Evict before the disk is full, not after: SQLite needs free space even to delete rows.

        The space the buffer may still use is the file system's free space plus the free pages inside
        the database file; below the headroom, the oldest chunks go (counted, reported as disk_full).
        """
        try:
            disk = os.statvfs(self.buffer_path.parent)
        except OSError:
            return
        total = disk.f_blocks * disk.f_frsize
        headroom = max(2 * self.reserve.size, min(HEADROOM_BYTES, total // 8))
        incoming = sum(len(c.payload) for c in self._pending)
        available = disk.f_bavail * disk.f_frsize + buffer.free_pages_bytes()
        if available - 2 * incoming < headroom:
            buffer.free_space(headroom - available + 2 * incoming, "disk_full", truncate=False)

    def _commit_on_full_disk(self, buffer: Buffer, schema_id: int, error: Exception) -> list[SealedChunk]:
        """The disk is full: give back the reserve and the WAL's space first; drop old data only if needed."""
        self.log.critical("disk_full", reason=str(error), pending_chunks=len(self._pending))
        self.reserve.release()
        try:
            buffer.checkpoint()
            return buffer.append(schema_id, self._pending, self.cap)
        except StorageFullError:
            incoming = sum(len(c.payload) for c in self._pending)
            buffer.free_space(max(2 * incoming, 256 * 1024), "disk_full")
            return buffer.append(schema_id, self._pending, self.cap)
        finally:
            self.reserve.restore_if_room()
