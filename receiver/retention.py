"""Retention for ``edge-receiver run``: :meth:`receiver.store.Store.expire` at start, then every hour.

Contract
- :class:`Retention` owns one thread (``retention``, a daemon) that opens its own store connection for
  each pass (never the ingest's, which belongs to paho's thread), expires what is older than
  ``store.retention_days`` and closes it. ``start`` returns at once: the first pass runs in that thread
  right away, the next ones every ``every_s``; ``stop`` wakes it and waits for a pass in progress (each is
  bounded: SQLite deletes in short transactions, PostgreSQL drops day partitions with a lock timeout).
- A pass that fails (a storage error: the database away, a lock not granted in time) is logged as
  ``retention_failed`` and tried again at the next period; ingest goes on either way. A pass that
  deleted something logs ``retention_expired`` with the counts and the cutoff (seconds, vehicle clock).
- ``retention_days: 0`` keeps everything: no thread is started.
"""

from __future__ import annotations

import threading
from typing import Any

from agent.errors import StorageError
from receiver.config import StoreConfig
from receiver.store import Expiry, open_store

EVERY_S = 3600.0


class Retention:
    """The retention thread of one receiver process; see the module docstring."""

    def __init__(self, config: StoreConfig, log: Any, every_s: float = EVERY_S) -> None:
        self.config, self.log, self.every_s = config, log, every_s
        self.passes = 0  # completed passes, failed ones included (for tests)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.config.retention_days <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_once(self) -> Expiry | None:
        """One pass on the caller's thread; ``None`` when it failed (logged)."""
        try:
            with open_store(self.config.target) as store:
                expiry = store.expire(self.config.retention_days)
        except StorageError as error:
            self.log.error("retention_failed", store=self.config.shown, reason=str(error))
            return None
        finally:
            self.passes += 1
        if expiry.chunks or expiry.partitions:
            cutoff = None if expiry.cutoff is None else float(expiry.cutoff)
            self.log.info(
                "retention_expired",
                store=self.config.shown,
                chunks=expiry.chunks,
                partitions=expiry.partitions,
                cutoff_s=cutoff,
                retention_days=self.config.retention_days,
            )
        return expiry

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.every_s)
