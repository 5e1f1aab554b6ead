"""What ingest has done, shared with ``edge-receiver serve``: per receiver process, per vin, running totals
kept in the store, and the Prometheus exposition of them and of the store.

Why in the store. ``serve`` and ``run`` are separate processes (two units), and a fleet may run several
``run`` processes in one share group, on several hosts, against one PostgreSQL database: the store is
the one place all of them reach. Each ``run`` process upserts its own rows (table ``ingest_totals``:
``client_id``, ``vin`` (``''``: the process's totals, rejected payloads included, which have no trusted
vin), ``batches``, ``samples``, ``wire_bytes``, ``rejected``, ``acks``, ``updated_at``) every
:data:`FLUSH_EVERY_S` seconds from its supervising thread, in a transaction of its own (never inside a
batch's). Totals only grow within a process; a restarted process (a new ``client_id``) starts new rows, so
sums over rows are counters in Prometheus' sense. Lost with a crash: at most the last interval's counts
(the data itself is in the store; these are statistics).

Contract: :class:`Tally` is written by paho's network thread (``count``) and read by the supervisor's
(``rows``); both take its lock for a few dict operations. :func:`flush` and :func:`read` run on the
caller's thread and connection, blocking on the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from receiver.backend import Db

FLUSH_EVERY_S = 10.0
FIELDS = ("batches", "samples", "wire_bytes", "rejected", "acks")
DDL = (
    "CREATE TABLE IF NOT EXISTS ingest_totals (client_id TEXT NOT NULL, vin TEXT NOT NULL, "
    "batches BIGINT NOT NULL, samples BIGINT NOT NULL, wire_bytes BIGINT NOT NULL, rejected BIGINT NOT NULL, "
    "acks BIGINT NOT NULL, updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (client_id, vin))"
)
UPSERT = (
    "INSERT INTO ingest_totals (client_id, vin, batches, samples, wire_bytes, rejected, acks, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (client_id, vin) DO UPDATE SET batches = excluded.batches, "
    "samples = excluded.samples, wire_bytes = excluded.wire_bytes, rejected = excluded.rejected, "
    "acks = excluded.acks, updated_at = excluded.updated_at"
)
EXISTS = {
    "sqlite": "SELECT count(*) FROM sqlite_master WHERE name = 'ingest_totals'",
    "postgresql": "SELECT count(*) FROM pg_tables WHERE tablename = 'ingest_totals'",
}
SUMS = "SELECT vin, sum(batches), sum(samples), sum(wire_bytes), sum(rejected), sum(acks) FROM ingest_totals GROUP BY vin"


@dataclass
class Totals:
    batches: int = 0
    samples: int = 0  # values stored
    wire_bytes: int = 0  # payload bytes of the batches stored (MQTT's own overhead not counted)
    rejected: int = 0
    acks: int = 0

    def add(self, other: Totals) -> None:
        for name in FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def bytes_per_sample(self) -> float | None:
        return self.wire_bytes / self.samples if self.samples else None


class Tally:
    """One process's totals per vin (``''``: all of them, and what was rejected)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, Totals] = {"": Totals()}
        self._dirty = True

    def count(self, vin: str | None, **amounts: int) -> None:
        with self._lock:
            for key in ("", vin) if vin else ("",):
                totals = self._totals.setdefault(key, Totals())
                for name, amount in amounts.items():
                    setattr(totals, name, getattr(totals, name) + amount)
            self._dirty = True

    def rows(self, client_id: str) -> list[tuple[Any, ...]]:
        """Every vin's upsert row when anything was counted since the last call, else none."""
        with self._lock:
            if not self._dirty:
                return []
            self._dirty = False
            now = time.time()
            return [
                (client_id, vin, *(getattr(t, name) for name in FIELDS), now)
                for vin, t in sorted(self._totals.items())
            ]


def create(db: Db) -> None:
    db.execute(DDL)


def flush(db: Db, rows: Iterable[tuple[Any, ...]]) -> None:
    """Upsert one process's rows (in the caller's transaction)."""
    db.executemany(UPSERT, list(rows))


def read(db: Db) -> dict[str, Totals]:
    """Per vin (``''``: every process's totals), the sums over every receiver process."""
    if not db.fetch(EXISTS[db.dialect])[0][0]:
        return {}
    return {str(vin): Totals(*(int(x or 0) for x in rest)) for vin, *rest in db.fetch(SUMS)}
