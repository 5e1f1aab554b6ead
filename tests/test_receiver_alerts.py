"""Alert rules and episodes (receiver/alert_rules.py, receiver/alerts.py): the pure evaluation on hand-made
values; a real replay of replay_logs/panic_braking.log.gz stored through the real store gives its panic
stops exactly once whether batches come in order, twice, shuffled or across a reopened store, equal to an
independent computation from ``edge-agent sample``'s CSV; on SQLite and PostgreSQL; and published on a real
mosquitto at QoS 1, each row marked published once the broker confirms it."""

from __future__ import annotations

import itertools
import json
import queue
import random
import subprocess
import sys
import threading
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent import wire
from agent.errors import ConfigError
from agent.sim import default_dbc, simulate, write_log
from agent.source import read_log
from agent.wire.values import RawValue, Schema, SignalSpec
from receiver import alerts
from receiver.alert_rules import DEFAULT_RULES, AlertRule, AlertsConfig, Episode, Evaluator
from receiver.config import (
    ReceiverConfig,
    ReceiverMqttConfig,
    StoreConfig,
    load_receiver_config,
    parse_receiver_config,
)
from receiver.ingest import Receiver
from receiver.store import Store
from tests.harness.batches import BOOT, VIN, chunk, payload
from tests.harness.broker import Broker
from tests.harness.drive import DBC
from tests.harness.peer import TIMEOUT, Peer
from tests.harness.processes import sample_csv
from tests.harness.sampled import Sealed, payloads, sealed
from tests.harness.waiting import wait_for

LOG = Path(__file__).resolve().parents[1] / "replay_logs" / "panic_braking.log.gz"
HIGHWAY = LOG.with_name("highway.log.gz")
NAMES = sorted({rule.signal for rule in DEFAULT_RULES})
PANIC = next(rule for rule in DEFAULT_RULES if rule.name == "panic_stop")


# --- pure evaluation -------------------------------------------------------------------------------------


def run(rule: AlertRule, values: list[float | None], bound: float = 0.0, split: int = 0) -> list[Episode]:
    """Episodes of ``values`` at ticks 0.. (1 Hz), fed in one call or in two at ``split``."""
    evaluator, ticks = Evaluator(rule, bound, Fraction(1)), list(range(len(values)))
    parts = (
        [(ticks, values)] if not split else [(ticks[:split], values[:split]), (ticks[split:], values[split:])]
    )
    touched = [e for t, v in parts for e in evaluator.feed(t, v)]
    return [e for e in touched if e.end is not None] + (
        [touched[-1]] if touched and touched[-1].end is None else []
    )


def test_hysteresis_holds_an_episode_until_the_value_is_back_past_it() -> None:
    rule = AlertRule("hot", "T.X", above=10.0, hysteresis=2.0)
    values: list[float | None] = [9, 11, 9, 13, None, 8.5, 7.9, 12]
    got = run(rule, values)
    assert got == [Episode(1, 6, 13, 3), Episode(7, None, 12, 7)]
    for split in range(1, len(values)):
        assert run(rule, values, split=split) == got, split


def test_min_duration_and_peak_of_a_below_rule() -> None:
    rule = AlertRule("stop", "D.A", below=-7.0, min_duration_s=2.0)
    # a dip of 2 ticks (1 s) does not count; one of 3 ticks (2 s) does, from its first tick
    assert run(rule, [0, -8, -9, 0, -7.5, -9.5, -8, 0, float("nan")]) == [Episode(4, 7, -9.5, 5)]


def test_a_lossy_signal_alerts_only_when_the_real_value_is_past_the_threshold() -> None:
    rule = AlertRule("hot", "T.X", above=10.0)
    assert run(rule, [10.4, 10.6, 9], bound=0.5) == [Episode(1, 2, 10.6, 1)]
    assert run(rule, [10.4, 10.5, 9], bound=0.5) == []


# --- a real drive through the real store ----------------------------------------------------------------


