"""The receiver's store: decoded batches in one SQLite file (apsw, WAL), deduplicated by chunk identity.

Contract
- One :class:`Store` is one connection, used by one thread at a time (the ingest service calls it from
  paho's network thread only; the CLI from the main thread). Several stores, in threads or processes, may
  open the same file: WAL lets readers run beside the writer and ``BEGIN IMMEDIATE`` plus a busy timeout
  serializes writers.
- Every call blocks until SQLite is done; ``store_batch`` returns only after its commit is durable
  (``synchronous=FULL``): once it returns, acking the chunks it names is safe. That is what an ack means.
- ``store_batch`` is idempotent per chunk: a chunk whose (vin, boot_id, seq) is already stored adds nothing,
  so a batch delivered twice, or a chunk re-sent in another batch after an agent crash, is a no-op (and
  is still reported as stored: it may be acked again).
- Values are stored physical (``SignalSpec.to_physical``): ints for integer-scaled signals, floats
  otherwise. An absent value has no row; a NaN float is stored as NULL (SQLite cannot hold NaN).
- Overlapping ticks (two boots replaying the same log) keep the first value written for a (signal, tick):
  the store is append-only, nothing already exported or acked is rewritten; the skipped values are counted
  per chunk (``overlaps``).
- One sampling rate per vin: tick numbers of different rates do not share a time axis, so a batch whose
  rate differs from the vin's stored one is refused whole with :class:`RateConflictError` (not acked: the
  agent keeps the data until an operator moves the vin to a new store).
- The caller owns the :class:`~agent.wire.DecodedBatch`; the store keeps nothing of it after the call.
- Errors: apsw exceptions become ``StorageError`` / ``StorageFullError`` / ``StorageCorruptError`` naming
  the file.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import apsw

from agent.errors import EdgeError, StorageCorruptError, StorageError, StorageFullError
from agent.model import ChunkData, ChunkId, PhysicalValue
from agent.wire import DecodedBatch
from receiver.export import VinStats, merge_rows, merge_ticks, pack_ticks, summarize

SCHEMA_VERSION = 1
INT64 = (-(2**63), 2**63 - 1)

DDL = """
CREATE TABLE IF NOT EXISTS vins (
    vin TEXT PRIMARY KEY, rate_num INTEGER NOT NULL, rate_den INTEGER NOT NULL, first_seen REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunks (
    vin TEXT NOT NULL, boot_id BLOB NOT NULL, seq INTEGER NOT NULL, first_tick INTEGER, last_tick INTEGER,
    sample_count INTEGER NOT NULL,
    ticks BLOB,  -- NULL when the ticks are first_tick..last_tick; else int64 little-endian, one per sample
    values_stored INTEGER NOT NULL, overlaps INTEGER NOT NULL, received_at REAL NOT NULL,
    PRIMARY KEY (vin, boot_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_by_tick ON chunks (vin, first_tick);
CREATE TABLE IF NOT EXISTS signals (
    id INTEGER PRIMARY KEY, vin TEXT NOT NULL, name TEXT NOT NULL, UNIQUE (vin, name)
);
CREATE TABLE IF NOT EXISTS samples (
    signal_id INTEGER NOT NULL, tick INTEGER NOT NULL,
    value,  -- no declared type: ints stay ints, floats stay floats (3.0 is not turned into 3)
    PRIMARY KEY (signal_id, tick)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gaps (
    vin TEXT NOT NULL, boot_id BLOB NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    reason TEXT NOT NULL, recorded_at REAL NOT NULL, PRIMARY KEY (vin, boot_id, first_seq, last_seq, reason)
) WITHOUT ROWID;
"""


class RateConflictError(EdgeError):
    """A batch's sampling rate differs from the rate already stored for its vin."""


class NotFoundError(EdgeError):
    """A vin or a signal that the store does not hold."""


@dataclass(frozen=True)
class StoreResult:
    stored: list[ChunkId]  # every chunk of the batch, new or duplicate, in batch order: all ackable
    new: int
    duplicates: int
    samples: int  # values inserted
    overlaps: int  # values skipped: their (signal, tick) was already held by another chunk


def _to_sql(value: PhysicalValue) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else value
    return value if INT64[0] <= value <= INT64[1] else str(value)


def _from_sql(value: Any) -> PhysicalValue:
    if value is None:
        return math.nan
    if isinstance(value, str):
        return int(value)
    assert isinstance(value, int | float)
    return value


class Store:
    """The receiver's SQLite store; see the module docstring for the contract."""

    def __init__(
        self, path: str | os.PathLike[str], *, readonly: bool = False, busy_timeout_ms: int = 10_000
    ) -> None:
        self.path = os.fspath(path)
        self._signal_ids: dict[tuple[str, str], int] = {}  # committed signals only
        with self._guard("open"):
            if readonly:
                if not os.path.exists(self.path):
                    raise StorageError(f"no store at {self.path}")
                flags = apsw.SQLITE_OPEN_READONLY
            else:
                flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
            self._conn = apsw.Connection(self.path, flags=flags)
        try:
            with self._guard("open"):
                self._setup(readonly, busy_timeout_ms)
        except BaseException:
            self._conn.close()
            raise

    def _setup(self, readonly: bool, busy_timeout_ms: int) -> None:
        self._conn.setbusytimeout(busy_timeout_ms)
        version = self._fetch("PRAGMA user_version")[0][0]
        if version not in (0, SCHEMA_VERSION) or (readonly and version == 0):
            raise StorageError(f"{self.path} is not a receiver store of version {SCHEMA_VERSION}")
        if readonly:
            return
        mode = self._fetch("PRAGMA journal_mode=WAL")[0][0]
        if mode not in ("wal", "memory"):
            raise StorageError(f"{self.path}: cannot switch to WAL (journal_mode is {mode})")
        self._conn.execute("PRAGMA synchronous=FULL")
        with self._transaction():
            self._conn.execute(DDL)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # --- plumbing ----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except apsw.FullError as error:
            raise StorageFullError(f"cannot {action} store {self.path}: {error}") from error
        except (apsw.CorruptError, apsw.NotADBError) as error:
            raise StorageCorruptError(f"cannot {action} store {self.path}: {error}") from error
        except apsw.Error as error:
            raise StorageError(f"cannot {action} store {self.path}: {error}") from error

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if not self._conn.getautocommit():  # SQLite may have rolled back already (full disk, I/O)
                self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._guard("close"):
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing -----------------------------------------------------------------------------------------

    def store_batch(self, batch: DecodedBatch) -> StoreResult:
        """Store the batch's new chunks and its eviction notices in one durable transaction."""
        new_signals: dict[tuple[str, str], int] = {}
        new = duplicates = samples = overlaps = 0
        with self._guard("write to"), self._transaction():
            self._check_rate(batch)
            ids = []
            for name in batch.schema.names:
                key = (batch.vin, name)
                if key not in self._signal_ids:
                    self._conn.execute("INSERT OR IGNORE INTO signals (vin, name) VALUES (?, ?)", key)
                    found = self._fetch("SELECT id FROM signals WHERE vin = ? AND name = ?", key)
                    new_signals[key] = int(found[0][0])
                ids.append(self._signal_ids[key] if key in self._signal_ids else new_signals[key])
            now = time.time()
            self._conn.executemany(
                "INSERT OR IGNORE INTO gaps VALUES (?, ?, ?, ?, 'evicted', ?)",
                [(batch.vin, boot, first, last, now) for boot, first, last in batch.evicted],
            )
            for chunk in batch.chunks:
                if not self._insert_chunk(batch.vin, chunk, now):
                    duplicates += 1
                    continue
                new += 1
                inserted, attempted = self._insert_samples(batch, chunk, ids)
                samples += inserted
                overlaps += attempted - inserted
                self._conn.execute(
                    "UPDATE chunks SET values_stored = ?, overlaps = ? "
                    "WHERE vin = ? AND boot_id = ? AND seq = ?",
                    (inserted, attempted - inserted, batch.vin, chunk.boot_id, chunk.seq),
                )
        self._signal_ids.update(new_signals)
        stored = list(dict.fromkeys(chunk.id for chunk in batch.chunks))
        return StoreResult(stored, new, duplicates, samples, overlaps)

    def _check_rate(self, batch: DecodedBatch) -> None:
        rate = batch.schema.rate
        row = self._fetch("SELECT rate_num, rate_den FROM vins WHERE vin = ?", (batch.vin,))
        if not row:
            values = (batch.vin, rate.numerator, rate.denominator, time.time())
            self._conn.execute("INSERT INTO vins VALUES (?, ?, ?, ?)", values)
            return
        stored = Fraction(row[0][0], row[0][1])
        if stored != rate:
            raise RateConflictError(
                f"vin {batch.vin}: batch sampled at {rate} Hz but {self.path} holds this vin at "
                f"{stored} Hz; a store keeps one rate per vin (use a new store for the new rate)"
            )

    def _insert_chunk(self, vin: str, chunk: ChunkData, now: float) -> bool:
        ticks = chunk.ticks
        first, last = (ticks[0], ticks[-1]) if ticks else (None, None)
        row = (vin, chunk.boot_id, chunk.seq, first, last, len(ticks), pack_ticks(ticks), now)
        self._conn.execute("INSERT OR IGNORE INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, ?)", row)
        return bool(self._conn.changes())

    def _insert_samples(self, batch: DecodedBatch, chunk: ChunkData, ids: list[int]) -> tuple[int, int]:
        rows = [
            (signal_id, tick, _to_sql(spec.to_physical(raw)))
            for spec, signal_id, column in zip(batch.schema.signals, ids, chunk.columns, strict=True)
            for tick, raw in zip(chunk.ticks, column, strict=True)
            if raw is not None
        ]
        before = self._conn.total_changes()
        self._conn.executemany("INSERT OR IGNORE INTO samples VALUES (?, ?, ?)", rows)
        return self._conn.total_changes() - before, len(rows)

    # --- reading -----------------------------------------------------------------------------------------

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self._conn.execute(sql, params).fetchall())

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._guard("read"):
            return self._fetch(sql, params)

    def vins(self) -> list[str]:
        return [row[0] for row in self._query("SELECT vin FROM vins ORDER BY vin")]

    def rate(self, vin: str) -> Fraction:
        """The vin's sampling rate in Hz: tick ``n`` is at ``n / rate`` seconds."""
        row = self._query("SELECT rate_num, rate_den FROM vins WHERE vin = ?", (vin,))
        if not row:
            raise NotFoundError(f"unknown vin {vin!r} in {self.path}")
        return Fraction(row[0][0], row[0][1])

    def signals(self, vin: str) -> list[str]:
        return [row[0] for row in self._query("SELECT name FROM signals WHERE vin = ? ORDER BY name", (vin,))]

    def rows(
        self, vin: str, names: Sequence[str], start_tick: int | None = None, end_tick: int | None = None
    ) -> Iterator[tuple[int, list[PhysicalValue | None]]]:
        """Every stored tick of ``vin`` in [start, end], in tick order, with the values of ``names``.

        A tick appears once even when several boots' chunks cover it; a value absent there is ``None``.
        Streams: memory is one cursor per signal plus the chunks whose ticks are still pending.
        """
        self.rate(vin)  # raises for an unknown vin
        known = dict(self._query("SELECT name, id FROM signals WHERE vin = ?", (vin,)))
        missing = [name for name in names if name not in known]
        if missing:
            raise NotFoundError(f"vin {vin!r} has no signal {missing[0]!r}")
        low = INT64[0] if start_tick is None else start_tick
        high = INT64[1] if end_tick is None else end_tick
        with self._guard("read"):
            chunks = self._conn.execute(
                "SELECT first_tick, last_tick, ticks FROM chunks WHERE vin = ? AND sample_count > 0 "
                "AND first_tick <= ? AND last_tick >= ? ORDER BY first_tick",
                (vin, high, low),
            )
            streams = [
                self._conn.execute(
                    "SELECT tick, value FROM samples "
                    "WHERE signal_id = ? AND tick BETWEEN ? AND ? ORDER BY tick",
                    (known[name], low, high),
                )
                for name in names
            ]
            values = [((tick, _from_sql(value)) for tick, value in stream) for stream in streams]
            yield from merge_rows((t for t in merge_ticks(chunks) if low <= t <= high), values)

    def stats(self) -> list[VinStats]:
        """Per vin: chunks, samples, values, overlaps, evicted chunks, and seq runs that are missing."""
        totals = self._query(
            "SELECT vin, count(*), sum(sample_count), sum(values_stored), sum(overlaps) "
            "FROM chunks GROUP BY vin"
        )
        runs = self._query(  # runs of consecutive stored seqs, per boot
            "SELECT vin, boot_id, min(seq), max(seq) FROM (SELECT vin, boot_id, seq, "
            "seq - row_number() OVER (PARTITION BY vin, boot_id ORDER BY seq) AS run FROM chunks) "
            "GROUP BY vin, boot_id, run"
        )
        evicted = self._query("SELECT vin, boot_id, first_seq, last_seq FROM gaps WHERE reason = 'evicted'")
        return summarize(self.vins(), totals, runs, evicted)
