"""The buffer file's health: its tables, the checks at open, the quarantine, migration and error wrapping.

Contract
- Functions, no state; each runs on the calling thread and blocks on SQLite (and, for the quarantine,
  a few renames). The connection returned belongs to the caller (one per thread, see
  :mod:`agent.buffer.queue`).
- :func:`connect` with ``check`` (the daemon's one open at start) runs SQLite's ``quick_check``, the
  :data:`PROBES` (every statement the buffer runs must prepare against the file's schema) and a
  ``REINDEX``, and heals the running totals from the rows. Any failure is a
  :class:`~agent.errors.StorageCorruptError`; :func:`open_healthy` then renames the file (and its
  ``-wal`` and ``-shm``) to ``*.corrupt-<time>`` with a critical event and starts a fresh buffer: a
  damaged SD card must not become a crash loop.
- :func:`migrate` brings a file written by an earlier version up to date, keeping every row (an upgrade
  must not abandon the backlog). Columns of earlier versions that are no longer used (``degraded``) stay
  in old files, ignored: their defaults fill them, and no query names them.
- :func:`connect_read_only` never creates anything: no folder, no database, no tables (``edge-agent
  status``, possibly run as root before the service's first start). When the database exists, SQLite
  may create its ``-wal``/``-shm`` beside it, owned like the database file even when run as root.
- Every foreign error leaves as a :class:`~agent.errors.StorageError` naming the file (:func:`wrap`).
- The buffer never writes to a file that is not its own: before anything is written, :func:`connect`
  refuses a SQLite file holding tables that are not the buffer's (:func:`foreign_tables`) with a
  :class:`~agent.errors.StorageError` naming the file and its tables (the file untouched, not
  quarantined), and a location it cannot write says so (``cannot create PATH: read-only file system``,
  ``... permission denied``) instead of SQLite's "unable to open database file".
"""

from __future__ import annotations

import errno
import os
import time
import zlib
from pathlib import Path

import apsw

from agent.errors import StorageCorruptError, StorageError, StorageFullError
from agent.service.logs import get_logger

log = get_logger("agent.buffer")

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS schemas (id INTEGER PRIMARY KEY, digest BLOB UNIQUE NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    boot_id BLOB NOT NULL, seq INTEGER NOT NULL, schema_id INTEGER NOT NULL REFERENCES schemas(id),
    first_tick INTEGER NOT NULL, sample_count INTEGER NOT NULL, payload BLOB NOT NULL,
    created REAL NOT NULL, crc INTEGER NOT NULL DEFAULT 0,
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
    "SELECT id, boot_id, seq, schema_id, first_tick, sample_count, payload, created, crc FROM chunks"
    " WHERE boot_id = x'' AND seq BETWEEN 0 AND 0 ORDER BY id LIMIT 0",
    "SELECT name, value FROM counters LIMIT 0",
    "SELECT id, boot_id, first_seq, last_seq, reason, at FROM evictions LIMIT 0",
)
HEAL_TOTALS = (
    "INSERT OR REPLACE INTO counters SELECT 'payload_bytes', coalesce(sum(length(payload)), 0) FROM chunks;"
    "INSERT OR REPLACE INTO counters SELECT 'backlog_chunks', count(*) FROM chunks;"
    "INSERT OR REPLACE INTO counters SELECT 'backlog_samples', coalesce(sum(sample_count), 0) FROM chunks"
)
CACHE_KIB = 256  # each connection's page cache
SIDE_FILES = ("", "-wal", "-shm")
OWN_TABLES = frozenset({"schemas", "chunks", "counters", "evictions", "sqlite_sequence"})


def crc(payload: bytes) -> int:
    """The checksum stored beside each payload (SQLite keeps none of its own)."""
    return zlib.crc32(payload)


def intact(payload: bytes, stored_crc: int | None) -> bool:
    """True unless the payload no longer matches its CRC (NULL: a row written before CRCs)."""
    return stored_crc is None or crc(payload) == stored_crc


def migrate(db: apsw.Connection) -> None:
    """Bring a buffer written by an earlier version up to date, keeping every row: columns added since
    the first release are added, empty (a NULL ``crc`` means "written before CRCs")."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(chunks)").fetchall()}
    if "crc" not in columns:
        db.execute("ALTER TABLE chunks ADD COLUMN crc INTEGER")


def wrap(path: Path, action: str, error: Exception) -> StorageError:
    """The product's error for a foreign one, naming the file and what was being done."""
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


