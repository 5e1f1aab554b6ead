"""Decoding stage: CAN frames to raw signal values, with cantools.

Contract
- Built once at start (:func:`build_decoder`), then used by the pipeline thread only; not thread-safe
  (it keeps counters).
- ``Decoder.decode(frame)`` returns ``(column, raw value)`` pairs for the configured signals that the
  frame carries, or an empty list (the caller must not change it: a frame whose payload repeats the
  previous one of its id gets the same list, undecoded). It never raises on bad frames: an unknown id, a payload shorter than
  its message (the fields that fit are still decoded) or one cantools refuses are *counted* in
  ``Decoder.stats`` and logged once per id, because real buses carry all of these (see the Kona log).
  A payload longer than its protocol allows (8 bytes classic, 64 CAN FD) of a known id is counted in
  ``stats.oversize`` and logged once per id, and not decoded (of an unknown id, it is unknown).
- Channels: ``stats.channels`` counts frames per channel. A configured channel that has seen no frame
  while others have is logged once (``bus_channel_silent``, with the channels that do carry frames)
  after ``CHANNEL_CHECK_FRAMES`` frames, and by :meth:`Decoder.check_channels` (call it when a replay
  ends). :meth:`Decoder.unknown_channel_frames` counts the frames of channels no bus is configured for.
- DBCs are loaded by :func:`agent.dbc.load_dbc` (strict; refuses empty files and repeated frame ids);
  :func:`build_decoder` refuses two sampled messages that one bus would match on the same id or PGN.
- Values are raw (``scaling=False``), so they are integers at the DBC resolution; :class:`SignalSpec`
  carries the scale and offset that turn them into what cantools would print.
- J1939: a message whose DBC says it is a J1939 parameter group is matched by PGN (priority and source
  address ignored, PDU1's destination too), because a DBC's source address rarely matches the vehicle's.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can
from cantools.database.errors import Error as CantoolsError

from agent.config import BOUNDS_PRESETS, AgentConfig
from agent.dbc import load_dbc
from agent.errors import ConfigError, DbcError
from agent.latest import check_sampled
from agent.service.logs import get_logger
from agent.service.schema import suggest
from agent.wire import predictors as predict
from agent.wire.values import SignalSpec

log = get_logger("agent.decode")

ANY_CHANNEL = "*"  # a bus entry with this channel decodes frames of every channel
MAX_LENGTH = {False: 8, True: 64}  # payload bytes a frame may carry: classic CAN, CAN FD
CHANNEL_CHECK_FRAMES = 10_000  # after this many frames, a configured channel with none is reported
MAX_RESOLVED = 65_536  # frame ids whose message lookup is remembered (a bus of random ids stops there)
UNSEEN = object()  # no payload equals it

# Always lossless, whatever the configured bound: these carry meaning in every bit.
_DISCRETE_NAME = re.compile(r"(counter|checksum|crc|alive|rolling|mux)", re.IGNORECASE)


def j1939_pgn(frame_id: int) -> int:
    """The parameter group number of a 29-bit J1939 id (PDU1 drops the destination address)."""
    pgn = (frame_id >> 8) & 0x3FFFF
    return pgn & 0x3FF00 if ((pgn >> 8) & 0xFF) < 240 else pgn


@dataclass
class _Target:
    message: Any
    columns: list[tuple[str, int]]  # (cantools signal name, column in the schema)


class _Seen:
    """What one (channel, id) decodes as, and its last payload with the updates it made: a frame that
    repeats its predecessor's payload (four in ten on the real recordings) is not decoded again."""

    __slots__ = ("data", "target", "updates")

    def __init__(self, target: _Target | None) -> None:
        self.target = target
        self.data: object = UNSEEN
        self.updates: list[tuple[int, int | float]] = []


@dataclass
class DecodeStats:
    frames: int = 0
    decoded: int = 0
    unknown: Counter[tuple[str, int]] = field(default_factory=Counter)  # (channel, id) -> count
    truncated: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: Counter[tuple[str, int]] = field(default_factory=Counter)
    oversize: Counter[tuple[str, int]] = field(default_factory=Counter)  # longer than the protocol allows
    channels: Counter[str] = field(default_factory=Counter)  # frames per channel


