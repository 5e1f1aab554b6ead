"""The HTTP API (:mod:`receiver.api`, :mod:`receiver.answers`) over a real store filled from a real drive,
each answer checked against ``edge-agent sample`` of the same log, computed independently here; and its
errors: 404 for an unknown vin or signal, 4xx naming a bad parameter, never a traceback."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agent import wire
from receiver import alerts
from receiver.api import create_app
from receiver.config import load_receiver_config
from receiver.store import Store
from tests.harness.drive import ROOT, SIGNALS
from tests.harness.processes import truth
from tests.harness.sampled import payloads, sealed

LOG = ROOT / "replay_logs" / "city.log.gz"
VIN = "KMHAPI00000000001"
PANIC, PANIC_VIN = ROOT / "replay_logs" / "panic_braking.log.gz", "KMHAPI0PANIC00001"
PANIC_SIGNALS = ["Dynamics.LongitudinalAccel", "VehicleFlags.ABSActive", "DriveSpeed.VehicleSpeed"]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder = tmp_path_factory.mktemp("api")
    drive = sealed(LOG, SIGNALS, bytes(range(16)))
    with Store(folder / "store.sqlite") as store:
        for payload in payloads(
            VIN, drive, [range(i, min(i + 20, len(drive.chunks))) for i in range(0, len(drive.chunks), 20)]
        ):
            store.store_batch(wire.decode_batch(payload))
    panic = sealed(PANIC, PANIC_SIGNALS, bytes(16), window_s=(1_700_000_000, 1_700_000_120))
    with Store(folder / "store.sqlite") as store:
        for payload in payloads(PANIC_VIN, panic, [range(len(panic.chunks))]):
            store.store_batch(wire.decode_batch(payload))
    config = folder / "receiver.yaml"
    config.write_text(f"store: {{path: {folder / 'store.sqlite'}}}\n")
    with TestClient(create_app(load_receiver_config(config), watch=False)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def rows() -> list[tuple[Fraction, dict[str, float]]]:
    """``edge-agent sample``'s CSV of the drive: (instant, {signal: value}) per tick, absent values left out."""
    header, *lines = truth(LOG).splitlines()
    names = header.split(",")[1:]
    out = []
    for line in lines:
        time, *cells = line.split(",")
        out.append((Fraction(time), {n: float(c) for n, c in zip(names, cells, strict=True) if c}))
    return out


def test_vehicles_lists_the_stored_vehicle(
    client: TestClient, rows: list[tuple[Fraction, dict[str, float]]]
) -> None:
    answer = client.get("/api/vehicles")
    assert answer.status_code == 200
    [vehicle, _panic] = answer.json()["vehicles"]
    assert vehicle["vin"] == VIN
    assert vehicle["online"] is None  # no broker heard: unknown, not "offline"
    assert vehicle["stored_until"] == pytest.approx(float(rows[-1][0]))
    assert client.get(f"/api/vehicles/{VIN}/signals").json()["signals"] == sorted(SIGNALS)


def test_latest_is_the_last_sampled_row_of_each_signal(
    client: TestClient, rows: list[tuple[Fraction, dict[str, float]]]
) -> None:
    answer = client.get(f"/api/vehicles/{VIN}/latest").json()["signals"]
    for name in SIGNALS:
        at, value = next((t, values[name]) for t, values in reversed(rows) if name in values)
        assert answer[name]["value"] == pytest.approx(value), name
        assert answer[name]["at"] == pytest.approx(float(at), abs=1e-6), name


@pytest.mark.parametrize("points", [40, 1000])
def test_history_buckets_equal_min_mean_max_of_the_samples(
    client: TestClient, rows: list[tuple[Fraction, dict[str, float]]], points: int
) -> None:
    names = ["DriveSpeed.VehicleSpeed", "Thermal.CoolantTemp"]
    answer = client.get(
        f"/api/vehicles/{VIN}/history", params={"signals": ",".join(names), "points": points}
    ).json()
    width = Fraction(answer["width"]).limit_denominator(1000)
    for name in names:
        expected: dict[int, list[float]] = {}
        for at, values in rows:
            if name in values:
                expected.setdefault(math.floor(at / width), []).append(values[name])
        got = answer["signals"][name]
        assert 0 < len(got) <= points
        assert [round(Fraction(b["start"]) / width) for b in got] == sorted(expected)  # no invented bucket
        for bucket in got:
            held = expected[round(Fraction(bucket["start"]) / width)]
            assert bucket["count"] == len(held)
            assert bucket["min"] == pytest.approx(min(held))
            assert bucket["max"] == pytest.approx(max(held))
            assert bucket["mean"] == pytest.approx(sum(held) / len(held))