def writable(path: Path) -> None:
    """Raise a StorageError saying why ``path`` cannot be created or written (read-only, permission)."""
    exists = path.exists()
    try:
        os.close(os.open(path, os.O_RDWR | (0 if exists else os.O_CREAT), 0o644))
    except OSError as error:
        what = "open for writing" if exists else "create"
        reason = os.strerror(error.errno).lower() if error.errno else str(error)
        if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise StorageError(f"cannot {what} {path}: {reason}") from error
        raise StorageError(f"cannot {what} {path}: {error}") from error


def foreign_tables(db: apsw.Connection) -> list[str]:
    """The tables of the file that are not the buffer's (reads only); empty for a buffer or a new file."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    return sorted(tables - OWN_TABLES)


def connect(path: Path, check: bool) -> apsw.Connection:
    """Open (creating it if needed) and bring the tables up to date; ``check`` proves the file healthy.

    A file that is not the buffer's, or a location that cannot be written, is refused before anything
    is written (see the module's contract)."""
    writable(path)
    try:
        db = apsw.Connection(str(path))
        db.setbusytimeout(5000)
        foreign = foreign_tables(db)
        if foreign:
            db.close()
            raise StorageError(
                f"{path}: not an edge-agent buffer (it holds the tables {', '.join(foreign)}); "
                "refusing to touch it: set buffer.path to a file of its own"
            )
        # Small pages: a commit of one ~200-byte chunk rewrites a few 1 KiB pages, not 4 KiB ones
        # (2.5x fewer bytes written per commit, measured). Only takes effect on a new file.
        db.execute("PRAGMA page_size=1024")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        # A small page cache for each of the agent's three connections (SQLite's default is 2 MB each):
        # appends touch a few new pages, the uploader reads the oldest once; memory is what a Pi lacks.
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        if check and db.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
            raise apsw.CorruptError("quick_check failed")
        with db:
            db.execute(SCHEMA_SQL)
            migrate(db)
        if check:
            _probe(db)
            with db:  # the running totals heal from any drift at every start
                db.execute(HEAL_TOTALS)
        return db
    except apsw.Error as error:
        raise wrap(path, "open", error) from error


def _probe(db: apsw.Connection) -> None:
    for probe in PROBES:
        try:
            db.execute(probe).fetchall()
        except apsw.SQLError as error:
            raise apsw.CorruptError(f"schema damaged: {error}") from error
    try:
        db.execute("REINDEX")  # quick_check does not compare indexes with their tables
    except apsw.ConstraintError as error:
        raise apsw.CorruptError(f"index damaged: {error}") from error


def open_healthy(path: Path, check: bool) -> apsw.Connection:
    """:func:`connect`, creating the folder; a damaged file is quarantined and a fresh one opened."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return connect(path, check)
    except StorageCorruptError as error:
        quarantine(path, str(error))
        return connect(path, check)
    except OSError as error:
        raise StorageError(f"{path}: cannot create the buffer's folder: {error}") from error


def quarantine(path: Path, reason: str) -> Path:
    """Move the file and its ``-wal``/``-shm`` aside, under a name no earlier quarantine took."""
    stamp = int(time.time())
    moved = path.with_name(f"{path.name}.corrupt-{stamp}")
    attempt = 1
    while any(Path(f"{moved}{suffix}").exists() for suffix in SIDE_FILES):
        attempt += 1
        moved = path.with_name(f"{path.name}.corrupt-{stamp}-{attempt}")
    log.critical("buffer_quarantined", path=str(path), moved_to=str(moved), reason=reason)
    for suffix in SIDE_FILES:
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(f"{moved}{suffix}")
    return moved


def connect_read_only(path: Path) -> apsw.Connection:
    """A connection that can only read, to a buffer that must already exist (else StorageError)."""
    try:
        db = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        db.setbusytimeout(5000)
        db.execute("SELECT count(*) FROM sqlite_schema").fetchall()  # a file that is no database says so now
        return db
    except apsw.Error as error:
        raise wrap(path, "open read-only", error) from error
