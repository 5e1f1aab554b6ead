"""The benchmark's naive baseline is honest: every sample of a drive arrives once, with the agent's values."""

from __future__ import annotations

import json
import math
import sqlite3
from fractions import Fraction
from pathlib import Path

import pytest

from agent.decode import build_decoder
from agent.sample import Sampler, to_micros
from agent.sim import simulate, write_log
from agent.source import read_log
from agent.wire.values import PhysicalValue
from tests.harness import bench, naive
from tests.harness.broker import Broker

DBC = bench.DBC
VIN = "TEST0NAIVE0000001"


def agent_grid(log: Path) -> dict[int, dict[str, PhysicalValue]]:
    """What our agent samples from ``log``: tick -> physical value of every signal seen so far."""
    decoder = build_decoder([("can0", [DBC], "auto")])
    specs = decoder.signals
    grid: dict[int, dict[str, PhysicalValue]] = {}

    def emit(tick: int, values: list[int | float | None]) -> None:
        grid[tick] = {s.name: s.to_physical(v) for s, v in zip(specs, values, strict=True) if v is not None}

    sampler = Sampler(Fraction(50), len(specs), emit)
    for frame in read_log(log):
        sampler.feed(to_micros(frame.timestamp), decoder.decode(frame))
    sampler.finish()
    return grid


def test_naive_agent_and_receiver_store_every_sample_exactly_once(broker: Broker, tmp_path: Path) -> None:
    log = tmp_path / "drive.log.gz"
    frames = write_log(log, simulate("city", 2.0, 11, DBC))
    expected = agent_grid(log)
    assert 95 <= len(expected) <= 101
    db, report = tmp_path / "naive.sqlite", tmp_path / "report.json"
    receiver = bench.start_naive_receiver(db, broker.port, tmp_path / "receiver.log", timeout=15)
    try:
        run = bench.timed_run(
            bench.naive_agent_argv(log, VIN, broker.port, report, 15), tmp_path / "agent.log", timeout=20
        )
        assert run.returncode == 0, bench.tail(tmp_path / "agent.log")
        assert run.seconds > 0 and run.max_rss_kib > 0 and run.cpu_s > 0
        assert bench.wait_rows(db, len(expected), 10, lambda: receiver.poll() is None)
    finally:
        bench.stop_process(receiver)  # graceful: whatever it was still handling is committed first
    figures = json.loads(report.read_text())
    assert figures == {
        "frames": frames,
        "samples": len(expected),
        "bytes_sent": figures["bytes_sent"],
        "acked": len(expected),
        "complete": True,
    }
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT vin, ts, data FROM telemetry ORDER BY rowid").fetchall()
    rate = naive.grid_rate(50.0)
    stored = [naive.tick_of(ts, rate) for _, ts, _ in rows]
    assert sorted(stored) == sorted(expected)  # every tick of the agent's grid, none twice, none extra
    assert {vin for vin, _, _ in rows} == {VIN}
    assert sum(len(data) for _, _, data in rows) == figures["bytes_sent"]
    for (_, ts, data), tick in zip(rows, stored, strict=True):
        sample = json.loads(data)
        assert sample.pop("ts") == ts
        assert sample.keys() == expected[tick].keys()
        for name, value in sample.items():  # cantools' scaled value is the agent's physical value
            assert math.isclose(value, expected[tick][name], rel_tol=1e-12, abs_tol=1e-9), (tick, name)


def test_print_table_renders_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        bench.Row("agent", 200_000.0, 50_000.0, "frames/s", "the whole pipeline"),
        bench.Row("wire bytes per sample", 6.0, 1248.0, "B", higher_is_better=False, digits=1),
        bench.Row("agent CPU", 3.0, 2.0, "s", higher_is_better=False, digits=2),
        bench.Row("missing", math.nan, 1.0, "x"),
    ]
    bench.print_table(rows, ["machine: test"])
    lines = capsys.readouterr().out.splitlines()
    assert [cell.strip() for cell in lines[0].split("|")] == ["measure", "ours", "naive (seeds)", "ratio"]
    assert [cell.strip() for cell in lines[2].split("|")] == [
        "agent (frames/s)",
        "200,000",
        "50,000",
        "4.00x better",
    ]
    assert lines[3].split("|")[-1].strip() == "208.0x better"
    assert lines[4].split("|")[-1].strip() == "1.50x worse"
    assert [cell.strip() for cell in lines[5].split("|")] == ["missing (x)", "n/a", "1", "n/a"]
    assert "- agent (frames/s): the whole pipeline" in lines
    assert lines[-1] == "machine: test"


def test_tls_rows_compare_medians_per_driven_hour() -> None:
    opened = [bench.Pass(3.0, 0.20), bench.Pass(2.0, 0.30), bench.Pass(9.0, 0.25)]
    secured = [bench.Pass(3.5, 0.40), bench.Pass(2.5, 0.50), bench.Pass(3.0, 0.90)]
    hours = bench.driven_hours(18_000, 50.0)
    assert hours == pytest.approx(0.1)
    cpu, ingest = bench.tls_rows(opened, secured, 18_000, hours, floor_cpu_s=1.0)
    assert (cpu.ours, cpu.naive) == pytest.approx((20.0, 20.0))  # medians 3.0 and 3.0, less the floor, x 10
    assert (ingest.ours, ingest.naive) == pytest.approx((36_000.0, 72_000.0))  # medians 0.50 s and 0.25 s
    assert ingest.ratio == "2.00x worse vs no TLS"
    assert bench.TLS in cpu.name and bench.TLS in ingest.name
    assert "TLS: 3.50, 2.50, 3.00; open: 3.00, 2.00, 9.00" in cpu.note


def test_the_receiver_row_runs_in_the_secure_setup(tmp_path: Path) -> None:
    log = tmp_path / "drive.log.gz"
    write_log(log, simulate("city", 3.0, 5, DBC))
    net = bench.secure_network(tmp_path)
    try:
        encoded = bench.encode_drive(bench.write_agent_config(tmp_path, net.port, log), log)
        seconds, batches, _ = bench.our_receiver(tmp_path, net, encoded)  # raises unless all is acked
        config = (tmp_path / "receiver-store-row.yaml").read_text()
    finally:
        net.close()
    assert seconds > 0 and batches == 1
    assert "tls: true" in config and "fleet_key_file" in config  # the receiver checked every MAC
