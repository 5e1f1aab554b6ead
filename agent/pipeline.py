"""The pipeline thread: decode, sample, chunk and commit to the buffer, in that order, on one thread.

Contract
- Consumes frame lists from a :class:`agent.source.FrameFeed` (blocking at most until the next commit is
  due), so it never blocks a reader for longer than one commit.
- Commits every ``commit_interval_s`` of wall time (and at the end): the open chunk is sealed and every
  sealed chunk goes to the buffer in one durable transaction, then ``wake`` tells the uploader.
  Between commits, samples live only in memory: that interval bounds what a crash can lose.
- The sealed chunks go to the buffer's :class:`~agent.buffer.BufferWriter`, which owns the disk: the
  cap, the headroom, a full disk, and the chunks that wait after a failed commit (retried first at the
  next one). Nothing is dropped in memory: while the writer is :attr:`~agent.buffer.BufferWriter.full`
  the pipeline takes no frames (back-pressure: the bounded feed then blocks the reader) and only retries
  the commit, once per ``HOLD_RETRY_S``; ``backpressure_s`` counts the time spent so.
- Runs on its own thread as a :class:`agent.stage.Stage` ("pipeline"): it owns its buffer connection
  (opened and closed on that thread), beats its heartbeat on every turn (declared period ``PERIOD_S``;
  ``IDLE_WAIT_S`` before a wait with nothing to commit: an idle bus wakes it no more often) and an unexpected error is logged as ``stage_failed``
  and stops the agent. ``finished`` is set once the source has ended and the last commit succeeded; a
  stop request commits what was sampled and leaves ``finished`` unset. The counters are written by the
  pipeline's thread only: read them after :meth:`~agent.stage.Stage.join`.
- ``coarsen`` (an event the supervisor sets while the month's budget would overrun) switches the chunks
  of the following commits to ``budget_schema`` (the same signals at ``sampling.budget_bounds``); cleared,
  back to ``schema``. The switch happens between commits, never inside a chunk.
- ``latest`` (:class:`agent.latest.LatestValues`) tracks the ``status_signals`` on every tick and is
  published once per turn (and after the last tick); other threads read only its snapshot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from agent.buffer import Buffer, BufferWriter
from agent.chunk import Chunker
from agent.config import BufferConfig
from agent.decode import Decoder
from agent.latest import LatestValues
from agent.sample import Sampler, to_micros
from agent.service.logs import get_logger
from agent.source import FrameFeed
from agent.stage import Stage
from agent.wire.values import Schema

PERIOD_S = 1.0  # the longest wait for frames while it has something to commit: its heartbeat's period
IDLE_WAIT_S = 5.0  # ... and while it has nothing (the heartbeat allows that much then)
HOLD_RETRY_S = 1.0  # a commit that the buffer refused is retried this often (back-pressure)


class Pipeline(Stage):
    def __init__(
        self,
        decoder: Decoder,
        schema: Schema,
        feed: FrameFeed,
        buffer: BufferConfig,
        boot_id: bytes,
        chunk_samples: int,
        wake: threading.Event,
        vin: str,
        max_hold_s: float | None = None,
        status_signals: Sequence[str] = (),
        budget_schema: Schema | None = None,
    ) -> None:
        super().__init__("pipeline", PERIOD_S, get_logger("agent.pipeline", vin=vin))
        self.decoder = decoder
        self.schema = schema
        self.feed = feed
        self.buffer_path = buffer.path
        self.chunker = Chunker(schema, boot_id, chunk_samples)
        self.latest = LatestValues(schema, status_signals)
        self.sampler = Sampler(
            schema.rate,
            len(schema.signals),
            self.latest.wrap(self.chunker.add),
            max_hold_s=max_hold_s,
            periods=getattr(decoder, "periods", ()),
        )
        self.commit_interval_s = buffer.commit_interval_s
        self.writer = BufferWriter(buffer, self.log)  # creates the reserve file beside the buffer
        self.wake = wake
        self.budget_schema = budget_schema  # the same signals at sampling.budget_bounds
        self.coarsen = threading.Event()  # set by the supervisor: chunks from the next commit on are coarse
        self.finished = threading.Event()  # the source ended and the last commit succeeded
        self.samples_committed = 0
        self.chunks_committed = 0
        self.chunks_refused = 0  # refuse_new turned them away: counted and reported, not committed
        self.samples_refused = 0
        self.backpressure_s = 0.0  # time spent taking no frames because the buffer could not commit
        self._held_since: float | None = None
        self._buffer: Buffer | None = None  # the pipeline thread's own connection (open() to close())
        self._schema_id = 0
        self._next_commit = 0.0

    # --- the stage's hooks, on the pipeline's thread ---------------------------------------------------
    def open(self) -> None:
        self._buffer = Buffer(self.buffer_path)
        self._schema_id = self._buffer.schema_id(self.schema)
        self._next_commit = time.monotonic() + self.commit_interval_s
        self._fed = False  # frames arrived since the last commit

    def run_once(self) -> bool:
        """Decode and sample what the feed has (waiting at most until the next commit is due, and never
        longer than ``PERIOD_S``; ``IDLE_WAIT_S`` with nothing to commit), then commit if it is due; False once the source has ended."""
        assert self._buffer is not None
        if self.writer.full:
            return self._hold_back(self._buffer)
        if self._held_since is not None:
            self.backpressure_s += time.monotonic() - self._held_since
            self.log.info("backpressure_released", held_s=round(time.monotonic() - self._held_since, 1))
            self._held_since = None
        decode, feed_sampler = self.decoder.decode, self.sampler.feed
        idle = not self._fed and not self.writer.pending  # nothing to commit: no need to wake for it
        due_in = IDLE_WAIT_S if idle else min(self._next_commit - time.monotonic(), PERIOD_S)
        if idle:
            self.heartbeat.beat(IDLE_WAIT_S)
        frames = self.feed.get(timeout=max(0.0, due_in))
        if frames is None:
            return False
        if frames:
            if not self._fed and not self.writer.pending:  # the first after a quiet spell: a chunk's start
                self._next_commit = max(self._next_commit, time.monotonic() + self.commit_interval_s)
            self._fed = True
            for frame in frames:
                feed_sampler(to_micros(frame.timestamp), decode(frame))
            self.latest.publish()
        if time.monotonic() >= self._next_commit and (self._fed or self.writer.pending):
            self._fed = False
            self.commit(self._buffer, self._schema_id)
            self._next_commit = time.monotonic() + self.commit_interval_s
        return True

    def _hold_back(self, buffer: Buffer) -> bool:
        """The buffer cannot commit and memory is at its limit: take no frames, retry the commit."""
        if self._held_since is None:
            self._held_since = time.monotonic()
            self.log.warning(
                "backpressure",
                pending_chunks=len(self.writer.pending),
                action="taking no frames until the buffer commits",
            )
        self.stop_event.wait(HOLD_RETRY_S)
        self.commit(buffer, self._schema_id)
        self._next_commit = time.monotonic() + self.commit_interval_s
        return True

    def finish(self, stopped: bool) -> None:
        """Stopped: commit what was sampled. The source ended: close the grid, commit, and say so."""
        assert self._buffer is not None
        if stopped:
            self.commit(self._buffer, self._schema_id)
            return
        self.sampler.finish()
        self.latest.publish()
        if self.commit(self._buffer, self._schema_id):
            self.finished.set()

    def close(self) -> None:
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None

    def commit(self, buffer: Buffer, schema_id: int) -> bool:
        """Seal the open chunk and hand every sealed chunk to the buffer; False if the buffer failed
        (the chunks then wait in the writer for the next commit)."""
        self.chunker.seal()
        done = self.writer.commit(buffer, schema_id, self.chunker.take())
        self.chunks_committed += len(done.committed)
        self.samples_committed += sum(c.sample_count for c in done.committed)
        self.chunks_refused += len(done.refused)
        self.samples_refused += sum(c.sample_count for c in done.refused)
        if done.committed or done.refused:
            self.wake.set()
        self._follow_budget(buffer)
        return done.ok

    def _follow_budget(self, buffer: Buffer) -> None:
        """Between two commits (no chunk open, none waiting in the writer): code the next chunks with the
        schema that ``coarsen`` asks for. Each chunk names its schema, so the receiver decodes both."""
        wanted = self.budget_schema if self.coarsen.is_set() and self.budget_schema else self.schema
        if wanted is self.chunker.schema or self.writer.pending or len(self.chunker):
            return
        self.chunker.schema = wanted
        self._schema_id = buffer.schema_id(wanted)
