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

import os
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from agent import wire
from agent.chunk import SealedChunk
from agent.errors import StorageCorruptError, StorageError, StorageFullError
from agent.service.logs import get_logger
from agent.wire.values import ChunkId, Schema

log = get_logger("agent.buffer")

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS schemas (id INTEGER PRIMARY KEY, digest BLOB UNIQUE NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    boot_id BLOB NOT NULL, seq INTEGER NOT NULL, schema_id INTEGER NOT NULL REFERENCES schemas(id),
    first_tick INTEGER NOT NULL, sample_count INTEGER NOT NULL, payload BLOB NOT NULL,
    created REAL NOT NULL, degraded INTEGER NOT NULL DEFAULT 0, crc INTEGER NOT NULL DEFAULT 0,
    UNIQUE (boot_id, seq));
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS evictions (
    id INTEGER PRIMARY KEY, boot_id BLOB NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    reason TEXT NOT NULL, at REAL NOT NULL);
"""
# Every statement the buffer runs must prepare against the file's schema: a damaged schema text that
# quick_check accepts would otherwise fail on every start (a crash loop).
PROBES = (
    "SELECT id, digest, body FROM schemas LIMIT 0",
    "SELECT id, boot_id, seq, schema_id, first_tick, sample_count, payload, created, degraded, crc FROM chunks"
    " WHERE boot_id = x'' AND seq BETWEEN 0 AND 0 ORDER BY id LIMIT 0",
    "SELECT name, value FROM counters LIMIT 0",
    "SELECT id, boot_id, first_seq, last_seq, reason, at FROM evictions LIMIT 0",
)


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
    degraded_chunks: int = 0


@dataclass(frozen=True)
class Cap:
    """The user's limits on the backlog (0 = none) and what gives when they are reached."""

    max_bytes: int = 0
    max_age_s: float = 0.0
    policy: str = "drop_oldest"  # or refuse_new


