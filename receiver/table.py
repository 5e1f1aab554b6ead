"""The SQLite store's layout on disk: its tables (:data:`DDL`) and how an older file is upgraded, its
dialect (:class:`SqliteDialect`: the standard statements of :class:`receiver.backend.Dialect` and its range
read), and what both backends share: a signal's declared coding as a row, a chunk's ticks as stored.

Contract: pure constants and functions, no I/O, no shared state: safe from any thread. :mod:`receiver.store`
runs the statements and says what the tables guarantee; :mod:`receiver.column` codes a column's values;
:mod:`receiver.pg_table` is PostgreSQL's layout of the same tables.

Tables (version :data:`SCHEMA_VERSION`)
- ``vins``: the rate of the vin's first batch (what a store of version 3 knew) and ``max_span`` (in the
  ticks of any of its segments: a bound on each); ``gaps``: eviction notices.
- ``boots``: the sampling rate of each (vin, boot_id), a segment of the vin's timeline; added by version 4,
  whose upgrade gives every stored boot its vin's one rate.
- ``signals``: an id per (vin, name), and the coding its agent declared on the wire in the latest batch
  that named it (the fields of :class:`~agent.wire.values.SignalSpec`: scale, offset, float or not,
  integer-scaled or not, the error bound in raw units, the predictor with an angle's period); ``NULL``
  in a store of version 2 until a batch declares it (:data:`UPGRADES` adds the columns).
- ``chunks``: one row per chunk, keyed by (vin, boot_id, seq), ``id`` in storage order; its ticks are
  ``first_tick..last_tick`` or, when they skip, ``ticks`` (int64 little-endian each); indexed by
  (vin, first_tick).
- ``chunk_columns``: one row per (chunk id, signal id) that has a value in the chunk: ``kind``,
  ``present`` and ``data`` of :func:`receiver.column.ColumnCoder.encode`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from agent.errors import StorageError
from agent.wire.values import SignalSpec
from receiver.backend import Dialect
from receiver.column import INT64_RANGE

SCHEMA_VERSION = 4

DDL = """
CREATE TABLE IF NOT EXISTS vins (
    vin TEXT PRIMARY KEY, rate_num INTEGER NOT NULL, rate_den INTEGER NOT NULL, first_seen REAL NOT NULL,
    max_span INTEGER NOT NULL DEFAULT 0  -- the largest last_tick - first_tick of the vin's chunks
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS boots (
    vin TEXT NOT NULL, boot_id BLOB NOT NULL, rate_num INTEGER NOT NULL, rate_den INTEGER NOT NULL,
    PRIMARY KEY (vin, boot_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunks (
    vin TEXT NOT NULL, boot_id BLOB NOT NULL, seq INTEGER NOT NULL, first_tick INTEGER, last_tick INTEGER,
    sample_count INTEGER NOT NULL,
    ticks BLOB,  -- NULL when the ticks are first_tick..last_tick; else int64 little-endian, one per sample
    values_stored INTEGER NOT NULL, overlaps INTEGER NOT NULL, received_at REAL NOT NULL,
    id INTEGER PRIMARY KEY,  -- storage order
    UNIQUE (vin, boot_id, seq)
);
CREATE INDEX IF NOT EXISTS chunks_by_tick ON chunks (vin, first_tick);
CREATE TABLE IF NOT EXISTS signals (
    id INTEGER PRIMARY KEY, vin TEXT NOT NULL, name TEXT NOT NULL,
    scale REAL, value_offset REAL, is_float INTEGER, integer_scaled INTEGER, bound_raw INTEGER, coding TEXT,
    UNIQUE (vin, name)
);
CREATE TABLE IF NOT EXISTS chunk_columns (
    chunk_id INTEGER NOT NULL, signal_id INTEGER NOT NULL, kind INTEGER NOT NULL, present BLOB,
    data BLOB NOT NULL, PRIMARY KEY (chunk_id, signal_id)
);
CREATE TABLE IF NOT EXISTS gaps (
    vin TEXT NOT NULL, boot_id BLOB NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    reason TEXT NOT NULL, recorded_at REAL NOT NULL, PRIMARY KEY (vin, boot_id, first_seq, last_seq, reason)
) WITHOUT ROWID;
"""
_DECLARED_TYPES = {
    "scale": "REAL",
    "value_offset": "REAL",
    "is_float": "INTEGER",
    "integer_scaled": "INTEGER",
}
_DECLARED_TYPES |= {"bound_raw": "INTEGER", "coding": "TEXT"}  # the columns of a signal's declared coding
# From a version (the key) to the next one, in place: a writer opening an older store runs them in order.
UPGRADES = {
    2: "".join(f"ALTER TABLE signals ADD COLUMN {c} {t};" for c, t in _DECLARED_TYPES.items()),
    3: "CREATE TABLE IF NOT EXISTS boots (vin TEXT NOT NULL, boot_id BLOB NOT NULL, rate_num INTEGER NOT NULL, "
    "rate_den INTEGER NOT NULL, PRIMARY KEY (vin, boot_id)) WITHOUT ROWID; "
    "INSERT OR IGNORE INTO boots SELECT DISTINCT c.vin, c.boot_id, v.rate_num, v.rate_den "
    "FROM chunks AS c JOIN vins AS v ON v.vin = c.vin;",
}
DECLARE_SIGNALS = Dialect.DECLARE_SIGNALS
SELECT_DECLARED = Dialect.SELECT_DECLARED


def range_query(signals: int, by_rate: bool = False) -> str:
    """(vin, low, high, [rate_num, rate_den if ``by_rate``], signal ids...): per chunk of the vin (of its
    segments of that rate) overlapping [low, high], by first tick then storage order, its ticks joined
    with its stored columns of those signals (one row of ``None`` when it has none). A chunk that starts
    before low - max_span ends before low: the index bounds the scan."""
    skip = 6 if by_rate else 4
    wanted = ", ".join(f"?{skip + index}" for index in range(signals))
    segment = (
        "AND c.boot_id IN (SELECT boot_id FROM boots WHERE vin = ?1 AND rate_num = ?4 AND rate_den = ?5) "
        if by_rate
        else ""
    )
    return (
        "SELECT c.id, c.first_tick, c.last_tick, c.ticks, k.signal_id, k.kind, k.present, k.data "
        "FROM chunks AS c LEFT JOIN chunk_columns AS k ON k.chunk_id = c.id AND k.signal_id IN "
        f"({wanted}) WHERE c.vin = ?1 AND c.sample_count > 0 AND c.last_tick >= ?2 "
        "AND c.first_tick BETWEEN ?2 - (SELECT max_span FROM vins WHERE vin = ?1) AND ?3 "
        f"{segment}ORDER BY c.first_tick, c.id"
    )


class SqliteDialect(Dialect):
    """SQLite's statements: the standard ones, and its range read (numbered parameters)."""

    def range_query(
        self, vin: str, ids: Sequence[int], bounds: tuple[int, int], rate: Fraction, span: tuple[bool, int]
    ) -> tuple[str, list[Any]]:
        segmented = span[0]  # the span: read again in the statement, the same snapshot
        rated = [rate.numerator, rate.denominator] if segmented else []
        return range_query(len(ids), segmented), [vin, *bounds, *rated, *ids]


def upgrades(path: str, version: int, *, readonly: bool) -> list[str]:
    """What brings the store at ``path``, of schema ``version``, to :data:`SCHEMA_VERSION`: nothing for a
    new file (0) or a current one. Raises :class:`StorageError` for a file the store cannot open."""
    if version not in (0, *UPGRADES, SCHEMA_VERSION) or (readonly and version == 0):
        older = " (version 1 stored a row per value: re-ingest into a new store)" if version == 1 else ""
        raise StorageError(f"{path} is not a receiver store of version {SCHEMA_VERSION}{older}")
    return [UPGRADES[old] for old in range(version, SCHEMA_VERSION)] if version else []


def declared(vin: str, spec: SignalSpec) -> tuple[object, ...]:
    """The parameters of :data:`DECLARE_SIGNALS` for one signal of a batch's schema."""
    coding = (spec.scale, spec.offset, int(spec.is_float), int(spec.integer_scaled), spec.bound_raw)
    return (vin, spec.name, *coding, spec.predictor)


def spec_of(row: Sequence[Any]) -> SignalSpec | None:
    """The :class:`SignalSpec` of a row of :data:`SELECT_DECLARED`, or ``None`` if none was declared."""
    name, scale, offset, is_float, integer_scaled, bound_raw, coding = row
    if coding is None:
        return None
    return SignalSpec(name, scale, offset, bool(is_float), bool(integer_scaled), bound_raw, coding)


# --- ticks ---------------------------------------------------------------------------------------------


def pack_ticks(ticks: Sequence[int]) -> bytes | None:
    """A chunk's ticks for storage: ``None`` when they are consecutive, else int64 little-endian each."""
    if not ticks or ticks[-1] - ticks[0] == len(ticks) - 1:
        return None
    return struct.pack(f"<{len(ticks)}q", *ticks)


def increasing(ticks: Sequence[int]) -> bool:
    """Whether a chunk's ticks strictly increase and fit int64 (what the store's index and merge need)."""
    if not ticks:
        return True
    return (
        INT64_RANGE[0] <= ticks[0] and ticks[-1] <= INT64_RANGE[1] and all(map(int.__lt__, ticks, ticks[1:]))
    )


def chunk_ticks(first: int, last: int, packed: bytes | None) -> Sequence[int]:
    """The ticks of a stored chunk, ascending (the inverse of :func:`pack_ticks`)."""
    if packed is None:
        return range(first, last + 1)
    return struct.unpack(f"<{len(packed) // 8}q", packed)
