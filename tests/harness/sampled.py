"""A recorded drive through the agent's own decoder, sampler and chunker, in-process, as the receiver's
payloads: what ``edge-agent replay`` would upload, without a broker or a buffer.

:func:`sealed` decodes a log with :func:`agent.decode.build_decoder` (the reference EV's DBC, the wanted
signals), samples it with :class:`agent.sample.Sampler` exactly as ``edge-agent sample`` does (the same
hold, from the DBC's periods) at ``rate_hz``, optionally only the frames of a window of the log, and
seals it with :class:`agent.chunk.Chunker`; :func:`payloads` packs the sealed chunks into batches.
Pure functions of their arguments (a fixed boot id gives the same bytes); the caller owns the results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from agent import wire
from agent.chunk import Chunker
from agent.decode import build_decoder
from agent.sample import Sampler, to_micros
from agent.source import read_log
from agent.wire.values import Schema
from tests.harness.drive import DBC


@dataclass(frozen=True)
class Sealed:
    schema: Schema
    chunks: list[bytes]  # each sealed chunk's stored bytes, in seal order


def sealed(
    log: Path,
    names: Sequence[str],
    boot: bytes,
    rate_hz: int = 50,
    window_s: tuple[float, float] | None = None,
    chunk_samples: int = 50,
) -> Sealed:
    """The chunks of boot ``boot`` sampling ``names`` of ``log`` at ``rate_hz``; with ``window_s``, only
    the frames between those seconds of the log's clock (a boot that replays part of the drive)."""
    decoder = build_decoder([("can0", [DBC], "auto")], names)
    schema = Schema(Fraction(rate_hz), tuple(decoder.signals))
    chunker = Chunker(schema, boot, chunk_samples, clock=lambda: 1_700_000_000.0)
    sampler = Sampler(schema.rate, len(schema.signals), chunker.add, periods=decoder.periods)
    for frame in read_log(log):
        if window_s is None or window_s[0] <= frame.timestamp <= window_s[1]:
            sampler.feed(to_micros(frame.timestamp), decoder.decode(frame))
    sampler.finish()
    chunker.seal()
    return Sealed(schema, [chunk.payload for chunk in chunker.take()])


def payloads(vin: str, drive: Sealed, groups: Sequence[Sequence[int]]) -> list[bytes]:
    """One batch per group of chunk indexes (in the group's order, repeats allowed)."""
    return [wire.encode_batch(vin, drive.schema, [drive.chunks[i] for i in group]) for group in groups]
