"""The buffer's queue: sealed chunks in SQLite (apsw, WAL), appended durably, read oldest first, deleted by ack.

Contract
- One :class:`Buffer` per thread (each opens its own connection; WAL lets the pipeline thread write
  while the uploader reads). Every method blocks on SQLite; none is slow (small indexed statements).
  The connection is the buffer's: nothing else writes through it.
- ``append`` commits a list of chunks in one transaction with ``synchronous=FULL``: once it returns,
  those samples survive a crash or a power cut. That commit is what "committed" means in the README.
  Under a cap (:mod:`agent.buffer.cap`) the same transaction makes room or refuses the chunks.
- Rows leave only through ``delete``, which the uploader calls with the ranges named by a receiver's ack
  (sent after the receiver's own commit), and through the cap's evictions, which are always counted and
  noted. A broker's PUBACK deletes nothing.
- ``oldest`` returns chunks in commit order (oldest first), all of one schema, after a cursor id; a
  chunk whose CRC no longer matches is dropped as "corrupt" (noted) instead of being returned.
- A file that is not healthy at a checked open is quarantined (:mod:`agent.buffer.health`). A
  ``read_only`` buffer creates nothing and can only read (``edge-agent status``).
- The disk's own limits (reserve, headroom, a full file system) are the pipeline's writer's
  (:class:`agent.buffer.disk.BufferWriter`); ``free_space`` and ``checkpoint`` are its tools.
- Errors: every failure is a :class:`~agent.errors.StorageError` naming the file.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from agent import wire
from agent.buffer import health
from agent.buffer.cap import Ledger, Notice
from agent.chunk import SealedChunk
from agent.config import BufferConfig
from agent.errors import StorageCorruptError
from agent.service.logs import get_logger
from agent.wire.values import Schema

log = get_logger("agent.buffer")


@dataclass(frozen=True)
class StoredChunk:
    row_id: int
    boot_id: bytes
    seq: int
    schema_id: int
    sample_count: int
    payload: bytes


@dataclass(frozen=True)
class BufferStats:
    chunks: int
    samples: int
    payload_bytes: int
    oldest_created: float | None
    last_ack_at: float | None
    dropped_chunks: int
    dropped_samples: int = 0


class Buffer:
    def __init__(self, path: str | Path, check: bool = False, *, read_only: bool = False) -> None:
        """Open (creating the folder and file if needed); ``check`` runs the health checks of
        :func:`agent.buffer.health.connect` and quarantines a bad file; ``read_only`` creates nothing
        (the file must exist) and only reads.

        The daemon opens the buffer once with ``check`` at start; the stage threads then open their own
        connections without it.
        """
        self.path = Path(path)
        self._schemas: dict[int, Schema] = {}
        if read_only:
            self.db = health.connect_read_only(self.path)
        else:
            self.db = health.open_healthy(self.path, check)
        self.ledger = Ledger(self.db)

    def _run(self, action: str, sql: str, bindings: Any = ()) -> list[Any]:
        try:
            return self.db.execute(sql, bindings).fetchall()
        except apsw.Error as error:
            raise health.wrap(self.path, action, error) from error

    # --- schemas -------------------------------------------------------------------------------------

    def schema_id(self, schema: Schema) -> int:
        rows = self._run("register schema", "SELECT id FROM schemas WHERE digest = ?", (schema.digest,))
        if rows:
            return int(rows[0][0])
        self._run(
            "register schema",
            "INSERT INTO schemas (digest, body) VALUES (?, ?)",
            (schema.digest, wire.schema_bytes(schema)),
        )
        return int(self.db.last_insert_rowid())

    def schema(self, schema_id: int) -> Schema:
        if schema_id not in self._schemas:
            rows = self._run("read schema", "SELECT body FROM schemas WHERE id = ?", (schema_id,))
            if not rows:
                raise StorageCorruptError(f"{self.path}: schema {schema_id} is missing")
            self._schemas[schema_id] = wire.schema_from_bytes(rows[0][0])
        return self._schemas[schema_id]

    def latest_schema_id(self) -> int | None:
        rows = self._run("read schema", "SELECT max(id) FROM schemas")
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    # --- in, out, acked ------------------------------------------------------------------------------

    def append(
        self, schema_id: int, chunks: Sequence[SealedChunk], cap: BufferConfig | None = None
    ) -> list[SealedChunk]:
        """Commit ``chunks`` in one durable transaction, first making room under ``cap``.

        Returns the chunks that were refused (``refuse_new`` with a full buffer): they are counted and
        reported to the receiver as evicted, never silently lost.
        """
        if not chunks:
            return []
        now = time.time()
        incoming = sum(len(c.payload) for c in chunks)
        try:
            with self.db:
                if cap is not None and not self.ledger.make_room(cap, incoming, now):
                    self.ledger.record([(c.id.boot_id, c.id.seq, c.sample_count) for c in chunks], "refused")
                    return list(chunks)
                self.db.executemany(
                    "INSERT INTO chunks (boot_id, seq, schema_id, first_tick, sample_count, payload, created, crc)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            c.id.boot_id,
                            c.id.seq,
                            schema_id,
                            c.first_tick,
                            c.sample_count,
                            c.payload,
                            now,
                            health.crc(c.payload),
                        )
                        for c in chunks
                    ],
                )
                self.ledger.account(len(chunks), sum(c.sample_count for c in chunks), incoming)
        except apsw.Error as error:
            raise health.wrap(self.path, f"commit {len(chunks)} chunks", error) from error
        return []

    def oldest(
        self, after_row: int = 0, max_bytes: int = 256 * 1024, max_chunks: int = 10_000
    ) -> list[StoredChunk]:
        """The oldest chunks after ``after_row``, of one schema, up to ``max_bytes`` (at least one).

        A chunk whose payload no longer matches its CRC (a bit flipped on the card) is dropped and
        reported as evicted with reason "corrupt", rather than uploaded as data.
        """
        out: list[StoredChunk] = []
        size, cursor, damaged, full = 0, after_row, [], False
        while not full and len(out) < max_chunks:
            page = min(256, max_chunks - len(out))
            rows = self._run(
                "read oldest",
                "SELECT id, boot_id, seq, schema_id, sample_count, payload, crc FROM chunks"
                " WHERE id > ? ORDER BY id LIMIT ?",
                (cursor, page),
            )
            for row in rows:
                cursor = row[0]
                chunk = StoredChunk(row[0], bytes(row[1]), row[2], row[3], row[4], bytes(row[5]))
                if not health.intact(chunk.payload, row[6]):
                    damaged.append(chunk.row_id)
                    continue
                if out and (chunk.schema_id != out[0].schema_id or size + len(chunk.payload) > max_bytes):
                    full = True
                    break
                out.append(chunk)
                size += len(chunk.payload)
            if len(rows) < page:
                break
        if damaged:
            self._drop_damaged(damaged)
        return out

    def newest_row(self) -> int:
        """The id of the newest chunk held (0 when none): a chunk committed later has a greater one."""
        rows = self._run("read newest", "SELECT max(id) FROM chunks")
        return int(rows[0][0] or 0) if rows else 0

    def _drop_damaged(self, row_ids: list[int]) -> None:
        log.critical("buffer_chunk_corrupt", chunks=len(row_ids), path=str(self.path))
        try:
            with self.db:
                for row_id in row_ids:
                    self.ledger.drop_where("id = ?", (row_id,), "corrupt")
        except apsw.Error as error:
            raise health.wrap(self.path, "drop damaged chunks", error) from error

    def delete(self, ranges: Iterable[tuple[bytes, int, int]]) -> int:
        """Delete the acked ranges (boot id, first seq, last seq); returns how many rows went."""
        deleted = freed = samples = 0
        where = "boot_id = ? AND seq BETWEEN ? AND ?"
        try:
            with self.db:
                for boot_id, first, last in ranges:
                    row = self.ledger.totals(where, (boot_id, first, last))
                    self.db.execute(f"DELETE FROM chunks WHERE {where}", (boot_id, first, last))
                    deleted, freed, samples = deleted + row[0], freed + row[1], samples + row[2]
                self.ledger.account(-deleted, -samples, -freed)
                self.db.execute("INSERT OR REPLACE INTO counters VALUES ('last_ack_at', ?)", (time.time(),))
        except apsw.Error as error:
            raise health.wrap(self.path, "delete acked chunks", error) from error
        return deleted

    # --- eviction notices ----------------------------------------------------------------------------

    def notices(self, limit: int = 100) -> list[Notice]:
        """Evictions not yet reported to a receiver: (notice id, boot id, first seq, last seq)."""
        try:
            return self.ledger.notices(limit)
        except apsw.Error as error:
            raise health.wrap(self.path, "read notices", error) from error

    def clear_noted(self, ranges: Iterable[tuple[bytes, int, int]]) -> None:
        """A receiver's ack says these eviction ranges are in its gap ledger: forget them."""
        try:
            with self.db:
                self.ledger.clear_noted(ranges)
        except apsw.Error as error:
            raise health.wrap(self.path, "clear eviction notices", error) from error

    # --- the file's space ----------------------------------------------------------------------------

    def free_space(self, wanted: int, reason: str, truncate: bool = True) -> int:
        """Drop the oldest chunks until ``wanted`` bytes are freed, then checkpoint (and shrink the WAL)."""
        try:
            with self.db:
                freed = self.ledger.drop_oldest(wanted, reason)
            if truncate:
                self.checkpoint()
            else:
                self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except apsw.Error as error:
            raise health.wrap(self.path, "free space", error) from error
        return freed

    def free_pages_bytes(self) -> int:
        """Bytes of free pages inside the database file: room for new rows without growing the file."""
        free, size = self._run("free pages", "SELECT * FROM pragma_freelist_count, pragma_page_size")[0]
        return int(free) * int(size)

    def checkpoint(self) -> None:
        """Copy the WAL into the main file and truncate it, giving its space back to the file system."""
        self._run("checkpoint", "PRAGMA wal_checkpoint(TRUNCATE)")

    # --- totals --------------------------------------------------------------------------------------

    def stats(self) -> BufferStats:
        """The backlog from the running totals: constant time, whatever the backlog's size."""
        counters = dict(self._run("stats", "SELECT name, value FROM counters"))
        oldest = self._run("stats", "SELECT created FROM chunks ORDER BY id LIMIT 1")
        return BufferStats(
            int(counters.get("backlog_chunks", 0)),
            int(counters.get("backlog_samples", 0)),
            int(counters.get("payload_bytes", 0)),
            oldest[0][0] if oldest else None,
            counters.get("last_ack_at"),
            int(counters.get("dropped_chunks", 0)),
            int(counters.get("dropped_samples", 0)),
        )

    def close(self) -> None:
        self.db.close()
