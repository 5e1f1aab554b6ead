"""What a store backend supplies to :class:`receiver.store.Store`: a connection with transactions, the
adapter every statement goes through (:class:`Db`), and its SQL dialect (:class:`Dialect`).

Contract
- :class:`Db`, the adapter (also what ``Store``'s ``_derive`` and ``_setup_derived`` hooks receive, so that
  derived tables (rollups, latency) are written by the same connection, in the same transaction):
  ``execute(sql, params)``, ``executemany(sql, rows)``, ``fetch(sql, params) -> list[tuple]``,
  ``fetch_each(sql, rows) -> list[list[tuple]]`` (one statement per row, each one's result: one round
  trip on PostgreSQL, a pipeline),   ``insert(table, columns, rows)`` (bulk insert of new rows, no conflict handling: COPY on PostgreSQL),
  ``stream(sql, params)`` (an iterator over a result, for large reads) and ``dialect``, ``"sqlite"`` or
  ``"postgresql"``. Statements use ``?`` placeholders on both (the PostgreSQL adapter rewrites them to
  psycopg's ``%s``, and doubles a literal ``%``); standard SQL runs on both as is, including
  ``INSERT ... ON CONFLICT DO NOTHING`` / ``DO UPDATE`` and ``RETURNING``. Where the two differ (DDL:
  ``BLOB`` vs ``BYTEA``, ``INTEGER PRIMARY KEY`` vs a sequence, ``WITHOUT ROWID``, ``REAL`` vs ``DOUBLE
  PRECISION``), branch on ``dialect``. Values come back as Python ints, floats, str, bytes or ``None``.
- A :class:`Backend` owns one connection, used by one thread at a time. ``transaction()`` is durable when
  it exits: a batch acked after it returns is safe. ``guard(action)`` turns the driver's exceptions into
  :mod:`agent.errors`' storage errors naming ``where`` (a path, or a URL without its password).
- Every statement of :class:`Dialect` takes the same parameters on both backends, so the store's logic is
  written once; ``key(last_tick, rate)`` is the partition key a backend adds after the parameters of
  ``insert_chunk``, ``insert_columns``, ``chunk_columns`` and ``update_chunk`` (``()`` on SQLite, the chunk's
  day on PostgreSQL).
"""

from __future__ import annotations

import abc
import contextlib
import re
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from typing import Any, Protocol

from receiver.column import INT64_RANGE

DAY_S = 86_400


class Db(Protocol):
    """The adapter to one connection; see the module docstring."""

    dialect: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def fetch_each(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[list[tuple[Any, ...]]]: ...

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None: ...

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]: ...


def clamp(tick: int) -> int:
    """``tick`` within int64 (a bound computed past it selects the same rows)."""
    return min(max(tick, INT64_RANGE[0]), INT64_RANGE[1])


def day_of(tick: int, rate: Fraction) -> int:
    """The day (on the vehicle's clock, days since 1970-01-01) that tick ``tick`` of rate ``rate`` is in."""
    return (tick * rate.denominator) // (rate.numerator * DAY_S)


