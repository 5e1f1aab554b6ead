"""A crash-simulating SQLite VFS, as SQLite's own crash tests do (for tests/test_buffer_crash.py).

Every write and truncate since a file's last xSync is remembered with its pre-image; at the N-th
write/truncate/sync/delete the "power fails" (that and every later call raise an I/O error); then
:meth:`CrashVFS.lose_power` keeps, reverts, tears (at 512-byte sector granularity) or trashes each
unsynced write, newest first. Registered as the default VFS, so a :class:`agent.buffer.Buffer` opened
while it is registered goes through it unchanged. Used from the test thread only.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

SECTOR = 512


@dataclass
class Unsynced:
    kind: str  # write | truncate
    offset: int
    old: bytes  # the bytes this operation replaced (a truncate: the tail it cut)
    new: bytes
    old_size: int


class CrashVFS(apsw.VFS):  # type: ignore[misc]
    """A pass-through to the default VFS that remembers unsynced writes and can lose power.

    apsw's VFSFile passes the xShm* methods through to the base file, so WAL with shared memory works as
    usual. ``fsync_lies`` makes xSync a no-op that forgets nothing: the control that shows the check has
    teeth.
    """

    def __init__(self, crash_at: int | None = None, fsync_lies: bool = False) -> None:
        names = apsw.vfs_names()
        self.base = "unix" if "unix" in names else names[0]  # by name: "" would be this VFS itself
        self.crash_at = crash_at
        self.fsync_lies = fsync_lies
        self.events = 0
        self.crashed = False
        self.pending: dict[str, list[Unsynced]] = {}
        super().__init__("crashsim", self.base, makedefault=True)

    def tick(self, what: str) -> None:
        if self.crashed:
            raise apsw.IOError(f"power is off ({what})")
        self.events += 1
        if self.crash_at is not None and self.events >= self.crash_at:
            self.crashed = True
            raise apsw.IOError(f"power failed at {what} #{self.events}")

    def xOpen(self, name: Any, flags: list[int]) -> apsw.VFSFile:
        return CrashFile(self, name, flags)

    def xDelete(self, filename: str, syncdir: bool) -> None:
        self.tick(f"delete {Path(filename).name}")
        super().xDelete(filename, syncdir)
        self.pending.pop(filename, None)

    def note(self, path: str, kind: str, offset: int, new: bytes) -> None:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            f.seek(offset)
            old = f.read(max(0, (size if kind == "truncate" else offset + len(new)) - offset))
        self.pending.setdefault(path, []).append(Unsynced(kind, offset, old, new, size))

    def lose_power(self, rnd: random.Random, fate: str | None = None) -> dict[str, str]:
        """Decide the fate of every unsynced write (or impose one), newest first; a summary for messages."""
        summary = {}
        for path, ops in self.pending.items():
            if not os.path.exists(path):
                continue
            fates = []
            with open(path, "r+b") as f:
                for op in reversed(ops):
                    chosen = fate or rnd.choices(["keep", "revert", "tear", "trash"], [4, 4, 3, 1])[0]
                    fates.append(f"{op.kind}@{op.offset}+{len(op.new) or len(op.old)}:{chosen}")
                    if chosen != "keep":
                        undo(f, op, chosen, rnd)
            fates.reverse()
            summary[Path(path).name] = " ".join(fates[-24:]) + (
                f" (+{len(fates) - 24} older)" if len(fates) > 24 else ""
            )
        self.pending.clear()
        return summary


def undo(f: Any, op: Unsynced, fate: str, rnd: random.Random) -> None:
    """Make the file look as if ``op`` reached the disk not at all, in part, or as garbage."""
    size = f.seek(0, os.SEEK_END)
    if op.kind == "truncate":
        if fate in ("revert", "tear"):  # the cut tail comes back (whole: a truncate does not tear)
            f.seek(op.offset)
            f.write(op.old)
        return
    end = op.offset + len(op.new)
    if fate == "revert" and size == end and op.old_size < end:
        f.truncate(max(op.old_size, 0))  # the file never grew
        f.seek(op.offset)
        f.write(op.old[: max(0, op.old_size - op.offset)])
        return
    start = op.offset
    while start < end:
        stop = min(end, (start // SECTOR + 1) * SECTOR)
        old = op.old[start - op.offset : stop - op.offset]
        old += b"\0" * (stop - start - len(old))  # beyond the old end: a hole reads as zeros
        if fate == "revert" or (fate == "tear" and rnd.random() < 0.5):
            f.seek(start)
            f.write(old)
        elif fate == "trash" and rnd.random() < 0.5:
            f.seek(start)
            f.write(rnd.randbytes(stop - start))
        start = stop


class CrashFile(apsw.VFSFile):  # type: ignore[misc]
    def __init__(self, vfs: CrashVFS, name: Any, flags: list[int]) -> None:
        super().__init__(vfs.base, name, flags)  # the base VFS by name, never this one (recursion)
        self.vfs = vfs
        self.path = name.filename() if isinstance(name, apsw.URIFilename) else name

    def xWrite(self, data: bytes, offset: int) -> None:
        self.vfs.tick(f"write {Path(self.path or '-').name}@{offset}")
        if self.path:
            self.vfs.note(self.path, "write", offset, bytes(data))
        super().xWrite(data, offset)

    def xTruncate(self, newsize: int) -> None:
        self.vfs.tick(f"truncate {Path(self.path or '-').name} to {newsize}")
        if self.path:
            self.vfs.note(self.path, "truncate", newsize, b"")
        super().xTruncate(newsize)

    def xSync(self, flags: int) -> None:
        self.vfs.tick(f"sync {Path(self.path or '-').name}")
        super().xSync(flags)
        if self.path and not self.vfs.fsync_lies:
            self.vfs.pending.pop(self.path, None)
