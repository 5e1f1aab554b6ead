"""The live page at ``/`` in Debian's headless Chromium, over the real thing: a store filled from a real
drive (the agent's sampler and chunker on ``city.log.gz``), ``edge-receiver run`` and ``edge-receiver
serve`` as processes on a real broker. The page loads, lists the vehicle, draws uPlot charts of its
default signals from the history, and when one more batch of the drive is published and stored, the
live feed moves the table's "stored until" and appends the new values to the charts; no console error,
no uncaught exception; a screenshot is kept under the test's tmp_path (its path printed). When serve
stops, the page says "disconnected - reconnecting", and it is "live" again once serve is back."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent import wire
from receiver.store import Store
from tests.harness import browser
from tests.harness.broker import Broker, free_port
from tests.harness.drive import ROOT, SIGNALS
from tests.harness.processes import receiver_yaml, running_api, running_receiver
from tests.harness.sampled import payloads, sealed
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.slow
VIN = "KMHPAGE0000000001"
LOG = ROOT / "replay_logs" / "city.log.gz"
LATER = 5  # the drive's last chunks, published while the page is open

CHARTS = """[...document.querySelectorAll('#charts .chart')].map(c => {
  const canvas = c.querySelector('canvas');
  const chart = window.edgePage.charts.get(c.dataset.signal);
  const xs = chart ? chart.plot.data[0] : [];
  return {signal: c.dataset.signal, width: canvas ? canvas.width : 0, height: canvas ? canvas.height : 0,
          points: chart ? chart.plot.data[2].filter(v => v !== null).length : 0,
          last: xs.length ? xs[xs.length - 1] : null};
})"""
CONNECTION = "document.getElementById('connection').textContent"
ROWS = """[...document.querySelectorAll('#fleet tbody tr')].map(r => [...r.cells].map(c => c.textContent))"""


def publish(port: int, topic: str, payload: bytes) -> None:
    """One QoS 1 message, acknowledged by the broker before this returns."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_live_page_lists_draws_and_follows_a_new_batch(broker: Broker, tmp_path: Path) -> None:
    why = browser.available()
    if why is not None:
        pytest.skip(why)
    began = time.monotonic()
    drive = sealed(LOG, SIGNALS, bytes(range(16)))
    first, later = range(len(drive.chunks) - LATER), range(len(drive.chunks) - LATER, len(drive.chunks))
    store_path, port = tmp_path / "store.sqlite", free_port()
    with Store(store_path) as store:
        for payload in payloads(VIN, drive, [first[i : i + 20] for i in range(0, len(first), 20)]):
            store.store_batch(wire.decode_batch(payload))
    config = receiver_yaml(
        tmp_path / "receiver.yaml", broker.port, store_path, f"api: {{listen: '127.0.0.1:{port}'}}\n"
    )
    with (
        running_receiver(config, tmp_path / "receiver.log"),
        running_api(config, tmp_path / "api.log") as api,
        browser.chromium(tmp_path / "chromium") as page,
    ):
        page.navigate(f"http://127.0.0.1:{port}/")
        wait_for(
            lambda: page.evaluate(CONNECTION) == "live",
            15,
            "the page's WebSocket did not connect",
        )
        wait_for(lambda: len(page.evaluate(ROWS)) == 1, 15, lambda: f"fleet table: {page.evaluate(ROWS)}")
        [row] = page.evaluate(ROWS)
        assert row[0] == VIN
        wait_for(
            lambda: len(page.evaluate(CHARTS)) >= 2 and all(c["points"] > 0 for c in page.evaluate(CHARTS)),
            15,
            lambda: f"charts: {page.evaluate(CHARTS)}; errors: {page.errors}",
        )
        charts = page.evaluate(CHARTS)
        assert {c["signal"] for c in charts} == {"DriveSpeed.VehicleSpeed", "BatteryState.StateOfCharge"}
        assert all(c["width"] > 0 and c["height"] > 0 for c in charts), charts
        loaded = time.monotonic() - began

        # one more batch of the same drive through the broker: `run` stores it and acks, serve pushes it
        publish(broker.port, f"fleet/{VIN}/telemetry", payloads(VIN, drive, [later])[0])
        wait_for(
            lambda: page.evaluate(ROWS)[0][6] != row[6],
            15,
            lambda: f"the table's stored-until stayed {row[6]}: {page.evaluate(ROWS)}",
        )
        wait_for(
            lambda: all(c["last"] > b["last"] for c, b in zip(page.evaluate(CHARTS), charts, strict=True)),
            15,
            lambda: f"charts not extended: {charts} -> {page.evaluate(CHARTS)}",
        )
        assert page.evaluate("window.edgePage.updates") > 0
        shot = page.screenshot(tmp_path / "live_page.png")
        print(f"\nscreenshot: {shot} (page ready in {loaded:.1f} s, test {time.monotonic() - began:.1f} s)")
        assert page.errors == [], page.errors

        # the day zoom: one day of rollups, at most 600 buckets a chart
        page.evaluate("document.getElementById('zoom-day').click()")
        widths = "[...window.edgePage.charts.values()].map(c => c.width)"
        wait_for(
            lambda: all(w >= 86400 / 600 for w in page.evaluate(widths)),
            15,
            lambda: str(page.evaluate(widths)),
        )
        assert all(c["points"] > 0 for c in page.evaluate(CHARTS)) and page.errors == []

        # the API goes away: the page says so, and reconnects with backoff once it is back
        api.send_signal(signal.SIGTERM)
        api.wait(15)
        wait_for(
            lambda: page.evaluate(CONNECTION) == "disconnected - reconnecting", 15, "no disconnect shown"
        )
        with running_api(config, tmp_path / "api2.log"):
            wait_for(lambda: page.evaluate(CONNECTION) == "live", 20, "the page did not reconnect")
