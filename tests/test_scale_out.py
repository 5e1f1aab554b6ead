"""Scale-out, proved with real processes: two ``edge-receiver run`` in one share group on one PostgreSQL,
three ``edge-agent replay`` draining backlogs into them, one receiver killed with SIGKILL mid-drain and
started again. Then each vehicle's export equals ``edge-agent sample`` of its log byte for byte, and the
chaos suite's checker (:mod:`tests.harness.checker`) finds nothing lost, nothing duplicated, nothing out
of order.

The backlog: the agents replay their whole drive into their buffers while no receiver is up (the broker
drops what no subscriber takes; nothing is acked, so nothing is deleted), then drain it at a capped
bandwidth, so that the drain lasts a few seconds, long enough to kill a receiver in the middle of it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from agent.sim import simulate, write_log
from tests.harness.broker import Broker
from tests.harness.checker import Boot, BufferWatcher, CommitHistory, boot_id_from_log, check
from tests.harness.drive import DBC, ROOT, SIGNALS
from tests.harness.postgres import Postgres
from tests.harness.processes import exported, truth
from tests.harness.waiting import wait_for, wait_for_text

pytestmark = pytest.mark.slow

FLEET = [
    ("SCALE0OUT00000001", "city", 21),
    ("SCALE0OUT00000002", "highway", 22),
    ("SCALE0OUT00000003", "aggressive", 23),
]


def agent_yaml(folder: Path, port: int, vin: str, log: Path) -> Path:
    path = folder / f"{vin}.yaml"
    path.write_text(
        f"vin: {vin}\nsource: {{kind: replay, log: {log}, speed: max}}\n"
        f"buses:\n  - {{channel: can0, dbc: [{DBC}]}}\n"
        f"sampling: {{signals: [{', '.join(SIGNALS)}]}}\n"
        f"buffer: {{path: {folder / vin}.sqlite, commit_interval_s: 0.2}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {port}, keepalive_s: 5}}\n"
        "upload: {ack_timeout_s: 2, max_batch_bytes: 2048, max_bytes_per_s: 3000}\nlogging: {format: json}\n"
    )
    return path


def start_receiver(folder: Path, name: str, port: int, url: str) -> tuple[subprocess.Popen[bytes], Path]:
    config = folder / f"{name}.yaml"
    config.write_text(
        f"mqtt: {{host: 127.0.0.1, port: {port}, client_id: {name}, keepalive_s: 5}}\n"
        f"store: {{dsn: '{url}'}}\nlogging: {{format: json}}\n"
    )
    log = folder / f"{name}-{time.monotonic_ns()}.log"
    with open(log, "wb") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "receiver.cli", "run", "--config", str(config)], cwd=ROOT, stderr=errors
        )
    return process, log


def committed(history: CommitHistory) -> dict[str, int]:
    """Per vin, the samples of the chunks seen in its agent's buffer so far."""
    totals: dict[str, int] = {}
    for (vin, _, _), chunk in list(history.chunks.items()):
        totals[vin] = totals.get(vin, 0) + chunk.sample_count
    return totals


def stored_chunks(url: str) -> int:
    with psycopg.connect(url) as connection:
        return int(connection.execute("SELECT count(*) FROM chunks").fetchone()[0])  # type: ignore[index]


def test_two_receivers_on_one_postgresql_lose_and_duplicate_nothing_when_one_is_killed(
    broker: Broker, postgres: Postgres, tmp_path: Path
) -> None:
    url = postgres.store()
    logs = {}
    for vin, personality, seed in FLEET:
        logs[vin] = tmp_path / f"{vin}.log.gz"
        write_log(logs[vin], simulate(personality, 40.0, seed=seed, dbc_path=DBC))
    truths = {vin: truth(log) for vin, log in logs.items()}
    samples = {vin: len(text.splitlines()) - 1 for vin, text in truths.items()}
    history = CommitHistory()
    watcher = BufferWatcher(history, {vin: tmp_path / f"{vin}.sqlite" for vin in logs}, interval_s=0.1)
    agents = {}
    for vin, log in logs.items():
        command = [sys.executable, "-m", "agent.cli", "replay", str(log), "--config"]
        command += [
            str(agent_yaml(tmp_path, broker.port, vin, log)),
            "--report",
            str(tmp_path / f"{vin}.json"),
        ]
        with open(tmp_path / f"{vin}.err", "wb") as errors:
            agents[vin] = subprocess.Popen([*command, "--drain-timeout", "60"], cwd=ROOT, stderr=errors)
    watcher.start()
    receivers: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    try:
        # The whole drive sampled and committed by every agent, none of it acked: a backlog each.
        wait_for(lambda: committed(history) == samples, 30, "the drives to be committed")
        for name in ("receiver-a", "receiver-b"):
            receivers[name] = start_receiver(tmp_path, name, broker.port, url)
        for _, log in receivers.values():
            wait_for_text(log, '"event": "subscribed"')
        wait_for(lambda: stored_chunks(url) >= 10, 30, "the drain to start")
        victim, _ = receivers["receiver-a"]
        victim.kill()  # SIGKILL mid-drain: whatever it committed and did not ack comes again
        victim.wait(10)
        at_kill = stored_chunks(url)
        receivers["receiver-a"] = start_receiver(tmp_path, "receiver-a", broker.port, url)
        for vin, agent in agents.items():
            assert agent.wait(90) == 0, (tmp_path / f"{vin}.err").read_text()[-3000:]
    finally:
        for agent in agents.values():
            if agent.poll() is None:
                agent.kill()
        counters = {}
        for name, (process, log) in receivers.items():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(15)
            stopped = [line for line in log.read_text().splitlines() if '"receiver_stopped"' in line]
            counters[name] = json.loads(stopped[-1]) if stopped else {}
        watcher.stop()
    total = stored_chunks(url)
    assert at_kill < total, f"the kill came after the drain ({at_kill} of {total} chunks stored)"
    assert counters["receiver-b"].get("batches", 0) > 0, counters  # both took their share
    for vin in logs:
        lines = (tmp_path / f"{vin}.err").read_text().splitlines()
        history.add_boot(
            Boot(vin, boot_id_from_log(lines), json.loads((tmp_path / f"{vin}.json").read_text()))
        )
    for vin in logs:
        assert exported(url, vin) == truths[vin]  # type: ignore[arg-type]
    result = check(history, url, SIGNALS, truths)
    assert result.ok and result.lost == 0 and result.duplicates == 0, result.summary()
