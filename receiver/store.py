"""The receiver's store: decoded batches, deduplicated by chunk identity, in SQLite or PostgreSQL.

Contract
- Two backends behind this one class: a SQLite file (:mod:`receiver.sqlite_store`, the default, embedded)
  or a PostgreSQL database (:mod:`receiver.pg_store`), chosen by :func:`open_store` / ``Store(target)``: a
  path is a SQLite file, a ``postgresql://`` URL a database. The logic below is written once; a backend
  supplies the connection and its transactions, the adapter (:class:`receiver.backend.Db`) and its dialect.
- One :class:`Store` is one connection, used by one thread at a time (ingest: paho's network thread; the
  CLI: the main thread). Stores in several threads or processes may share a file or a database: on SQLite
  one writer at a time (``BEGIN IMMEDIATE``), on PostgreSQL one writer per vin at a time (the batch's first
  statement locks its ``vins`` row), so receivers in one share group store side by side.
- Every call blocks until the database is done; ``store_batch`` returns only after its commit is durable
  (SQLite ``synchronous=FULL``; PostgreSQL's commit): once it returns, acking the chunks it names is safe.
- ``store_batch`` is idempotent per chunk: a chunk whose (vin, boot_id, seq) is stored adds nothing (a
  batch delivered twice, a chunk re-sent after an agent crash: a no-op, reported as stored: ackable).
- Columnar (:mod:`receiver.table`, :mod:`receiver.pg_table`): a chunk is one ``chunks`` row (its ticks)
  plus a ``chunk_columns`` row per signal with a value in it (:mod:`receiver.column`: physical values,
  NaN, ``-0.0`` and ints past 64 bits included, and a presence bitmap). Chunks are indexed by (vin,
  first_tick), ``vins.max_span`` bounds their span: ``rows`` reads only its range's.
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
- Retention (:meth:`Store.expire`): whole chunks whose every sample is older than the limit go, by whole
  day partitions on PostgreSQL; ages are on the vehicles' clock, from now or from the newest sample stored
  if that is earlier (a store of old replays is not emptied for being old). What goes is recorded in the
  gap ledger (reason ``expired``), so ``stats`` reports no missing chunks for it.
- A batch that carries its schema stores it under its hash (:mod:`receiver.schemas`) in the batch's
  transaction, so a later batch that names it by hash alone decodes on any receiver of the store.
- Hooks for what is derived from new chunks (rollups, latency, alerts: :attr:`Store.alert_rules`):
  ``_setup_derived(db)`` (where a writer creates the tables), ``_derive(db, ...)`` (inside each batch's
  transaction) and ``_expire_derived(db, cutoff)`` (retention); ``db`` is the adapter and ``db.dialect``
  says which SQL to write. :attr:`db` is the same adapter for readers.
- The caller owns the :class:`~agent.wire.DecodedBatch`; the store keeps nothing of it after the call.
- Errors: the driver's exceptions become ``StorageError`` / ``StorageFullError`` / ``StorageCorruptError``
  naming the file or the URL (without its password).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from agent.errors import StorageError, WireError
from agent.wire import DecodedBatch
from agent.wire.values import ChunkData, ChunkId, RawValue
from receiver import alerts, column, latency, metrics, overlap, rollups, schemas, table
from receiver.alert_rules import DEFAULT_RULES, AlertRule
from receiver.backend import DAY_S, Backend, Db, redacted
from receiver.sqlite_store import SqliteBackend
from receiver.store_reads import NotFoundError, RateConflictError, Reads

__all__ = [
    "Expiry",
    "NotFoundError",
    "RateConflictError",
    "Store",
    "StoreResult",
    "StoredChunk",
    "open_store",
]


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


@dataclass(frozen=True)
class Expiry:
    """What one :meth:`Store.expire` did: chunks deleted, partitions dropped, the cutoff (s) or ``None``."""

    chunks: int
    partitions: int
    cutoff: Fraction | None


def is_url(target: str | os.PathLike[str]) -> bool:
    """Whether ``target`` names a PostgreSQL database rather than a SQLite file."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def open_store(target: str | os.PathLike[str], *, readonly: bool = False) -> Store:
    """The store at ``target``: a SQLite file's path, or a ``postgresql://`` URL."""
    return Store(target, readonly=readonly)


