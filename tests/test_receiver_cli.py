"""``edge-receiver`` (:mod:`receiver.cli`, :mod:`receiver.commands`): the exact CSV of ``export``, one-line
errors, ``stats``, ``check-config``, and ``run`` until SIGTERM. ``accuracy``: ``test_receiver_accuracy.py``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest

from agent.wire.values import Schema, SignalSpec, format_value
from receiver.cli import main
from receiver.store import Store
from tests.harness.batches import BOOT, C0, C1, C2, SCHEMA, VIN, batch, chunk, payload
from tests.harness.broker import Broker
from tests.harness.peer import Peer

ROOT = Path(__file__).resolve().parent.parent
THIRDS = Schema(Fraction(3), (SignalSpec("Slow.Level", scale=0.1, integer_scaled=False),))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "store.sqlite"
    with Store(path) as store:
        store.store_batch(batch([C0, C1, C2]))
        store.store_batch(batch([chunk(6, [60], [1], [1], [1.0])]))  # seqs 3..5 missing
        store.store_batch(batch([], evicted=[(BOOT, 4, 4)]))  # an eviction notice alone
        store.store_batch(batch([chunk(0, [1, 2, 4], [1, None, 7])], vin="THIRDS", schema=THIRDS))
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_export_prints_the_exact_csv(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        ["export", "--db", str(db), "--vin", VIN, "--signals", "Imu.Accel,Engine.Rpm"], capsys
    )
    assert (code, err) == (0, "")
    assert out == (
        "timestamp,Imu.Accel,Engine.Rpm\n"
        "0.000000,0.25,-20\n"
        "0.020000,,-18\n"
        "0.040000,,\n"
        "0.060000,-1.5,-14\n"
        "0.080000,,-12\n"
        "0.100000,,\n"
        "0.120000,,\n"  # a tick where every signal is absent is still a line
        "0.140000,2.0,\n"
        "0.180000,,\n"
        "0.240000,1e+300,0\n"
        "1.200000,1.0,-38\n"
    )


def test_export_defaults_to_all_signals_sorted_and_six_decimals(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["export", "--db", str(db), "--vin", "THIRDS"], capsys)
    assert code == 0
    assert out == "timestamp,Slow.Level\n0.333333,0.1\n0.666667,\n1.333333,0.7000000000000001\n"


def test_export_uses_the_same_helpers_as_edge_agent_sample(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What ``edge-agent sample`` prints: tick_seconds, then format_value of each physical value."""
    _, out, _ = run(["export", "--db", str(db), "--vin", VIN], capsys)
    names = sorted(SCHEMA.names)
    order = [SCHEMA.names.index(name) for name in names]
    lines = [",".join(["timestamp", *names])]
    for c in sorted([C0, C1, C2, chunk(6, [60], [1], [1], [1.0])], key=lambda c: c.ticks[0]):
        for position, tick in enumerate(c.ticks):
            raws = [c.columns[i][position] for i in order]
            cells = [
                format_value(None if raw is None else SCHEMA.signals[i].to_physical(raw))
                for i, raw in zip(order, raws, strict=True)
            ]
            lines.append(",".join([str(SCHEMA.tick_seconds(tick)), *cells]))
    assert out == "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--vin", "WVWZZZ1JZXW000002"], "unknown vin 'WVWZZZ1JZXW000002'"),
        (
            ["--vin", VIN, "--signals", "Engine.Rpm,Engine.Tmp"],
            "no signal 'Engine.Tmp' (did you mean 'Engine.Temp'?)",
        ),
        (["--vin", VIN, "--signals", "Engine.Rpm,"], "an empty signal name"),
    ],
)
def test_export_errors_are_one_line_and_exit_2(
    db: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["export", "--db", str(db), *argv], capsys)
    assert code == 2 and out == ""
    assert err.startswith("edge-receiver export: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_or_foreign_database_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["stats", "--db", str(tmp_path / "none.sqlite")], capsys)
    assert code == 2 and err == f"edge-receiver stats: error: no store at {tmp_path / 'none.sqlite'}\n"
    (tmp_path / "junk").write_bytes(b"junk" * 1000)
    code, _, err = run(["export", "--db", str(tmp_path / "junk"), "--vin", VIN], capsys)
    assert code == 2 and err.count("\n") == 1 and str(tmp_path / "junk") in err


def test_stats_lists_chunks_samples_and_gaps(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["stats", "--db", str(db)], capsys)
    assert code == 0
    assert out == (
        "THIRDS: 1 chunks, 3 samples, 2 values, 0 overlapping, 0 evicted, 0 missing\n"
        f"{VIN}: 4 chunks, 11 samples, 20 values, 0 overlapping, 1 evicted, 2 missing\n"
        f"  missing: boot {BOOT.hex()} seq 3-3\n"
        f"  missing: boot {BOOT.hex()} seq 5-5\n"
    )


def test_check_config_says_what_it_read_or_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "receiver.yaml"
    config.write_text("mqtt: {host: broker.example, port: 8883}\nstore: {path: store.sqlite}\n")
    code, out, _ = run(["check-config", "--config", str(config)], capsys)
    assert code == 0
    assert out == f"{config}: ok (broker broker.example:8883, store {tmp_path / 'store.sqlite'})\n"
    config.write_text("mqtt:\n  prot: 1883\n")
    code, out, err = run(["check-config", "--config", str(config)], capsys)
    assert (code, out) == (2, "")
    assert (
        err
        == f"edge-receiver check-config: error: {config}:2: mqtt.prot: unknown key (did you mean 'port'?)\n"
    )


def test_run_stores_and_acks_until_sigterm(broker: Broker, tmp_path: Path) -> None:
    store = tmp_path / "run.sqlite"
    config = tmp_path / "receiver.yaml"
    config.write_text(
        f"mqtt:\n  host: 127.0.0.1\n  port: {broker.port}\n  share_group: cli\n"
        f"store:\n  path: {store}\nlogging:\n  level: info\n  format: json\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "receiver.cli", "run", "--config", str(config)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    peer = Peer(broker)
    try:
        deadline = time.monotonic() + 15
        while peer.acks.empty():  # resend until the receiver is subscribed: duplicates are harmless
            assert time.monotonic() < deadline and process.poll() is None, "no ack from edge-receiver run"
            peer.publish(payload([C0]))
            time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    finally:
        peer.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events][-1] == "receiver_stopped"
    with Store(store, readonly=True) as reader:
        assert reader.stats()[0].chunks == 1
