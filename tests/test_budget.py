"""agent.budget: the month's link bytes, projected, kept across restarts, said once when over budget."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from structlog.testing import capture_logs

from agent.budget import MonthlyBudget, month_fraction
from agent.status import StatusReport

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
