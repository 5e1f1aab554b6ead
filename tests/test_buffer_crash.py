"""Crash consistency of the buffer's queue: what an append or a delete that returned survives.

1. A crash-simulating VFS (:mod:`tests.harness.crashvfs`), as SQLite's own crash tests do: at the N-th
   write/truncate/sync/delete the "power fails", then each unsynced write is kept, reverted, torn at
   512-byte sector granularity or trashed with garbage (newest first), the ``-shm`` file (never durable)
   goes, and the buffer reopens with ``check=True``: ``integrity_check`` passes and it holds exactly the
   committed state, or that plus the one operation in flight (whose outcome was never reported).
   Nothing else.
2. kill -9 of a writer process at random points, round after round on the same file.
(Damaged files at start are the file's health: tests/test_buffer_health.py.)
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agent.buffer import Buffer
from agent.chunk import SealedChunk
from agent.errors import StorageError
from agent.wire.values import ChunkId
from tests.harness.buffers import SCHEMA, fold, opaque
from tests.harness.buffers import scratch as scratch_in
from tests.harness.crashvfs import CrashVFS

SOAK = os.environ.get("EDGE_SOAK") == "1"  # `make soak`: many more examples and rounds
pytestmark = pytest.mark.slow  # bounded in `make test`, long in `make soak`
ROOT = Path(__file__).resolve().parent.parent


def scratch() -> Path:
    return scratch_in("buffer-crash-")


# --- the workload and its model ------------------------------------------------------------------------


Row = tuple[bytes, int, int, bytes]  # boot, seq, samples, payload
State = tuple[tuple[Row, ...], tuple[tuple[bytes, int, int, str], ...], int, int]


def snapshot(db: apsw.Connection) -> State:
    rows = db.execute("SELECT boot_id, seq, sample_count, payload FROM chunks ORDER BY id").fetchall()
    notices = db.execute("SELECT boot_id, first_seq, last_seq, reason FROM evictions ORDER BY id").fetchall()
    counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
    return (
        tuple((bytes(r[0]), r[1], r[2], bytes(r[3])) for r in rows),
        tuple((bytes(n[0]), n[1], n[2], n[3]) for n in notices),
        int(counters.get("dropped_chunks", 0)),
        int(counters.get("dropped_samples", 0)),
    )


EMPTY: State = ((), (), 0, 0)


def shut(db: apsw.Connection) -> None:
    """Close a connection after the power failed: its last checkpoint fails, the handle goes anyway."""
    with contextlib.suppress(apsw.Error):
        db.close(True)
    db.close(True)  # idempotent; raises if still open


def after_append(state: State, chunks: list[SealedChunk]) -> State:
    rows = state[0] + tuple((c.id.boot_id, c.id.seq, c.sample_count, c.payload) for c in chunks)
    return (rows, *state[1:])  # type: ignore[return-value]


def after_delete(state: State, ranges: list[tuple[bytes, int, int]]) -> State:
    rows = tuple(r for r in state[0] if not any(b == r[0] and f <= r[1] <= t for b, f, t in ranges))
    return (rows, *state[1:])  # type: ignore[return-value]


def after_free(state: State, wanted: int) -> State:
    freed, n = 0, 0
    for row in state[0]:
        freed, n = freed + len(row[3]), n + 1
        if freed >= wanted:
            break
    gone = state[0][:n]
    runs = tuple((*run, "disk_full") for run in fold((r[0], r[1]) for r in gone))
    return (state[0][n:], state[1] + runs, state[2] + n, state[3] + sum(r[2] for r in gone))


def workload(path: Path, seed: int) -> Iterator[tuple[str, Any, Any]]:
    """Steps of (what, thunk, expected state if it succeeds); the caller runs them under the VFS.

    Two connections, as in the agent: the pipeline's (append, free_space) and the uploader's (oldest,
    delete). Payloads from a few bytes to a few pages (overflow chains), acks, evictions with their
    checkpoint, restarts (close checkpoints and removes the WAL).
    """
    rnd = random.Random(seed)
    boot = rnd.randbytes(16)
    seq = 0
    state = EMPTY
    conns: dict[str, Buffer] = {}  # w: the pipeline's connection, r: the uploader's
    sid = 0

    def open_both() -> None:
        nonlocal sid
        conns["w"] = Buffer(path, check=True)
        sid = conns["w"].schema_id(SCHEMA)
        conns["r"] = Buffer(path)

    def close_both() -> None:
        for name in ("r", "w"):
            conns.pop(name).close()

    yield "open", open_both, state
    for _ in range(rnd.randint(6, 18)):
        kind = rnd.choices(["append", "ack", "free", "restart"], [6, 2, 1, 1])[0]
        if kind == "append":
            chunks = [
                SealedChunk(
                    ChunkId(boot, seq + k),
                    seq + k,
                    rnd.randint(1, 50),
                    rnd.randbytes(rnd.choice([9, 300, 3000, 9000])),
                )
                for k in range(rnd.randint(1, 4))
            ]
            seq += len(chunks)
            state = after_append(state, chunks)
            yield "append", lambda c=chunks: conns["w"].append(sid, c), state
        elif kind == "ack" and state[0]:
            first = rnd.randrange(len(state[0]))
            last = min(len(state[0]) - 1, first + rnd.randint(0, 3))
            ranges = [(boot, state[0][first][1], state[0][last][1])]
            state = after_delete(state, ranges)
            yield "ack", lambda r=ranges: conns["r"].delete(r), state
        elif kind == "free" and state[0]:
            wanted = rnd.randint(1, 12000)
            state = after_free(state, wanted)
            yield "free", lambda w=wanted: conns["w"].free_space(w, "disk_full"), state
        elif kind == "restart":
            yield "restart", lambda: (close_both(), open_both()), state
    yield "close", close_both, state
    for name in ("r", "w"):  # after a crash: the connections go, whatever they say
        if name in conns:
            shut(conns[name].db)


def run(path: Path, seed: int, crash_at: int | None) -> tuple[CrashVFS, State, State, str]:
    """Run the workload; returns the VFS, the committed state, the state if the op in flight landed."""
    vfs = CrashVFS(crash_at)
    committed = maybe = EMPTY
    inflight = "none"
    steps = workload(path, seed)
    try:
        for what, thunk, expected in steps:
            try:
                thunk()
            except (StorageError, apsw.Error) as error:
                assert vfs.crashed, f"{what} failed without a crash: {error!r}"
                maybe, inflight = expected, what
                break
            assert not vfs.crashed or what in ("close", "restart"), f"{what} succeeded after the crash"
            committed = maybe = expected
        for _ in steps:  # drain: closes whatever is still open
            pass
    finally:
        steps.close()
        gc.collect()  # a connection whose Buffer() failed half-way closes now, with the power still off
        vfs.unregister()
    return vfs, committed, maybe, inflight


def verify(path: Path, committed: State, maybe: State, context: str) -> None:
    Path(f"{path}-shm").unlink(missing_ok=True)  # shared memory is not durable
    buffer = Buffer(path, check=True)
    try:
        assert not list(path.parent.glob("*.corrupt*")), f"quarantined after a crash: {context}"
        db = buffer.db
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)], context
        got = snapshot(db)
        assert got in (committed, maybe), (
            f"{context}\n committed={summary(committed)}\n maybe={summary(maybe)}\n got={summary(got)}"
        )
        stats = buffer.stats()
        rows = got[0]
        assert (stats.chunks, stats.samples, stats.payload_bytes) == (
            len(rows),
            sum(r[2] for r in rows),
            sum(len(r[3]) for r in rows),
        )
        # and the buffer works on: one more commit, read back
        sid = buffer.schema_id(SCHEMA)
        buffer.append(sid, opaque(b"N" * 16, 1))
        assert buffer.oldest(0, max_bytes=1 << 30)[-1].boot_id == b"N" * 16
    finally:
        buffer.close()


def summary(state: State) -> str:
    return f"seqs {[r[1] for r in state[0]]} notices {[n[1:3] for n in state[1]]} dropped {state[2]}"


def count_events(seed: int) -> int:
    folder = scratch()
    try:
        vfs, *_ = run(folder / "b.sqlite", seed, None)
        return vfs.events
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # dealloc after the crash
@settings(
    max_examples=600 if SOAK else 100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32), where=st.floats(0.0, 1.0), fate_seed=st.integers(0, 2**32))
def test_power_loss_at_any_write_leaves_exactly_the_committed_state(
    seed: int, where: float, fate_seed: int
) -> None:
    crash_at = 1 + int(where * (count_events(seed) - 1))
    folder = scratch()
    path = folder / "b.sqlite"
    try:
        vfs, committed, maybe, inflight = run(path, seed, crash_at)
        assert vfs.crashed
        fates = vfs.lose_power(random.Random(fate_seed))
        event(f"crash in {inflight}")
        event(f"{sum(len(f.split()) for f in fates.values())} unsynced writes")  # bucketed below
        verify(path, committed, maybe, f"seed={seed} crash_at={crash_at} in {inflight}; {fates}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_vfs_really_sees_the_commits() -> None:
    """The harness itself: a clean run goes through the VFS, syncs, and a clean close leaves no WAL."""
    folder = scratch()
    try:
        vfs, committed, _, _ = run(folder / "b.sqlite", 7, None)
        assert vfs.events > 20 and not vfs.crashed and committed[0]
        assert not vfs.pending.get(str(folder / "b.sqlite"))
        verify(folder / "b.sqlite", committed, committed, "clean run")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_check_has_teeth_when_fsync_lies() -> None:
    """A control for the harness: if xSync did nothing, losing the unsynced writes loses commits, and
    the very same verification must say so."""
    folder = scratch()
    path = folder / "b.sqlite"
    try:
        vfs = CrashVFS(fsync_lies=True)
        try:
            buffer = Buffer(path, check=True)
            sid = buffer.schema_id(SCHEMA)
            buffer.append(sid, opaque(b"A" * 16, 3))
            committed = snapshot(buffer.db)
            vfs.crash_at = vfs.events + 1
            with pytest.raises(StorageError):
                buffer.append(sid, opaque(b"B" * 16, 2))
            shut(buffer.db)
        finally:
            vfs.unregister()
        vfs.lose_power(random.Random(1), "revert")
        with pytest.raises(AssertionError):
            verify(path, committed, committed, "fsync lies")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- kill -9 of a writer process ----------------------------------------------------------------------

WRITER = """
import os, random, sys
sys.path.insert(0, {root!r})
from agent.buffer import Buffer
from agent.chunk import SealedChunk
from agent.wire.values import ChunkId
from tests.harness.buffers import SCHEMA
path, start, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
b = Buffer(path, check=True)
sid = b.schema_id(SCHEMA)
print("ready", flush=True)
seq = start
while True:
    if seq % 5 == 4:
        rows = b.oldest(0, max_bytes=1 << 30, max_chunks=3)
        if rows:
            print("d", rows[0].seq, rows[-1].seq, flush=True)
            b.delete([(rows[0].boot_id, rows[0].seq, rows[-1].seq)])
            print("D", flush=True)
    print("a", seq, flush=True)
    b.append(sid, [SealedChunk(ChunkId(b"K" * 16, seq), seq, 50, rnd.randbytes(rnd.choice([40, 900, 5000, 20000])))])
    print("A", seq, flush=True)
    seq += 1
