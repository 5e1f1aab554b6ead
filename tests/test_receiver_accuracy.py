"""The largest-error report (:mod:`receiver.accuracy`, ``edge-receiver accuracy``): the stored values beside
the truth, per signal, beside the bound its agent declared on the wire."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from agent import wire
from agent.config import BOUNDS_PRESETS
from agent.errors import ConfigError, WireError
from agent.wire.values import ChunkData, Schema, SignalSpec
from receiver import accuracy
from receiver.cli import main
from receiver.store import Store
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


def test_declared_bounds_are_in_each_signal_s_unit() -> None:
    specs = [
        SignalSpec("A.speed", scale=0.01, bound_raw=89),
        SignalSpec("N.heading", scale=-0.1, bound_raw=50, predictor="hold angle 3600 0"),
        SignalSpec("F.flag"),
        SignalSpec("I.ieee", is_float=True, integer_scaled=False),
    ]
    bounds, angles = accuracy.declared_bounds(specs)
    assert bounds == {"A.speed": pytest.approx(0.89), "N.heading": 5.0} and angles == {"N.heading": 360.0}
    with pytest.raises(WireError, match=r"N\.x: the coding its agent declared does not parse"):
        accuracy.declared_bounds([SignalSpec("N.x", predictor="kalman")])


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["accuracy", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_drive_through_the_codec_at_the_seeds_bounds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.harness import bench_codec

    profile = next(p for p in bench_codec.PROFILES if p.name == "highway")
    drive = bench_codec.drive(profile)
    schema = bench_codec.schema_of(drive, seeds=True)
    chunks = bench_codec.chunks(drive)[:120]
    blobs = [wire.encode_chunk(schema, c) for c in chunks]
    batches = [wire.decode_batch(wire.encode_batch("V1", schema, blobs[i : i + 60])) for i in (0, 60)]
    db = tmp_path / "store.sqlite"
    with Store(db) as store:
        for decoded in batches:
            store.store_batch(decoded)

    def csv(source: list[ChunkData], path: Path) -> Path:
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

    truth = csv(chunks, tmp_path / "truth.csv")
    export = csv([c for decoded in batches for c in decoded.chunks], tmp_path / "export.csv")
    for source in (
        ["--db", str(db), "--vin", "V1"],
        ["--db", str(db), "--vin", "V1", "--export", str(export)],
    ):
        code, out, err = run(["--truth", str(truth), *source], capsys)
        assert (code, err) == (0, ""), out + err
        assert "6000 ticks compared, 0 missing from the export, 0 only in the export" in out
    with Store(db, readonly=True) as store:
        bounds, angles = accuracy.declared_bounds(store.declared("V1").values())
    report = accuracy.compare(truth.open(), export.open(), bounds, angles)
    errors = {s.name: (s.max_error, s.bound) for s in report.signals if s.max_error}
    seeds = BOUNDS_PRESETS["seeds"]
    assert set(errors) == set(bounds) == set(seeds.bounds) and angles == seeds.angles
    assert all(0 < bound <= seeds.bounds[name] + 1e-9 for name, bound in bounds.items())  # ε as coded
    assert all(error <= bound + 1e-9 for error, bound in errors.values())
    assert report.ticks == 6000 and report.ok
    code, out, _ = run(["--truth", str(truth), "--export", str(export)], capsys)  # no bounds: lossless
    assert code == 1 and "BEYOND ITS BOUND" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--truth", "missing.csv", "--export", "{tmp}/got.csv"],
            "missing.csv: cannot read the truth CSV: No such file",
        ),
        (
            ["--truth", "{tmp}/truth.csv", "--export", "gone.csv"],
            "gone.csv: cannot read the export CSV: No such file",
        ),
        (
            ["--truth", "{tmp}/latin.csv", "--export", "{tmp}/got.csv"],
            "latin.csv: the truth CSV is not UTF-8 text",
        ),
        (["--truth", "missing.csv", "--db", "{tmp}/store.sqlite", "--vin", "V1"], "missing.csv: cannot read"),
        (["--truth", "{tmp}/truth.csv", "--db", "{tmp}/store.sqlite", "--vin", "V2"], "unknown vin 'V2'"),
        (["--truth", "{tmp}/truth.csv", "--db", "{tmp}/none.sqlite", "--vin", "V1"], "no store at"),
        (
            ["--truth", "{tmp}/other.csv", "--db", "{tmp}/store.sqlite", "--vin", "V1"],
            "no signal 'A.sped' (did you mean 'A.speed'?)",
        ),
        (["--truth", "{tmp}/truth.csv", "--db", "{tmp}/store.sqlite"], "--db and --vin go together"),
        (["--truth", "{tmp}/truth.csv"], "give --db PATH --vin VIN, or --export CSV"),
        (
            ["--truth", "{tmp}/truth.csv", "--export", "{tmp}/got.csv", "--bound", "A.speed"],
            "--bound 'A.speed': expected",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "truth.csv").write_text(TRUTH)
    (tmp_path / "got.csv").write_text(TRUTH)
    (tmp_path / "other.csv").write_text("timestamp,A.sped\n1.000000,1\n")
    (tmp_path / "latin.csv").write_bytes(b"timestamp,A.\xe9\n")
    schema = Schema(Fraction(50), (SignalSpec("A.speed", scale=0.5, integer_scaled=False),))
    with Store(tmp_path / "store.sqlite") as store:
        store.store_batch(wire.decode_batch(wire.encode_batch("V1", schema, [])))  # no chunk: its schema
    code, out, err = run([arg.replace("{tmp}", str(tmp_path)) for arg in argv], capsys)
    assert (code, out) == (2, "") and err.startswith("edge-receiver accuracy: error: "), err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