def test_history_leaves_a_gap_as_a_gap(
    client: TestClient, rows: list[tuple[Fraction, dict[str, float]]]
) -> None:
    end = float(rows[-1][0])
    answer = client.get(
        f"/api/vehicles/{VIN}/history",
        params={"signals": "DriveSpeed.VehicleSpeed", "from": end - 10, "to": end + 3600, "points": 100},
    ).json()
    starts = [bucket["start"] for bucket in answer["signals"]["DriveSpeed.VehicleSpeed"]]
    assert starts and max(starts) <= end  # the hour after the drive: no bucket, nothing interpolated


def test_aggregates_are_the_five_minute_windows(
    client: TestClient, rows: list[tuple[Fraction, dict[str, float]]]
) -> None:
    answer = client.get(f"/api/vehicles/{VIN}/aggregates", params={"window": "5m"}).json()
    name = "DriveSpeed.VehicleSpeed"
    expected: dict[int, list[float]] = {}
    for at, values in rows:
        if name in values:
            expected.setdefault(math.floor(at / 300) * 300, []).append(values[name])
    got = {int(w["start"]): w for w in answer["signals"][name]}
    assert sorted(got) == sorted(expected)
    for start, held in expected.items():
        assert got[start]["count"] == len(held)
        assert got[start]["max"] == pytest.approx(max(held))
        assert got[start]["mean"] == pytest.approx(sum(held) / len(held))


@pytest.mark.parametrize(
    ("url", "status", "named"),
    [
        ("/api/vehicles/NOPE/latest", 404, "NOPE"),
        (f"/api/vehicles/{VIN[:-1]}2/history", 404, "did you mean"),
        (f"/api/vehicles/{VIN}/history?signals=DriveSpeed.VehicleSped", 404, "DriveSpeed.VehicleSpeed"),
        (f"/api/vehicles/{VIN}/history?points=0", 422, "points"),
        (f"/api/vehicles/{VIN}/history?from=soon", 400, "from"),
        (f"/api/vehicles/{VIN}/history?from=20&to=10", 400, "from"),
        (f"/api/vehicles/{VIN}/history?signals=,", 400, "signals"),
        (f"/api/vehicles/{VIN}/aggregates?window=7m", 422, "window"),
    ],
)
def test_bad_requests_name_what_is_wrong(client: TestClient, url: str, status: int, named: str) -> None:
    answer = client.get(url)
    assert answer.status_code == status, answer.text
    assert named in answer.text


def test_health_metrics_docs_and_page(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "edge_receiver_store_bytes" in metrics.text and "edge_receiver_latency_seconds" in metrics.text
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in client.get("/docs").text
    assert client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/vehicles", "/api/vehicles/{vin}/history", "/api/alerts"} <= set(paths)


def test_config_rejects_a_bad_listen_address(tmp_path: Path) -> None:
    from agent.errors import ConfigError

    config = tmp_path / "receiver.yaml"
    config.write_text("api: {listen: 'localhost:99999'}\n")
    with pytest.raises(ConfigError, match=r"api\.listen"):
        load_receiver_config(config)


def test_alerts_are_the_stored_episodes_newest_first(client: TestClient) -> None:
    every = client.get("/api/alerts", params={"vin": PANIC_VIN}).json()["alerts"]
    assert {a["rule"] for a in every} >= {"panic_stop", "abs_active"}
    with Store(client.app.state.pool.target, readonly=True) as store:  # type: ignore[attr-defined]
        assert every == json.loads(json.dumps(alerts.episodes(store, PANIC_VIN)))
    starts = [a["start"] for a in every]
    assert starts == sorted(starts, reverse=True)
    middle = starts[len(starts) // 2]
    later = client.get("/api/alerts", params={"vin": PANIC_VIN, "since": middle}).json()["alerts"]
    assert later == [a for a in every if a["start"] >= middle]
    assert client.get("/api/alerts", params={"vin": VIN}).json()["alerts"] == []  # the city drive: none
    assert client.get("/api/alerts", params={"vin": "NOPE"}).status_code == 404
