"""Decoding: bad DBCs name the file, odd frames are counted and never fatal, J1939 matches by PGN."""

from __future__ import annotations

from pathlib import Path

import can
import pytest

from agent import decode
from agent.dbc import load_dbc
from agent.decode import ANY_CHANNEL, CHANNEL_CHECK_FRAMES, build_decoder, j1939_pgn
from agent.errors import DbcError

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_DBC = ROOT / "dbc" / "reference_ev.dbc"

SMALL_DBC = """VERSION ""
NS_ :
BS_:
BU_: ECU
BO_ 257 Speed: 8 ECU
 SG_ Value : 0|16@1+ (0.01,0) [0|655.35] "km/h" Vector__XXX
 SG_ Temp : 16|8@1+ (1,-40) [-40|215] "C" Vector__XXX
 SG_ Gear : 24|3@1+ (1,0) [0|7] "" Vector__XXX
 SG_ Far : 48|16@1- (0.5,0) [0|0] "" Vector__XXX
VAL_ 257 Gear 0 "P" 1 "R" 2 "N" 3 "D" ;
"""


@pytest.fixture
def small_dbc(tmp_path: Path) -> Path:
    path = tmp_path / "small.dbc"
    path.write_text(SMALL_DBC)
    return path


def frame(
    frame_id: int, data: bytes, channel: str = "can0", extended: bool = False, fd: bool = False
) -> can.Message:
    return can.Message(arbitration_id=frame_id, data=data, channel=channel, is_extended_id=extended, is_fd=fd)


def test_values_are_raw_and_specs_scale_them_like_cantools(small_dbc: Path) -> None:
    decoder = build_decoder(
        [("can0", [small_dbc], "auto")],
        ["Speed.Value", "Speed.Temp", "Speed.Gear"],
        {"Speed.Value": 0.5, "Speed.Gear": 5},
    )
    data = bytes([0x39, 0x30, 100, 3, 0, 0, 0, 0])
    got = dict(decoder.decode(frame(257, data)))
    assert got == {0: 12345, 1: 100, 2: 3}
    speed, temp, gear = decoder.signals
    truth = load_dbc(small_dbc).decode_message(257, data, decode_choices=False)
    assert speed.to_physical(12345) == truth["Value"] and repr(temp.to_physical(100)) == repr(truth["Temp"])
    assert speed.bound_raw == 50  # 0.5 km/h at 0.01 km/h per bit
    assert gear.bound_raw == 0  # value names: always lossless


def test_unknown_ids_and_channels_are_counted_not_errors(small_dbc: Path) -> None:
    decoder = build_decoder([("can0", [small_dbc], "auto")], ["Speed.Value"])
    assert decoder.decode(frame(0x555, b"\x00" * 8)) == []
    assert decoder.decode(frame(257, b"\x00" * 8, channel="can1")) == []
    assert decoder.stats.unknown[("can0", 0x555)] == 1 and decoder.stats.unknown[("can1", 257)] == 1


def test_lookups_are_remembered_up_to_a_bound_and_decode_the_same(
    small_dbc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decode, "MAX_RESOLVED", 8)
    decoder = build_decoder([("can0", [small_dbc], "auto")], ["Speed.Value"])
    first = decoder.decode(frame(257, bytes(range(8))))
    for frame_id in range(0x600, 0x640):  # a bus of garbage ids
        assert decoder.decode(frame(frame_id, b"\x00" * 8)) == []
    assert len(decoder._resolved[False]) == 8  # bounded, whatever the bus sends
    assert decoder.decode(frame(257, bytes(range(8)))) == first != []  # the remembered lookup
    assert decoder.decode(frame(0x63F, b"\x00" * 8)) == []  # past the bound: looked up every time
    assert decoder.stats.unknown[("can0", 0x63F)] == 2


def test_a_short_frame_decodes_what_fits_and_is_counted(small_dbc: Path) -> None:
    decoder = build_decoder([(ANY_CHANNEL, [small_dbc], "auto")], ["Speed.Value", "Speed.Far"])
    assert decoder.decode(frame(257, bytes([1, 0, 0]), channel="can7")) == [(0, 1)]
    assert decoder.stats.truncated[("can7", 257)] == 1


