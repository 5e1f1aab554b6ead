"""A tmpfs mounted for one test (a small disk that fills, a read-only folder), unmounted after it.

:func:`tmpfs` skips the test where mounting is not possible (not root, no permission) and never leaves a
mount behind: a failed ``umount`` is retried lazily. Runs on the caller's thread; needs root.
"""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(options: str, prefix: str = "tmpfs-") -> Iterator[Path]:
    """A fresh folder with a tmpfs mounted on it with ``options`` (``size=8m``, ``ro,size=1m``)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = Path(tempfile.mkdtemp(prefix=prefix))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if done.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        gc.collect()  # a connection left open by a failed test closes first
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)  # lazily, never left behind
        with contextlib.suppress(OSError):
            mount_point.rmdir()