class Decoder:
    """Frames of several buses to raw values of one schema (see the module's contract)."""

    def __init__(
        self,
        signals: Sequence[SignalSpec],
        exact: dict[tuple[str, int], _Target],
        by_pgn: dict[tuple[str, int], _Target],
        periods: Sequence[float | None] = (),
    ) -> None:
        self.signals = tuple(signals)
        self.periods = tuple(periods)  # per column: its message's DBC cycle time in seconds, or None
        self._exact = exact
        self._by_pgn = by_pgn
        # One lookup per frame, by (channel, id): 11-bit ids at [False], 29-bit at [True].
        self._resolved: tuple[dict[tuple[str, int], _Seen], ...] = ({}, {})
        self.channels = frozenset(channel for channel, _ in [*exact, *by_pgn])  # configured, maybe "*"
        self.stats = DecodeStats()
        self._silent_reported = False

    def decode(self, frame: can.Message) -> list[tuple[int, int | float]]:
        stats = self.stats
        stats.frames += 1
        key: tuple[str, int] = (frame.channel, frame.arbitration_id)  # type: ignore[assignment]
        stats.channels[key[0]] += 1
        if stats.frames == CHANNEL_CHECK_FRAMES:
            self.check_channels()
        resolved = self._resolved[frame.is_extended_id]
        try:
            seen = resolved[key]
        except KeyError:
            seen = self._resolve(key, frame.is_extended_id)
        target = seen.target
        if target is None:
            stats.unknown[key] += 1
            return []
        if frame.data == seen.data:  # the payload its predecessor had: the same updates (never mutated)
            stats.decoded += 1
            return seen.updates
        if len(frame.data) > MAX_LENGTH[bool(frame.is_fd)]:
            self._oversize(frame, key)
            return []
        data = bytes(frame.data)
        truncated = len(data) < target.message.length
        try:
            values = target.message.decode(data, decode_choices=False, scaling=False, allow_truncated=True)
        except (CantoolsError, ValueError, IndexError) as error:
            if self.stats.errors[key] == 0:
                log.warning(
                    "frame_undecodable",
                    channel=frame.channel,
                    frame_id=hex(key[1]),
                    message=target.message.name,
                    reason=str(error),
                )
            self.stats.errors[key] += 1
            return []
        if truncated:
            if self.stats.truncated[key] == 0:
                log.warning(
                    "frame_shorter_than_message",
                    channel=frame.channel,
                    frame_id=hex(key[1]),
                    message=target.message.name,
                    length=len(data),
                    expected=target.message.length,
                )
            self.stats.truncated[key] += 1
        self.stats.decoded += 1
        updates = [(column, values[name]) for name, column in target.columns if name in values]
        if not truncated:  # a short frame is counted each time: never remembered
            seen.data, seen.updates = data, updates
        return updates

    def _resolve(self, key: tuple[str, int], extended: bool) -> _Seen:
        """The message a frame of (channel, id) decodes as: by exact id, else (29-bit) by J1939 PGN;
        remembered, up to ``MAX_RESOLVED`` ids of each kind (garbage ids cannot grow it without end)."""
        channel, frame_id = key
        target = self._exact.get((channel, frame_id)) or self._exact.get((ANY_CHANNEL, frame_id))
        if target is None and extended and self._by_pgn:
            pgn = j1939_pgn(frame_id)
            target = self._by_pgn.get((channel, pgn)) or self._by_pgn.get((ANY_CHANNEL, pgn))
        resolved = self._resolved[extended]
        seen = _Seen(target)
        if len(resolved) < MAX_RESOLVED:
            resolved[key] = seen
        return seen

    def _oversize(self, frame: can.Message, key: tuple[str, int]) -> None:
        if self.stats.oversize[key] == 0:
            log.warning(
                "frame_longer_than_protocol",
                channel=key[0],
                frame_id=hex(key[1]),
                length=len(frame.data),
                limit=MAX_LENGTH[bool(frame.is_fd)],
                protocol="CAN FD" if frame.is_fd else "classic CAN",
            )
        self.stats.oversize[key] += 1

    def silent_channels(self) -> list[str]:
        """Configured channels that have seen no frame (none when a bus takes every channel)."""
        if ANY_CHANNEL in self.channels:
            return []
        return sorted(c for c in self.channels if not self.stats.channels[c])

    def unknown_channel_frames(self) -> int:
        """Frames of channels that no bus is configured for: never sampled."""
        if ANY_CHANNEL in self.channels:
            return 0
        return sum(n for channel, n in self.stats.channels.items() if channel not in self.channels)

    def check_channels(self) -> str | None:
        """A warning (logged once) when a configured channel has seen no frame while others have."""
        silent = self.silent_channels()
        if not silent or not self.stats.frames:
            return None
        seen = ", ".join(f"{c} ({n} frames)" for c, n in sorted(self.stats.channels.items()))
        text = f"no frames on configured channel {', '.join(silent)}; the frames are on {seen}"
        if not self._silent_reported:
            self._silent_reported = True
            log.warning("bus_channel_silent", channels=silent, seen=dict(self.stats.channels))
        return text


