"""`edge-agent sample` against real recordings, checked by a reference written straight from the definition."""

from __future__ import annotations

import argparse
import io
from contextlib import redirect_stdout
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import can
import cantools
import pytest
from cantools.j1939 import pgn_from_frame_id

from agent.commands import sample


def run_sample(log: Path, dbcs: list[str], signals: list[str], rate: float = 50.0) -> list[str]:
    out = io.StringIO()
    args = argparse.Namespace(log=str(log), dbc=dbcs, signals=",".join(signals), rate_hz=rate)
    with redirect_stdout(out):
        assert sample.run(args) == 0
    return out.getvalue().splitlines()


def reference(log: Path, dbcs: dict[str, Path], signals: list[str], rate: Fraction) -> list[str]:
    """Exact fractions, cantools' own scaled decode, python-can's reader; J1939 by cantools' PGN.

    A value is held max(1 s, 10 x its period) at most (the longest interval between two of its frames
    within its hold; 1 s until measured: none of these DBCs declares a cycle time); a tick at which every
    signal is absent has no row (agent.sample's definition; these logs never step back)."""
    databases = {channel: cantools.database.load_file(str(path)) for channel, path in dbcs.items()}
    events: list[tuple[Fraction, str, object]] = []
    for message in can.LogReader(str(log)):
        db = databases[str(message.channel)]
        wanted = None
        for candidate in db.messages:
            same = candidate.frame_id == message.arbitration_id
            if candidate.protocol == "j1939" and message.is_extended_id:
                same = pgn_from_frame_id(candidate.frame_id) == pgn_from_frame_id(message.arbitration_id)
            if same:
                wanted = candidate
        stamp = Fraction(round(message.timestamp * 1_000_000), 1_000_000)
        if wanted is None:
            events.append((stamp, "", None))
            continue
        values = wanted.decode(bytes(message.data), decode_choices=False, allow_truncated=True)
        for key, value in values.items():
            name = f"{wanted.name}.{key}"
            if name in signals:
                events.append((stamp, name, value))
        if not any(f"{wanted.name}.{k}" in signals for k in values):
            events.append((stamp, "", None))
    first, last = events[0][0], max(e[0] for e in events)
    current: dict[str, object] = {}
    seen_at: dict[str, Fraction] = {}
    period: dict[str, Fraction] = {}
    hold = dict.fromkeys(signals, Fraction(10))
    rows = ["timestamp," + ",".join(signals)]
    tick = -(-first * rate // 1)
    index = 0
    ordered = events  # file order: the sampler applies frames in arrival order too
    while Fraction(tick) / rate <= last:
        at = Fraction(tick) / rate
        while index < len(ordered) and ordered[index][0] <= at:
            stamp, name, value = ordered[index]
            if name:
                interval = stamp - seen_at[name] if name in seen_at else None
                if interval is not None and 0 < interval <= hold[name] and interval > period.get(name, 0):
                    period[name] = interval
                    hold[name] = min(Fraction(60), max(Fraction(1), 10 * interval))
                current[name], seen_at[name] = value, stamp
            index += 1
        seconds = (Decimal(at.numerator) / Decimal(at.denominator)).quantize(Decimal("0.000001"))
        present = {n: current[n] for n in current if at - seen_at[n] <= hold[n]}
        cells = [
            "" if n not in present else repr(present[n]) if isinstance(present[n], float) else str(present[n])
            for n in signals
        ]
        if any(cells):
            rows.append(f"{seconds}," + ",".join(cells))
        tick += 1
    return rows


def test_kona_two_buses_two_dbcs(realdata: Path) -> None:
    folder = realdata / "hyundai_kona_ev_2019"
    log = folder / "kona_ev_2019_power-off-on-ready-off.candump.log"
    signals = [
        "BMS_542.SocDisp",
        "CGW_5B3.PowerState",
        "Batt_HV_Status.PrechargeRelay",
        "SAS11.SAS_Angle",
        "BatteryCharging.Voltage_12V",
        "WHL_SPD11.WHL_SPD_FL",
        "ParkingBrake.ParkingBrakeState",
    ]
    pcan, ccan = folder / "pcan.cantools-BS_-added.dbc", folder / "hyundai_kia_generic.dbc"
    available = {
        f"{m.name}.{s.name}" for m in cantools.database.load_file(str(pcan)).messages for s in m.signals
    }
    signals = [s for s in signals if s in available or s.startswith(("SAS11", "WHL_SPD11"))]
    got = run_sample(log, [f"can0={pcan}", f"can1={ccan}"], signals)
    assert got == reference(log, {"can0": pcan, "can1": ccan}, signals, Fraction(50))
    assert len(got) == 542  # 10.84 s at 50 Hz, but the first tick: no signal yet
    socs = [row.split(",")[1] for row in got[1:]]
    assert [soc for soc in socs if soc][-1] == "36.5"  # SoC as displayed (SOURCE.txt)
    assert socs[-1] == ""  # the BMS stops sending at power-off: held 1 s (10 of its periods), then absent


def test_j1939_truck_by_pgn_on_two_channels(realdata: Path) -> None:
    folder = realdata / "j1939_truck_canedge"
    log = folder / "j1939_truck_idle_canedge.candump.log"
    j1939, gps = folder / "CSS-Electronics-SAE-J1939-DEMO.dbc", folder / "canmod-gps.dbc"
    signals = ["EEC1.EngineSpeed", "CCVS1.WheelBasedVehicleSpeed", "gnss_speed.Speed"]
    got = run_sample(log, [f"can0={j1939}", f"can1={gps}"], signals, rate=10.0)
    assert got == reference(log, {"can0": j1939, "can1": gps}, signals, Fraction(10))
    speeds = [float(row.split(",")[1]) for row in got[1:] if row.split(",")[1]]
    assert min(speeds) > 640 and max(speeds) < 660  # idling, SOURCE.txt


def test_mf4_original_samples_like_its_candump_conversion(realdata: Path) -> None:
    pytest.importorskip("asammdf", reason="MF4 input needs the asammdf package (the [mf4] extra)")
    folder = realdata / "j1939_truck_canedge"
    dbcs = [f"can0={folder / 'CSS-Electronics-SAE-J1939-DEMO.dbc'}", f"can1={folder / 'canmod-gps.dbc'}"]
    signals = ["EEC1.EngineSpeed", "gnss_speed.Speed"]
    from_mf4 = run_sample(folder / "00000001.MF4", dbcs, signals, rate=5.0)
    from_candump = run_sample(folder / "j1939_truck_idle_canedge.candump.log", dbcs, signals, rate=5.0)
    assert from_mf4 == from_candump