def independent(csv: str, rule: AlertRule) -> list[tuple[float, float | None, float]]:
    """(start, end, peak) of the rule's episodes, from the CSV's rows: a second, plain implementation."""
    header, *rows = csv.splitlines()
    place = header.split(",").index(rule.signal)
    sign = -1 if rule.below is not None else 1
    threshold, minimum = sign * rule.threshold, Fraction(repr(rule.min_duration_s))
    out: list[tuple[float, float | None, float]] = []
    start: Fraction | None = None
    peak, counted = 0.0, False
    for line in rows:
        cells = line.split(",")
        if not cells[place]:
            continue
        at, value = Fraction(Decimal(cells[0])), sign * float(cells[place])
        if start is None:
            if value > threshold:
                start, peak, counted = at, value, minimum == 0
        elif value <= threshold - rule.hysteresis:
            if counted:
                out.append((float(start), float(at), sign * peak))
            start = None
        else:
            peak, counted = max(peak, value), counted or at - start >= minimum
    if start is not None and counted:
        out.append((float(start), None, sign * peak))
    return out


def head(log: Path, seconds: float, out: Path) -> Path:
    """The first ``seconds`` of a recorded log, as a log of its own (a shorter test, the same frames)."""
    frames = read_log(log)
    first = next(frames)
    end = first.timestamp + seconds
    write_log(out, itertools.chain([first], itertools.takewhile(lambda f: f.timestamp < end, frames)))
    return out


@pytest.fixture(scope="module")
def panic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sealed, str]:
    """The first 120 s of the panic braking drive (two panic stops), sealed, and its sample CSV."""
    log = head(LOG, 120.0, tmp_path_factory.mktemp("panic") / "panic.log.gz")
    csv = sample_csv(log, NAMES)
    return sealed(log, NAMES, BOOT), csv


def found(store: Store) -> set[tuple[Any, ...]]:
    rows = alerts.episodes(store)
    got = [(r["rule"], r["start"], r["end"], r["peak"]) for r in rows]
    assert len(got) == len(set(got)), "an episode stored twice"
    return set(got)


def deliver(
    target: str | Path, drive: Sealed, groups: list[list[int]], reopen_at: int | None = None
) -> set[Any]:
    store = Store(target)
    try:
        for index, payload in enumerate(payloads(VIN, drive, groups)):
            if index == reopen_at:  # a receiver restarted: a new connection, the cursor from the store
                store.close()
                store = Store(target)
            store.store_batch(wire.decode_batch(payload))
        return found(store)
    finally:
        store.close()