def _migrate(db: apsw.Connection) -> None:
    """Bring a buffer written by an earlier version up to date, keeping every row (an upgrade must not
    abandon the backlog). Columns added since the first release are added, empty."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(chunks)").fetchall()}
    for name, declaration in (("degraded", "INTEGER NOT NULL DEFAULT 0"), ("crc", "INTEGER")):
        if name not in columns:
            db.execute(f"ALTER TABLE chunks ADD COLUMN {name} {declaration}")


def _wrap(path: Path, action: str, error: Exception) -> StorageError:
    # SQLite may roll a full transaction back itself; apsw then raises about the rollback, with the
    # FullError only as the context. Look through the chain for the real cause.
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, apsw.FullError | apsw.CorruptError | apsw.NotADBError):
        cause = cause.__context__
    error = cause if isinstance(cause, Exception) else error
    if isinstance(error, apsw.FullError):
        return StorageFullError(f"{path}: {action}: disk or database full ({error})")
    if isinstance(error, apsw.CorruptError | apsw.NotADBError):
        return StorageCorruptError(f"{path}: {action}: database is damaged ({error})")
    return StorageError(f"{path}: {action}: {error}")


class Buffer:
    def __init__(self, path: str | Path, check: bool = False) -> None:
        """Open (creating it if needed); ``check`` runs SQLite's quick_check and quarantines a bad file.

        The daemon opens the buffer once with ``check`` at start; the stage threads then open their own
        connections without it.
        """
        self.path = Path(path)
        self.check = check
        self._schemas: dict[int, Schema] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = self._open()
        except StorageCorruptError as error:
            stamp = int(time.time())
            quarantine = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            attempt = 1
            while any(Path(f"{quarantine}{suffix}").exists() for suffix in ("", "-wal", "-shm")):
                attempt += 1
                quarantine = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{attempt}")
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
            # Small pages: a commit of one ~200-byte chunk rewrites a few 1 KiB pages, not 4 KiB ones
            # (2.5x fewer bytes written per commit, measured). Only takes effect on a new file.
            db.execute("PRAGMA page_size=1024")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            if self.check and db.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
                raise apsw.CorruptError("quick_check failed")
            with db:
                db.execute(SCHEMA_SQL)
                _migrate(db)
            if self.check:
                for probe in PROBES:
                    try:
                        db.execute(probe).fetchall()
                    except apsw.SQLError as error:
                        raise apsw.CorruptError(f"schema damaged: {error}") from error
                try:
                    db.execute("REINDEX")  # quick_check does not compare indexes with their tables
                except apsw.ConstraintError as error:
                    raise apsw.CorruptError(f"index damaged: {error}") from error
            with db:
                if self.check:  # the running totals heal from any drift at every start
                    db.execute(
                        "INSERT OR REPLACE INTO counters SELECT 'payload_bytes', coalesce(sum(length(payload)), 0)"
                        " FROM chunks;"
                        "INSERT OR REPLACE INTO counters SELECT 'backlog_chunks', count(*) FROM chunks;"
                        "INSERT OR REPLACE INTO counters SELECT 'backlog_samples', coalesce(sum(sample_count), 0)"
                        " FROM chunks"
                    )
            return db
        except apsw.Error as error:
            raise _wrap(self.path, "open", error) from error

    def _q(self, sql: str, bindings: Any = ()) -> list[Any]:
        """Rows of one statement, untyped (apsw's row type is a union); callers wrap errors."""
        return list(self.db.execute(sql, bindings).fetchall())

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

    def append(
        self, schema_id: int, chunks: Sequence[SealedChunk], cap: Cap | None = None
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
                if cap is not None and not self._make_room(cap, incoming, now):
                    self._record_evictions(
                        [(c.id.boot_id, c.id.seq, c.sample_count) for c in chunks], "refused"
                    )
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
                            zlib.crc32(c.payload),
                        )
                        for c in chunks
                    ],
                )
                self._account(len(chunks), sum(c.sample_count for c in chunks), incoming)
        except apsw.Error as error:
            raise _wrap(self.path, f"commit {len(chunks)} chunks", error) from error
        return []

    def _bump(self, name: str, by: float) -> None:
        self.db.execute(
            "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )

    def _account(self, chunks: int, samples: int, size: int) -> None:
        """Keep the backlog's running totals, so status never scans the table."""
        self._bump("backlog_chunks", chunks)
        self._bump("backlog_samples", samples)
        self._bump("payload_bytes", size)

    def _counter(self, name: str) -> float:
        rows = self._q("SELECT value FROM counters WHERE name = ?", (name,))
        return float(rows[0][0]) if rows else 0.0

    def _make_room(self, cap: Cap, incoming: int, now: float) -> bool:
        """Inside the caller's transaction: drop what the cap says must go; False = refuse the new data."""
        if cap.max_age_s > 0:
            self._drop_where("created < ?", (now - cap.max_age_s,), "age")
        if cap.max_bytes <= 0:
            return True
        if cap.policy == "refuse_new":
            return self._admit(cap, incoming)
        excess = self._counter("payload_bytes") + incoming - cap.max_bytes
        if excess <= 0:
            return True
        self._drop_oldest(int(excess), "cap")
        return True

    def _admit(self, cap: Cap, incoming: int) -> bool:
        """refuse_new: once full, refuse everything until acks drain the backlog to half the cap.

        One gap in the timeline rather than a swiss cheese of whatever chunk happened to fit.
        """
        backlog = self._counter("payload_bytes")
        refusing = self._counter("refusing") > 0
        if refusing and backlog > cap.max_bytes / 2:
            return False
        if backlog + incoming > cap.max_bytes:
            self.db.execute("INSERT OR REPLACE INTO counters VALUES ('refusing', 1)")
            return False
        if refusing:
            self.db.execute("INSERT OR REPLACE INTO counters VALUES ('refusing', 0)")
        return True

    def _drop_oldest(self, wanted: int, reason: str) -> int:
        """Inside the caller's transaction: drop the oldest whole chunks until ``wanted`` bytes are freed."""
        freed, last = 0, 0
        while freed < wanted:
            rows = self._q(
                "SELECT id, length(payload) FROM chunks WHERE id > ? ORDER BY id LIMIT 1000", (last,)
            )
            if not rows:
                break
            for row_id, size in rows:
                freed, last = freed + size, row_id
                if freed >= wanted:
                    break
        if last:
            self._drop_where("id <= ?", (last,), reason)
        return freed

    def _drop_where(self, condition: str, bindings: tuple[Any, ...], reason: str) -> None:
        rows = self._q(
            f"SELECT boot_id, seq, sample_count, length(payload) FROM chunks WHERE {condition} ORDER BY id",
            bindings,
        )
        if not rows:
            return
        self.db.execute(f"DELETE FROM chunks WHERE {condition}", bindings)
        self._account(-len(rows), -sum(r[2] for r in rows), -sum(r[3] for r in rows))
        self._record_evictions([(bytes(r[0]), r[1], r[2]) for r in rows], reason)
        log.warning("buffer_evicted", reason=reason, chunks=len(rows), samples=sum(r[2] for r in rows))

    def _record_evictions(self, chunks: list[tuple[bytes, int, int]], reason: str) -> None:
        now = time.time()
        for boot_id, first, last in wire.chunk_ranges(ChunkId(b, s) for b, s, _ in chunks):
            self.db.execute(
                "INSERT INTO evictions (boot_id, first_seq, last_seq, reason, at) VALUES (?, ?, ?, ?, ?)",
                (boot_id, first, last, reason, now),
            )
        self._bump("dropped_chunks", len(chunks))
        self._bump("dropped_samples", sum(count for _, _, count in chunks))

    def free_space(self, wanted: int, reason: str, truncate: bool = True) -> int:
        """Drop the oldest chunks until ``wanted`` bytes are freed, then checkpoint (and shrink the WAL)."""
        try:
            with self.db:
                freed = self._drop_oldest(wanted, reason)
            if truncate:
                self.checkpoint()
            else:
                self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except apsw.Error as error:
            raise _wrap(self.path, "free space", error) from error
        return freed

    def free_pages_bytes(self) -> int:
        """Bytes of free pages inside the database file: room for new rows without growing the file."""
        free, size = self._run("free pages", "SELECT * FROM pragma_freelist_count, pragma_page_size")[0]
        return int(free) * int(size)

    def checkpoint(self) -> None:
        """Copy the WAL into the main file and truncate it, giving its space back to the file system."""
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except apsw.Error as error:
            raise _wrap(self.path, "checkpoint", error) from error

    def notices(self, limit: int = 100) -> list[tuple[int, bytes, int, int]]:
        """Evictions not yet reported to a receiver: (notice id, boot id, first seq, last seq)."""
        rows = self._run(
            "read notices",
            "SELECT id, boot_id, first_seq, last_seq FROM evictions ORDER BY id LIMIT ?",
            (limit,),
        )
        return [(r[0], bytes(r[1]), r[2], r[3]) for r in rows]

    def clear_noted(self, ranges: Iterable[tuple[bytes, int, int]]) -> None:
        """A receiver's ack says these eviction ranges are in its gap ledger: forget them."""
        try:
            with self.db:
                self.db.executemany(
                    "DELETE FROM evictions WHERE boot_id = ? AND first_seq = ? AND last_seq = ?", list(ranges)
                )
        except apsw.Error as error:
            raise _wrap(self.path, "clear eviction notices", error) from error

    def latest_schema_id(self) -> int | None:
        rows = self._run("read schema", "SELECT max(id) FROM schemas")
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    def clear_notices(self, ids: Iterable[int]) -> None:
        """The receiver stored a batch that carried these notices: they are in its gap ledger now."""
        try:
            with self.db:
                self.db.executemany("DELETE FROM evictions WHERE id = ?", [(i,) for i in ids])
        except apsw.Error as error:
            raise _wrap(self.path, "clear eviction notices", error) from error

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
                if row[6] is not None and zlib.crc32(chunk.payload) != row[6]:  # NULL: written before CRCs
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

    def _drop_damaged(self, row_ids: list[int]) -> None:
        log.critical("buffer_chunk_corrupt", chunks=len(row_ids), path=str(self.path))
        try:
            with self.db:
                for row_id in row_ids:
                    self._drop_where("id = ?", (row_id,), "corrupt")
        except apsw.Error as error:
            raise _wrap(self.path, "drop damaged chunks", error) from error

    def delete(self, ranges: Iterable[tuple[bytes, int, int]]) -> int:
        """Delete the acked ranges (boot id, first seq, last seq); returns how many rows went."""
        deleted = freed = samples = 0
        try:
            with self.db:
                for boot_id, first, last in ranges:
                    where = "boot_id = ? AND seq BETWEEN ? AND ?"
                    row = self._q(
                        f"SELECT count(*), coalesce(sum(length(payload)), 0), coalesce(sum(sample_count), 0)"
                        f" FROM chunks WHERE {where}",
                        (boot_id, first, last),
                    )[0]
                    self.db.execute(f"DELETE FROM chunks WHERE {where}", (boot_id, first, last))
                    deleted, freed, samples = deleted + row[0], freed + row[1], samples + row[2]
                self._account(-deleted, -samples, -freed)
                self.db.execute("INSERT OR REPLACE INTO counters VALUES ('last_ack_at', ?)", (time.time(),))
        except apsw.Error as error:
            raise _wrap(self.path, "delete acked chunks", error) from error
        return deleted

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
            int(counters.get("degraded_chunks", 0)),
        )

    def close(self) -> None:
        self.db.close()


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
