"""The lossless rows of `make bench` measure what they say: our batches and zstd -19 over the raw frames."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest

from tests.harness import bench_lossless as bl

SET = bl.SignalSet("kona P-CAN, wheels", bl.KONA_PCAN, bl.KONA_20[:8])


@pytest.fixture(autouse=True)
def realdata() -> None:
    if not SET.profile.log.exists():
        pytest.skip(f"the real recordings are absent ({SET.profile.log.parent} not found)")


def test_raw_frames_are_those_of_the_carrying_messages() -> None:
    count, log = bl.raw_frames(SET.profile, SET.names)
    ids, at = set(), 0
    for _ in range(count):
        _, frame_id, length = struct.unpack_from("<IIB", log, at)
        ids.add(frame_id)
        at += 9 + length
    assert at == len(log)
    assert ids == {0x386, 0x387}  # IEB_386_WHEEL and IEB_387_WHEEL, nothing else


def test_measure_compares_the_same_ticks() -> None:
    m = bl.measure(SET)
    assert m.signals == 8 and m.ticks > 500 and m.frames > 500
    assert 0 < m.by_hash < m.ours < m.raw  # the schema costs bytes; both far below the raw frames
    assert m.ratio <= bl.TARGET
    doubled = bl.measure(SET, codec=lambda d, schema: 2 * bl.batches(d, schema))
    assert doubled.ours == 2 * m.ours  # a codec given replaces ours


def test_rows_have_a_baseline_and_a_ratio(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    absent = dataclasses.replace(bl.KONA_PCAN, log=tmp_path / "absent.log")
    monkeypatch.setattr(bl, "SETS", (SET, bl.SignalSet("absent", absent)))
    lines: list[str] = []
    rows = bl.lossless_rows(lines.append)
    assert len(rows) == 1 and len(lines) == 2 and "absent" in lines[1]
    for measure, ours, baseline, unit, note in rows:
        assert unit == "B" and baseline is not None and 0 < ours < baseline, measure
        assert "ratio" in note
