"""The SQLite backend of :class:`receiver.store.Store`: one file (apsw, WAL, ``synchronous=FULL``).

Contract
- One :class:`SqliteBackend` is one apsw connection, used by one thread at a time. Connections in several
  threads or processes may share a file: WAL lets readers run beside the writer, ``BEGIN IMMEDIATE`` and
  a busy timeout serialize writers (one writer at a time: the overlap rule and the dedupe need no more).
- Every call blocks until SQLite is done; a transaction is durable when :meth:`transaction` exits.
- Opening: a file of schema version 2 or 3 is upgraded in place by a writer (:func:`receiver.table.upgrades`)
  and read as it is by a reader; version 1, another file, or a damaged one is refused naming the path.
- Retention (:meth:`expire`): whole chunks whose every sample is older than the cutoff, at most ``batch``
  chunks per transaction (each one short, so ingest waits at most that long for the write lock).
- apsw's exceptions become ``StorageError`` / ``StorageFullError`` / ``StorageCorruptError``.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from typing import Any

import apsw

from agent.errors import StorageCorruptError, StorageError, StorageFullError
from receiver import table
from receiver.backend import Backend, seq_runs


class SqliteDb:
    """The adapter (:class:`receiver.backend.Db`) over one apsw connection."""

    dialect = "sqlite"

    def __init__(self, connection: apsw.Connection) -> None:
        self._conn = connection
        self._inserts: dict[tuple[str, tuple[str, ...]], str] = {}

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            self._conn.executemany(sql, rows)

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self._conn.execute(sql, params).fetchall())

    def fetch_each(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[list[tuple[Any, ...]]]:
        return [self.fetch(sql, row) for row in rows]

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        key = (table, tuple(columns))
        if key not in self._inserts:
            marks = ", ".join("?" * len(columns))
            self._inserts[key] = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        self.executemany(self._inserts[key], rows)

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        return iter(self._conn.execute(sql, params))


class SqliteBackend(Backend):
    """The store in one SQLite file; see the module docstring."""

    sql = table.SqliteDialect()

    def __init__(
        self, path: str | os.PathLike[str], *, readonly: bool = False, busy_timeout_ms: int = 10_000
    ) -> None:
        self.where = os.fspath(path)
        with self.guard("open"):
            if readonly:
                if not os.path.exists(self.where):
                    raise StorageError(f"no store at {self.where}")
                flags = apsw.SQLITE_OPEN_READONLY
            else:
                flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
            self._conn = apsw.Connection(self.where, flags=flags)
        self.db = SqliteDb(self._conn)
        try:
            with self.guard("open"):
                self._setup_retrying(readonly, busy_timeout_ms)
        except BaseException:
            self._conn.close()
            raise

    def _setup_retrying(self, readonly: bool, busy_timeout_ms: int) -> None:
        """:meth:`_setup`, again while the file is busy: SQLite answers BUSY at once, without waiting its busy
        timeout, where waiting could deadlock (a journal-mode switch or a WAL recovery beside another
        opener: receivers started together, or the retention pass opening beside ingest)."""
        deadline = time.monotonic() + busy_timeout_ms / 1000
        while True:
            try:
                self._setup(readonly, busy_timeout_ms)
                return
            except apsw.BusyError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _setup(self, readonly: bool, busy_timeout_ms: int) -> None:
        self._conn.setbusytimeout(busy_timeout_ms)
        version = self.db.fetch("PRAGMA user_version")[0][0]
        table.upgrades(self.where, version, readonly=readonly)  # raises for a file it cannot open
        self.declares, self.segments = version >= 3, version >= 4  # else read as it is
        if readonly:
            return
        mode = self.db.fetch("PRAGMA journal_mode=WAL")[0][0]
        if mode not in ("wal", "memory"):
            raise StorageError(f"{self.where}: cannot switch to WAL (journal_mode is {mode})")
        self._conn.execute("PRAGMA synchronous=FULL")
        with self.transaction():  # under the write lock: another writer may have upgraded it meanwhile
            version = self.db.fetch("PRAGMA user_version")[0][0]
            for statement in (*table.upgrades(self.where, version, readonly=False), table.DDL):
                self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version={table.SCHEMA_VERSION}")
        self.declares = self.segments = True

    @contextlib.contextmanager
    def guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except apsw.FullError as error:
            raise StorageFullError(f"cannot {action} store {self.where}: {error}") from error
        except (apsw.CorruptError, apsw.NotADBError) as error:
            raise StorageCorruptError(f"cannot {action} store {self.where}: {error}") from error
        except apsw.Error as error:
            raise StorageError(f"cannot {action} store {self.where}: {error}") from error

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if not self._conn.getautocommit():  # SQLite may have rolled back already (full disk, I/O)
                self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def expire(self, cutoff: Fraction, batch: int) -> tuple[int, int]:
        deleted = 0
        for (vin,) in self.db.fetch(self.sql.VINS):
            for num, den in self.db.fetch(self.sql.VIN_RATES, (vin,)):
                bound = math.ceil(cutoff * Fraction(num, den))  # last_tick < bound: before the cutoff
                while True:
                    with self.guard("expire chunks of"), self.transaction():
                        rows = self.db.fetch(_EXPIRED, (vin, bound, bound, vin, num, den, batch))
                        if not rows:
                            break
                        ids = [(row[0],) for row in rows]
                        self.db.executemany("DELETE FROM chunk_columns WHERE chunk_id = ?", ids)
                        self.db.executemany("DELETE FROM chunks WHERE id = ?", ids)
                        runs = seq_runs((vin, boot, seq) for _, boot, seq in rows)
                        now = time.time()
                        gaps = [(*run, "expired", now) for run in runs]
                        self.db.executemany(self.sql.INSERT_GAP, gaps)
                    deleted += len(rows)
        return deleted, 0

    def close(self) -> None:
        with self.guard("close"):
            self._conn.close()


# (vin, bound, bound, vin, rate_num, rate_den, limit): chunks with samples, all before tick ``bound``
_EXPIRED = (
    "SELECT id, boot_id, seq FROM chunks WHERE vin = ? AND first_tick < ? AND last_tick < ? "
    "AND sample_count > 0 AND boot_id IN (SELECT boot_id FROM boots WHERE vin = ? AND rate_num = ? "
    "AND rate_den = ?) ORDER BY first_tick LIMIT ?"
)
