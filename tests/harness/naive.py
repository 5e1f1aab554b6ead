"""The seeds' naive design, written small and honestly, as the baseline that `make bench` measures against.

Agent (``python -m tests.harness.naive agent LOG --dbc DBC --port P --vin VIN``): python-can's
``can.LogReader`` reads the log, cantools' ``db.decode_message`` decodes every frame (scaled, value tables
as numbers), the last value of each signal is kept, and one sample per tick of the 50 Hz grid on the log's
clock is published as ONE JSON object (``{"ts": seconds, "MESSAGE.SIGNAL": value, ...}``) at QoS 1 with
paho-mqtt 2.x to ``naive/{vin}/telemetry``. The process exits once the broker has acknowledged every
publish (PUBACK): nothing is kept on disk, and a PUBACK says the broker has it, not that anyone stored it.

The grid is the agent's (:mod:`agent.sample`): tick ``n`` is at ``n / rate`` s; every tick from the first
frame's time (rounded up) to the last frame's is emitted, with each signal's last value at or before the
tick (compared in integer microseconds). A signal not seen yet is left out of the object. Signals are
named ``MESSAGE.SIGNAL`` because several messages of the reference DBC share ``Counter`` and ``Checksum``
(bare names would silently drop values).

Receiver (``python -m tests.harness.naive receiver --db PATH --port P``): subscribes to
``naive/+/telemetry`` at QoS 1, ``json.loads`` each message and stores it with one ``INSERT`` and one
``COMMIT`` per sample in SQLite (WAL, ``synchronous=FULL``, as the real receiver). Prints ``ready`` on
stdout once the subscription is granted; runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import can
import cantools
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

TOPIC = "naive/{vin}/telemetry"
SUBSCRIPTION = "naive/+/telemetry"
MICROS = 1_000_000
Value = int | float


@dataclass
class NaiveStats:
    frames: int = 0
    samples: int = 0
    bytes_sent: int = 0
    acked: int = 0


def grid_rate(rate_hz: float) -> Fraction:
    """The sampling rate as an exact fraction, as the agent reads ``sampling.rate_hz``."""
    return Fraction(str(rate_hz)).limit_denominator(MICROS)


def samples(
    log: str | Path, dbc: str | Path, rate_hz: float = 50.0, stats: NaiveStats | None = None
) -> Iterator[tuple[int, dict[str, Value]]]:
    """``(tick, values)`` for every tick of the grid; ``values`` is the live dict (copy it to keep it)."""
    stats = stats if stats is not None else NaiveStats()
    db: Any = cantools.database.load_file(str(dbc))  # the CAN database (cantools types it as a union)
    names = {message.frame_id: message.name for message in db.messages}
    rate = grid_rate(rate_hz)
    num, scale = rate.numerator, MICROS * rate.denominator  # tick n is at n * scale / num microseconds
    values: dict[str, Value] = {}
    tick: int | None = None
    last = 0
    for frame in can.LogReader(str(log)):
        if frame.is_error_frame or frame.is_remote_frame:
            continue
        stats.frames += 1
        micros = round(frame.timestamp * MICROS)
        if tick is None:
            tick = -(-(micros * num) // scale)
        while tick * scale < micros * num:
            stats.samples += 1
            yield tick, values
            tick += 1
        last = max(last, micros)
        message = names.get(frame.arbitration_id)
        if message is None:
            continue
        try:
            decoded = db.decode_message(frame.arbitration_id, frame.data, decode_choices=False)
        except Exception:  # cantools raises several types for a frame it cannot decode: skip the frame
            continue
        for name, value in decoded.items():
            values[f"{message}.{name}"] = value
    while tick is not None and tick * scale <= last * num:
        stats.samples += 1
        yield tick, values
        tick += 1


def to_json(tick: int, values: dict[str, Value], rate: Fraction) -> bytes:
    """One sample as the naive design sends it: one JSON object, the tick's time in seconds under ``ts``."""
    return json.dumps({"ts": tick * rate.denominator / rate.numerator, **values}).encode()


def tick_of(ts: float, rate: Fraction) -> int:
    """The tick whose time :func:`to_json` wrote as ``ts``."""
    return round(ts * rate.numerator / rate.denominator)


# --- the agent -----------------------------------------------------------------------------------------


def run_agent(args: argparse.Namespace) -> int:
    stats = NaiveStats()
    done = threading.Condition()
    connected = threading.Event()

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            connected.set()

    def on_publish(_c: mqtt.Client, _u: Any, _mid: int, _reason: Any, _p: Any) -> None:
        with done:
            stats.acked += 1
            done.notify_all()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"naive-agent-{args.vin}")
    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    deadline = time.monotonic() + args.timeout
    try:
        if not connected.wait(args.timeout):
            print("naive agent: no connection to the broker", file=sys.stderr)
            return 1
        topic, rate = TOPIC.format(vin=args.vin), grid_rate(args.rate_hz)
        for tick, values in samples(args.log, args.dbc, args.rate_hz, stats):
            payload = to_json(tick, values, rate)
            stats.bytes_sent += len(payload)
            client.publish(topic, payload, qos=1)
        with done:
            complete = done.wait_for(
                lambda: stats.acked >= stats.samples, timeout=max(0.0, deadline - time.monotonic())
            )
    finally:
        client.disconnect()
        client.loop_stop()
    if args.report:
        Path(args.report).write_text(json.dumps({**asdict(stats), "complete": complete}) + "\n")
    print(
        f"naive agent: {stats.frames} frames, {stats.samples} samples, {stats.acked} acked, "
        f"{stats.bytes_sent} bytes",
        file=sys.stderr,
    )
    return 0 if complete else 1


# --- the receiver --------------------------------------------------------------------------------------


def open_db(path: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS telemetry (vin TEXT NOT NULL, ts REAL NOT NULL, data TEXT NOT NULL)"
    )
    conn.commit()
    return conn


def run_receiver(args: argparse.Namespace) -> int:
    conn = open_db(args.db)
    stop = threading.Event()

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe(SUBSCRIPTION, qos=1)

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        if not any(code.is_failure for code in codes):
            print("ready", flush=True)

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        text = message.payload.decode()
        sample = json.loads(text)
        conn.execute(
            "INSERT INTO telemetry (vin, ts, data) VALUES (?, ?, ?)",
            (message.topic.split("/")[1], sample["ts"], text),
        )
        conn.commit()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"naive-receiver-{id(conn)}")
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        client.disconnect()
        client.loop_stop()
        conn.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    agent = sub.add_parser("agent", help="publish a log's samples as JSON, exit once all are PUBACKed")
    agent.add_argument("log")
    agent.add_argument("--dbc", required=True)
    agent.add_argument("--vin", required=True)
    agent.add_argument("--rate-hz", type=float, default=50.0)
    agent.add_argument("--report", help="write the run's figures to this JSON file")
    agent.add_argument("--timeout", type=float, default=120.0, help="seconds allowed in all (default 120)")
    receiver = sub.add_parser("receiver", help="store every JSON sample with one INSERT + COMMIT")
    receiver.add_argument("--db", required=True)
    for command in (agent, receiver):
        command.add_argument("--host", default="127.0.0.1")
        command.add_argument("--port", type=int, default=1883)
    args = parser.parse_args(argv)
    return run_agent(args) if args.command == "agent" else run_receiver(args)


if __name__ == "__main__":
    sys.exit(main())
