"""Which parts of a receiver's ack the uploader may honour: only chunks this agent has sent and still holds.

Contract
- A :class:`SentLedger` belongs to the uploader's thread alone (not thread-safe, never blocks).
- It remembers every chunk id this process has handed to the broker and not yet seen acked (in flight,
  or sent before a reset), and every eviction notice it has sent. It never learns of a chunk it did not
  send, so what it holds is bounded by what the buffer held when it was sent.
- :meth:`SentLedger.match` turns an ack's claimed ranges into the ranges to delete: the claimed ranges
  are merged first, then each is looked up by bisection in the sorted ids sent for its boot, so the cost
  is O(ranges log ranges + ranges log sent + matches), never O(width of a range): an ack claiming
  0..2^62 costs what the chunks actually sent cost. Ranges of boots never sent are reported apart
  (``unknown_boots``), so the caller can count them.
- :func:`read_ack` checks an ack (its MAC under the vehicle's key, its bytes, its vin) and takes it
  apart, or raises :class:`~agent.errors.AckRejected` saying why. Pure: any thread.
- :meth:`SentLedger.noted` keeps of an ack's ``noted`` ranges only the eviction notices this process
  sent: a forged ``noted`` cannot clear a notice that no batch carried.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from agent import wire
from agent.errors import AckRejected, WireError
from agent.wire import auth
from agent.wire.values import ChunkId

Range = tuple[bytes, int, int]  # boot id, first seq, last seq (inclusive)


@dataclass(frozen=True)
class Ack:
    """A receiver's ack, checked: what it says it stored, what it asks for, what it noted."""

    ranges: list[Range]  # chunks stored (claimed: match them against what was sent)
    schema_needed: bytes  # a schema hash that receiver lacks: send it whole again
    schema_stored: bytes  # a schema hash it now holds: name it by hash from now on
    noted: list[Range]  # eviction notices it recorded


def read_ack(payload: bytes, vin: str, key: bytes | None) -> Ack:
    """The ack in ``payload`` for ``vin``, its MAC verified under ``key`` (when there is one)."""
    if key is not None:
        try:
            auth.verify(payload, key, vin)
        except WireError as error:
            raise AckRejected(str(error), forged=True) from error
    try:
        named, ranges = wire.decode_ack(payload)
        needed, stored = wire.ack_schemas(payload)
        noted = list(wire.ack_noted(payload))
    except WireError as error:
        raise AckRejected(str(error)) from error
    if named != vin:
        raise AckRejected(f"ack names vin {named!r}")
    return Ack(list(ranges), needed, stored, noted)


@dataclass(frozen=True)
class AckMatch:
    """What an ack names that this agent sent: ``ids`` to forget, ``ranges`` to delete (contiguous runs
    of those ids); ``unknown_boots`` are boot ids it names that this process never sent;
    ``unmatched`` counts the claimed ranges (of known boots) that named nothing sent."""

    ids: frozenset[ChunkId]
    ranges: list[Range]
    unknown_boots: frozenset[bytes]
    unmatched: int


def merge(ranges: Iterable[Range]) -> dict[bytes, list[tuple[int, int]]]:
    """Claimed ranges per boot, sorted, overlapping and adjacent ones merged; empty ones (last < first)
    dropped."""
    by_boot: dict[bytes, list[tuple[int, int]]] = {}
    for boot, first, last in ranges:
        if last >= first:
            by_boot.setdefault(boot, []).append((first, last))
    for boot, spans in by_boot.items():
        spans.sort()
        merged: list[tuple[int, int]] = []
        for first, last in spans:
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        by_boot[boot] = merged
    return by_boot


@dataclass
class SentLedger:
    """Chunk ids and eviction notices this process has sent and not yet seen acked."""

    _sent: dict[bytes, set[int]] = field(default_factory=dict)
    _boots: set[bytes] = field(default_factory=set)  # every boot this process has sent a chunk of
    _notices: set[Range] = field(default_factory=set)

    def sent(self, ids: Iterable[ChunkId], notices: Iterable[Range] = ()) -> None:
        """Record a batch handed to the broker: its chunks and the eviction notices it carried."""
        for boot, seq in ids:
            self._sent.setdefault(boot, set()).add(seq)
            self._boots.add(boot)
        self._notices.update(notices)

    def __len__(self) -> int:
        return sum(len(seqs) for seqs in self._sent.values())

    def match(self, claimed: Iterable[Range]) -> AckMatch:
        """The ids of ``claimed`` that were sent (and are forgotten now), as ranges to delete."""
        ids: set[ChunkId] = set()
        unknown: set[bytes] = set()
        unmatched = 0
        for boot, spans in merge(claimed).items():
            seqs = self._sent.get(boot)
            if not seqs:
                if boot not in self._boots:
                    unknown.add(boot)
                else:
                    unmatched += len(spans)
                continue
            ordered, found = sorted(seqs), []
            for first, last in spans:
                low, high = bisect.bisect_left(ordered, first), bisect.bisect_right(ordered, last)
                if low == high:
                    unmatched += 1
                found.extend(ordered[low:high])
            ids.update(ChunkId(boot, seq) for seq in found)
            seqs.difference_update(found)
            if not seqs:
                del self._sent[boot]
        ranges = wire.chunk_ranges(sorted(ids))
        return AckMatch(frozenset(ids), ranges, frozenset(unknown), unmatched)

    def noted(self, claimed: Iterable[Range]) -> list[Range]:
        """The eviction notices of ``claimed`` that a batch of this process carried (and forgets them)."""
        delivered = [notice for notice in dict.fromkeys(claimed) if notice in self._notices]
        self._notices.difference_update(delivered)
        return delivered
