"""Waiting on a condition with a deadline, never on a bare sleep: what every test and harness waits with.

:func:`wait_for` polls ``condition`` until it holds; past ``timeout`` seconds, or as soon as the process
it waits on has exited (``process``), it fails with ``what`` (a string, or a callable that says what was
seen: a log's tail) in an ``AssertionError``. The poll interval is short and only spaces out the checks:
on a loaded machine the wait lasts longer, never fails sooner. Runs on the caller's thread.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

POLL_S = 0.02


def wait_for(
    condition: Callable[[], object],
    timeout: float = 15.0,
    what: str | Callable[[], str] = "condition not reached in time",
    process: subprocess.Popen[Any] | None = None,
) -> None:
    """Return once ``condition()`` is true; raise ``AssertionError(what)`` past the deadline or when
    ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while not condition():
        exited = process is not None and process.poll() is not None
        if exited or time.monotonic() > deadline:
            said = what() if callable(what) else what
            reason = f"exited {process.returncode}" if exited and process is not None else f"{timeout} s"
            raise AssertionError(f"{said} ({reason})")
        time.sleep(POLL_S)


def wait_for_text(
    path: Path, text: str, timeout: float = 30.0, process: subprocess.Popen[Any] | None = None
) -> None:
    """Wait until the file at ``path`` (a process's log) contains ``text``; the failure shows its tail."""

    def seen() -> bool:
        return path.exists() and text in path.read_text(errors="replace")

    def tail() -> str:
        shown = path.read_text(errors="replace")[-3000:] if path.exists() else "(no file)"
        return f"no {text!r} in {path.name}:\n{shown}"

    wait_for(seen, timeout, tail, process)
