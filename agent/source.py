"""Acquisition stage: frames from a recorded log, replayed on its own clock (live buses: :mod:`agent.bus`).

Contract
- :func:`read_log` is an iterator used by one thread (the replay loop). It opens the log through
  python-can's own readers (candump .log, .asc, .blf, .csv, .trc, .mf4; ``.gz`` too) and yields frames
  with ``channel`` as a string. A malformed line is skipped, counted and logged with its file and line
  (candump logs resume after it; other formats stop there, because their readers keep header state).
  A text line longer than ``MAX_LINE_CHARS`` (no frame is) is skipped the same way in every text
  format, without being held in memory whole. Payloads longer than their protocol allows are the
  decoder's to count (:mod:`agent.decode`).
- :func:`paced` sleeps so that frames come out at ``speed`` times the log's own rate (``None`` = as fast as
  possible). Timestamps are never rewritten: the sampler runs on the log's clock (and handles its jumps,
  see :mod:`agent.sample`). Pacing never waits out more than ``MAX_PACED_GAP_S`` of log time, and a
  jump back restarts it: a day's silence, or a second drive appended to a first, does not stall or rush
  the replay.
- :class:`FrameFeed` is the bounded queue between a reader thread and the pipeline thread. ``put``
  blocks when the pipeline is behind (replay loses nothing; a live bus then backs up into the kernel's
  socket buffer, where the kernel counts what it drops: :mod:`agent.bushealth`), ``get`` blocks until frames or the end arrive.
"""

from __future__ import annotations

import contextlib
import gzip
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import can

from agent.errors import LogFormatError, SourceError
from agent.service.logs import get_logger

log = get_logger("agent.source")

TEXT_READERS: dict[str, Any] = {
    ".log": can.CanutilsLogReader,
    ".asc": can.ASCReader,
    ".csv": can.CSVReader,
    ".trc": can.TRCReader,
}
BINARY_READERS: dict[str, Any] = {".blf": can.BLFReader, ".mf4": can.MF4Reader}
RESUMABLE = {".log"}  # readers that keep no state across lines
MAX_LINE_CHARS = 4096  # a text line of a CAN log longer than this is no frame (CAN FD in .asc: < 400)
PACE_STEP_S = 0.02  # a paced replay releases frames this much ahead of time, in steps
MAX_PACED_GAP_S = 10.0  # pacing waits out at most this much log time between two frames


class _CountingLines:
    """A text file that counts the lines a reader has taken, so errors can name the line.

    A line longer than ``MAX_LINE_CHARS`` is read in pieces, reported to ``too_long(line, length)`` and
    not handed to the reader.
    """

    def __init__(self, handle: Any, too_long: Callable[[int, int], None]) -> None:
        self.handle = handle
        self.line = 0
        self.too_long = too_long

    def __iter__(self) -> _CountingLines:
        return self

    def __next__(self) -> str:
        while True:
            text: str = self.handle.readline(MAX_LINE_CHARS + 1)
            if not text:
                raise StopIteration
            self.line += 1
            if len(text) <= MAX_LINE_CHARS or text.endswith("\n"):
                return text
            length = len(text)
            while text and not text.endswith("\n"):
                text = self.handle.readline(1 << 16)
                length += len(text)
            self.too_long(self.line, length)

    def readline(self, *args: Any) -> str:
        self.line += 1
        text: str = self.handle.readline(*args)
        return text

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)


@dataclass
class LogStats:
    frames: int = 0
    bad_lines: int = 0
    first_bad: str = ""


def _suffix(path: Path) -> tuple[str, bool]:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        return (suffixes[-2] if len(suffixes) > 1 else ""), True
    return (suffixes[-1] if suffixes else ""), False


def read_log(path: str | Path, stats: LogStats | None = None) -> Iterator[can.Message]:
    """Yield every frame of a recorded log in file order (see the module's contract)."""
    path = Path(path)
    stats = stats if stats is not None else LogStats()
    suffix, zipped = _suffix(path)
    if suffix not in TEXT_READERS and suffix not in BINARY_READERS:
        known = ", ".join(sorted([*TEXT_READERS, *BINARY_READERS]))
        raise SourceError(
            f"{path}: unknown log format {suffix or '(no suffix)'!r}; known: {known} (optionally .gz)"
        )
    try:
        if suffix in BINARY_READERS:
            handle: Any = gzip.open(path, "rb") if zipped else open(path, "rb")  # noqa: SIM115
        else:
            handle = gzip.open(path, "rt") if zipped else open(path)  # noqa: SIM115
    except OSError as error:
        raise SourceError(f"{path}: cannot open: {error.strerror or error}") from error
    with handle:
        if suffix in BINARY_READERS:
            yield from _read_binary(path, BINARY_READERS[suffix], handle, stats)
            return

        def too_long(line: int, length: int) -> None:
            _bad_line(
                stats, f"{path}:{line}: a line of {length} characters, longer than any CAN frame: skipped"
            )

        lines = _CountingLines(handle, too_long)
        while True:
            try:
                for frame in TEXT_READERS[suffix](lines):
                    if frame.is_error_frame or frame.is_remote_frame:
                        continue
                    if frame.channel.__class__ is not str:  # the text readers' names are strings already
                        frame.channel = "can0" if frame.channel is None else str(frame.channel)
                    stats.frames += 1
                    yield frame
                return
            except (ValueError, IndexError, KeyError) as error:
                _bad_line(stats, f"{path}:{lines.line}: {type(error).__name__}: {error}")
                if suffix not in RESUMABLE:
                    raise LogFormatError(stats.first_bad) from error
            except (OSError, EOFError, gzip.BadGzipFile) as error:
                raise SourceError(f"{path}: read failed after line {lines.line}: {error}") from error


