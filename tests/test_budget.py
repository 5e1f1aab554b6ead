"""agent.budget: the month's link bytes, projected, kept across restarts, said once when over budget."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.budget import MonthlyBudget, month_fraction
from agent.status import StatusReport
from tests.harness.broker import Broker

MID_MONTH = datetime(2026, 12, 16, 12, tzinfo=UTC).timestamp()  # half of December has passed


class Clock:
    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def test_the_month_is_projected_at_its_rate_so_far_and_an_overrun_is_logged_once(tmp_path: Path) -> None:
    assert abs(month_fraction(MID_MONTH) - 0.5) < 1e-9
    clock = Clock(MID_MONTH)
    budget = MonthlyBudget(tmp_path / "month.json", monthly_bytes=1_000_000, now=clock)
    with capture_logs() as logs:
        view = budget.update(400_000)  # the uploader's counter since start
        assert (view.used_bytes, view.projected_bytes, view.over) == (400_000, 800_000, False)
        view = budget.update(600_000, more=1_000)  # +200,000 by the uploader, +1,000 of statuses
        assert (view.used_bytes, view.projected_bytes, view.over) == (601_000, 1_202_000, True)
        budget.update(700_000)
    assert [e["event"] for e in logs if e["event"] == "budget_overrun_projected"] == [
        "budget_overrun_projected"
    ]
    report = StatusReport("V", "ONLINE", 0, 0, 0, None, None, 0, 0, None, 1, "b", 0.0)
    assert "OVER BUDGET" not in report.line()
    over = StatusReport(
        "V", "ONLINE", 0, 0, 0, None, None, 0, 0, None, 1, "b", 0.0, None, (), 701_000, 1_402_000, 1_000_000
    )
    assert "OVER BUDGET: month projected 1.4 MB of 1.0 MB" in over.line()
    assert over.to_proto("x").month_projected_bytes == 1_402_000
    coarse = replace(over, budget_coarsened=True)
    assert (
        coarse.line().endswith(", bounds coarsened for the budget") and coarse.to_proto("x").budget_coarsened
    )


def test_a_restart_continues_the_month_and_a_new_month_starts_at_zero(tmp_path: Path) -> None:
    path, clock = tmp_path / "month.json", Clock(MID_MONTH)
    first = MonthlyBudget(path, 0, now=clock)
    first.update(5_000)
    first.save()
    again = MonthlyBudget(path, 0, now=clock)  # a restart: its uploader counts from 0 again
    assert again.update(1_000).used_bytes == 6_000
    assert not again.view().over  # no budget: never over
    clock.at = datetime(2027, 1, 1, 0, 30, tzinfo=UTC).timestamp()
    view = again.update(1_500)
    assert (view.month, view.used_bytes) == ("2027-01", 500)  # the 500 bytes sent in January
    assert view.projected_bytes == 500  # half an hour into the month: too early to multiply


def test_an_unreadable_file_counts_from_zero_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "month.json"
    path.write_text("{not json")
    with capture_logs() as logs:
        budget = MonthlyBudget(path, 10, now=Clock(MID_MONTH))
    assert budget.view().used_bytes == 0
    assert [e["path"] for e in logs if e["event"] == "budget_file_unreadable"] == [str(path)]
    budget.save()
    assert MonthlyBudget(path, 10, now=Clock(MID_MONTH)).view().month == "2026-12"


def test_the_budgets_bounds_apply_from_an_overrun_until_the_projection_is_well_under() -> None:
    from agent.budget import RESTORE_FRACTION, BudgetView, coarse_wanted

    def view(projected: int, budget: int = 1_000) -> BudgetView:
        return BudgetView("2026-12", projected // 2, projected, budget)

    assert not coarse_wanted(view(1_000), coarse=False)  # at the budget: not over yet
    assert coarse_wanted(view(1_001), coarse=False)
    assert coarse_wanted(view(950), coarse=True)  # under it again, but not by enough: stays coarse
    assert not coarse_wanted(view(int(RESTORE_FRACTION * 1_000) - 1), coarse=True)
    assert not coarse_wanted(view(5_000, budget=0), coarse=True)  # no budget: never


@pytest.mark.slow
def test_over_budget_the_named_signal_is_coded_coarser_and_the_receiver_decodes_both(
    broker: Broker, tmp_path: Path
) -> None:
    """A budget of one byte is overrun by the first batch: from the next commit on, VehicleSpeed is
    coded at its budget bound (2 km/h) instead of its own (0.05 km/h). Everything reaches the receiver
    under its own schema, every value within the bound it was coded with, and the status says so."""
    from fractions import Fraction

    from agent.config import load_agent_config
    from agent.daemon import Agent
    from agent.decode import build_decoder
    from agent.sample import Sampler, to_micros
    from agent.source import read_log
    from receiver.config import ReceiverConfig, ReceiverMqttConfig, StoreConfig
    from receiver.ingest import Receiver
    from receiver.store import Store
    from tests.harness.drive import DBC, ROOT, SIGNALS

    log, vin, speed = ROOT / "replay_logs" / "highway.log.gz", "BUDGET0000000001", "DriveSpeed.VehicleSpeed"
    config_path = tmp_path / "agent.yaml"
    config_path.write_text(
        f"vin: {vin}\nsource: {{kind: replay, log: {log}, speed: 30}}\nbuses: [{{channel: can0, dbc: [{DBC}]}}]\n"
        f"sampling: {{signals: [{', '.join(SIGNALS)}], bounds: {{{speed}: 0.05}}, budget_bounds: {{{speed}: 2}}}}\n"
        f"buffer: {{path: {tmp_path / 'buffer.sqlite'}, commit_interval_s: 0.2}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}}}\nupload: {{monthly_bytes: 1}}\n"
    )
    receiver = Receiver(
        ReceiverConfig(
            mqtt=ReceiverMqttConfig(host="127.0.0.1", port=broker.port),
            store=StoreConfig(path=tmp_path / "store.sqlite"),
        )
    )
    receiver.start()
    try:
        agent = Agent(load_agent_config(config_path))
        agent.start()
        with capture_logs() as logs:
            result = agent.run(until_drained=True)
        assert agent.pipeline.coarsen.is_set()
    finally:
        receiver.stop()
    assert result.complete, result
    assert next(e for e in logs if e["event"] == "budget_bounds_coarsened")["signals"] == [speed]

    decoder = build_decoder([("can0", [DBC], "auto")], SIGNALS)  # the truth: sampled, never coded
    truth: dict[int, list[object]] = {}
    sampler = Sampler(Fraction(50), len(decoder.signals), lambda t, v: truth.__setitem__(t, list(v)))
    for frame in read_log(log):
        sampler.feed(to_micros(frame.timestamp), decoder.decode(frame))
    sampler.finish()
    column = [s.name for s in decoder.signals].index(speed)
    spec = decoder.signals[column]
    with Store(tmp_path / "store.sqlite", readonly=True) as store:
        rows = list(store.rows(vin, [speed]))
    errors = [
        abs(values[0] - spec.to_physical(truth[tick][column]))  # type: ignore[operator, arg-type]
        for tick, values in rows
        if values[0] is not None
    ]
    assert len(rows) == result.samples_committed and len(errors) > 1_000
    assert max(errors[:100]) <= 0.05 + 1e-9  # the first commits, before any byte went out: its own bound
    assert max(errors) <= 2.0 + 1e-9  # never past the budget's bound
    assert sum(error > 0.05 + 1e-9 for error in errors) > 100  # and coarser indeed, once over budget
    with Store(tmp_path / "store.sqlite", readonly=True) as store:
        assert store.declared(vin)[speed].bound_raw == 200  # the latest batch's coding: 2 km/h