class Store(Reads):
    """The receiver's store; see the module docstring for the contract."""

    def __init__(
        self, target: str | os.PathLike[str], *, readonly: bool = False, busy_timeout_ms: int = 10_000
    ) -> None:
        self.alert_rules: Sequence[AlertRule] = DEFAULT_RULES  # the receiver sets its config's (alerts.py)
        backend: Backend
        if is_url(target):
            try:
                from receiver.pg_store import PgBackend  # psycopg is needed by PostgreSQL stores only
            except ImportError as error:  # psycopg without libpq (Debian's libpq5), or no psycopg
                where = redacted(str(target))
                raise StorageError(f"cannot open store {where}: {error} (install libpq5)") from error
            backend = PgBackend(str(target), readonly=readonly)
        else:
            backend = SqliteBackend(target, readonly=readonly, busy_timeout_ms=busy_timeout_ms)
        self._backend, self.path = backend, backend.where
        if readonly:
            return
        try:
            with backend.guard("open"), backend.transaction():
                self._setup_derived(backend.db)
        except BaseException:
            backend.close()
            raise

    @property
    def db(self) -> Db:
        """The adapter to this store's connection (its thread only)."""
        return self._backend.db

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- hooks: what is derived from the chunks ----------------------------------------------------------

    def _setup_derived(self, db: Db) -> None:
        """Create the derived tables (``CREATE TABLE IF NOT EXISTS``, per ``db.dialect``): a writer's open."""
        rollups.create(db)  # and the backfill of an older store's chunks
        latency.create(db)
        metrics.create(db)
        schemas.create(db)
        alerts.create(db)

    def _derive(
        self, db: Db, batch: DecodedBatch, signal_ids: list[int], fresh: list[StoredChunk], now: float
    ) -> None:
        """What is derived from the new chunks (rollups, latency), written in the batch's own transaction:
        it then counts each chunk exactly once, whatever is delivered twice, late or out of order, and a
        receiver killed before its commit leaves nothing of it. ``signal_ids[i]`` is the id of
        ``batch.schema.signals[i]``; each :class:`StoredChunk` holds the values actually stored (those of
        another boot's instants removed). Runs inside the transaction: raise to roll it all back."""
        rollups.derive(db, batch, signal_ids, fresh)
        latency.record(db, batch, [new.chunk for new in fresh], time.time())
        alerts.derive(db, batch, fresh, self.alert_rules)

    def _expire_derived(self, db: Db, cutoff: Fraction) -> None:
        """Retention of the derived tables: what is about data before ``cutoff`` (s, vehicle clock)."""
        rollups.expire(db, cutoff)
        alerts.expire(db, cutoff)

    # --- writing -----------------------------------------------------------------------------------------

    def store_batch(self, batch: DecodedBatch) -> StoreResult:
        """Store the batch's new chunks and its eviction notices in one durable transaction."""
        if len(set(batch.schema.names)) != len(batch.schema.names):
            raise WireError(f"batch for vin {batch.vin} names a signal twice in its schema")
        for chunk in batch.chunks:
            if not table.increasing(chunk.ticks):
                raise WireError(f"chunk {chunk.boot_id.hex()}/{chunk.seq}: ticks must increase within int64")
        coders = [column.ColumnCoder(spec) for spec in batch.schema.signals]
        counts: list[tuple[Any, ...]] = []  # (values stored, overlapping, identity, key) per new chunk
        sql, db, rate = self._backend.sql, self._backend.db, batch.schema.rate
        keys = {c.id: sql.key(c.ticks[-1] if c.ticks else None, rate) for c in batch.chunks}
        if sql.keyed:
            with self._backend.guard("make room in"):
                self._backend.prepare(set(keys.values()))
        with self._backend.guard("write to"), self._backend.transaction():
            span, rates = self._check_rate(batch)
            old_span = span
            declared = sorted(table.declared(batch.vin, spec) for spec in batch.schema.signals)
            db.executemany(sql.DECLARE_SIGNALS, declared)
            known = dict(db.fetch(sql.SIGNAL_IDS, (batch.vin,)))
            ids = [int(known[name]) for name in batch.schema.names]
            now = time.time()
            schemas.record(db, batch.schema_hash, batch.schema_body)  # before the ack lets it be named
            db.executemany(sql.INSERT_GAP, [(batch.vin, *gap, "evicted", now) for gap in batch.evicted])
            quiet = overlap.quiet(self._backend, batch, span, rates)
            pending: list[tuple[Any, ...]] = []  # chunk_columns rows
            fresh: list[StoredChunk] = []  # what this commit stores of each new chunk
            inserted = db.fetch_each(
                sql.INSERT_CHUNK, [self._chunk_row(batch.vin, c, now, keys[c.id]) for c in batch.chunks]
            )
            for chunk, returned in zip(batch.chunks, inserted, strict=True):
                key = keys[chunk.id]
                if not returned:
                    continue  # a duplicate
                chunk_id = int(returned[0][0])
                raw_columns: Sequence[Sequence[RawValue | None]] = chunk.columns
                skipped = 0
                if chunk.ticks and not quiet:
                    bounds = (chunk.ticks[0], chunk.ticks[-1], rate, rates, span)
                    held = overlap.held(self._backend, batch.vin, chunk_id, bounds, pending)
                    if held:  # rare: another boot's chunk stored values at some of these ticks
                        raw_columns, skipped = column.without(
                            chunk.ticks, raw_columns, [held[i] for i in ids]
                        )
                if chunk.ticks:
                    span = max(span, chunk.ticks[-1] - chunk.ticks[0])
                stored = 0
                for coder, signal_id, raws in zip(coders, ids, raw_columns, strict=True):
                    encoded = coder.encode(raws)
                    if encoded is not None:
                        pending.append((chunk_id, signal_id, *encoded[:3], *key))
                        stored += encoded[3]
                counts.append((stored, skipped, batch.vin, chunk.boot_id, chunk.seq, *key))
                fresh.append(StoredChunk(chunk, raw_columns, chunk_id))
            db.insert("chunk_columns", sql.COLUMNS, pending)
            self._derive(db, batch, ids, fresh, now)
            sql.update_chunks(db, counts)
            if span != old_span:
                db.execute(sql.UPDATE_SPAN, (span, batch.vin))
        stored_ids = list(dict.fromkeys(chunk.id for chunk in batch.chunks))
        values, overlaps = sum(c[0] for c in counts), sum(c[1] for c in counts)
        return StoreResult(stored_ids, len(counts), len(batch.chunks) - len(counts), values, overlaps)

    def _check_rate(self, batch: DecodedBatch) -> tuple[int, list[Fraction]]:
        """Record the vin and its batch's boots at the batch's rate (locking the vin's row on PostgreSQL);
        refuse a batch of another rate than a boot's stored one. Return the vin's ``max_span`` and the
        rates of its segments."""
        sql, db, rate, vin = self._backend.sql, self._backend.db, batch.schema.rate, batch.vin
        db.execute(sql.INSERT_VIN, (vin, rate.numerator, rate.denominator, time.time()))
        span = int(db.fetch(sql.LOCK_VIN, (vin,))[0][0])
        for boot in dict.fromkeys(chunk.boot_id for chunk in batch.chunks):
            db.execute(sql.INSERT_BOOT, (vin, boot, rate.numerator, rate.denominator))
            held = db.fetch(sql.BOOT_RATE, (vin, boot))
            if (stored := Fraction(held[0][0], held[0][1])) != rate:
                raise RateConflictError(
                    f"vin {vin} boot {boot.hex()}: batch sampled at {rate} Hz but {self.path} holds "
                    f"this boot at {stored} Hz; a boot keeps one rate"
                )
        return span, [Fraction(num, den) for num, den in db.fetch(sql.VIN_RATES, (vin,))]

    @staticmethod
    def _chunk_row(vin: str, chunk: ChunkData, now: float, key: tuple[int, ...]) -> tuple[Any, ...]:
        """The parameters of ``INSERT_CHUNK`` (whose ``RETURNING id`` is empty for a stored chunk)."""
        ticks = chunk.ticks
        first, last = (ticks[0], ticks[-1]) if ticks else (None, None)
        return (vin, chunk.boot_id, chunk.seq, first, last, len(ticks), table.pack_ticks(ticks), now, *key)

    def write(self, what: str, work: Callable[[Db], None]) -> None:
        """Run ``work(db)`` in a write transaction of its own (ingest's totals: :mod:`receiver.metrics`);
        the driver's errors become ``StorageError`` naming the store and ``what``."""
        with self._backend.guard(what), self._backend.transaction():
            work(self._backend.db)

    # --- retention ---------------------------------------------------------------------------------------

    def expire(self, days: int, now: float | None = None, batch: int = 2_000) -> Expiry:
        """Delete what is older than ``days`` (0: keep everything): every whole chunk whose samples are all
        before the cutoff, ``min(now, newest sample stored) - days``, on the vehicles' clock. SQLite: at
        most ``batch`` chunks per transaction; PostgreSQL: whole day partitions whose day ended before it.
        Never a sample at or after the cutoff."""
        if days <= 0:
            return Expiry(0, 0, None)
        sql, db = self._backend.sql, self._backend.db
        with self._backend.guard("read"):
            lasts = [
                Fraction(last) / Fraction(n, d) for n, d, last in db.fetch(sql.NEWEST) if last is not None
            ]
        if not lasts:
            return Expiry(0, 0, None)
        cutoff = min(Fraction(time.time() if now is None else now), max(lasts)) - days * DAY_S
        with self._backend.guard("expire data of"):
            chunks, partitions = self._backend.expire(cutoff, batch)
        with self._backend.guard("expire"), self._backend.transaction():
            self._expire_derived(db, cutoff)
        return Expiry(chunks, partitions, cutoff)