"""


def kill_and_check(
    path: Path, script: Path, round_no: int, rnd: random.Random, state: dict[str, Any]
) -> None:
    """One round: start the writer, kill -9 it after a random delay, reopen and compare."""
    present: set[int] = state["present"]
    child = subprocess.Popen(
        [sys.executable, str(script), str(path), str(state["next_seq"]), str(round_no)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "ready\n"
    time.sleep(rnd.uniform(0.0, 0.6))
    child.send_signal(signal.SIGKILL)
    out = child.stdout.read()  # not communicate(): it would skip what readline() buffered
    child.stdout.close()
    assert child.wait(timeout=30) == -signal.SIGKILL
    inflight: tuple[str, ...] = ()
    for line in out.splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # cut by the kill: the intent line before it is what counts
        word, *args = line.split()
        if word == "a":
            inflight = ("a", args[0])
        elif word == "A":
            present.add(int(args[0]))
            state["next_seq"] = int(args[0]) + 1
            inflight = ()
        elif word == "d":
            inflight = ("d", args[0], args[1])
        elif word == "D":
            lo, hi = int(inflight[1]), int(inflight[2])
            present = {s for s in present if not lo <= s <= hi}
            inflight = ()
    maybe_present = set(present)
    if inflight and inflight[0] == "a":
        maybe_present.add(int(inflight[1]))
        state["next_seq"] = int(inflight[1]) + 1  # never reuse a seq that may have landed
    elif inflight:
        lo, hi = int(inflight[1]), int(inflight[2])
        maybe_present = {s for s in present if not lo <= s <= hi}
    buffer = Buffer(path, check=True)
    try:
        assert buffer.db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        seqs = [r[0] for r in buffer.db.execute("SELECT seq FROM chunks ORDER BY id").fetchall()]
        assert seqs == sorted(seqs), "commit order lost"
        assert set(seqs) in (present, maybe_present), f"round {round_no}: in flight {inflight}"
        state["present"] = set(seqs)
    finally:
        buffer.close()
    assert not list(path.parent.glob("*.corrupt*"))


def test_kill_9_at_random_points_loses_nothing_committed(tmp_path: Path) -> None:
    """Round after round on one file: every seq printed after append returned is there, deletes that
    returned are there, the one operation in flight may or may not be; integrity_check passes.

    On a tmpfs when there is one (a kill keeps the page cache, so fsync is beside the point): the writer
    then gets through several WAL auto-checkpoints per round, and the kills land in those too."""
    folder = scratch()
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(root=str(ROOT)))
    rnd = random.Random(int(os.environ.get("EDGE_SEED", "4")))
    state: dict[str, Any] = {"present": set(), "next_seq": 0}
    rounds = 40 if SOAK else 8
    try:
        for round_no in range(rounds):
            kill_and_check(folder / "b.sqlite", script, round_no, rnd, state)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert state["next_seq"] > 100 * rounds, "the writer hardly got going: the kills proved little"
