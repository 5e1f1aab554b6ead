"""Per-vehicle latency histograms: commit time minus seal time of every chunk stored, live and backlog apart.

What is measured. An agent of wire version 2 stamps each chunk with its wall clock when it seals the
chunk (``ChunkData.sealed_at_ms``, inside the stored chunk, so a chunk sent from a backlog keeps its
original seal time). When the store takes a chunk for the first time, :func:`record` adds one count for
``committed_at - sealed_at`` to the vehicle's histogram, in the batch's own transaction
(``Store._derive``): a chunk is counted once whatever is delivered twice, and a receiver killed before its
commit leaves no count behind. ``committed_at`` is the receiver's wall clock once the batch's rows are
written, just before its COMMIT (whose fsync, a few ms, is not included). A chunk without a seal time (an
agent before wire version 2) has no known latency and is not recorded.

Live or backlog: the agent's word, per chunk. A batch says how many of its first chunks were already in
the agent's buffer when it last published a batch or when its connection came up
(``DecodedBatch.backlog_chunks``; :mod:`agent.upload`): those could have gone then and did not (an
outage, a batch too small for them all, a resend after a lost ack) and are *backlog*; the others went in
the first batch published after their commit and are *live* (a publish held back by a full window of
unacked batches, say a slow receiver, shows as live latency, as it should). This is more truthful than the
alternatives: a threshold on ``sent_at - sealed_at`` would call a chunk backlog only for being older than
the threshold (so live latency could never show more than it, and a long commit interval would make every
chunk backlog), and a per-batch "draining" flag would file the fresh chunks at the tail of a drain batch
as backlog and a resend while online as live. Only the agent knows whether a chunk could have gone
earlier; the split uses no clock at all, so skew cannot move a chunk from one histogram to the other.

Clock skew. ``committed_at`` is the receiver's clock, ``sealed_at`` the agent's. A seal time after the
commit (the agent's clock ahead) is clamped to 0 (bucket 0) and also counted as *skewed* (a row of bucket
:data:`SKEWED`), so ``stats`` can say how many values are not to be trusted. A clock behind inflates
latencies, which no one can see from here: keep the fleet on NTP.

Buckets: fixed, log-spaced, :data:`PER_OCTAVE` per doubling, with edges at ``2 ** (k / 8)`` seconds from
about 1 ms (2^-10 s) to about a day (2^16.5 s = 25.7 h), so 1 s and seed 002's 2 s target are exact edges.
Bucket ``b`` holds ``[EDGES[b-1], EDGES[b])`` (bucket 0 from 0; the last, ``len(EDGES)``, is open above).
A percentile is nearest-rank and reported as its bucket's upper edge: "P95 < x" is then exactly true
(at most 9 % above the true value). Table ``latency (vin, kind, bucket, count)``, one row per bucket in
use, an UPSERT adding to ``count``.

Contract: :func:`record` and :func:`read` run on the caller's thread, on the caller's connection and
transaction (a :class:`Db` adapter, ``?`` placeholders: SQLite or PostgreSQL), and block on it; they
raise what it raises. Everything else is pure. :func:`read` of a store made before this table existed
returns nothing.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from agent.wire import DecodedBatch
from agent.wire.values import ChunkData

PER_OCTAVE = 8
EDGES: tuple[float, ...] = tuple(
    2.0 ** (k / PER_OCTAVE) for k in range(-10 * PER_OCTAVE, 16 * PER_OCTAVE + 5)
)
BUCKETS = len(EDGES) + 1  # bucket len(EDGES) holds everything from EDGES[-1] up
SKEWED = -1  # the bucket of the count of seal times that were after the commit (clamped to 0)
KINDS = ("live", "backlog")
TARGET_P95_S = 2.0  # seed 002: "Target: P95 latency < 2000ms"

DDL = {
    "sqlite": "CREATE TABLE IF NOT EXISTS latency (vin TEXT NOT NULL, kind TEXT NOT NULL, "
    "bucket INTEGER NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (vin, kind, bucket)) WITHOUT ROWID",
    "postgresql": "CREATE TABLE IF NOT EXISTS latency (vin TEXT NOT NULL, kind TEXT NOT NULL, "
    "bucket SMALLINT NOT NULL, count BIGINT NOT NULL, PRIMARY KEY (vin, kind, bucket))",
}
UPSERT = (  # standard SQL, run as is by both (the PostgreSQL adapter turns ``?`` into psycopg's ``%s``)
    "INSERT INTO latency (vin, kind, bucket, count) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (vin, kind, bucket) DO UPDATE SET count = latency.count + excluded.count"
)
EXISTS = {
    "sqlite": "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'latency'",
    "postgresql": "SELECT count(*) FROM pg_tables WHERE tablename = 'latency' AND schemaname = current_schema()",
}
SELECT = "SELECT vin, kind, bucket, count FROM latency ORDER BY vin, kind, bucket"


class Db(Protocol):
    """What the store hands its hooks: its connection, inside its transaction."""

    dialect: str  # "sqlite" or "postgresql"

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any: ...

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...


def bucket_of(seconds: float) -> int:
    """The bucket of a latency of ``seconds`` (>= 0)."""
    return bisect_right(EDGES, seconds)


def upper_edge(bucket: int) -> float:
    """The bound that every latency of ``bucket`` is below (``inf`` for the last)."""
    return EDGES[bucket] if bucket < len(EDGES) else math.inf


def counts_of(
    batch: DecodedBatch, fresh: Iterable[ChunkData], committed_at: float
) -> Counter[tuple[str, int]]:
    """Per (kind, bucket), the counts that the new chunks ``fresh`` of ``batch`` add (pure)."""
    backlog = {chunk.id for chunk in batch.chunks[: batch.backlog_chunks]}
    counts: Counter[tuple[str, int]] = Counter()
    for chunk in fresh:
        if not chunk.sealed_at_ms:
            continue  # an agent before wire version 2: latency unknown
        kind = "backlog" if chunk.id in backlog else "live"
        seconds = (committed_at * 1000 - chunk.sealed_at_ms) / 1000
        if seconds < 0:
            counts[kind, SKEWED] += 1
            seconds = 0.0
        counts[kind, bucket_of(seconds)] += 1
    return counts


def record(db: Db, batch: DecodedBatch, fresh: Iterable[ChunkData], committed_at: float) -> None:
    """Add the latencies of ``fresh``, the chunks of ``batch`` that its transaction stores for the first
    time, to ``batch.vin``'s histograms, in that transaction; ``committed_at``: the receiver's clock."""
    counts = counts_of(batch, fresh, committed_at)
    if counts:  # sorted: concurrent writers (PostgreSQL) take the row locks in one order, no deadlock
        rows = sorted((batch.vin, kind, bucket, count) for (kind, bucket), count in counts.items())
        db.executemany(UPSERT, rows)


def create(db: Db) -> None:
    """Make the table (idempotent), where the store creates its own."""
    db.executemany(DDL[db.dialect], [()])


@dataclass(frozen=True)
class Histogram:
    """One vehicle's latencies of one kind: counts per bucket, and how many were skewed."""

    counts: tuple[int, ...]
    skewed: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts)

    def percentile(self, percent: int) -> float | None:
        """The nearest-rank ``percent``-th percentile's upper edge in seconds; ``None`` when empty."""
        rank = -(-percent * self.total // 100)  # ceil, in integers
        if rank <= 0:
            return None
        seen = 0
        for bucket, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return upper_edge(bucket)
        raise AssertionError("unreachable")  # pragma: no cover


def histograms(rows: Iterable[Sequence[Any]]) -> dict[str, dict[str, Histogram]]:
    """Per vin, per kind, the histogram of the table's ``(vin, kind, bucket, count)`` rows (pure)."""
    counts: dict[tuple[str, str], list[int]] = {}
    skewed: Counter[tuple[str, str]] = Counter()
    for vin, kind, bucket, count in rows:
        if bucket == SKEWED:
            skewed[vin, kind] += int(count)
        elif 0 <= bucket < BUCKETS:
            counts.setdefault((vin, kind), [0] * BUCKETS)[bucket] += int(count)
    out: dict[str, dict[str, Histogram]] = {}
    for (vin, kind), per_bucket in sorted(counts.items()):
        out.setdefault(vin, {})[kind] = Histogram(tuple(per_bucket), skewed[vin, kind])
    return out


def read(db: Db) -> dict[str, dict[str, Histogram]]:
    """Every vehicle's histograms (none from a store made before the table existed)."""
    if not db.fetch(EXISTS[db.dialect])[0][0]:
        return {}
    return histograms(db.fetch(SELECT))


def format_seconds(seconds: float) -> str:
    """A bucket edge for people: ``0.977 ms``, ``207 ms``, ``2 s``, ``1.09 s``, ``25.7 h``."""
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 3600:
        return f"{seconds:.3g} s"
    return f"{seconds / 3600:.3g} h"


def describe(kind: str, histogram: Histogram) -> str:
    """One line of ``edge-receiver stats``: the percentiles beside seed 002's P95 target."""
    parts = []
    for percent in (50, 95, 99):
        value = histogram.percentile(percent)
        assert value is not None
        shown = f">= {format_seconds(EDGES[-1])}" if math.isinf(value) else f"< {format_seconds(value)}"
        parts.append(f"P{percent} {shown}")
    p95 = histogram.percentile(95)
    verdict = "met" if p95 is not None and p95 <= TARGET_P95_S else "missed"
    skewed = (
        f", {histogram.skewed} skewed (sealed after the commit: counted as 0)" if histogram.skewed else ""
    )
    return (
        f"latency {kind}: {histogram.total} chunks, {', '.join(parts)} "
        f"(seed 002's target P95 < {format_seconds(TARGET_P95_S)}: {verdict}){skewed}"
    )
