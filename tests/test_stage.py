"""The stage base (agent.stage): the loop, the heartbeat, and the one handler of unexpected errors.

Each test runs a real stage on its own real thread; the log is structlog's own output, captured with
``structlog.testing.capture_logs`` (the stage's logger is not replaced).
"""

from __future__ import annotations

import threading
import traceback
from typing import Any

import structlog
from structlog.testing import capture_logs

from agent.stage import Stage

DEADLINE_S = 5.0


class Probe(Stage):
    """A stage that records its hooks; ``turns`` turns, then done, and ``fail_in`` names a hook that raises."""

    def __init__(self, turns: int = 1_000_000, fail_in: str = "", period_s: float = 0.05) -> None:
        super().__init__("probe", period_s, structlog.get_logger("tests.probe"))
        self.turns, self.fail_in = turns, fail_in
        self.calls: list[str] = []
        self.beats: list[float] = []
        self.turned = threading.Event()

    def _maybe_fail(self, hook: str) -> None:
        if self.fail_in == hook:
            raise RuntimeError(f"injected fault in {hook}")

    def open(self) -> None:
        self.calls.append("open")
        self._maybe_fail("open")

    def run_once(self) -> bool:
        self.beats.append(self.heartbeat.at)
        self.calls.append("run_once")
        self.turned.set()
        if len(self.beats) == 3:
            self._maybe_fail("run_once")
        if len(self.beats) >= self.turns:
            return False
        self.stop_event.wait(self.heartbeat.period_s)
        return True

    def finish(self, stopped: bool) -> None:
        self.calls.append(f"finish(stopped={stopped})")
        self._maybe_fail("finish")

    def close(self) -> None:
        self.calls.append("close")


def failures(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == "stage_failed"]


def test_the_loop_runs_until_the_work_is_done() -> None:
    stage = Probe(turns=4)
    stage.start()
    assert stage.join(DEADLINE_S)
    assert stage.calls == ["open", *["run_once"] * 4, "finish(stopped=False)", "close"]
    assert not stage.failed.is_set()


def test_a_stop_request_ends_the_loop_and_finish_knows_it() -> None:
    stage = Probe()
    stage.start()
    assert stage.turned.wait(DEADLINE_S)
    stage.request_stop()
    assert stage.join(DEADLINE_S)
    assert stage.calls[-2:] == ["finish(stopped=True)", "close"]


def test_the_heartbeat_moves_on_every_turn() -> None:
    stage = Probe(turns=5)
    before = stage.heartbeat.at
    stage.start()
    assert stage.join(DEADLINE_S)
    assert before < stage.beats[0] < stage.beats[1] < stage.beats[2] < stage.beats[3] < stage.beats[4]
    assert stage.heartbeat.at >= stage.beats[-1]  # and once more before finish()


def test_a_hook_that_raises_is_a_critical_event_with_its_traceback() -> None:
    with capture_logs() as logs:
        stage = Probe(fail_in="run_once")
        stage.alarm = threading.Event()  # the owner's wake-up (the daemon's stop event)
        stage.start()
        assert stage.failed.wait(DEADLINE_S), "the stage did not report its failure"
        assert stage.alarm.is_set(), "the owner was woken"
        assert stage.join(DEADLINE_S), "a failed stage's thread ends"
    [entry] = failures(logs)
    assert entry["log_level"] == "critical" and entry["stage"] == "probe"
    assert entry["reason"] == "RuntimeError: injected fault in run_once"
    error = entry["exc_info"]
    assert isinstance(error, RuntimeError)
    frames = [frame.name for frame in traceback.extract_tb(error.__traceback__)]
    assert frames[-2:] == ["run_once", "_maybe_fail"], frames  # the traceback reaches the raise
    assert stage.calls == ["open", "run_once", "run_once", "run_once", "close"]  # close() still ran


def test_failures_in_open_and_finish_are_caught_too() -> None:
    for hook, calls in (
        ("open", ["open", "close"]),
        ("finish", ["open", "run_once", "finish(stopped=False)", "close"]),
    ):
        with capture_logs() as logs:
            stage = Probe(turns=1, fail_in=hook)
            stage.start()
            assert stage.join(DEADLINE_S)
        assert stage.failed.is_set(), hook
        [entry] = failures(logs)
        assert entry["reason"] == f"RuntimeError: injected fault in {hook}"
        assert stage.calls == calls


def test_a_healthy_stage_logs_no_failure() -> None:
    with capture_logs() as logs:
        stage = Probe(turns=3)
        stage.start()
        assert stage.join(DEADLINE_S)
    assert failures(logs) == [] and not stage.failed.is_set()