def test_unknown_signal_says_did_you_mean(small_dbc: Path) -> None:
    with pytest.raises(DbcError, match=r"Speed.Valeu \(did you mean 'Speed.Value'"):
        build_decoder([("can0", [small_dbc], "auto")], ["Speed.Valeu"])


def test_a_dbc_that_does_not_parse_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.dbc"
    path.write_text(SMALL_DBC.replace("(0.01,0) [0|655.35]", "(0.01,0 [0|655.35]"))
    with pytest.raises(DbcError, match=r"broken.dbc: does not load: .*line 6"):
        load_dbc(path)
    with pytest.raises(DbcError, match="no such DBC file"):
        load_dbc(tmp_path / "missing.dbc")
    (tmp_path / "binary.dbc").write_bytes(b"\x00\xff\xfe" * 100)
    with pytest.raises(DbcError, match=r"binary\.dbc"):
        load_dbc(tmp_path / "binary.dbc")


def test_j1939_pgn_ignores_priority_and_source_address() -> None:
    assert j1939_pgn(0x0CF00400) == j1939_pgn(0x18F004FE) == 0xF004  # PDU2: EEC1
    assert j1939_pgn(0x18EA00F9) == j1939_pgn(0x18EAFF00) == 0xEA00  # PDU1: destination dropped


def test_reference_dbc_loads_with_every_signal() -> None:
    decoder = build_decoder([("can0", [REFERENCE_DBC], "auto")])
    assert "DriveSpeed.VehicleSpeed" in {s.name for s in decoder.signals}
    assert len(decoder.signals) >= 25


def test_real_kona_pcan_as_published_is_refused_with_its_line(realdata: Path) -> None:
    with pytest.raises(DbcError, match=r"pcan.dbc: does not load: .*line 6"):
        load_dbc(realdata / "hyundai_kona_ev_2019" / "pcan.dbc")


def test_real_j1939_truck_decodes_by_pgn_only(realdata: Path) -> None:
    folder = realdata / "j1939_truck_canedge"
    dbc = folder / "CSS-Electronics-SAE-J1939-DEMO.dbc"
    auto = build_decoder([("can0", [dbc], "auto")], ["EEC1.EngineSpeed"])
    exact = build_decoder([("can0", [dbc], "false")], ["EEC1.EngineSpeed"])
    speeds = []
    for message in can.LogReader(folder / "j1939_truck_idle_canedge.candump.log"):
        exact.decode(message)
        got = auto.decode(message)
        if got:
            speeds.append(auto.signals[0].to_physical(got[0][1]))
    assert exact.stats.decoded == 0  # the DBC's source address is not the truck's
    assert len(speeds) == 12_719  # EEC1 frames in the log (SOURCE.txt)
    assert min(speeds) > 640 and max(speeds) < 660


TWO_ON_ONE_ID = (
    SMALL_DBC
    + """
BO_ 257 SpeedCopy: 8 ECU
 SG_ Other : 0|8@1+ (1,0) [0|255] "" Vector__XXX
"""
)


def test_two_messages_on_one_frame_id_are_refused_naming_both_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dup.dbc"
    path.write_text(TWO_ON_ONE_ID)
    with pytest.raises(DbcError) as caught:
        load_dbc(path)
    assert str(caught.value) == (
        f"{path}: frame id 0x101 is defined twice, by Speed and SpeedCopy (cantools would keep only the last)"
    )


def test_an_empty_dbc_says_it_has_no_messages(tmp_path: Path) -> None:
    (tmp_path / "empty.dbc").write_text("")
    (tmp_path / "blank.dbc").write_text("\n  \n")
    (tmp_path / "bare.dbc").write_text('VERSION ""\n')
    for name in ("empty.dbc", "blank.dbc"):
        with pytest.raises(DbcError, match=rf"^{tmp_path / name}: has no messages \(the file is empty\)$"):
            load_dbc(tmp_path / name)
    with pytest.raises(DbcError, match=r"bare.dbc: has no messages$"):
        load_dbc(tmp_path / "bare.dbc")