def _read_binary(path: Path, reader: Any, handle: Any, stats: LogStats) -> Iterator[can.Message]:
    try:
        for frame in reader(handle):
            if frame.is_error_frame or frame.is_remote_frame:
                continue
            frame.channel = "can0" if frame.channel is None else _channel_name(frame.channel)
            stats.frames += 1
            yield frame
    except (ValueError, OSError, EOFError, ImportError, Exception) as error:
        raise LogFormatError(f"{path}: unreadable after frame {stats.frames}: {error}") from error


def _channel_name(channel: Any) -> str:
    # Binary formats number channels from 1; candump names them can0, can1, ...
    return f"can{int(channel) - 1}" if isinstance(channel, int) else str(channel)


def _bad_line(stats: LogStats, where: str) -> None:
    stats.bad_lines += 1
    if stats.bad_lines == 1:
        stats.first_bad = where
    if stats.bad_lines <= 10:
        log.warning("log_line_malformed", where=where)


def paced(frames: Iterable[can.Message], speed: float | None, stop: threading.Event) -> Iterator[can.Message]:
    """Release frames at ``speed`` x the log's rate (``None``: no waiting), on the log's timestamps, up to
    ``PACE_STEP_S`` early: the thread sleeps once per step, not once per frame (a 500 frames/s log would
    otherwise wake it 500 times a second)."""
    if speed is None:
        yield from frames
        return
    start_wall = log_start = previous = None
    for frame in frames:
        stamp = frame.timestamp
        if previous is None or not -1.0 < stamp - previous <= MAX_PACED_GAP_S:
            start_wall, log_start = time.monotonic(), stamp  # the start, a long silence, a jump back
        previous = stamp
        assert start_wall is not None and log_start is not None
        delay = start_wall + (stamp - log_start) / speed - time.monotonic()
        if delay > PACE_STEP_S and stop.wait(delay):
            return
        yield frame


class FrameFeed:
    """Bounded hand-over of frame lists from reader threads to the pipeline thread."""

    def __init__(self, producers: int = 1, max_lists: int = 16, list_size: int = 256) -> None:
        self._queue: queue.Queue[list[can.Message] | None] = queue.Queue(max_lists)
        self._open = producers
        self._closed = False
        self.list_size = list_size

    def pump(self, frames: Iterable[can.Message | None], stop: threading.Event) -> None:
        """Move frames into the queue in lists, then mark this producer's end. Runs on a reader thread.

        A ``None`` from ``frames`` (a live bus's receive timeout) hands over what is pending at once, so
        live frames wait at most one receive timeout.
        """
        pending: list[can.Message] = []
        try:
            for frame in frames:
                if frame is not None:
                    pending.append(frame)
                if pending and (frame is None or len(pending) >= self.list_size):
                    self._put(pending, stop)
                    pending = []
                if stop.is_set():
                    break
            if pending:
                self._put(pending, stop)
        finally:
            self._queue.put(None)

    def _put(self, frames: list[can.Message], stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._queue.put(frames, timeout=0.2)
                return
            except queue.Full:
                continue

    def get(self, timeout: float) -> list[can.Message] | None:
        """Frames, ``[]`` when none arrived within ``timeout``, or ``None`` once every producer ended (or
        the feed was closed and what was queued is taken)."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None if self._closed else []
        if item is None:
            self._open -= 1
            return None if self._open <= 0 or (self._closed and self._queue.empty()) else []
        return item

    def close(self) -> None:
        """End the feed now, whatever its producers do (a reader still blocked in its bus's receive, at
        shutdown): the consumer takes what is queued, then the end. Any thread."""
        self._closed = True
        with contextlib.suppress(queue.Full):  # a full queue: the consumer is busy and sees the close
            self._queue.put_nowait(None)
