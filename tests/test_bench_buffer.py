"""The buffer rows of `make bench` still measure something: every step on two minutes of driving (< 30 s)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from tests.harness import bench_buffer as bb
from tests.harness.bench import ProcessRun, Row
from tests.harness.broker import require_mosquitto

DRIVE_S = 120
SAMPLES = DRIVE_S * bb.RATE_HZ  # 6,000 ticks of the 50 Hz grid (the sampler emits one fewer or so)


def sane(value: float, low: float, high: float) -> bool:
    return math.isfinite(value) and low <= value <= high


def test_every_measure_on_two_minutes_of_driving(tmp_path: Path) -> None:
    require_mosquitto()
    lines: list[str] = []
    started = time.monotonic()
    results = bb.measure(DRIVE_S, cache=tmp_path / "cache", progress=lines.append, naive_bound_s=10)
    assert time.monotonic() - started < 60
    assert lines and all(isinstance(line, str) for line in lines)

    outage = results.outage  # our agent, broker down: everything stays in the buffer
    assert outage.watched.run.returncode == 1  # incomplete: nothing could be acked
    assert SAMPLES - 5 <= outage.samples <= SAMPLES + 1
    assert outage.report["pending_chunks"] == outage.report["chunks_committed"] >= SAMPLES // 50
    assert outage.report["bytes_sent"] == 0
    assert sane(outage.watched.write_bytes, 1 << 20, 50 * bb.MB)  # the 1 MiB reserve at least
    assert outage.watched.final_io["write_bytes"] >= outage.watched.last.write_bytes
    assert sane(outage.watched.last.rss_kib / 1024, 20, 1000)
    assert sane(outage.at_tenth.rss_kib / 1024, 20, 1000)

    cadence = results.cadence  # one chunk per transaction, measured on itself
    assert cadence.chunks == outage.report["chunks_committed"]
    assert 1 <= cadence.online_chunks <= cadence.chunks
    assert sane(cadence.offline_bytes / cadence.chunks, 4096, 1 << 20)
    assert sane(cadence.online_bytes / cadence.online_chunks, 4096, 1 << 20)
    assert sane(cadence.status_per_write, 4096, 64 * 1024)  # one fsynced page at least
    assert cadence.online() > cadence.offline() > cadence.offline_bytes

    store = results.store  # the naive agent, one COMMIT per sample, a bounded part of the drive
    assert store.samples == round(SAMPLES * bb.NAIVE_STORE_PART)
    assert sane(store.before_close / store.samples, 4096, 1 << 20)
    assert store.watched.write_bytes >= store.before_close
    assert store.per_drive(SAMPLES) > store.watched.write_bytes

    naive_out = results.naive_out  # the naive agent queueing in paho while the broker is down
    assert naive_out.samples == round(SAMPLES * bb.NAIVE_OUTAGE_PART)
    assert naive_out.refused == 0  # far below paho's 65,535 message ids
    assert sane(naive_out.watched.last.rss_kib / 1024, 20, 1000)

    drain = results.drain  # the real daemon drains the outage's buffer to the real receiver
    assert drain.watched.run.returncode == 0 and drain.report["complete"]
    assert drain.chunks == cadence.chunks and drain.samples == outage.samples
    assert drain.report["chunks_acked"] == drain.chunks
    assert sane(drain.seconds, 0.001, drain.watched.run.seconds)
    assert drain.from_log or drain.seconds == drain.watched.run.seconds  # 2 minutes fit in one batch
    assert drain.cpu_s.keys() == {"receiver", "mosquitto", "agent"}
    assert all(sane(cpu, 0, 60) for cpu in drain.cpu_s.values()), drain.cpu_s
    assert results.naive_drained == store.samples  # every stored row reached the naive receiver
    assert sane(results.naive_drain_s, 0.001, 10)

    rows = bb.rows_of(results)
    assert len(rows) == 7 and all(isinstance(row, Row) for row in rows)
    growth = [row for row in rows if "growth" in row.measure]
    for row in rows:
        assert math.isfinite(row.ours) and math.isfinite(row.naive), row
        assert row.note, row
        if row not in growth:
            assert row.ours > 0 and row.naive > 0, row
            assert row.ratio.endswith(("better", "worse")), row


def test_drive_log_is_cached(tmp_path: Path) -> None:
    first = bb.drive_log(2, cache=tmp_path, progress=lambda _: None)
    stamp = first.stat().st_mtime_ns
    again = bb.drive_log(2, cache=tmp_path, progress=lambda _: pytest.fail("simulated twice"))
    assert again == first and again.stat().st_mtime_ns == stamp


def test_drain_span_reads_the_uploader_state_changes() -> None:
    events = [
        {"event": "agent_starting", "timestamp": "2026-01-01T00:00:00.000000Z"},
        {"event": "state_changed", "state": "ONLINE", "reason": "connected (Success)",
         "timestamp": "2026-01-01T00:00:01.250000Z"},
        {"event": "state_changed", "state": "DRAINING", "reason": "backlog found",
         "timestamp": "2026-01-01T00:00:01.300000Z"},
        {"event": "state_changed", "state": "ONLINE", "reason": "backlog sent",
         "timestamp": "2026-01-01T00:00:03.750000Z"},
    ]  # fmt: skip
    span = bb.drain_span(events)
    assert span is not None and abs(span - 2.5) < 1e-6
    assert bb.drain_span(events[:3]) is None


def test_naive_store_scales_its_close_once() -> None:
    run = ProcessRun(1.0, 0, 1000, 0.5)
    watched = bb.Watched(run, [bb.Probe(0.5, 1000, 1000, 100, 10)], {"write_bytes": 1_100})
    store = bb.NaiveStore(watched, samples=10, before_close=1_000)
    assert store.per_drive(100) == 10_000 + 100
