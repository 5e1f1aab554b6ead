"""``edge-receiver history`` (:mod:`receiver.history`, :mod:`receiver.commands.history`) on real stores,
SQLite and PostgreSQL: the finest resolution that fits N, never more than N buckets per signal, the
same numbers as the raw samples give, gaps left as gaps, and one-line errors."""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.wire.values import Schema
from receiver import history
from receiver.cli import main
from receiver.store import Store
from receiver.windows import WIDTHS
from tests.harness import bench_history

RATE = 10
SCHEMA = Schema(Fraction(RATE), bench_history.SCHEMA.signals)
VIN = bench_history.VIN
START = 1_700_006_400  # a multiple of 900 s
NAMES = sorted(spec.name for spec in SCHEMA.signals)  # what history prints by default
Line = tuple[Fraction, str, int, Any, float, Any]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An hour of data, an hour of silence, then 50 minutes more: 10 Hz, four signals."""
    if request.param == "sqlite":
        target = str(tmp_path_factory.mktemp("history") / "store.sqlite")
    else:
        target = request.getfixturevalue("postgres").store()
    with Store(target) as store:
        for seconds, start, boot in ((3600, START, bytes(16)), (3000, START + 7200, bytes(range(16)))):
            for batch in bench_history.batches(seconds, start, VIN, SCHEMA, boot):
                store.store_batch(batch)
    return target


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def query(db: str, capsys: pytest.CaptureFixture[str], *options: str) -> list[Line]:
    code, out, err = run(["history", "--db", db, "--vin", VIN, *options], capsys)
    assert (code, err) == (0, ""), err
    header, *lines = out.splitlines()
    assert header + "\n" == history.HEADER
    parsed = []
    for line in lines:
        start, name, count, low, mean, high = line.split(",")
        parsed.append((Fraction(start), name, int(count), number(low), float(mean), number(high)))
    return parsed


def number(cell: str) -> Any:
    return float(cell) if "." in cell or "e" in cell else int(cell)


@pytest.fixture(scope="module")
def samples(db: str) -> tuple[Fraction, list[tuple[int, list[Any]]]]:
    """The stored samples as ``edge-receiver export`` reads them: the grid, and (tick, values of NAMES)."""
    with Store(db, readonly=True) as store:
        return store.rate(VIN), list(store.rows(VIN, NAMES))


def oracle(
    samples: tuple[Fraction, list[tuple[int, list[Any]]]], width: Fraction, start: Fraction, end: Fraction
) -> Iterator[Line]:
    """The buckets computed from the samples, independently: tick t is at t / grid seconds."""
    grid, rows = samples
    per = width * grid  # ticks per bucket
    first, last = math.floor(start / width), math.floor(end / width)
    held: dict[tuple[int, int], list[Any]] = {}
    for tick, values in rows:
        bucket = tick * per.denominator // per.numerator
        if first <= bucket <= last:
            for place, value in enumerate(values):
                held.setdefault((bucket, place), []).append(value)
    for (bucket, place), values in sorted(held.items()):
        yield bucket * width, NAMES[place], len(values), min(values), sum(values) / len(values), max(values)


def assert_matches(got: list[Line], want: list[Line]) -> None:
    assert [line[:4] + line[5:] for line in got] == [line[:4] + line[5:] for line in want]
    assert all(math.isclose(a[4], b[4], rel_tol=1e-9, abs_tol=1e-9) for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize(
    ("seconds", "points", "width", "level"),
    [
        (10, 1000, Fraction(1, 50), None),  # 10 s: 20 ms buckets of the raw samples (501; 10 ms: 1,001)
        (600, 1000, Fraction(1), None),
        (7200, 1000, Fraction(60), 60),  # too many raw values to read: the 60 s rollups
        (86_400, 1000, Fraction(300), 300),  # a day in 1,000 points
        (86_400, 100, Fraction(900), 900),
        (86_400, 10, Fraction(900 * 11), 900),  # 900 s rollups merged by 11: 10 buckets (by 10: 11)
        (365 * 86_400, 1000, Fraction(900 * 36), 900),
    ],
)
def test_choose_takes_the_finest_resolution_that_fits(
    seconds: int, points: int, width: Fraction, level: int | None
) -> None:
    start = Fraction(START)
    plan = history.choose(start, start + seconds, points, Fraction(seconds * 50 * 4))
    assert plan == history.Plan(width, level)


@settings(max_examples=150, deadline=None)
@given(
    start=st.fractions(-(10**7), 2 * 10**9, max_denominator=1000),
    length=st.fractions(0, 10**8, max_denominator=1000),
    points=st.integers(1, 3000),
    raw=st.integers(0, 10**6),
)
def test_choose_never_gives_more_than_points_buckets(
    start: Fraction, length: Fraction, points: int, raw: int
) -> None:
    end = start + length
    if points == 1 and start < 0 <= end:
        return  # refused: every width's buckets meet at 0 s
    plan = history.choose(start, end, points, Fraction(raw))
    assert history.buckets(start, end, plan.width) <= points
    finer = [w for w in (*history.FINE, *map(Fraction, WIDTHS)) if w < plan.width]
    if plan.level is not None:
        finer = [w for w in finer if w >= WIDTHS[0] or raw <= history.RAW_VALUES]
    assert all(history.buckets(start, end, w) > points for w in finer)
    assert plan.level is not None or plan.width in history.FINE


@pytest.mark.parametrize(
    ("offset", "seconds", "points", "width"),
    [
        (1800, 60, 1000, Fraction(1, 10)),  # raw: 0.1 s
        (1700, 600, 1000, Fraction(1)),  # raw, across a minute boundary
        (0, 12_600, 1000, Fraction(60)),  # the whole span, from the 60 s rollups
        (100, 12_000, 100, Fraction(300)),
        (0, 12_600, 20, Fraction(900)),
        (0, 12_600, 5, Fraction(2700)),  # 900 s merged by 3
    ],
)
def test_history_gives_the_samples_numbers_at_the_chosen_width_within_points(
    db: str,
    samples: tuple[Fraction, list[tuple[int, list[Any]]]],
    capsys: pytest.CaptureFixture[str],
    offset: int,
    seconds: int,
    points: int,
    width: Fraction,
) -> None:
    start, end = Fraction(START + offset), Fraction(START + offset + seconds)
    got = query(db, capsys, "--from", str(start), "--to", str(end), "--points", str(points))
    assert_matches(got, list(oracle(samples, width, start, end)))
    for name in NAMES:
        assert 0 < sum(1 for line in got if line[1] == name) <= points
    assert all(line[0] % width == 0 for line in got)


def test_gaps_stay_gaps_and_the_default_range_is_the_data(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    got = query(db, capsys, "--signals", "Motor.Rpm,Gear.Gear", "--points", "300")  # 60 s buckets
    starts = sorted({line[0] for line in got})
    assert starts[0] == START and starts[-1] == START + 7200 + 3000 - 60
    assert not [s for s in starts if START + 3600 <= s < START + 7200]  # the silent hour: no line
    assert len(starts) == 60 + 50 and [line[1] for line in got[:2]] == ["Motor.Rpm", "Gear.Gear"]
    rpm = [line for line in got if line[1] == "Motor.Rpm"]
    assert all(type(line[3]) is int and type(line[5]) is int for line in rpm)  # an integer signal


def test_the_raw_path_has_a_budget(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    window = ["--from", str(START + 60), "--to", str(START + 660), "--signals", "Drive.Speed"]
    assert {line[0] % 1 for line in query(db, capsys, *window)} == {0} and len(
        query(db, capsys, *window)
    ) == 601
    monkeypatch.setattr(history, "RAW_VALUES", 1000)  # 6,000 values in the range: too many
    assert {line[0] % 60 for line in query(db, capsys, *window)} == {0}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--vin", VIN[:-1] + "2"], "unknown vin 'BENCH0HISTORY0002'"),
        (["--vin", VIN, "--signals", "Motor.Rmp"], "has no signal 'Motor.Rmp' (did you mean 'Motor.Rpm'?)"),
        (["--vin", VIN, "--points", "0"], "--points '0': expected a whole number of buckets, at least 1"),
        (["--vin", VIN, "--points", "many"], "--points 'many'"),
        (["--vin", VIN, "--from", "20", "--to", "10"], "--from 20 is after --to 10"),
        (["--vin", VIN, "--from", "yesterday"], "--from 'yesterday': expected seconds"),
        (["--vin", VIN, "--from", "1e12"], "is after --to"),
    ],
)
def test_bad_input_is_one_line(
    db: str, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    code, out, err = run(["history", "--db", db, *options], capsys)
    assert (code, out) == (2, "")
    assert err.startswith("edge-receiver history: error: ") and message in err and err.count("\n") == 1


def test_a_store_without_rollups_answers_raw_queries_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "old.sqlite"
    with Store(path) as store:
        for batch in bench_history.batches(600, START, VIN, SCHEMA):
            store.store_batch(batch)
    connection = apsw.Connection(str(path))  # a store of schema 4 that no new receiver opened yet
    connection.execute("DROP TABLE rollups; DROP TABLE rollup_backfill")
    connection.close()
    code, out, err = run(["history", "--db", str(path), "--vin", VIN], capsys)
    assert code == 2 and "no rollups yet" in err
    code, out, err = run(
        ["history", "--db", str(path), "--vin", VIN, "--from", str(START), "--to", str(START + 60)], capsys
    )
    assert (code, err) == (0, "") and out.count("\n") == 1 + 4 * 601  # 0.1 s raw buckets
