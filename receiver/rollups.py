"""Rollups maintained at ingest: per signal, tumbling windows of 60, 300 and 900 s on the vehicle's clock.

A row of ``rollups``: for one signal id, one ``width`` (:data:`~receiver.windows.WIDTHS`) and one
``bucket_start`` (whole seconds, a multiple of the width: tick ``n`` of a boot sampled at ``r`` Hz is at
``n / r`` s, in the window starting at ``floor(n / r / width) * width``), ``n``: the count of its numeric
values there, ``lo``/``hi``: their min and max, ``total``: their sum (the mean is ``total / n``), and
``first_value``/``last_value``: the values at the earliest and latest instant of the window, with those
instants (``first_at``, ``last_at``: whole nanoseconds after ``bucket_start``, floored; of two instants
less than 1 ns apart, the lesser value is first and the greater last). Values are physical
(:meth:`~agent.wire.values.SignalSpec.to_physical`, :mod:`receiver.windows`), stored as doubles; an absent
value and NaN count nowhere; a sum that is undefined (``inf - inf``) is ``NULL``. A window without a
numeric value has no row; windows past ±2^62 s are not rolled up.

Contract
- Exactly once: :func:`derive` runs in the store's transaction of the batch (``Store._derive``) on the
  values that commit stores (another boot's instants removed by the overlap rule) of its new chunks
  only: a duplicate chunk is deduped before it; a batch that fails rolls back with its rollups. Rows are
  merged by UPSERT (counts and sums added, min and max kept, first and last by instant), so deliveries
  in any order, twice, or after a receiver was killed between commit and ack, give the same rows.
- Both dialects, through the store's adapter (:class:`receiver.backend.Db`, ``?`` placeholders): SQLite
  merges with scalar ``min()``/``max()``, PostgreSQL with ``LEAST``/``GREATEST``; the DDL branches on type
  names. Reads use the primary key (signal id, width, start): one vehicle's signals over a time range.
- A store written before rollups existed (SQLite, schema 4): :func:`create`, run by a writer where the
  store creates its tables, makes them and records every chunk stored so far as to be rolled up
  (``rollup_backfill``: ids up to ``upto``, done up to ``done``). They are rolled up from their stored
  columns, oldest id first, in bounded steps, each inside a transaction of the store: for about
  :data:`BACKFILL_OPEN_S` seconds when a writer opens it, then with every batch as many old chunks as it
  stores new ones (at least :data:`BACKFILL_PER_BATCH`); ``rollups_backfill`` is logged at each tenth.
  Until a vin's old chunks are done, :func:`pending` says so, and ``edge-receiver history`` answers no
  query that needs its rollups. A PostgreSQL store has them from its creation.
- Retention: :func:`expire` deletes the windows that end at or before a cutoff, for the store's
  ``_expire_derived`` hook (until it calls it, rollups outlive the chunks that retention deletes).
- No state between calls; runs on the caller's thread (the store's), blocking on its connection.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import Any

from agent.service.logs import get_logger
from agent.wire import DecodedBatch
from receiver import column, table
from receiver.backend import Db
from receiver.windows import Windows

BACKFILL_OPEN_S = 2.0  # seconds of backfill when a writer opens a store (the write lock is held)
BACKFILL_PER_BATCH = 16  # old chunks rolled up, at least, in each batch's transaction
BACKFILL_FETCH = 250  # old chunks read at once
COLUMNS = "signal_id, width, bucket_start, n, lo, hi, total, first_at, first_value, last_at, last_value"
BACKFILL_READ = (
    "SELECT c.id, c.first_tick, c.last_tick, c.ticks, b.rate_num, b.rate_den, k.signal_id, k.kind, "
    "k.present, k.data FROM chunks AS c JOIN boots AS b ON b.vin = c.vin AND b.boot_id = c.boot_id "
    "JOIN chunk_columns AS k ON k.chunk_id = c.id WHERE c.id > ? AND c.id <= ? AND c.sample_count > 0 "
    "ORDER BY c.id"
)


def ddl(dialect: str) -> list[str]:
    """The statements that create the rollup tables (idempotent)."""
    integer, real = ("INTEGER", "REAL") if dialect == "sqlite" else ("BIGINT", "DOUBLE PRECISION")
    suffix = " WITHOUT ROWID" if dialect == "sqlite" else ""
    return [
        f"CREATE TABLE IF NOT EXISTS rollups (signal_id {integer} NOT NULL, width {integer} NOT NULL, "
        f"bucket_start {integer} NOT NULL, n {integer} NOT NULL, lo {real} NOT NULL, hi {real} NOT NULL, "
        f"total {real}, first_at {integer} NOT NULL, first_value {real} NOT NULL, "
        f"last_at {integer} NOT NULL, last_value {real} NOT NULL, "
        f"PRIMARY KEY (signal_id, width, bucket_start)){suffix}",
        f"CREATE TABLE IF NOT EXISTS rollup_backfill (one {integer} PRIMARY KEY CHECK (one = 1), "
        f"upto {integer} NOT NULL, done {integer} NOT NULL)",
    ]


def upsert_sql(dialect: str) -> str:
    """The statement that merges one row (:data:`COLUMNS`) into ``rollups``."""
    least, greatest = ("min", "max") if dialect == "sqlite" else ("LEAST", "GREATEST")
    earlier = "(excluded.first_at, excluded.first_value) < (rollups.first_at, rollups.first_value)"
    later = "(excluded.last_at, excluded.last_value) > (rollups.last_at, rollups.last_value)"
    picks = [("first_at", earlier), ("first_value", earlier), ("last_at", later), ("last_value", later)]
    return (
        f"INSERT INTO rollups ({COLUMNS}) VALUES ({', '.join('?' * 11)}) "
        "ON CONFLICT (signal_id, width, bucket_start) DO UPDATE SET n = rollups.n + excluded.n, "
        f"lo = {least}(rollups.lo, excluded.lo), hi = {greatest}(rollups.hi, excluded.hi), "
        "total = rollups.total + excluded.total, "
        + ", ".join(f"{c} = CASE WHEN {t} THEN excluded.{c} ELSE rollups.{c} END" for c, t in picks)
    )


def create(db: Db) -> None:
    """Create the tables (a writer, where the store creates its own), record the chunks stored before
    them as to be rolled up, and roll up some; inside the store's transaction."""
    for statement in ddl(db.dialect):
        db.execute(statement)
    if db.dialect == "sqlite":
        db.execute("INSERT OR IGNORE INTO rollup_backfill SELECT 1, coalesce(max(id), 0), 0 FROM chunks")
    else:  # created with its rollups: nothing stored before them
        db.execute("INSERT INTO rollup_backfill VALUES (1, 0, 0) ON CONFLICT DO NOTHING")
    backfill(db, None, time.monotonic() + BACKFILL_OPEN_S)


