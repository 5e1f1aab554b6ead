"""The PostgreSQL backend of :class:`receiver.store.Store` (psycopg 3): one database, many receivers.

Contract
- One :class:`PgBackend` is one connection (autocommit between transactions), used by one thread at a
  time; a broken connection is re-opened at the next call (the batch that met the break is not acked,
  so the agent sends it again). Several receivers write one database side by side: each batch's
  transaction first locks its vin's ``vins`` row (``FOR UPDATE``), so batches of one vehicle are stored one
  after the other (the overlap rule and the dedupe see every earlier commit) and different vehicles'
  in parallel. A transaction is durable when :meth:`transaction` exits (the server's ``COMMIT``).
- Partitions (:mod:`receiver.pg_table`): a day's partitions are created ahead of need, by a writer at
  open (yesterday, today and tomorrow on this machine's clock) and by :meth:`prepare`, before a batch's
  transaction, for any day its chunks need that has none (a backlog, a replayed log): each in a short
  transaction of its own, serialized between receivers by an advisory lock, never inside a batch's.
- Retention (:meth:`expire`): a day's partitions are dropped (``DETACH`` + ``DROP``) in one transaction
  with the ``expired`` runs of the chunks they held, once that day ended before the cutoff, waiting at
  most ``LOCK_TIMEOUT`` for the tables' lock (then it stops, and the next run tries again).
- A reader (``readonly``) sets ``default_transaction_read_only`` and creates nothing; its streaming reads
  run in one ``REPEATABLE READ`` transaction (:meth:`snapshot`), through server-side cursors.
- psycopg's exceptions become ``StorageError`` / ``StorageFullError`` / ``StorageCorruptError`` naming the
  URL, its password replaced by ``***``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.pq import TransactionStatus

from agent.errors import StorageCorruptError, StorageError, StorageFullError
from receiver import pg_table
from receiver.backend import DAY_S, Backend, redacted

LOCK_TIMEOUT = "10s"
SETUP_LOCK = 0x65646765  # the advisory lock of schema and partition changes ("edge")
_cursors = itertools.count(1)
_COLUMN_TYPES = (
    "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(?) "
    "AND attnum > 0 AND NOT attisdropped"
)


@functools.lru_cache(maxsize=512)
def placeholders(statement: str) -> str:
    """psycopg's ``%s`` for each ``?`` (and ``%%`` for a literal ``%``); a statement without ``?`` as is
    (psycopg's own ``%s``; without parameters, nothing in it is a placeholder)."""
    return statement.replace("%", "%%").replace("?", "%s") if "?" in statement else statement


class PgDb:
    """The adapter (:class:`receiver.backend.Db`) over the backend's current connection."""

    dialect = "postgresql"

    def __init__(self, backend: PgBackend) -> None:
        self._backend = backend
        self._types: dict[tuple[str, tuple[str, ...]], list[str]] = {}

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._backend.conn.execute(placeholders(sql), params or None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            with self._backend.conn.cursor() as cursor:
                cursor.executemany(placeholders(sql), rows)

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._backend.conn.execute(placeholders(sql), params or None).fetchall()

    def fetch_each(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[list[tuple[Any, ...]]]:
        results: list[list[tuple[Any, ...]]] = []
        if rows:
            with self._backend.conn.cursor() as cursor:
                cursor.executemany(placeholders(sql), rows, returning=True)
                results.append(cursor.fetchall())
                while cursor.nextset():
                    results.append(cursor.fetchall())
        return results

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        key = (table, tuple(columns))
        if key not in self._types:  # binary COPY needs each column's type
            types = dict(self.fetch(_COLUMN_TYPES, (table,)))
            self._types[key] = [types[name] for name in columns]
        names = sql.SQL(", ").join(map(sql.Identifier, columns))
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(sql.Identifier(table), names)
        with self._backend.conn.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(self._types[key])
            for row in rows:
                copy.write_row(row)

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        cursor = self._backend.conn.cursor(name=f"edge_read_{next(_cursors)}")
        cursor.itersize = 2_000
        cursor.execute(placeholders(sql), params or None)
        return iter(cursor)


class PgBackend(Backend):
    """The store in one PostgreSQL database; see the module docstring."""

    sql = pg_table.PgDialect()

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self.url, self.where, self.readonly = url, redacted(url), readonly
        self.db = PgDb(self)
        self._days: set[int] = set()  # days whose partitions exist in both tables (as last seen)
        self._open = False
        with self.guard("open"):
            self._connect()
        try:
            with self.guard("open"):
                self._setup()
        except BaseException:
            self.close()
            raise

    def _connect(self) -> None:
        self.conn = psycopg.connect(self.url, autocommit=True, application_name="edge-receiver")
        self._open = True
        if self.readonly:
            self.conn.execute("SET default_transaction_read_only = on")

    def _setup(self) -> None:
        if self.readonly:
            if not self._version():
                raise StorageError(f"{self.where} is not a receiver store (no tables: a receiver makes them)")
            return
        if self._version() != [pg_table.VERSION]:  # made already: no DDL, which would wait for writers
            with self.transaction():
                self.db.execute("SELECT pg_advisory_xact_lock(?)", (SETUP_LOCK,))
                self.conn.execute(pg_table.DDL.encode())
                versions = self._version()
                if not versions:
                    self.db.execute("INSERT INTO store_meta VALUES (?)", (pg_table.VERSION,))
                elif versions != [pg_table.VERSION]:
                    raise StorageError(f"{self.where} is not a receiver store of version {pg_table.VERSION}")
        today = int(time.time() // DAY_S)
        self.prepare([(pg_table.EMPTY_DAY,), (today - 1,), (today,), (today + 1,)])

    def _version(self) -> list[int]:
        if self.db.fetch("SELECT to_regclass('store_meta') IS NULL")[0][0]:
            return []
        return [row[0] for row in self.db.fetch("SELECT version FROM store_meta")]

    @contextlib.contextmanager
    def guard(self, action: str) -> Iterator[None]:
        try:
            if self._open and (self.conn.closed or self.conn.broken):
                self._connect()  # the server restarted, or the network broke: a new session
            yield
        except psycopg.Error as error:
            self._days.clear()  # a partition may have gone (retention elsewhere): look again next time
            message = f"cannot {action} store {self.where}: {' '.join(str(error).split())}"  # one line
            if isinstance(error, errors.DiskFull | errors.OutOfMemory):
                raise StorageFullError(message) from error
            if isinstance(error, errors.DataCorrupted | errors.IndexCorrupted):
                raise StorageCorruptError(message) from error
            raise StorageError(message) from error

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self.conn.info.transaction_status != TransactionStatus.IDLE:
            raise StorageError(f"{self.where}: a write inside an open read (finish the read first)")
        with self.conn.transaction():
            yield

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        if self.conn.info.transaction_status != TransactionStatus.IDLE:
            yield  # inside one already
            return
        with self.conn.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield

    def _known(self) -> dict[int, dict[str, str]]:
        """Per day, the big tables that have its partition, and its name (the catalog, now)."""
        found: dict[int, dict[str, str]] = {}
        for parent, name, bound in self.db.fetch(pg_table.PARTITIONS):
            match = re.search(r"FROM \('?(-?\d+)'?\)", bound)
            day = int(match.group(1)) if match else pg_table.EMPTY_DAY  # FROM (MINVALUE): the empty chunks
            found.setdefault(day, {})[parent] = name
        return found

    def prepare(self, keys: Iterable[tuple[int, ...]]) -> None:
        days = {key[0] for key in keys} - self._days
        if not days or self.readonly:
            return
        known = self._known()
        self._days = {day for day, tables in known.items() if len(tables) == len(pg_table.BIG)}
        for day in sorted(days - self._days):
            with self.transaction():
                self.db.execute("SELECT pg_advisory_xact_lock(?)", (SETUP_LOCK,))
                have = self._known().get(day, {})  # another receiver may have made it meanwhile
                for table in pg_table.BIG:
                    if table not in have:
                        for statement in pg_table.create_partition(table, day):
                            self.conn.execute(statement.encode())
            self._days.add(day)

    def expire(self, cutoff: Fraction, batch: int) -> tuple[int, int]:
        deleted = dropped = 0
        for day, tables in sorted(self._known().items()):
            if day == pg_table.EMPTY_DAY or (day + 1) * DAY_S > cutoff:
                continue  # the empty chunks' partition, or a day that ends after the cutoff
            with self.transaction():
                self.db.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                self.db.execute("SELECT pg_advisory_xact_lock(?)", (SETUP_LOCK,))
                if "chunks" in tables:
                    runs = self.db.fetch(pg_table.PARTITION_RUNS.format(partition=tables["chunks"]))
                    now = time.time()
                    self.db.executemany(self.sql.INSERT_GAP, [(*run, "expired", now) for run in runs])
                    deleted += sum(last - first + 1 for _, _, first, last in runs)
                for table in sorted(tables, reverse=True):  # chunks, then chunk_columns: ingest's order
                    for statement in pg_table.drop_partition(table, tables[table]):
                        self.conn.execute(statement.encode())
            self._days.discard(day)
            dropped += 1
        return deleted, dropped

    def close(self) -> None:
        if self._open:
            self._open = False
            with self.guard("close"):
                self.conn.close()
