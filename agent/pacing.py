"""When a batch may leave: the link's byte rate (``upload.max_bytes_per_s``) and, online, the wait that
gathers chunks into fewer, larger batches (``upload.batch_interval_s``).

Contract: a :class:`Pacer` belongs to the uploader's thread, which asks it before each publish; it never
blocks and never sleeps (the uploader waits on its own wake-up). The clock is injectable for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Pacer:
    def __init__(
        self,
        max_bytes_per_s: float,
        batch_interval_s: float,
        max_batch_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = max_bytes_per_s  # 0 = no cap
        self.interval_s = batch_interval_s  # 0 = a batch per commit
        self.max_batch_bytes = max_batch_bytes
        self.clock = clock
        self._tokens, self._tokens_at = 0.0, clock()
        self._holding_since: float | None = None  # when chunks first waited for the interval

    def allows(self, size: int) -> bool:
        """May ``size`` bytes go now? A token bucket of one second's bytes (a batch larger than that
        goes once the bucket is full, then the link waits it out); taken when it says yes."""
        if self.rate <= 0:
            return True
        now = self.clock()
        self._tokens = min(self.rate, self._tokens + (now - self._tokens_at) * self.rate)
        self._tokens_at = now
        if self._tokens < min(size, self.rate):
            return False
        self._tokens -= size
        return True

    def holds(self, online_and_caught_up: bool, pending_bytes: int) -> bool:
        """Should chunks of ``pending_bytes`` wait for more? Only online and caught up (a backlog goes at
        once), up to ``interval_s`` from the first that waited, unless they make half a full batch:
        each batch costs its MQTT framing and an ack on the link."""
        if not online_and_caught_up or self.interval_s <= 0:
            self._holding_since = None
            return False
        now = self.clock()
        if self._holding_since is None:
            self._holding_since = now
        if now - self._holding_since >= self.interval_s or pending_bytes >= self.max_batch_bytes // 2:
            self._holding_since = None
            return False
        return True
