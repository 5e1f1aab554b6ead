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
- The overlap rule: first write wins, at write time, among the chunks that reached the store, i.e. that
  passed the receiver's checks (its message authentication, when the fleet key is configured, so that no
  one but vehicle A writes A's data). A value at a (signal, instant) that an earlier chunk of the vin
  holds (two boots replaying one log) is dropped from the new chunk before it is stored, counted in its
  ``overlaps``; nothing exported or acked is rewritten: a read is the union of the chunks overlapping
  its range. Instants, not tick numbers, are compared: tick ``n`` of a segment of rate ``r`` is at
  ``n / r`` seconds, and a value of another segment coincides with it only at the same instant.
- A sampling rate per segment: each boot (``boot_id``) of a vin is a segment of its timeline with one
  rate, set by its first batch; a vehicle whose operator changes ``sampling.rate_hz`` starts a new boot
  and keeps uploading. A batch whose rate differs from its boot's stored one is refused whole with
  :class:`RateConflictError` (an agent never does that). Reads put a vin's segments on one grid,
  :meth:`Store.rate` (the least rate that every segment's rate divides, so each tick is exact there):
  ``rows`` gives ticks of that grid, in time order across segments. Ticks that do not increase within a
  chunk or leave int64, or a signal named twice, are garbage: :class:`~agent.errors.WireError`.
- Each signal keeps the coding (scale, bound, angle...) that the latest batch naming it declared.
- The caller owns the :class:`~agent.wire.DecodedBatch`; the store keeps nothing of it after the call.
- Errors: apsw exceptions become ``StorageError`` / ``StorageFullError`` / ``StorageCorruptError`` naming
  the file. A file of an older schema (version 1 stored a row per value) is refused with StorageError;
  one of version 2 (no declared coding) or 3 (one rate per vin) is upgraded in place by a writer, read
  as it is by a reader (every boot of a version-3 file at its vin's one rate).
"""

from __future__ import annotations

import contextlib
import heapq
import math
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
from receiver.timeline import Row, VinStats, group_chunks, merge_chunks, scaled, summarize


class RateConflictError(EdgeError):
    """A batch's sampling rate differs from the rate already stored for its boot."""


class NotFoundError(EdgeError):
    """A vin or a signal that the store does not hold."""


@dataclass(frozen=True)
class StoreResult:
    stored: list[ChunkId]  # every chunk of the batch, new or duplicate, in batch order: all ackable
    new: int
    duplicates: int
    samples: int  # values inserted
    overlaps: int  # values skipped: their (signal, tick) was already held by another chunk


@dataclass(frozen=True)
class StoredChunk:
    """A new chunk as one commit stores it: the chunk as received, the raw values stored of each of the
    batch's signals (overlaps with another boot removed), and its id in the store."""

    chunk: ChunkData
    columns: Sequence[Sequence[RawValue | None]]
    chunk_id: int


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
        table.upgrades(self.path, version, readonly=readonly)  # raises for a file it cannot open
        self._declares, self._segments = version >= 3, version >= 4  # else read as it is
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
        self._declares = self._segments = True

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
            span, rates = self._check_rate(batch)
            old_span, rate = span, batch.schema.rate
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
            fresh: list[StoredChunk] = []  # what this commit stores of each new chunk
            for chunk in batch.chunks:
                chunk_id = self._insert_chunk(batch.vin, chunk, now)
                if chunk_id is None:
                    continue  # a duplicate
                raw_columns: Sequence[Sequence[RawValue | None]] = chunk.columns
                skipped = 0
                if chunk.ticks:
                    bounds = (chunk.ticks[0], chunk.ticks[-1], rate, rates, span)
                    held = self._held(batch.vin, chunk_id, bounds, pending)
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
                fresh.append(StoredChunk(chunk, raw_columns, chunk_id))
            self._conn.executemany(table.INSERT_COLUMNS, pending)
            self._derive(batch, ids, fresh, now)
            self._conn.executemany("UPDATE chunks SET values_stored = ?, overlaps = ? WHERE id = ?", counts)
            if span != old_span:
                self._conn.execute("UPDATE vins SET max_span = ? WHERE vin = ?", (span, batch.vin))
        stored_ids = list(dict.fromkeys(chunk.id for chunk in batch.chunks))
        values, overlaps = sum(c[0] for c in counts), sum(c[1] for c in counts)
        return StoreResult(stored_ids, len(counts), len(batch.chunks) - len(counts), values, overlaps)

    def _derive(
        self, batch: DecodedBatch, signal_ids: list[int], fresh: list[StoredChunk], now: float
    ) -> None:
        """What is derived from the new chunks (rollups, latency), written in the batch's own transaction:
        it then counts each chunk exactly once, whatever is delivered twice, late or out of order, and a
        receiver killed before its commit leaves nothing of it. ``signal_ids[i]`` is the id of
        ``batch.schema.signals[i]``; each :class:`StoredChunk` holds the values actually stored (those of
        another boot's instants removed). Runs inside the transaction: raise to roll it all back."""

    def _check_rate(self, batch: DecodedBatch) -> tuple[int, list[Fraction]]:
        """Record the vin and its batch's boots at the batch's rate; refuse a batch of another rate than a
        boot's stored one. Return the vin's ``max_span`` and the rates of its segments."""
        rate, vin = batch.schema.rate, batch.vin
        row = self._fetch("SELECT max_span FROM vins WHERE vin = ?", (vin,))
        if not row:
            values = (vin, rate.numerator, rate.denominator, time.time())
            self._conn.execute(
                "INSERT INTO vins (vin, rate_num, rate_den, first_seen) VALUES (?, ?, ?, ?)", values
            )
        for boot in dict.fromkeys(chunk.boot_id for chunk in batch.chunks):
            held = self._fetch(
                "SELECT rate_num, rate_den FROM boots WHERE vin = ? AND boot_id = ?", (vin, boot)
            )
            if not held:
                self._conn.execute(
                    "INSERT INTO boots VALUES (?, ?, ?, ?)", (vin, boot, rate.numerator, rate.denominator)
                )
            elif (stored := Fraction(held[0][0], held[0][1])) != rate:
                raise RateConflictError(
                    f"vin {vin} boot {boot.hex()}: batch sampled at {rate} Hz but {self.path} holds "
                    f"this boot at {stored} Hz; a boot keeps one rate"
                )
        rates = [Fraction(num, den) for num, den in self._fetch(table.VIN_RATES, (vin,))]
        return (int(row[0][0]) if row else 0), rates

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
        self,
        vin: str,
        chunk_id: int,
        bounds: tuple[int, int, Fraction, Sequence[Fraction], int],
        pending: list[Any],
    ) -> defaultdict[int, set[int]] | None:
        """Per signal id, the ticks in [first, last] (of ``rate``) at whose instants other chunks of the
        vin, of its segments of ``rates``, hold a value, or ``None`` when no other chunk overlaps those
        instants; stores the ``pending`` column rows first when one does."""
        first, last, rate, rates, span = bounds
        earlier: list[tuple[Any, Fraction]] = []
        for other in rates:  # [first, last] in the other rate's ticks, widened to whole ticks
            low, high = math.floor(first * other / rate), math.ceil(last * other / rate)
            query = (vin, low - span, high, low, chunk_id, other.numerator, other.denominator)
            earlier += ((row, other) for row in self._fetch(table.OVERLAPPING, query))
        if not earlier:
            return None
        self._conn.executemany(table.INSERT_COLUMNS, pending)
        pending.clear()
        held: defaultdict[int, set[int]] = defaultdict(set)
        for (other_id, other_first, other_last, packed), other in earlier:
            ticks = table.chunk_ticks(other_first, other_last, packed)
            factor = rate / other  # tick t of the other segment is tick t * factor of this one
            for signal_id, present in self._fetch(
                "SELECT signal_id, present FROM chunk_columns WHERE chunk_id = ?", (other_id,)
            ):
                at = (ticks[index] for index in column.positions(present, len(ticks)))
                if factor == 1:
                    held[signal_id].update(at)
                else:
                    up, down = factor.numerator, factor.denominator
                    held[signal_id].update(tick * up // down for tick in at if tick * up % down == 0)
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
        """The rate in Hz of the grid that :meth:`rows` gives the vin's ticks on: tick ``n`` is at
        ``n / rate`` seconds. Its sampling rate when all its segments share one; else the least rate that
        every segment's rate divides (1 Hz and 50 Hz: 50 Hz; 2 Hz and 3 Hz: 6 Hz)."""
        return _grid(self._rates(vin))

    def _rates(self, vin: str) -> list[Fraction]:
        """The rates of the vin's segments (its first batch's alone when it has none, or in a v3 file)."""
        row = self._query("SELECT rate_num, rate_den FROM vins WHERE vin = ?", (vin,))
        if not row:
            raise NotFoundError(f"unknown vin {vin!r} in {self.path}{suggest(vin, self.vins())}")
        rates = self._query(table.VIN_RATES, (vin,)) if self._segments else []
        return sorted(Fraction(num, den) for num, den in rates) or [Fraction(row[0][0], row[0][1])]

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
        rates = self._rates(vin)  # raises for an unknown vin
        known = dict(self._query("SELECT name, id FROM signals WHERE vin = ?", (vin,)))
        for name in names:
            if name not in known:
                raise NotFoundError(f"vin {vin!r} has no signal {name!r}{suggest(name, known)}")
        wanted: dict[int, list[int]] = {}  # signal id -> its places in ``names``
        for place, name in enumerate(names):
            wanted.setdefault(known[name], []).append(place)
        low = column.INT64_RANGE[0] if start_tick is None else start_tick
        high = column.INT64_RANGE[1] if end_tick is None else end_tick
        if len(rates) == 1:
            return self._stream(vin, wanted, len(names), low, high)
        return self._segmented(vin, wanted, len(names), (low, high), rates)

    def _stream(self, vin: str, ids: dict[int, list[int]], width: int, low: int, high: int) -> Iterator[Row]:
        with self._guard("read"):
            cursor = self._conn.execute(table.range_query(len(ids)), [vin, low, high, *ids])
            yield from merge_chunks(group_chunks(cursor, ids, width, low, high))

    def _segmented(
        self, vin: str, ids: dict[int, list[int]], width: int, bounds: tuple[int, int], rates: list[Fraction]
    ) -> Iterator[Row]:
        """:meth:`_stream` over segments of several rates: one cursor per rate, its ticks put on the
        grid of :meth:`rate`, the chunks merged by their start on it."""
        grid = _grid(rates)
        with self._guard("read"):
            streams = []
            for rate in rates:
                factor = int(grid / rate)
                low, high = -(-bounds[0] // factor), bounds[1] // factor  # whole ticks of this rate
                params = [vin, low, high, rate.numerator, rate.denominator, *ids]
                cursor = self._conn.execute(table.range_query(len(ids), by_rate=True), params)
                streams.append(scaled(group_chunks(cursor, ids, width, low, high), factor))
            yield from merge_chunks(heapq.merge(*streams, key=lambda chunk: chunk[0]))

    def stats(self) -> list[VinStats]:
        """Per vin: chunks, samples, values, overlaps, evicted chunks, and seq runs that are missing."""
        totals, runs = self._query(table.STATS_TOTALS), self._query(table.STATS_RUNS)
        return summarize(self.vins(), totals, runs, self._query(table.STATS_EVICTED))


def _grid(rates: Sequence[Fraction]) -> Fraction:
    """The least rate that every one of ``rates`` divides (so that each of their ticks is a whole tick)."""
    return Fraction(math.lcm(*(r.numerator for r in rates)), math.gcd(*(r.denominator for r in rates)))
