"""A real PostgreSQL server for the tests, the demo and the bench: ``initdb`` and ``pg_ctl`` in a temporary
folder, listening on a free port of 127.0.0.1 (and a Unix socket in that folder), ``trust`` auth.

Contract
- :func:`binaries` finds Debian's ``/usr/lib/postgresql/<version>/bin`` (the newest); ``None`` when the
  ``postgresql`` package is not installed (``make test`` installs it).
- :class:`Postgres` owns its folder and its server process: :meth:`start` blocks until the server accepts
  connections, :meth:`close` stops it (``pg_ctl stop -m immediate``) and deletes the folder. As root the
  server runs as the ``postgres`` user (``runuser``), which owns the folder; otherwise as the caller.
- ``durable=False`` (the tests): ``fsync`` and ``synchronous_commit`` off, which only matters if the
  machine crashes; the bench uses ``durable=True``, the server's defaults, beside SQLite's FULL sync.
- :meth:`database` makes a fresh database and returns its ``postgresql://`` URL: a copy of a template
  (``CREATE DATABASE ... TEMPLATE``, tens of milliseconds), one per test; :meth:`store` one whose template
  holds the receiver's tables already (and the partition of day 0, where the tests' ticks are), so that
  a test's store opens in milliseconds. Single-threaded use.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

SUPERUSER = "postgres"
_FILES = itertools.count(1)
_TABLES = (  # a store's tables but its version, partitions through their parents
    "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p') "
    "AND NOT relispartition AND relname != 'store_meta'"
)


def binaries() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding initdb, pg_ctl and postgres, or ``None``."""
    found = [
        path
        for path in Path("/usr/lib/postgresql").glob("*/bin")
        if all((path / tool).exists() for tool in ("initdb", "pg_ctl", "postgres"))
    ]
    return max(found, key=lambda path: int(path.parent.name), default=None) if found else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Postgres:
    """One throwaway server; see the module docstring."""

    def __init__(self, durable: bool = False) -> None:
        bin_dir = binaries()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed: `make test` installs Debian's postgresql")
        self.bin = bin_dir
        self.durable = durable
        self.port = 0
        self.folder = Path(tempfile.mkdtemp(prefix="edge-pg-"))  # short: a socket path is < 108 bytes
        self._as_root = os.geteuid() == 0
        self._names = itertools.count(1)
        self._template: str | None = None

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", SUPERUSER, "--"] if self._as_root else []
        result = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stdout}{result.stderr}")
        return result

    def start(self) -> Postgres:
        data = self.folder / "data"
        if self._as_root:
            account = pwd.getpwnam(SUPERUSER)
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        self._run(
            str(self.bin / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip
        self.port = free_port()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.folder),
            "max_connections": "100",
            "shared_buffers": "128MB",
            "max_locks_per_transaction": "256",  # a statement over many partitions locks each one
        }
        if not self.durable:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        with open(data / "postgresql.conf", "a") as conf:
            conf.writelines(f"{key} = '{value}'\n" for key, value in settings.items())
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.folder / "server.log"), "-w", "start"
        )
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        with psycopg.connect(self.url(database), autocommit=True) as connection:
            connection.execute(sql.encode())

    def database(self, template: str | None = None) -> str:
        """A fresh, empty database (a copy of ``template`` or of template0); its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self.execute(f"CREATE DATABASE {name} TEMPLATE {template or 'template0'} STRATEGY WAL_LOG")
        return self.url(name)

    def store(self) -> str:
        """The URL of a fresh database holding an empty receiver store."""
        if self._template is None:
            from receiver.store import Store  # the harness also serves tests that never use a store

            url = self.database()
            with Store(url) as store:
                store._backend.prepare([(0,)])
            self._template = url.rsplit("/", 1)[1]
        return self.database(self._template)

    def emptied(self, url: str) -> str:
        """``url``'s store with every row deleted (its tables and partitions kept): milliseconds, where a
        new database takes tens of them; for the property tests' examples. No connection may be in a
        transaction on it."""
        with psycopg.connect(url, autocommit=True) as connection:
            tables = connection.execute(_TABLES).fetchall()
            connection.execute("; ".join(f'DELETE FROM "{name}"' for (name,) in tables).encode())
        return url

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.folder / "server.log").read_text(errors="replace")
        return ""

    def close(self) -> None:
        if self.port:
            with contextlib.suppress(RuntimeError):
                data = str(self.folder / "data")
                self._run(str(self.bin / "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
            self.port = 0
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class Targets:
    """What ``new_target`` gives: calling it makes a fresh, empty store's target; :meth:`emptied` gives one
    cheaply for a property test's examples (SQLite: a new file; PostgreSQL: one database of the test's,
    every row deleted again at each call)."""

    def __init__(self, folder: Path, server: Postgres | None) -> None:
        self.folder, self.server = folder, server
        self._reused: str | None = None

    def __call__(self) -> str | Path:
        if self.server is None:
            return (
                self.folder / f"store{next(_FILES)}.sqlite"
            )  # unique in the process: examples share a folder
        return self.server.store()

    def emptied(self) -> str | Path:
        if self.server is None:
            return self()
        if self._reused is None:
            self._reused = self.server.store()
            return self._reused
        return self.server.emptied(self._reused)