def test_one_id_in_two_dbcs_of_one_bus_is_refused_when_both_are_sampled(
    tmp_path: Path, small_dbc: Path
) -> None:
    other = tmp_path / "other.dbc"
    other.write_text(SMALL_DBC.replace("BO_ 257 Speed:", "BO_ 257 Wheels:"))
    build_decoder([("can0", [small_dbc, other], "auto")], ["Speed.Value"])  # only one of them: fine
    with pytest.raises(DbcError, match=r"frame id 0x101 on can0 is both Speed \(.*small.dbc\) and Wheels"):
        build_decoder([("can0", [small_dbc, other], "auto")], ["Speed.Value", "Wheels.Temp"])
    on_two_buses = [("can0", [small_dbc], "auto"), ("can1", [other], "auto")]
    assert len(build_decoder(on_two_buses, ["Speed.Value", "Wheels.Temp"]).signals) == 2  # two buses: fine


def test_frames_longer_than_their_protocol_are_counted_not_decoded(small_dbc: Path) -> None:
    decoder = build_decoder([("can0", [small_dbc], "auto")], ["Speed.Value"])
    assert decoder.decode(frame(257, bytes(12))) == []  # 12 bytes: no classic CAN frame
    assert decoder.decode(frame(257, bytes(25_000))) == []
    assert decoder.decode(frame(257, bytes(65), fd=True)) == []
    assert decoder.decode(frame(257, bytes([1, 0]) + bytes(62), fd=True)) == [(0, 1)]  # CAN FD: up to 64
    assert decoder.stats.oversize == {("can0", 257): 3}
    assert decoder.stats.decoded == 1 and decoder.stats.frames == 4


def test_a_configured_channel_absent_from_the_log_is_a_warning_listing_the_log_s(small_dbc: Path) -> None:
    decoder = build_decoder([("vcan0", [small_dbc], "auto")], ["Speed.Value"])
    assert decoder.check_channels() is None  # no frame yet: nothing to say
    for _ in range(CHANNEL_CHECK_FRAMES):
        decoder.decode(frame(257, bytes(8), channel="can0"))
    assert decoder.silent_channels() == ["vcan0"]
    assert decoder.unknown_channel_frames() == CHANNEL_CHECK_FRAMES
    assert decoder.check_channels() == (
        f"no frames on configured channel vcan0; the frames are on can0 ({CHANNEL_CHECK_FRAMES} frames)"
    )
    every = build_decoder([(ANY_CHANNEL, [small_dbc], "auto")], ["Speed.Value"])
    every.decode(frame(257, bytes(8), channel="can5"))
    assert every.silent_channels() == [] and every.unknown_channel_frames() == 0


def test_periods_come_from_the_dbc_cycle_time(small_dbc: Path) -> None:
    assert build_decoder([("can0", [small_dbc], "auto")], ["Speed.Value"]).periods == (None,)
    decoder = build_decoder([("can0", [REFERENCE_DBC], "auto")], ["DriveSpeed.VehicleSpeed"])
    assert decoder.periods[0] is not None and 0 < decoder.periods[0] <= 1


def test_a_repeated_payload_gives_the_same_updates_and_is_counted_each_time(small_dbc: Path) -> None:
    decoder = build_decoder([("can0", [small_dbc], "auto")], ["Speed.Value"])
    first = decoder.decode(frame(257, bytes(range(8))))
    again = decoder.decode(frame(257, bytes(range(8))))
    changed = decoder.decode(frame(257, bytes(range(1, 9))))
    assert again == first != changed != []
    assert decoder.decode(frame(257, bytes(range(8)))) == first  # back to the first payload: decoded anew
    assert decoder.stats.decoded == decoder.stats.frames == 4
    short = frame(257, bytes(range(2)))  # shorter than its message: counted each time, never remembered
    decoder.decode(short)
    decoder.decode(short)
    assert decoder.stats.truncated[("can0", 257)] == 2