def _is_discrete(signal: Any) -> bool:
    """Value names, flags (1-2 bits), multiplexers, counters and checksums: always lossless."""
    return (
        bool(signal.choices)
        or signal.length <= 2
        or bool(signal.is_multiplexer)
        or bool(_DISCRETE_NAME.search(signal.name))
    )


def _angle(name: str, signal: Any, turn: float) -> tuple[int, int]:
    """(period, low) in raw units of a signal declared an angle whose whole turn is ``turn``."""
    scale = abs(float(signal.scale))
    period = round(turn / scale)
    if period < 2 or abs(period * scale - turn) > 1e-6 * turn:
        raise ConfigError(
            f"sampling.angles[{name!r}]: a turn of {turn:g} is not a whole number of raw units of "
            f"{scale:g} (the DBC's scale)"
        )
    if signal.minimum is not None and signal.maximum is not None:
        ends = [(limit - signal.offset) / signal.scale for limit in (signal.minimum, signal.maximum)]
        return period, math.ceil(min(ends) - 1e-9)
    return period, -(period // 2) if signal.is_signed else 0


def _spec(message: Any, signal: Any, bound: float, turn: float, predictor: str, explicit: bool) -> SignalSpec:
    """The coding of one signal. ``explicit``: its bound or angle was configured (not from a preset)."""
    name = f"{message.name}.{signal.name}"
    scale, offset = signal.scale, signal.offset
    # Ask cantools itself whether its conversion yields ints, so printed values match it exactly.
    integer_scaled = not signal.is_float and isinstance(signal.conversion.raw_to_scaled(1, False), int)
    if signal.is_float and (bound or turn):
        if explicit:
            raise ConfigError(
                f"sampling: {name} is an IEEE float signal, which is always sent bit for bit: "
                "remove its bound or angle (bounds and angles apply to integer signals)"
            )
        bound = turn = 0.0
    bound_raw = 0 if (_is_discrete(signal) or bound <= 0) else int(bound / abs(scale) + 1e-9)
    code = predict.Coding(predictor, *(_angle(name, signal, turn) if turn else (0, 0)))
    return SignalSpec(
        name, float(scale), float(offset), bool(signal.is_float), integer_scaled, bound_raw, str(code)
    )


def decoder_for(config: AgentConfig) -> Decoder:
    """The decoder of an agent config: every bus's DBCs loaded, every configured signal resolved."""
    buses = [
        (bus.channel, bus.dbc, "auto" if bus.j1939 is None else str(bus.j1939).lower())
        for bus in config.buses
    ]
    s = config.sampling
    decoder = build_decoder(buses, s.signals, dict(s.bounds), s.predictor, dict(s.angles), s.bounds_preset)
    check_sampled(config.status.signals, [spec.name for spec in decoder.signals])
    return decoder


def build_decoder(
    buses: Iterable[tuple[str, Sequence[str | Path], str]],
    wanted: Sequence[str] = (),
    bounds: Mapping[str, float] | None = None,
    predictor: str = predict.DEFAULT,
    angles: Mapping[str, float] | None = None,
    preset: str = "none",
) -> Decoder:
    """Load each bus's DBCs and pick the signals; ``buses`` is (channel, dbc paths, j1939 mode).

    ``wanted`` lists ``MESSAGE.SIGNAL`` names in the order the schema will have; empty means every
    signal of every DBC (a name defined on two buses is then taken from the first). ``bounds`` (error
    bounds in each signal's unit) and ``angles`` (a whole turn in each signal's unit) are the configured
    ones: naming a signal that is not sampled, or a float signal, is a :class:`ConfigError`. ``preset``
    names a set of :data:`agent.config.BOUNDS_PRESETS`, applied where it fits and below ``bounds`` and
    ``angles``. ``predictor`` codes every signal (see :mod:`agent.wire.predictors`).
    """
    if predictor not in predict.PREDICTORS:
        raise ConfigError(f"sampling.predictor: unknown predictor {predictor!r}")
    if preset not in BOUNDS_PRESETS:
        raise ConfigError(f"sampling.bounds_preset: unknown preset {preset!r}")
    explicit_bounds, explicit_angles = dict(bounds or {}), dict(angles or {})
    bounds = {**BOUNDS_PRESETS[preset].bounds, **explicit_bounds}
    angles = {**BOUNDS_PRESETS[preset].angles, **explicit_angles}
    available: dict[str, tuple[str, Any, Any]] = {}  # name -> (channel, message, signal)
    modes: dict[str, str] = {}
    origin: dict[int, str] = {}  # id(message) -> its DBC file
    for channel, dbc_paths, j1939 in buses:
        modes[channel] = j1939
        for path in dbc_paths:
            for message in load_dbc(path).messages:
                origin[id(message)] = str(path)
                for signal in message.signals:
                    name = f"{message.name}.{signal.name}"
                    if name in available and wanted and name in wanted and available[name][0] != channel:
                        raise DbcError(
                            f"{name} is defined on both {available[name][0]} and {channel}: "
                            "ambiguous (rename one message in its DBC)"
                        )
                    available.setdefault(name, (channel, message, signal))
    names = list(wanted) if wanted else sorted(available)
    missing = [n for n in names if n not in available]
    if missing:
        hints = [f"{n}{suggest(n, available) or ' (no similar name)'}" for n in missing]
        raise DbcError("signals not found in any DBC: " + "; ".join(hints))
    for section, given in (("bounds", explicit_bounds), ("angles", explicit_angles)):
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ConfigError(f"sampling.{section} names signals that are not sampled: {', '.join(unknown)}")
    specs: list[SignalSpec] = []
    exact: dict[tuple[str, int], _Target] = {}
    by_pgn: dict[tuple[str, int], _Target] = {}
    for column, name in enumerate(names):
        channel, message, signal = available[name]
        explicit = name in explicit_bounds or name in explicit_angles
        specs.append(
            _spec(message, signal, bounds.get(name, 0.0), angles.get(name, 0.0), predictor, explicit)
        )
        use_pgn = modes[channel] == "true" or (modes[channel] == "auto" and message.protocol == "j1939")
        table, key = (by_pgn, j1939_pgn(message.frame_id)) if use_pgn else (exact, message.frame_id)
        target = table.setdefault((channel, key), _Target(message, []))
        if target.message is not message:
            other = target.message
            raise DbcError(
                f"{'PGN' if use_pgn else 'frame id'} {key:#x} on {channel} is both {other.name} "
                f"({origin[id(other)]}) and {message.name} ({origin[id(message)]}): a frame cannot be "
                "told apart; sample signals of one of them only, or remove one"
            )
        target.columns.append((signal.name, column))
    periods = [
        None if not message.cycle_time else message.cycle_time / 1000
        for _, message, _ in (available[name] for name in names)
    ]
    return Decoder(specs, exact, by_pgn, periods)
