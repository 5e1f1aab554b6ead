"""The receiver's store: decoded batches in one SQLite file (apsw, WAL), deduplicated by chunk identity.

Contract
- One :class:`Store` is one connection, used by one thread at a time (ingest: paho's network thread; the
  CLI: the main thread). Stores in several threads or processes may share a file: WAL lets readers run
  beside the writer, ``BEGIN IMMEDIATE`` and a busy timeout serialize writers.
- Every call blocks until SQLite is done; ``store_batch`` returns only after its commit is durable
  (``synchronous=FULL``): once it returns, acking the chunks it names is safe. That is what an ack means.
- ``store_batch`` is idempotent per chunk: a chunk whose (vin, boot_id, seq) is stored adds nothing, so a
  batch delivered twice, or a chunk re-sent after an agent crash, is a no-op (reported as stored: ackable).
- Columnar (:mod:`receiver.table`): a chunk is one ``chunks`` row (its ticks) plus a ``chunk_columns`` row
  per signal with a value in it: the chunk's physical values of that signal (``SignalSpec.to_physical``,
  NaN, ``-0.0`` and ints past 64 bits included; :mod:`receiver.column`) and a presence bitmap. Chunks are
  indexed by (vin, first_tick), ``vins.max_span`` bounds their span: ``rows`` reads only its range's.
- First write wins, at write time: a value at a (signal, tick) that an earlier chunk holds (two boots
  replaying one log) is dropped from the new chunk before it is stored, counted in its ``overlaps``;
  nothing exported or acked is rewritten: a read is the union of the chunks overlapping its range.
- One sampling rate per vin: tick numbers of different rates do not share a time axis, so a batch whose
  rate differs from the vin's stored one is refused whole with :class:`RateConflictError` (not acked: the
  agent keeps the data until an operator moves the vin to a new store). Ticks that do not increase
  within a chunk or leave int64, or a signal named twice, are garbage: :class:`~agent.errors.WireError`.
- Each signal keeps the coding (scale, bound, angle...) that the latest batch naming it declared.
- The caller owns the :class:`~agent.wire.DecodedBatch`; the store keeps nothing of it after the call.
- Errors: apsw exceptions become ``StorageError`` / ``StorageFullError`` / ``StorageCorruptError`` naming
  the file. A file of an older schema (version 1 stored a row per value) is refused with StorageError;
  one of version 2 (no declared coding) is upgraded in place by a writer, read as it is by a reader.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import apsw

from agent.errors import EdgeError, StorageCorruptError, StorageError, StorageFullError, WireError
from agent.service.schema import suggest
from agent.wire import DecodedBatch
from agent.wire.values import ChunkData, ChunkId, RawValue, SignalSpec
from receiver import column, table
from receiver.timeline import Row, VinStats, group_chunks, merge_chunks, summarize


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


class Store:
    """The receiver's SQLite store; see the module docstring for the contract."""

    def __init__(
        self, path: str | os.PathLike[str], *, readonly: bool = False, busy_timeout_ms: int = 10_000
    ) -> None:
        self.path = os.fspath(path)
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
        self._declares = not table.upgrades(self.path, version, readonly=readonly)  # else read as it is
        if readonly:
            return
        mode = self._fetch("PRAGMA journal_mode=WAL")[0][0]
        if mode not in ("wal", "memory"):
            raise StorageError(f"{self.path}: cannot switch to WAL (journal_mode is {mode})")
        self._conn.execute("PRAGMA synchronous=FULL")
        with self._transaction():  # under the write lock: another writer may have upgraded it meanwhile
            version = self._fetch("PRAGMA user_version")[0][0]
            for statement in (*table.upgrades(self.path, version, readonly=False), table.DDL):
                self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version={table.SCHEMA_VERSION}")
        self._declares = True

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
        if len(set(batch.schema.names)) != len(batch.schema.names):
            raise WireError(f"batch for vin {batch.vin} names a signal twice in its schema")
        for chunk in batch.chunks:
            if not table.increasing(chunk.ticks):
                raise WireError(f"chunk {chunk.boot_id.hex()}/{chunk.seq}: ticks must increase within int64")
        coders = [column.ColumnCoder(spec) for spec in batch.schema.signals]
        counts: list[tuple[int, int, int]] = []  # (values stored, values overlapping, id) per new chunk
        with self._guard("write to"), self._transaction():
            span = old_span = self._check_rate(batch)
            declared = [table.declared(batch.vin, spec) for spec in batch.schema.signals]
            self._conn.executemany(table.DECLARE_SIGNALS, declared)
            known = dict(self._fetch("SELECT name, id FROM signals WHERE vin = ?", (batch.vin,)))
            ids = [int(known[name]) for name in batch.schema.names]
            now = time.time()
            self._conn.executemany(
                "INSERT OR IGNORE INTO gaps VALUES (?, ?, ?, ?, 'evicted', ?)",
                [(batch.vin, boot, first, last, now) for boot, first, last in batch.evicted],
            )
            pending: list[tuple[int, int, int, bytes | None, bytes]] = []  # chunk_columns rows
            for chunk in batch.chunks:
                chunk_id = self._insert_chunk(batch.vin, chunk, now)
                if chunk_id is None:
                    continue  # a duplicate
                raw_columns: Sequence[Sequence[RawValue | None]] = chunk.columns
                skipped = 0
                if chunk.ticks:
                    held = self._held(batch.vin, chunk_id, chunk.ticks[0], chunk.ticks[-1], span, pending)
                    if held:  # rare: another boot's chunk stored values at some of these ticks
                        raw_columns, skipped = column.without(
                            chunk.ticks, raw_columns, [held[i] for i in ids]
                        )
                    span = max(span, chunk.ticks[-1] - chunk.ticks[0])
                stored = 0
                for coder, signal_id, raws in zip(coders, ids, raw_columns, strict=True):
                    encoded = coder.encode(raws)
                    if encoded is not None:
                        pending.append((chunk_id, signal_id, *encoded[:3]))
                        stored += encoded[3]
                counts.append((stored, skipped, chunk_id))
            self._conn.executemany(table.INSERT_COLUMNS, pending)
            self._conn.executemany("UPDATE chunks SET values_stored = ?, overlaps = ? WHERE id = ?", counts)
            if span != old_span:
                self._conn.execute("UPDATE vins SET max_span = ? WHERE vin = ?", (span, batch.vin))
        stored_ids = list(dict.fromkeys(chunk.id for chunk in batch.chunks))
        values, overlaps = sum(c[0] for c in counts), sum(c[1] for c in counts)
        return StoreResult(stored_ids, len(counts), len(batch.chunks) - len(counts), values, overlaps)

    def _check_rate(self, batch: DecodedBatch) -> int:
        """Refuse a batch of another rate than the vin's; return the vin's ``max_span``."""
        rate = batch.schema.rate
        row = self._fetch("SELECT rate_num, rate_den, max_span FROM vins WHERE vin = ?", (batch.vin,))
        if not row:
            values = (batch.vin, rate.numerator, rate.denominator, time.time())
            self._conn.execute(
                "INSERT INTO vins (vin, rate_num, rate_den, first_seen) VALUES (?, ?, ?, ?)", values
            )
            return 0
        stored = Fraction(row[0][0], row[0][1])
        if stored != rate:
            raise RateConflictError(
                f"vin {batch.vin}: batch sampled at {rate} Hz but {self.path} holds this vin at "
                f"{stored} Hz; a store keeps one rate per vin (use a new store for the new rate)"
            )
        return int(row[0][2])

    def _insert_chunk(self, vin: str, chunk: ChunkData, now: float) -> int | None:
        """The new chunk's id, or ``None`` when it is stored already."""
        ticks = chunk.ticks
        first, last = (ticks[0], ticks[-1]) if ticks else (None, None)
        row = (vin, chunk.boot_id, chunk.seq, first, last, len(ticks), table.pack_ticks(ticks), now)
        inserted = self._fetch(
            "INSERT OR IGNORE INTO chunks (vin, boot_id, seq, first_tick, last_tick, sample_count, ticks, "
            "values_stored, overlaps, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, ?) RETURNING id",
            row,
        )
        return int(inserted[0][0]) if inserted else None

    def _held(
        self, vin: str, chunk_id: int, first: int, last: int, span: int, pending: list[Any]
    ) -> defaultdict[int, set[int]] | None:
        """Per signal id, the ticks in [first, last] that other chunks of the vin hold a value for, or
        ``None`` when no other chunk overlaps; stores the ``pending`` column rows first when one does."""
        earlier = self._fetch(table.OVERLAPPING, (vin, first - span, last, first, chunk_id))
        if not earlier:
            return None
        self._conn.executemany(table.INSERT_COLUMNS, pending)
        pending.clear()
        held: defaultdict[int, set[int]] = defaultdict(set)
        for other, other_first, other_last, packed in earlier:
            ticks = table.chunk_ticks(other_first, other_last, packed)
            for signal_id, present in self._fetch(
                "SELECT signal_id, present FROM chunk_columns WHERE chunk_id = ?", (other,)
            ):
                held[signal_id].update(ticks[index] for index in column.positions(present, len(ticks)))
        return held

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
            raise NotFoundError(f"unknown vin {vin!r} in {self.path}{suggest(vin, self.vins())}")
        return Fraction(row[0][0], row[0][1])

    def signals(self, vin: str) -> list[str]:
        return [row[0] for row in self._query("SELECT name FROM signals WHERE vin = ? ORDER BY name", (vin,))]

    def declared(self, vin: str) -> dict[str, SignalSpec]:
        """Per signal of ``vin``, the coding declared by the latest batch naming it (if any, in a v2 store)."""
        self.rate(vin)  # raises for an unknown vin
        rows = self._query(table.SELECT_DECLARED, (vin,)) if self._declares else []
        return {spec.name: spec for spec in map(table.spec_of, rows) if spec is not None}

    def rows(
        self, vin: str, names: Sequence[str], start_tick: int | None = None, end_tick: int | None = None
    ) -> Iterator[Row]:
        """Every stored tick of ``vin`` in [start, end], in tick order, with the values of ``names``.

        A tick appears once even when several boots' chunks cover it; a value absent there is ``None``.
        An unknown vin or signal raises :class:`NotFoundError` at once. Streams: one statement reads the
        chunks overlapping the range, joined with their columns of ``names``; memory is one chunk plus the
        chunks that overlap it.
        """
        self.rate(vin)  # raises for an unknown vin
        known = dict(self._query("SELECT name, id FROM signals WHERE vin = ?", (vin,)))
        for name in names:
            if name not in known:
                raise NotFoundError(f"vin {vin!r} has no signal {name!r}{suggest(name, known)}")
        wanted: dict[int, list[int]] = {}  # signal id -> its places in ``names``
        for place, name in enumerate(names):
            wanted.setdefault(known[name], []).append(place)
        low = column.INT64_RANGE[0] if start_tick is None else start_tick
        high = column.INT64_RANGE[1] if end_tick is None else end_tick
        return self._stream(vin, wanted, len(names), low, high)

    def _stream(self, vin: str, ids: dict[int, list[int]], width: int, low: int, high: int) -> Iterator[Row]:
        with self._guard("read"):
            cursor = self._conn.execute(table.range_query(len(ids)), [vin, low, high, *ids])
            yield from merge_chunks(group_chunks(cursor, ids, width, low, high))

    def stats(self) -> list[VinStats]:
        """Per vin: chunks, samples, values, overlaps, evicted chunks, and seq runs that are missing."""
        totals, runs = self._query(table.STATS_TOTALS), self._query(table.STATS_RUNS)
        return summarize(self.vins(), totals, runs, self._query(table.STATS_EVICTED))
