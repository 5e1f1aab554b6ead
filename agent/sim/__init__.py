"""A deterministic drive simulator for the reference EV (``dbc/reference_ev.dbc``).

:func:`simulate` yields the CAN frames of one drive, :func:`write_log` records them as a candump log
(gzip-compressed when the name ends in ``.gz``). The same (personality, duration, seed) always yields
the same frames, byte for byte: every random draw comes from one ``random.Random(seed)``.

The physics steps at 10 ms (:mod:`agent.sim.physics`, driven by :mod:`agent.sim.drive`). Each message
goes out at its ``GenMsgCycleTime`` from the DBC, at a fixed per-message phase (a whole number of
milliseconds plus a sub-millisecond part derived from its id) plus up to 0.25 ms of jitter, so frames of
different messages do not share timestamps. Frames carrying ``Counter`` and ``Checksum`` signals get a
rolling 4-bit counter and the checksum of :func:`frame_checksum`.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import can
import cantools

from agent.errors import DbcError, SourceError
from agent.sim.drive import PERSONALITIES, Driver
from agent.sim.physics import Vehicle, VehicleState

__all__ = ["DBC_PLACES", "PERSONALITIES", "STEP_S", "default_dbc", "frame_checksum", "simulate", "write_log"]

# Where the reference EV's DBC is: beside the package in a checkout, or where the Debian package installs
# it (packaging/deb/build.py: /usr/share/edge-agent/dbc; the package's code is in /opt/edge-agent/venv).
DBC_PLACES = (
    Path(__file__).resolve().parents[2] / "dbc" / "reference_ev.dbc",
    Path("/usr/share/edge-agent/dbc/reference_ev.dbc"),
)
STEP_S = 0.01
_STEP_US = 10_000
_JITTER_US = 250

Signals = dict[str, float]
_Build = Callable[[VehicleState, int], Signals]

# What each message carries, computed from the car's state (``n`` is the message's own frame number).
_BUILDERS: dict[str, _Build] = {
    "DriveSpeed": lambda s, n: {"VehicleSpeed": s.speed_kmh},
    "MotorStatus": lambda s, n: {"MotorRPM": s.motor_rpm, "MotorTorque": s.motor_torque},
    "Pedals": lambda s, n: {
        "AccelPedal": s.accel_pedal,
        "BrakePedal": s.brake_pedal,
        "BrakeSwitch": float(s.brake_pedal > 2.0),
    },
    "Steering": lambda s, n: {"SteeringAngle": s.steering_angle, "SteeringRate": s.steering_rate},
    "Dynamics": lambda s, n: {
        "LateralAccel": s.lat_accel,
        "LongitudinalAccel": s.accel,
        "YawRate": s.yaw_rate,
    },
    "BatteryPower": lambda s, n: {
        "PackVoltage": s.pack_voltage,
        "PackCurrent": s.pack_current,
        "PackPower": s.pack_power,
    },
    "Gear": lambda s, n: {"Gear": float(s.gear)},
    "BatteryState": lambda s, n: {
        "StateOfCharge": s.soc,
        "EnergyRemaining": s.energy_kwh,
        "EstimatedRange": s.energy_kwh / 0.150,
        "MaxDischargePower": s.max_discharge_kw,
        "MaxRegenPower": s.max_regen_kw,
    },
    "Thermal": lambda s, n: {
        "MotorTemp": s.motor_temp,
        "BatteryTemp": s.battery_temp,
        "CoolantTemp": s.coolant_temp,
    },
    "CellStats": lambda s, n: (
        {"CellMux": 0.0, "CellVoltageMin": s.cell_v_min, "CellVoltageMax": s.cell_v_max}
        if n % 2 == 0
        else {"CellMux": 1.0, "CellTempMin": s.cell_t_min, "CellTempMax": s.cell_t_max}
    ),
    "Navigation": lambda s, n: {"Heading": s.heading},
    "VehicleFlags": lambda s, n: {
        "ABSActive": float(s.abs_active),
        "TractionControlActive": float(s.tc_active),
        "OverheatWarning": float(s.overheat),
    },
    "Odometer": lambda s, n: {"Odometer": s.odometer_km},
}


def frame_checksum(arbitration_id: int, data: bytes | bytearray, checksum_index: int) -> int:
    """``(id & 0xFF) + (id >> 8 & 0xFF) + every payload byte but the checksum's own``, modulo 256."""
    total = (arbitration_id & 0xFF) + ((arbitration_id >> 8) & 0xFF)
    total += sum(byte for index, byte in enumerate(data) if index != checksum_index)
    return total & 0xFF


