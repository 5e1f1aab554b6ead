"""The value model: the units of data that flow between the stages (see the README's design section).

``frame``  a CAN frame: python-can's :class:`can.Message` (time on the source's clock, channel, id, data)
``sample`` one tick of the sampling grid: (tick, raw value of each configured signal or ``None``)
``chunk``  a run of consecutive samples of one vehicle: the unit of the buffer and of the ack
``batch``  one or more whole chunks on the wire (see :mod:`agent.wire.messages`)

Values travel as *raw* numbers at the DBC's resolution (integers for integer signals), so that the encoder
and the receiver's decoder compute bit-identical reconstructions on any platform; :class:`SignalSpec` turns
them into physical values exactly as cantools would.

Contract
- :class:`SignalSpec`, :class:`Schema` and :class:`ChunkId` are immutable: any thread may share them.
- :class:`ChunkData` is plain mutable lists: whoever builds one owns it. The codec reads a chunk it is
  given and keeps nothing of it; a decoded chunk is new and belongs to the caller.
- Limits: a raw integer is a CAN raw value, 64 bits at most (signed or unsigned); a chunk's ticks
  increase. The codec checks both when it encodes (:mod:`agent.wire.quantizer`, :mod:`agent.wire.chunks`).
- Standard library only, no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import NamedTuple

RawValue = int | float
PhysicalValue = int | float


class SignalSpec(NamedTuple):
    """How one sampled signal is scaled and coded. Immutable; shared by every thread."""

    name: str  # MESSAGE.SIGNAL
    scale: float = 1.0
    offset: float = 0.0
    is_float: bool = False  # an IEEE float signal: raw values are floats
    integer_scaled: bool = True  # integer scale and offset: cantools yields ints
    bound_raw: int = 0  # error bound in raw units; 0 = lossless
    predictor: str = "hold"

    def to_physical(self, raw: RawValue) -> PhysicalValue:
        """The value cantools' ``decode_message(..., decode_choices=False)`` gives for ``raw``."""
        if self.integer_scaled and not self.is_float:
            return int(raw) * int(self.scale) + int(self.offset)
        return raw * self.scale + self.offset


@dataclass(frozen=True)
class Schema:
    """The sampling grid and the ordered signals that every chunk of one agent run shares.

    ``digest`` identifies it (the buffer keys stored schemas by it, the codec its per-schema caches).
    """

    rate: Fraction
    signals: tuple[SignalSpec, ...]
    digest: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        text = repr((self.rate.numerator, self.rate.denominator, [tuple(s) for s in self.signals]))
        object.__setattr__(self, "digest", hashlib.blake2b(text.encode(), digest_size=16).digest())

    @property
    def names(self) -> tuple[str, ...]:
        """The signals' ``MESSAGE.SIGNAL`` names, in column order."""
        return tuple(s.name for s in self.signals)

    def tick_seconds(self, tick: int) -> Decimal:
        """Tick ``n`` is at ``n / rate`` seconds on the source's clock, exactly (6 decimals)."""
        exact = Decimal(tick * self.rate.denominator) / Decimal(self.rate.numerator)
        return exact.quantize(Decimal("0.000001"))


class ChunkId(NamedTuple):
    """The identity of a chunk that never changes: the receiver dedupes by it."""

    boot_id: bytes
    seq: int


@dataclass
class ChunkData:
    """A chunk in memory: ticks and one column of raw values (``None`` = absent) per schema signal.

    ``sealed_at_ms``: the agent's wall clock when the chunk was sealed (ms since the Unix epoch), coded
    inside the chunk; 0 = not stamped (an agent before wire version 2), its latency unknown.
    """

    boot_id: bytes
    seq: int
    ticks: list[int]
    columns: list[list[RawValue | None]]
    sealed_at_ms: int = 0

    @property
    def id(self) -> ChunkId:
        return ChunkId(self.boot_id, self.seq)

    def __len__(self) -> int:
        return len(self.ticks)


def format_value(value: PhysicalValue | None) -> str:
    """A value as a CSV cell: empty when absent, else Python's shortest round-trip form."""
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)
