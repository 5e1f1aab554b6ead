"""The monthly data budget (``upload.monthly_bytes``): bytes on the link this calendar month, projected.

A vehicle on a metered SIM pays by the month. The uploader counts every byte it puts on the link and
takes off it (:attr:`agent.status.UploadCounters.link_bytes`: batches, statuses and acks with their MQTT
framing); :class:`MonthlyBudget` adds what that count grew by to the current month (UTC), projects the
month at the rate so far, and says when the projection would overrun the budget: in the status
(``edge-agent status``, the retained MQTT status) and, once a month, in the log
(``budget_overrun_projected``, with what to do). What is sent is never held back by the budget: the
agent loses nothing to save bytes. Fewer, larger batches (``upload.batch_interval_s``) and coarser error
bounds are what the user can change; ``sampling.budget_bounds`` lets the agent coarsen the bounds it
names itself, to those values and never past them, while the month is projected over budget
(:func:`coarse_wanted`: until the projection is back under ``RESTORE_FRACTION`` of it).

The month's count is kept in a small JSON file beside the buffer (written atomically at most every
``SAVE_EVERY_S`` and at shutdown), so a restart continues the month; a power cut loses at most that much
of the count (the projection is an estimate, never a guarantee). A file that cannot be read starts the
month at 0 and says so.

Contract: owned by the supervisor's thread (:class:`agent.daemon.Agent`), which calls :meth:`update`
with the uploader's published counters once per status tick; nothing here blocks but the file write.
"""

from __future__ import annotations

import calendar
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agent.service.logs import get_logger

SAVE_EVERY_S = 60.0
RESTORE_FRACTION = 0.9  # the budget's coarse bounds end once the month is projected under this share
log = get_logger("agent.budget")


@dataclass(frozen=True)
class BudgetView:
    """What the status shows: this month's bytes, the projection for the whole month, the budget."""

    month: str  # YYYY-MM, UTC
    used_bytes: int
    projected_bytes: int
    monthly_bytes: int  # 0 = no budget

    @property
    def over(self) -> bool:
        return self.monthly_bytes > 0 and self.projected_bytes > self.monthly_bytes


def coarse_wanted(view: BudgetView, coarse: bool) -> bool:
    """Whether the budget's coarser bounds (``sampling.budget_bounds``) should apply, ``coarse`` saying
    whether they do now: from a projected overrun until the projection falls under ``RESTORE_FRACTION``
    of the budget (a new month starts under it), so that the agent does not flip at the line."""
    if not view.monthly_bytes:
        return False
    if coarse:
        return view.projected_bytes >= RESTORE_FRACTION * view.monthly_bytes
    return view.over


def month_of(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m")


def month_fraction(now: float) -> float:
    """How much of the current UTC month has passed at ``now`` (0 to 1)."""
    moment = datetime.fromtimestamp(now, UTC)
    days = calendar.monthrange(moment.year, moment.month)[1]
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()
    return min(1.0, max(0.0, (now - start) / (days * 86_400)))


class MonthlyBudget:
    """This month's link bytes, kept across restarts in ``path`` (see the module's contract)."""

    def __init__(self, path: Path, monthly_bytes: int, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self.monthly_bytes = monthly_bytes
        self._now = now
        self._month, self._used = month_of(self._now()), 0
        self._last_counter = 0
        self._saved_at = 0.0
        self._warned_month = ""
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            month, used = str(data["month"]), int(data["used_bytes"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning(
                "budget_file_unreadable", path=str(self.path), reason=str(error), action="counting from 0"
            )
            return
        if month == self._month and used >= 0:
            self._used = used

    def update(self, link_bytes: int, more: int = 0) -> BudgetView:
        """Add what the uploader's ``link_bytes`` counter grew by since the last call, and ``more`` (the
        statuses the supervisor published); the month's view."""
        now = self._now()
        grew = link_bytes - self._last_counter if link_bytes >= self._last_counter else link_bytes
        grew += more
        self._last_counter = link_bytes
        month = month_of(now)
        if month != self._month:  # a new month starts at 0
            self._month, self._used = month, 0
        self._used += grew
        view = self.view(now)
        if view.over and self._warned_month != month:
            self._warned_month = month
            log.warning(
                "budget_overrun_projected",
                month=month,
                used_bytes=view.used_bytes,
                projected_bytes=view.projected_bytes,
                monthly_bytes=self.monthly_bytes,
                action="nothing is held back; raise upload.batch_interval_s or coarsen sampling.bounds to send less",
            )
        if now - self._saved_at >= SAVE_EVERY_S:
            self.save()
        return view

    def view(self, now: float | None = None) -> BudgetView:
        now = self._now() if now is None else now
        fraction = month_fraction(now)
        # Before an hour of the month has passed, a projection would multiply noise: take the month so far.
        projected = self._used if fraction < 1 / (31 * 24) else round(self._used / fraction)
        return BudgetView(self._month, self._used, projected, self.monthly_bytes)

    def save(self) -> None:
        """Write the month's count (atomic rename); a failure is logged, the count lives on in memory."""
        self._saved_at = self._now()
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            temporary.write_text(json.dumps({"month": self._month, "used_bytes": self._used}))
            os.replace(temporary, self.path)
        except OSError as error:
            log.warning("budget_file_failed", path=str(self.path), reason=str(error))