@dataclass
class _Slot:
    """The schedule and the running state of one message."""

    name: str
    frame_id: int
    period_us: int
    next_due_us: int
    build: _Build
    limits: dict[str, tuple[float, float]]
    counter: bool
    checksum_index: int | None
    sent: int = 0


def default_dbc(places: Sequence[Path] | None = None) -> Path:
    """The reference EV's DBC: the first of ``places`` (default :data:`DBC_PLACES`) that is a file.

    Raises :class:`DbcError` naming every place tried when none is.
    """
    places = DBC_PLACES if places is None else places
    for place in places:
        if place.is_file():
            return place
    tried = ", ".join(str(place) for place in places)
    raise DbcError(f"the reference EV's DBC is in none of {tried}: name one with --dbc FILE")


def _load(dbc_path: str | Path) -> Any:
    try:
        return cantools.database.load_file(str(dbc_path), strict=True)
    except FileNotFoundError as error:
        raise DbcError(f"{dbc_path}: no such DBC file") from error
    except Exception as error:  # cantools raises a handful of unrelated types for a bad file
        raise DbcError(f"{dbc_path}: does not load: {error}") from error


def _slots(db: Any, dbc_path: str | Path) -> list[_Slot]:
    slots = []
    for name, build in _BUILDERS.items():
        try:
            message = db.get_message_by_name(name)
        except KeyError as error:
            raise DbcError(f"{dbc_path}: the simulator needs message {name}") from error
        if not message.cycle_time:
            raise DbcError(f"{dbc_path}: message {name} has no GenMsgCycleTime")
        period_ms = int(message.cycle_time)
        limits = {}
        for signal in message.signals:
            raw_low, raw_high = (
                (-(2 ** (signal.length - 1)), 2 ** (signal.length - 1) - 1)
                if signal.is_signed
                else (0, 2**signal.length - 1)
            )
            low = signal.minimum if signal.minimum is not None else raw_low * signal.scale + signal.offset
            high = signal.maximum if signal.maximum is not None else raw_high * signal.scale + signal.offset
            limits[signal.name] = (float(low), float(high))
        checksum_index = None
        if "Checksum" in limits:
            checksum = message.get_signal_by_name("Checksum")
            if checksum.length != 8 or checksum.start % 8 or checksum.byte_order != "little_endian":
                raise DbcError(f"{dbc_path}: {name}.Checksum must be one whole byte")
            checksum_index = checksum.start // 8
        phase_us = (message.frame_id * 7 % period_ms) * 1000 + message.frame_id * 53 % 500
        counter = "Counter" in limits
        slots.append(
            _Slot(name, message.frame_id, period_ms * 1000, phase_us, build, limits, counter, checksum_index)
        )
    return slots


def simulate(
    personality: str,
    duration_s: float,
    seed: int,
    dbc_path: str | Path,
    start_time: float = 1_700_000_000.0,
    channel: str = "can0",
) -> Iterator[can.Message]:
    """The frames of one drive of ``duration_s`` seconds, in time order, stamped from ``start_time``.

    Raises :class:`SourceError` for an unknown personality or a negative duration and :class:`DbcError`
    when the DBC does not load or lacks a message the simulator needs; both before the first frame.
    """
    if personality not in PERSONALITIES:
        raise SourceError(f"unknown personality {personality!r}; valid: {', '.join(PERSONALITIES)}")
    if not (math.isfinite(duration_s) and duration_s >= 0.0):
        raise SourceError(f"the duration must be a finite number of seconds >= 0, not {duration_s!r}")
    db = _load(dbc_path)
    return _frames(db, _slots(db, dbc_path), personality, float(duration_s), seed, start_time, channel)