def assert_every_delivery_finds(
    want: set[Any], drive: Sealed, new_target: Callable[[], str | Path], seed: int
) -> None:
    """In order (batches of 20 chunks); each batch twice with the store reopened midway; shuffled
    (batches of 15, the first five again, a reopen): the same episodes, each once."""
    n = len(drive.chunks)
    in_order = [list(range(i, min(i + 20, n))) for i in range(0, n, 20)]
    assert deliver(new_target(), drive, in_order) == want
    twice = [g for group in in_order for g in (group, group)]
    assert deliver(new_target(), drive, twice, reopen_at=len(twice) // 2) == want
    shuffled = list(range(n))
    random.Random(seed).shuffle(shuffled)
    groups = [shuffled[i : i + 15] for i in range(0, n, 15)]
    assert deliver(new_target(), drive, groups + groups[:5], reopen_at=7) == want


def test_panic_stops_found_exactly_once_in_any_delivery(
    panic: tuple[Sealed, str], new_target: Callable[[], str | Path]
) -> None:
    drive, csv = panic
    want = {("panic_stop", s, e, p) for s, e, p in independent(csv, PANIC)}
    want |= {(r.name, s, e, p) for r in DEFAULT_RULES if r is not PANIC for s, e, p in independent(csv, r)}
    assert sum(1 for w in want if w[0] == "panic_stop") >= 2  # the drive's panic stops at 25 s and 67 s
    assert_every_delivery_finds(want, drive, new_target, seed=12)


def test_a_chunk_evicted_by_the_agent_does_not_stop_the_cursor(
    panic: tuple[Sealed, str], new_target: Callable[[], str | Path]
) -> None:
    drive, _ = panic
    n = len(drive.chunks)
    with Store(new_target()) as store:
        store.store_batch(wire.decode_batch(payloads(VIN, drive, [list(range(10, n))])[0]))
        assert not alerts.episodes(store)  # chunks 0..9 are missing: nothing evaluated yet
        evicted = wire.encode_batch(VIN, drive.schema, [], evicted=[(BOOT, 0, 9)])
        store.store_batch(wire.decode_batch(evicted))
        got = found(store)
    assert {g[0] for g in got} >= {"panic_stop"}


def test_a_highway_drive_raises_no_alert(tmp_path: Path) -> None:
    drive = sealed(head(HIGHWAY, 120.0, tmp_path / "highway.log.gz"), NAMES, BOOT)
    assert deliver(tmp_path / "s.sqlite", drive, [list(range(len(drive.chunks)))]) == set()


# --- publication over a real mosquitto ---------------------------------------------------------------


def published_flags(path: Path) -> list[int]:
    with Store(path, readonly=True) as store:
        return [int(p) for (p,) in store.db.fetch("SELECT published FROM alerts ORDER BY id")]


def test_episodes_are_published_at_qos_1_and_marked_once_confirmed(broker: Broker, tmp_path: Path) -> None:
    got: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    listener = paho.Client(CallbackAPIVersion.VERSION2, client_id="alert-listener", protocol=paho.MQTTv5)
    listener.on_message = lambda _c, _u, m: got.put((m.topic, json.loads(m.payload)))
    listener.connect("127.0.0.1", broker.port)
    listener.loop_start()
    subscribed = threading.Event()
    listener.on_subscribe = lambda *_args: subscribed.set()
    listener.subscribe("fleet/+/alerts", qos=1)
    assert subscribed.wait(TIMEOUT)
    store = tmp_path / "store.sqlite"
    rule = AlertRule("rpm_high", "Engine.Rpm", above=0.0, severity="critical")
    mqtt = ReceiverMqttConfig(host="127.0.0.1", port=broker.port, client_id="r-alerts", keepalive_s=5)
    config = ReceiverConfig(mqtt=mqtt, store=StoreConfig(path=store), alerts=AlertsConfig((rule,)))
    receiver, peer = Receiver(config), Peer(broker)
    try:
        receiver.start()
        assert receiver.wait_subscribed(TIMEOUT)
        none: list[RawValue | None] = [None] * 4
        # Rpm is 2 * raw - 40: -20, 20, 40, -20 (an episode from tick 1 to 3), then 60 (open from tick 4)
        peer.publish(payload([chunk(0, [0, 1, 2, 3], [10, 30, 40, 10], none, none)]))
        peer.ack()
        peer.publish(payload([chunk(1, [4, 5], [50, 45], none[:2], none[:2])]))
        peer.ack()
        messages = [got.get(timeout=TIMEOUT) for _ in range(2)]
        assert [topic for topic, _ in messages] == [f"fleet/{VIN}/alerts"] * 2
        ended, opened = (body for _, body in messages)
        assert (ended["start"], ended["end"], ended["peak"], ended["peak_at"]) == (0.02, 0.06, 40.0, 0.04)
        assert (ended["rule"], ended["severity"], ended["lossy"], ended["bound"]) == (
            "rpm_high",
            "critical",
            False,
            0.0,
        )
        assert (opened["start"], opened["end"], opened["peak"]) == (0.08, None, 60.0)
        wait_for(lambda: published_flags(store) == [1, 1], TIMEOUT, "rows not marked published")
        # its end comes in a later batch: the same id again, now with its end
        peer.publish(payload([chunk(2, [6], [10], [None], [None])]))
        peer.ack()
        _topic, closed = got.get(timeout=TIMEOUT)
        assert (closed["id"], closed["end"]) == (opened["id"], 0.12)
        wait_for(lambda: published_flags(store) == [1, 1], TIMEOUT, "end not marked published")
    finally:
        receiver.stop()
    # a crash between the publish and its mark: the next receiver publishes the same id again
    with Store(store) as writer:
        writer.write(
            "test", lambda db: db.execute("UPDATE alerts SET published = 0 WHERE id = ?", (ended["id"],))
        )
    again = Receiver(config)
    try:
        again.start()
        assert again.wait_subscribed(TIMEOUT)
        _topic, resent = got.get(timeout=TIMEOUT)
        assert resent == ended
        wait_for(lambda: published_flags(store) == [1, 1], TIMEOUT, "resent row not marked published")
        assert got.empty()
    finally:
        again.stop()
        peer.close()
        listener.disconnect()
        listener.loop_stop()


def test_the_example_config_holds_the_default_rules() -> None:
    example = Path(__file__).resolve().parents[1] / "config" / "edge-receiver.example.yaml"
    assert load_receiver_config(example).alerts.rules == DEFAULT_RULES
    assert parse_receiver_config("alerts: {rules: []}", "r.yaml", Path(".")).alerts.rules == ()
    with pytest.raises(ConfigError, match=r"alerts.rules\[0\]: give exactly one of above and below"):
        parse_receiver_config("alerts: {rules: [{name: a, signal: A.B}]}", "r.yaml", Path("."))


def test_an_episode_on_a_lossy_signal_says_so(new_target: Callable[[], str | Path]) -> None:
    spec = SignalSpec("Engine.Temp", scale=0.5, integer_scaled=False, bound_raw=2)  # within 1.0 degC
    schema = Schema(Fraction(10), (spec,))
    with Store(new_target()) as store:
        store.alert_rules = (AlertRule("hot", "Engine.Temp", above=10.0),)
        # 10.5 might be a real 9.5: no alert; 11.5 is surely past 10: an episode from tick 2 to 3
        store.store_batch(
            wire.decode_batch(payload([chunk(0, [0, 1, 2, 3], [21, 20, 23, 21])], schema=schema))
        )
        (got,) = alerts.episodes(store, VIN, since=0.0)
        held = [float(v[0] or 0) for _, v in store.rows(VIN, ["Engine.Temp"])]  # reconstructed, within 1.0
        assert alerts.episodes(store, "OTHER") == [] and alerts.episodes(store, since=0.3) == []
    assert [abs(h - t) <= 1.0 for h, t in zip(held, [10.5, 10.0, 11.5, 10.5], strict=True)] == [True] * 4
    start = next(i for i, h in enumerate(held) if h > 11.0)  # the first value past 10 + bound
    end = next(i for i, h in enumerate(held) if i > start and h <= 11.0)
    want = (start / 10, end / 10, max(held[start:end]), 1.0, True)
    assert (got["start"], got["end"], got["peak"], got["bound"], got["lossy"]) == want


def test_retention_deletes_published_episodes_that_ended_before_the_cutoff(
    panic: tuple[Sealed, str], tmp_path: Path
) -> None:
    drive, _ = panic
    target = tmp_path / "store.sqlite"
    deliver(target, drive, [list(range(len(drive.chunks)))])
    with Store(target) as store:
        every = alerts.episodes(store)
        ended = sorted(e["end"] for e in every if e["end"] is not None)  # type: ignore[type-var]
        cutoff = Fraction(ended[len(ended) // 2]) + Fraction(1, 1000)
        store.write(
            "publish", lambda db: alerts.mark_published(db, [(int(e["id"]), True) for e in every[1:]])
        )  # type: ignore[call-overload]
        gone: list[int] = []
        store.write("expire", lambda db: gone.append(alerts.expire(db, cutoff)))
        kept = alerts.episodes(store)
    expected = [e for e in every if e is every[0] or e["end"] is None or e["end"] >= cutoff]  # type: ignore[operator]
    assert kept == expected and gone == [len(every) - len(expected)] and gone[0] > 0


HOT = [rule for rule in DEFAULT_RULES if rule.name in ("motor_overheat", "coolant_overheat")]


@pytest.fixture(scope="module")
def overheat(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sealed, str]:
    """A 300 s overheat drive (seed 5: the fan fails, coolant and motor pass their rules, then cool)."""
    log = tmp_path_factory.mktemp("overheat") / "overheat.log.gz"
    write_log(log, simulate("overheat", 300.0, 5, default_dbc()))
    names = sorted({rule.signal for rule in HOT})
    command = [sys.executable, "-m", "agent.cli", "sample", str(log), "--dbc", str(DBC), "--signals"]
    csv = subprocess.run([*command, ",".join(names)], check=True, capture_output=True, text=True, timeout=60)
    return sealed(log, names, BOOT), csv.stdout


def test_overheat_episodes_found_exactly_once_in_any_delivery(
    overheat: tuple[Sealed, str], new_target: Callable[[], str | Path]
) -> None:
    drive, csv = overheat
    want = {(r.name, s, e, p) for r in HOT for s, e, p in independent(csv, r)}
    assert {w[0] for w in want} == {"motor_overheat", "coolant_overheat"}
    assert all(w[2] is not None for w in want)  # each cooled back past its hysteresis: the episode ended
    assert_every_delivery_finds(want, drive, new_target, seed=13)
