"""Buffering stage: the store-and-forward queue of sealed chunks, in SQLite (apsw, WAL).

Contract
- One :class:`Buffer` per thread (each opens its own connection; WAL lets the pipeline thread write
  while the uploader reads). Every method blocks on SQLite; none is slow (small indexed statements).
- ``append`` commits a list of chunks in one transaction with ``synchronous=FULL``: once it returns,
  those samples survive a crash or a power cut. That commit is what "committed" means in the README.
- Rows leave only through ``delete``, which the uploader calls with the ranges named by a receiver's ack
  (sent after the receiver's own commit). A broker's PUBACK deletes nothing.
- ``oldest`` returns chunks in commit order (oldest first), all of one schema, after a cursor id.
- A file that is not a healthy database at open is renamed ``*.corrupt-<time>`` and a fresh buffer
  starts, with a critical event logged: a damaged SD card must not become a crash loop.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from agent import wire
from agent.chunk import SealedChunk
from agent.errors import StorageCorruptError, StorageError, StorageFullError
from agent.logs import get_logger
from agent.model import Schema

log = get_logger("agent.buffer")

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS schemas (id INTEGER PRIMARY KEY, digest BLOB UNIQUE NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    boot_id BLOB NOT NULL, seq INTEGER NOT NULL, schema_id INTEGER NOT NULL REFERENCES schemas(id),
    first_tick INTEGER NOT NULL, sample_count INTEGER NOT NULL, payload BLOB NOT NULL,
    created REAL NOT NULL, UNIQUE (boot_id, seq));
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value REAL NOT NULL);
"""


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


def _wrap(path: Path, action: str, error: Exception) -> StorageError:
    if isinstance(error, apsw.FullError):
        return StorageFullError(f"{path}: {action}: disk or database full ({error})")
    if isinstance(error, apsw.CorruptError | apsw.NotADBError):
        return StorageCorruptError(f"{path}: {action}: database is damaged ({error})")
    return StorageError(f"{path}: {action}: {error}")


class Buffer:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._schemas: dict[int, Schema] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = self._open()
        except StorageCorruptError as error:
            quarantine = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.critical(
                "buffer_quarantined", path=str(self.path), moved_to=str(quarantine), reason=str(error)
            )
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{self.path}{suffix}")
                if source.exists():
                    source.rename(f"{quarantine}{suffix}")
            self.db = self._open()
        except OSError as error:
            raise StorageError(f"{self.path}: cannot create the buffer's folder: {error}") from error

    def _open(self) -> apsw.Connection:
        try:
            db = apsw.Connection(str(self.path))
            db.setbusytimeout(5000)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            if db.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
                raise apsw.CorruptError("quick_check failed")
            with db:
                db.execute(SCHEMA_SQL)
            return db
        except apsw.Error as error:
            raise _wrap(self.path, "open", error) from error

    def _run(self, action: str, sql: str, bindings: Any = ()) -> list[Any]:
        try:
            return self.db.execute(sql, bindings).fetchall()
        except apsw.Error as error:
            raise _wrap(self.path, action, error) from error

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

    def append(self, schema_id: int, chunks: Sequence[SealedChunk]) -> None:
        """Commit ``chunks`` in one durable transaction (see the module's contract)."""
        if not chunks:
            return
        now = time.time()
        rows = [
            (c.id.boot_id, c.id.seq, schema_id, c.first_tick, c.sample_count, c.payload, now) for c in chunks
        ]
        try:
            with self.db:
                self.db.executemany(
                    "INSERT INTO chunks (boot_id, seq, schema_id, first_tick, sample_count, payload, created)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
        except apsw.Error as error:
            raise _wrap(self.path, f"commit {len(rows)} chunks", error) from error

    def oldest(
        self, after_row: int = 0, max_bytes: int = 256 * 1024, max_chunks: int = 10_000
    ) -> list[StoredChunk]:
        """The oldest chunks after ``after_row``, of one schema, up to ``max_bytes`` (at least one)."""
        rows = self._run(
            "read oldest",
            "SELECT id, boot_id, seq, schema_id, sample_count, payload FROM chunks"
            " WHERE id > ? ORDER BY id LIMIT ?",
            (after_row, max_chunks),
        )
        out: list[StoredChunk] = []
        size = 0
        for row in rows:
            chunk = StoredChunk(row[0], bytes(row[1]), row[2], row[3], row[4], bytes(row[5]))
            if out and (chunk.schema_id != out[0].schema_id or size + len(chunk.payload) > max_bytes):
                break
            out.append(chunk)
            size += len(chunk.payload)
        return out

    def delete(self, ranges: Iterable[tuple[bytes, int, int]]) -> int:
        """Delete the acked ranges (boot id, first seq, last seq); returns how many rows went."""
        deleted = 0
        try:
            with self.db:
                for boot_id, first, last in ranges:
                    self.db.execute(
                        "DELETE FROM chunks WHERE boot_id = ? AND seq BETWEEN ? AND ?", (boot_id, first, last)
                    )
                    deleted += self.db.changes()
                self.db.execute("INSERT OR REPLACE INTO counters VALUES ('last_ack_at', ?)", (time.time(),))
        except apsw.Error as error:
            raise _wrap(self.path, "delete acked chunks", error) from error
        return deleted

    def stats(self) -> BufferStats:
        chunks, samples, size, oldest = self._run(
            "stats",
            "SELECT count(*), coalesce(sum(sample_count), 0), coalesce(sum(length(payload)), 0),"
            " min(created) FROM chunks",
        )[0]
        counters = dict(self._run("stats", "SELECT name, value FROM counters"))
        return BufferStats(
            chunks, samples, size, oldest, counters.get("last_ack_at"), int(counters.get("dropped_chunks", 0))
        )

    def close(self) -> None:
        self.db.close()