def _frames(
    db: Any, slots: list[_Slot], personality: str, duration: float, seed: int, start: float, channel: str
) -> Iterator[can.Message]:
    rng = random.Random(seed)
    vehicle = Vehicle(rng)
    driver = Driver(personality, rng, vehicle, duration)
    end_us = round(duration * 1_000_000)
    tick = 0
    while tick * _STEP_US < end_us:
        if tick:
            vehicle.step(STEP_S, driver.step(STEP_S, tick * STEP_S))
        window_end = min((tick + 1) * _STEP_US, end_us)
        due: list[tuple[int, int, _Slot]] = []
        for slot in slots:
            while slot.next_due_us < window_end:
                due.append((slot.next_due_us + rng.randrange(_JITTER_US), slot.frame_id, slot))
                slot.next_due_us += slot.period_us
        due.sort(key=lambda item: (item[0], item[1]))
        for stamp_us, _, slot in due:
            yield _encode(db, slot, vehicle.state, start + stamp_us / 1_000_000, channel)
        tick += 1


def _encode(db: Any, slot: _Slot, state: VehicleState, timestamp: float, channel: str) -> can.Message:
    values = slot.build(state, slot.sent)
    if slot.counter:
        values["Counter"] = float(slot.sent % 16)
    if slot.checksum_index is not None:
        values["Checksum"] = 0.0
    for name, value in values.items():
        low, high = slot.limits[name]
        values[name] = low if value < low else high if value > high else value
    data = bytearray(db.encode_message(slot.name, values))
    if slot.checksum_index is not None:
        data[slot.checksum_index] = frame_checksum(slot.frame_id, data, slot.checksum_index)
    slot.sent += 1
    return can.Message(
        timestamp=timestamp,
        arbitration_id=slot.frame_id,
        is_extended_id=False,
        dlc=len(data),
        data=data,
        channel=channel,
    )


def write_log(path: str | Path, frames: Iterable[can.Message]) -> int:
    """Record ``frames`` with python-can's writers; return how many were written.

    ``*.log`` is a candump ``-l`` log; ``*.log.gz`` is the same, gzip-compressed (with a zero mtime and no
    embedded name, so identical frames give an identical file); other suffixes go to ``can.Logger``.
    The file appears under its name only once complete. Raises :class:`SourceError` when it cannot be
    written (unknown format, no permission, full disk).
    """
    target = Path(path)
    candump_gz = [part.lower() for part in target.suffixes[-2:]] == [".log", ".gz"]
    suffix = "".join(target.suffixes[-2:]) if target.suffix.lower() == ".gz" else target.suffix
    partial = target.with_name(f".{target.name.replace('.', '_')}-{os.getpid()}-partial{suffix}")
    count = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if candump_gz:
            with (
                open(partial, "wb") as raw,
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed,
            ):
                text = io.TextIOWrapper(packed, encoding="ascii", newline="\n")
                writer: can.io.generic.MessageWriter = can.CanutilsLogWriter(text)
                count = _write_all(writer, frames)  # stopping it closes the text and gzip layers, not `raw`
        else:
            try:
                other = can.Logger(partial)
            except ValueError as error:  # python-can's word for an unknown suffix
                raise SourceError(f"{target}: {error}") from error
            count = _write_all(other, frames)
        os.replace(partial, target)
    except OSError as error:
        raise SourceError(f"{target}: cannot write the log: {error}") from error
    finally:
        if partial.exists():
            partial.unlink()
    return count


def _write_all(writer: can.io.generic.MessageWriter, frames: Iterable[can.Message]) -> int:
    count = 0
    try:
        for frame in frames:
            writer.on_message_received(frame)
            count += 1
    finally:
        writer.stop()
    return count
