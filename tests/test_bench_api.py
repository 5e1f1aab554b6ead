"""The live feed's bench row (:mod:`tests.harness.bench_api`) runs end to end: a real broker, receiver,
API and WebSocket client, each batch's values pushed after its commit."""

from __future__ import annotations

import pytest

from tests.harness import bench_api
from tests.harness.broker import require_mosquitto


def test_the_live_feed_bench_measures_each_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    require_mosquitto()
    monkeypatch.setattr(bench_api, "BATCHES", 3)
    [(name, value, unit, note)] = bench_api.live_rows()
    assert (name, unit) == ("live page: commit to WebSocket client", "ms")
    assert 0 < value < 10_000  # pushed, after the ack: the 10 s wait of each batch did not run out
    assert note.startswith("median of 3 one-second batches")
