"""agent.pacing: a token bucket of one second's bytes, and online batches that wait for their interval."""

from __future__ import annotations

from agent.pacing import Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_link_rate_is_a_bucket_of_one_seconds_bytes() -> None:
    clock = Clock()
    pacer = Pacer(1_000, 0, 262_144, clock)
    assert not pacer.allows(500)  # the bucket starts empty
    clock.now += 0.5
    assert pacer.allows(500) and not pacer.allows(1)  # half a second: 500 bytes, taken
    clock.now += 10
    assert pacer.allows(1_000) and not pacer.allows(1)  # never more than one second's worth
    clock.now += 1
    assert pacer.allows(50_000)  # a batch larger than a second goes once the bucket is full ...
    clock.now += 10
    assert not pacer.allows(1)  # ... and the link then waits it out
    assert Pacer(0, 0, 262_144, clock).allows(10**9)  # no cap


def test_online_chunks_wait_for_the_interval_or_half_a_batch() -> None:
    clock = Clock()
    pacer = Pacer(0, 10, 1_000, clock)
    assert pacer.holds(True, 100)  # the first wait starts
    clock.now += 9.9
    assert pacer.holds(True, 300)
    clock.now += 0.1
    assert not pacer.holds(True, 400)  # the interval has passed: they go
    assert pacer.holds(True, 100)  # and the next wait starts afresh
    assert not pacer.holds(True, 500)  # half a full batch goes at once
    assert not pacer.holds(False, 100)  # offline, draining, behind: never held
    assert not Pacer(0, 0, 1_000, clock).holds(True, 1)  # no interval
