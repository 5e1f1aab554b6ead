"""agent.readers: a reader that fails is reported and stops the agent at once (never a silent thread
death); a live bus that is there is bound before READY; the feed ends at shutdown even while a live
reader still waits in its bus's receive."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from agent.config import AgentConfig, BufferConfig, BusConfig, MqttConfig, SamplingConfig, SourceConfig
from agent.daemon import Agent
from agent.readers import Readers
from tests.harness.drive import DBC, SIGNALS
from tests.harness.waiting import wait_for


def config(
    tmp_path: Path, source: SourceConfig, channel: str = "can0", interface: str = "socketcan"
) -> AgentConfig:
    return AgentConfig(
        vin="READERS000000001",
        source=source,
        buses=(BusConfig(channel=channel, dbc=(DBC,), interface=interface),),
        sampling=SamplingConfig(signals=tuple(SIGNALS)),
        buffer=BufferConfig(path=tmp_path / "buffer.sqlite"),
        mqtt=MqttConfig(host="127.0.0.1", port=1),
    )


def test_a_reader_that_fails_names_why_and_ends_the_run_at_once(tmp_path: Path) -> None:
    gone = tmp_path / "drive.log"  # the reader opens it on its own thread: it is not there
    agent = Agent(config(tmp_path, SourceConfig(kind="replay", log=gone, speed=1.0)))
    agent.start()
    results = []
    runner = threading.Thread(target=lambda: results.append(agent.run()))  # only a failure ends it
    started = time.monotonic()
    runner.start()
    runner.join(10)
    if runner.is_alive():
        agent.stop_event.set()
        runner.join()
        raise AssertionError("a failed reader did not end the run")
    assert time.monotonic() - started < 4.0, "a failed reader ends the run promptly"
    assert results[0].failed == ("source",) and results[0].outcome() == "incomplete"
    assert agent.readers.error is not None and str(gone) in agent.readers.error


def test_a_live_bus_is_bound_and_its_feed_ends_at_shutdown_while_its_reader_still_waits(
    tmp_path: Path,
) -> None:
    stop = threading.Event()
    readers = Readers(config(tmp_path, SourceConfig(kind="bus"), "edge-readers", "virtual"), stop)
    assert len(readers.health) == 1 and readers.health[0].report().channel == "edge-readers"
    readers.start()
    wait_for(readers.all_bound, timeout=5)
    stop.set()
    readers.stop_and_close(timeout_s=0.0)  # the reader may sit in its receive for seconds yet
    assert readers.feed.get(1.0) is None  # the end, at once
    for thread in readers.threads:
        thread.join(10)
        assert not thread.is_alive()
