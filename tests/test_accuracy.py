"""The largest-error report: an export beside the truth, per signal, beside its bound."""

from __future__ import annotations

import argparse
import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from agent import wire
from agent.errors import ConfigError
from agent.wire.values import Schema
from receiver import accuracy
from receiver.commands import accuracy as accuracy_command
from receiver.timeline import write_csv

TRUTH = """timestamp,A.speed,N.heading,F.flag
1.000000,10.0,359.5,0
1.020000,12.5,0.5,1
1.040000,15.0,,1
1.060000,20.0,180.0,0
"""


def lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def test_largest_error_per_signal_beside_its_bound() -> None:
    got = """timestamp,A.speed,N.heading,F.flag
1.000000,12.0,2.5,0
1.020000,12.5,357.5,1
1.040000,14.0,,1
1.060000,20.0,181.0,0
"""
    report = accuracy.compare(
        lines(TRUTH), lines(got), {"A.speed": 2.0, "N.heading": 5.0}, {"N.heading": 360}
    )
    by_name = {s.name: s for s in report.signals}
    assert by_name["A.speed"].max_error == 2.0 and by_name["A.speed"].at == "1.000000"
    assert by_name["N.heading"].max_error == pytest.approx(3.0)  # 359.5 -> 2.5 is 3°, not 357°
    assert by_name["F.flag"].max_error == 0 and by_name["F.flag"].bound == 0
    assert by_name["N.heading"].compared == 3 and report.ticks == 4 and report.ok
    text = accuracy.format_report(report)
    assert "A.speed" in text and "BEYOND" not in text and "4 ticks compared" in text


def test_beyond_the_bound_missing_ticks_and_presence_are_all_reported() -> None:
    got = """timestamp,F.flag,A.speed
1.000000,0,10.0
1.040000,,15.0
1.060000,1,20.0
1.080000,1,20.0
"""
    report = accuracy.compare(lines(TRUTH), lines(got))
    by_name = {s.name: s for s in report.signals}
    assert [s.name for s in report.signals] == ["F.flag", "A.speed"]  # the export's order
    assert by_name["F.flag"].max_error == 1 and not by_name["F.flag"].within
    assert by_name["F.flag"].presence_mismatches == 1
    assert (report.missing, report.extra, report.ok) == (1, 1, False)
    assert "BEYOND" in accuracy.format_report(report) or "mismatch" in accuracy.format_report(report)


def test_a_float_rounding_of_the_bound_itself_is_not_a_failure() -> None:
    truth = "timestamp,S.soc\n1.000000,62.2\n"
    got = "timestamp,S.soc\n1.000000,62.7\n"  # 62.7 - 62.2 = 0.5000000000000071 in binary
    assert accuracy.compare(lines(truth), lines(got), {"S.soc": 0.5}).ok


def test_not_a_csv_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="header does not start with 'timestamp'"):
        accuracy.compare(["a,b\n"], lines(TRUTH))
    with pytest.raises(ConfigError, match="export:3: 2 cells"):
        accuracy.compare(lines(TRUTH), ["timestamp,A.speed,N.heading,F.flag\n", "1.0,1,2,3\n", "1.1,2\n"])


def test_a_drive_through_the_codec_at_the_seeds_bounds(tmp_path: Path) -> None:
    from tests.harness import bench_codec

    profile = next(p for p in bench_codec.PROFILES if p.name == "highway")
    drive = bench_codec.drive(profile)
    schema = bench_codec.schema_of(drive, seeds=True)
    chunks = bench_codec.chunks(drive)[:120]
    blobs = [wire.encode_chunk(schema, c) for c in chunks]
    decoded = [
        c
        for i in (0, 60)
        for c in wire.decode_batch(wire.encode_batch("V", schema, blobs[i : i + 60])).chunks
    ]

    def csv(source: list[bench_codec.ChunkData], path: Path) -> Path:
        rows = (
            (
                t,
                [
                    s.to_physical(v) if v is not None else None
                    for s, v in zip(schema.signals, values, strict=True)
                ],
            )
            for c in source
            for t, values in zip(c.ticks, zip(*c.columns, strict=True), strict=True)
        )
        with open(path, "w", encoding="utf-8") as out:
            write_csv(out, schema.rate, schema.names, rows)  # the export's own writer
        return path

    truth, export = csv(chunks, tmp_path / "truth.csv"), csv(decoded, tmp_path / "export.csv")
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"vin: V1\nsource: {{kind: replay, log: {profile.log}}}\nbuses: [{{channel: can0, dbc: [{bench_codec.DBC}]}}]\n"
        "sampling: {bounds_preset: seeds}\n"
    )
    out = io.StringIO()
    with redirect_stdout(out):
        code = accuracy_command.run(
            argparse.Namespace(truth=truth, export=export, config=config, bound=[], angle=[])
        )
    assert code == 0, out.getvalue()
    report = accuracy.compare(truth.open(), export.open(), *accuracy.bounds_from_config(config, schema.names))
    errors = {s.name: (s.max_error, s.bound) for s in report.signals if s.max_error}
    assert set(errors) == {
        "DriveSpeed.VehicleSpeed",
        "BatteryPower.PackPower",
        "BatteryState.StateOfCharge",
        "Navigation.Heading",
    }
    assert all(error <= bound + 1e-9 for error, bound in errors.values())
    assert report.ticks == 6000 and report.ok
    assert isinstance(schema, Schema)
