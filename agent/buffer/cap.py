"""The buffer's books: the running totals, the cap that decides what gives, and the eviction ledger.

Contract
- A :class:`Ledger` works on one connection (the :class:`~agent.buffer.queue.Buffer`'s, so on that
  buffer's thread) and never opens a transaction of its own: every method that writes runs inside the
  caller's, so a commit, its evictions and their notices land together or not at all. Foreign errors
  pass through to the caller, which wraps them (:func:`agent.buffer.health.wrap`).
- The cap is the ``buffer`` section of the config (:class:`agent.config.BufferConfig`: ``max_bytes``,
  ``max_age_s``, ``full_policy``; 0 = no limit). ``drop_oldest`` evicts the oldest whole chunks to make
  room; ``refuse_new`` refuses whole commits once full, until acks drain the backlog to half the cap.
- Nothing leaves silently: every chunk evicted or refused is counted (``dropped_chunks``,
  ``dropped_samples``) and recorded as a notice (boot id, first seq, last seq, reason) that the uploader
  sends to a receiver and forgets only when the receiver's ack says its gap ledger holds it.
- The running totals (``backlog_chunks``, ``backlog_samples``, ``payload_bytes``) move with every
  insert and delete, so status never scans the table; a checked open heals them from the rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import apsw

from agent import wire
from agent.config import BufferConfig
from agent.service.logs import get_logger
from agent.wire.values import ChunkId

log = get_logger("agent.buffer")

Notice = tuple[int, bytes, int, int]  # notice id, boot id, first seq, last seq


class Ledger:
    def __init__(self, db: apsw.Connection) -> None:
        self.db = db

    def _q(self, sql: str, bindings: Any = ()) -> list[Any]:
        """Rows of one statement, untyped (apsw's row type is a union)."""
        return list(self.db.execute(sql, bindings).fetchall())

    # --- the running totals --------------------------------------------------------------------------

    def bump(self, name: str, by: float) -> None:
        self.db.execute(
            "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )

    def account(self, chunks: int, samples: int, size: int) -> None:
        """Move the backlog's running totals by a commit (positive) or a deletion (negative)."""
        self.bump("backlog_chunks", chunks)
        self.bump("backlog_samples", samples)
        self.bump("payload_bytes", size)

    def totals(self, condition: str, bindings: tuple[Any, ...]) -> tuple[int, int, int]:
        """Chunks, payload bytes and samples of the rows that match ``condition`` (the buffer's own SQL)."""
        row = self._q(
            f"SELECT count(*), coalesce(sum(length(payload)), 0), coalesce(sum(sample_count), 0)"
            f" FROM chunks WHERE {condition}",
            bindings,
        )[0]
        return int(row[0]), int(row[1]), int(row[2])

    def counter(self, name: str) -> float:
        rows = self._q("SELECT value FROM counters WHERE name = ?", (name,))
        return float(rows[0][0]) if rows else 0.0

    # --- the cap -------------------------------------------------------------------------------------

    def make_room(self, cap: BufferConfig, incoming: int, now: float) -> bool:
        """Drop what the cap says must go before ``incoming`` bytes land; False = refuse the new data."""
        if cap.max_age_s > 0:
            self.drop_where("created < ?", (now - cap.max_age_s,), "age")
        if cap.max_bytes <= 0:
            return True
        if cap.full_policy == "refuse_new":
            return self._admit(cap, incoming)
        excess = self.counter("payload_bytes") + incoming - cap.max_bytes
        if excess > 0:
            self.drop_oldest(int(excess), "cap")
        return True

    def _admit(self, cap: BufferConfig, incoming: int) -> bool:
        """refuse_new: once full, refuse everything until acks drain the backlog to half the cap.

        One gap in the timeline rather than a swiss cheese of whatever chunk happened to fit.
        """
        backlog = self.counter("payload_bytes")
        refusing = self.counter("refusing") > 0
        if refusing and backlog > cap.max_bytes / 2:
            return False
        if backlog + incoming > cap.max_bytes:
            self.db.execute("INSERT OR REPLACE INTO counters VALUES ('refusing', 1)")
            return False
        if refusing:
            self.db.execute("INSERT OR REPLACE INTO counters VALUES ('refusing', 0)")
        return True

    # --- evictions -----------------------------------------------------------------------------------

    def drop_oldest(self, wanted: int, reason: str) -> int:
        """Drop the oldest whole chunks until ``wanted`` bytes are freed; returns the bytes freed."""
        freed, last = 0, 0
        while freed < wanted:
            rows = self._q(
                "SELECT id, length(payload) FROM chunks WHERE id > ? ORDER BY id LIMIT 1000", (last,)
            )
            if not rows:
                break
            for row_id, size in rows:
                freed, last = freed + size, row_id
                if freed >= wanted:
                    break
        if last:
            self.drop_where("id <= ?", (last,), reason)
        return freed

    def drop_where(self, condition: str, bindings: tuple[Any, ...], reason: str) -> None:
        """Evict the chunks that match ``condition`` (SQL of the buffer's own, never of user input)."""
        rows = self._q(
            f"SELECT boot_id, seq, sample_count, length(payload) FROM chunks WHERE {condition} ORDER BY id",
            bindings,
        )
        if not rows:
            return
        self.db.execute(f"DELETE FROM chunks WHERE {condition}", bindings)
        self.account(-len(rows), -sum(r[2] for r in rows), -sum(r[3] for r in rows))
        self.record([(bytes(r[0]), r[1], r[2]) for r in rows], reason)
        log.warning("buffer_evicted", reason=reason, chunks=len(rows), samples=sum(r[2] for r in rows))

    def record(self, chunks: list[tuple[bytes, int, int]], reason: str) -> None:
        """Count (boot id, seq, samples) chunks as dropped and note their runs for the receiver."""
        now = time.time()
        for boot_id, first, last in wire.chunk_ranges(ChunkId(b, s) for b, s, _ in chunks):
            self.db.execute(
                "INSERT INTO evictions (boot_id, first_seq, last_seq, reason, at) VALUES (?, ?, ?, ?, ?)",
                (boot_id, first, last, reason, now),
            )
        self.bump("dropped_chunks", len(chunks))
        self.bump("dropped_samples", sum(count for _, _, count in chunks))

    # --- the notices ---------------------------------------------------------------------------------

    def notices(self, limit: int) -> list[Notice]:
        """Evictions not yet in a receiver's gap ledger, oldest first."""
        rows = self._q("SELECT id, boot_id, first_seq, last_seq FROM evictions ORDER BY id LIMIT ?", (limit,))
        return [(r[0], bytes(r[1]), r[2], r[3]) for r in rows]

    def clear_noted(self, ranges: Iterable[tuple[bytes, int, int]]) -> None:
        """A receiver's ack says these eviction ranges are in its gap ledger: forget them."""
        self.db.executemany(
            "DELETE FROM evictions WHERE boot_id = ? AND first_seq = ? AND last_seq = ?", list(ranges)
        )