def derive(db: Db, batch: DecodedBatch, signal_ids: Sequence[int], fresh: Sequence[Any]) -> None:
    """Roll up the new chunks of one batch (each a :class:`~receiver.store.StoredChunk`), and a step of
    the backfill when one is pending; inside the batch's transaction."""
    windows = Windows()
    rate = (batch.schema.rate.numerator, batch.schema.rate.denominator)
    windows.add([(new.chunk.ticks, new.columns) for new in fresh], rate, range(len(signal_ids)))
    specs = batch.schema.signals
    db.executemany(upsert_sql(db.dialect), windows.rows(lambda place: (signal_ids[place], specs[place])))
    backfill(db, max(BACKFILL_PER_BATCH, len(fresh)))


def backfill(db: Db, chunks: int | None, deadline: float | None = None) -> None:
    """Roll up the next ``chunks`` of those stored before the rollups (or as many as fit before the
    ``deadline`` on :func:`time.monotonic`, a step of :data:`BACKFILL_FETCH` at a time), and record them
    done: in the caller's transaction, so that each is rolled up once."""
    (upto, done), *_ = db.fetch("SELECT upto, done FROM rollup_backfill")
    if done >= upto:
        return
    target = upto if chunks is None else min(upto, done + chunks)
    windows, reached = Windows(), done
    while reached < target and (deadline is None or time.monotonic() < deadline):
        step = min(target, reached + BACKFILL_FETCH)
        for group in _by_chunk(db.fetch(BACKFILL_READ, (reached, step))):
            first, last, packed, num, den = group[0][1:6]
            ticks = table.chunk_ticks(first, last, packed)
            decoded = [column.decode(row[7], row[8], row[9], len(ticks)) for row in group]
            windows.add([(ticks, decoded)], (num, den), [row[6] for row in group])
        reached = step
    db.executemany(upsert_sql(db.dialect), windows.rows(lambda signal_id: (signal_id, None)))
    db.execute("UPDATE rollup_backfill SET done = ?", (reached,))
    if reached == upto or done * 10 // upto != reached * 10 // upto:
        get_logger(__name__).info(
            "rollups_backfill", chunks_done=reached, chunks=upto, percent=reached * 100 // upto
        )


def _by_chunk(rows: list[Any]) -> Iterator[list[Any]]:
    """The rows of :data:`BACKFILL_READ` (ordered by chunk id) grouped per chunk."""
    group: list[Any] = []
    for row in rows:
        if group and row[0] != group[0][0]:
            yield group
            group = []
        group.append(row)
    if group:
        yield group


def pending(db: Db, vin: str) -> str | None:
    """Why the vin's rollups are not complete yet (a sentence), or ``None`` when they are."""
    if db.dialect == "sqlite" and not db.fetch("SELECT 1 FROM sqlite_master WHERE name = 'rollup_backfill'"):
        return "this store has no rollups yet: a receiver (edge-receiver run) makes them when it opens it"
    (upto, done), *_ = db.fetch("SELECT upto, done FROM rollup_backfill")
    if done >= upto:
        return None
    (left,), *_ = db.fetch(
        "SELECT count(*) FROM chunks WHERE vin = ? AND id > ? AND id <= ?", (vin, done, upto)
    )
    if not left:
        return None
    return (
        f"the rollups of {vin} are still being built from the chunks stored before them ({left} of its "
        f"chunks to go, {done * 100 // upto} % of the store's done); a receiver builds them as it ingests"
    )


def expire(db: Db, cutoff: Fraction) -> None:
    """Delete the windows that end at or before ``cutoff`` (seconds, the vehicles' clock)."""
    db.execute("DELETE FROM rollups WHERE bucket_start + width <= ?", (int(cutoff // 1),))