def redacted(url: str) -> str:
    """A database URL with its password (in the authority or as a parameter) replaced by ``***``."""
    url = re.sub(r"(://[^:/@?#]*):[^@/?#]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


def seq_runs(chunks: Iterable[tuple[str, bytes, int]]) -> list[tuple[str, bytes, int, int]]:
    """The (vin, boot, seq) of some chunks as runs of consecutive seqs: (vin, boot, first, last)."""
    runs: list[tuple[str, bytes, int, int]] = []
    for vin, boot, seq in sorted(chunks):
        if runs and runs[-1][:2] == (vin, boot) and runs[-1][3] + 1 == seq:
            runs[-1] = (vin, boot, runs[-1][2], seq)
        else:
            runs.append((vin, boot, seq, seq))
    return runs


class Dialect:
    """The statements of the store; these defaults are standard SQL that both backends run."""

    keyed = False  # whether chunk rows carry a partition key (``key``)

    def key(self, last_tick: int | None, rate: Fraction) -> tuple[int, ...]:
        return ()

    INSERT_VIN = (
        "INSERT INTO vins (vin, rate_num, rate_den, first_seen) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
    )
    LOCK_VIN = "SELECT max_span FROM vins WHERE vin = ?"  # PostgreSQL: FOR UPDATE, one writer per vin
    BOOT_RATE = "SELECT rate_num, rate_den FROM boots WHERE vin = ? AND boot_id = ?"
    INSERT_BOOT = "INSERT INTO boots VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
    VIN_RATES = "SELECT DISTINCT rate_num, rate_den FROM boots WHERE vin = ?"
    VIN_RATE = "SELECT rate_num, rate_den FROM vins WHERE vin = ?"
    VIN_SPAN = "SELECT max_span FROM vins WHERE vin = ?"
    VINS = "SELECT vin FROM vins"
    SIGNAL_IDS = "SELECT name, id FROM signals WHERE vin = ?"
    INSERT_GAP = "INSERT INTO gaps VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
    UPDATE_SPAN = "UPDATE vins SET max_span = ? WHERE vin = ?"
    UPDATE_CHUNK = (
        'UPDATE chunks SET values_stored = ?, "overlaps" = ? WHERE vin = ? AND boot_id = ? AND seq = ?'
    )
    INSERT_CHUNK = (
        "INSERT INTO chunks (vin, boot_id, seq, first_tick, last_tick, sample_count, ticks, values_stored, "
        '"overlaps", received_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, ?) ON CONFLICT DO NOTHING RETURNING id'
    )
    COLUMNS: tuple[str, ...] = ("chunk_id", "signal_id", "kind", "present", "data")
    CHUNK_COLUMNS = "SELECT signal_id, present FROM chunk_columns WHERE chunk_id = ?"
    STATS_TOTALS = 'SELECT vin, count(*), sum(sample_count), sum(values_stored), sum("overlaps") FROM chunks GROUP BY vin'
    STATS_RUNS = (  # runs of consecutive stored seqs, per boot
        "SELECT vin, boot_id, min(seq), max(seq) FROM (SELECT vin, boot_id, seq, "
        "seq - row_number() OVER (PARTITION BY vin, boot_id ORDER BY seq) AS run FROM chunks) AS r "
        "GROUP BY vin, boot_id, run"
    )
    STATS_GAPS = "SELECT vin, boot_id, first_seq, last_seq, reason FROM gaps"
    # Per boot, its rate and the last tick of its last chunk with samples: the newest data of the store.
    NEWEST = (
        "SELECT b.rate_num, b.rate_den, (SELECT c.last_tick FROM chunks AS c WHERE c.vin = b.vin AND "
        "c.boot_id = b.boot_id AND c.sample_count > 0 ORDER BY c.seq DESC LIMIT 1) FROM boots AS b"
    )
    _DECLARED = ("scale", "value_offset", "is_float", "integer_scaled", "bound_raw", "coding")
    # (vin, name, the declared coding...): a signal's id, and its coding when a batch declares another one.
    DECLARE_SIGNALS = (
        f"INSERT INTO signals (vin, name, {', '.join(_DECLARED)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        f"ON CONFLICT (vin, name) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _DECLARED)} "
        f"WHERE ({', '.join(f'signals.{c}' for c in _DECLARED)}) IS DISTINCT FROM ({', '.join(f'excluded.{c}' for c in _DECLARED)})"
    )
    SELECT_DECLARED = f"SELECT name, {', '.join(_DECLARED)} FROM signals WHERE vin = ?"

    def update_chunks(self, db: Db, counts: Sequence[Sequence[Any]]) -> None:
        """``UPDATE_CHUNK`` for each of ``counts`` (the values stored and overlapping of new chunks)."""
        db.executemany(self.UPDATE_CHUNK, counts)

    def overlapping(
        self, vin: str, exclude: int, bounds: tuple[int, int], span: int, rate: Fraction
    ) -> tuple[str, list[Any]]:
        """The chunks of the vin's segments of ``rate`` other than ``exclude`` that overlap ``bounds``
        (ticks of that rate), as (id, first tick, last tick, packed ticks); ``span`` bounds their spans."""
        low, high = bounds
        sql = (
            "SELECT id, first_tick, last_tick, ticks FROM chunks WHERE vin = ? AND first_tick BETWEEN ? AND ? "
            "AND last_tick >= ? AND sample_count > 0 AND id != ? AND boot_id IN "
            "(SELECT boot_id FROM boots WHERE vin = ? AND rate_num = ? AND rate_den = ?)"
        )
        params = [vin, clamp(low - span), high, low, exclude, vin, rate.numerator, rate.denominator]
        return sql, params

    def range_query(
        self, vin: str, ids: Sequence[int], bounds: tuple[int, int], rate: Fraction, span: tuple[bool, int]
    ) -> tuple[str, list[Any]]:
        """Per chunk of the vin (of its segments of ``rate`` if ``span[0]``, segmented) overlapping
        ``bounds``, by first tick then storage order: its id, first and last tick, packed ticks, then one
        row per stored column of the signals ``ids`` (signal id, kind, presence, data), or one row of
        ``None``s. ``span[1]`` is the vin's ``max_span`` as read in the same snapshot."""
        raise NotImplementedError


class Backend(abc.ABC):
    """One connection to one store; see the module docstring."""

    db: Db
    sql: Dialect
    where: str
    declares = True  # signals carry their declared coding (a SQLite store of version 2 does not)
    segments = True  # boots carry their own rate (a SQLite store of version 3 does not)

    @abc.abstractmethod
    def guard(self, action: str) -> contextlib.AbstractContextManager[None]: ...

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[None]: ...

    def snapshot(self) -> contextlib.AbstractContextManager[None]:
        """Around a read that streams several statements (PostgreSQL: one read-only transaction)."""
        return contextlib.nullcontext()

    def prepare(self, keys: Iterable[tuple[int, ...]]) -> None:  # noqa: B027 - optional: SQLite has no partitions
        """Before a batch's transaction: make room for chunks of these partition keys."""

    @abc.abstractmethod
    def expire(self, cutoff: Fraction, batch: int) -> tuple[int, int]:
        """Delete every whole chunk whose samples are all before ``cutoff`` seconds (PostgreSQL: by whole
        partitions, a day each), each deletion with its ``expired`` gap runs in its own transaction;
        return (chunks deleted, partitions dropped)."""

    @abc.abstractmethod
    def close(self) -> None: ...
