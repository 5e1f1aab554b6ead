"""The buffer's queue (agent/buffer/queue.py): durable commits, oldest-first reads of one schema, deletes
only what an ack names, totals that match the rows. (Crashes: tests/test_buffer_crash.py; the file's
health: tests/test_buffer_health.py; the cap: tests/test_buffer_cap.py; the disk: tests/test_buffer_disk.py;
all of them against one model: tests/test_buffer_model.py.)"""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

from agent.buffer import Buffer
from agent.wire.values import ChunkId
from tests.harness.buffers import OTHER, SCHEMA, sealed


def test_append_then_read_oldest_first_and_delete_by_ack(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "b.sqlite")
    sid = buffer.schema_id(SCHEMA)
    buffer.append(sid, sealed(b"A" * 16, 5))
    rows = buffer.oldest(0, max_bytes=1 << 20)
    assert [r.seq for r in rows] == [0, 1, 2, 3, 4]
    assert buffer.stats().samples == 50
    assert buffer.delete([(b"A" * 16, 1, 2)]) == 2
    assert [r.seq for r in buffer.oldest(0)] == [0, 3, 4]
    assert [r.seq for r in buffer.oldest(rows[0].row_id)] == [3, 4]
    assert buffer.stats().last_ack_at is not None


def test_a_batch_never_mixes_schemas_and_respects_the_byte_limit(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "b.sqlite")
    first, second = buffer.schema_id(SCHEMA), buffer.schema_id(OTHER)
    assert buffer.schema_id(SCHEMA) == first and buffer.schema(second).rate == Fraction(10)
    buffer.append(first, sealed(b"A" * 16, 3))
    buffer.append(second, sealed(b"B" * 16, 2, OTHER))
    assert {r.schema_id for r in buffer.oldest(0)} == {first}
    one = buffer.oldest(0, max_bytes=1)
    assert len(one) == 1  # at least one chunk, whatever the limit


def test_commits_survive_reopen_and_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    script = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from tests.harness.buffers import SCHEMA, sealed
from agent.buffer import Buffer
b = Buffer({str(path)!r})
sid = b.schema_id(SCHEMA)
for n in range(20):
    b.append(sid, sealed(bytes([n]) * 16, 3))
print("committed", flush=True)
os.kill(os.getpid(), 9)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == -9 and "committed" in result.stdout
    buffer = Buffer(path)
    assert buffer.stats().chunks == 60
    assert buffer.db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_chunks_identity_is_boot_and_sequence() -> None:
    chunks = sealed(b"Z" * 16, 3)
    assert [c.id for c in chunks] == [ChunkId(b"Z" * 16, n) for n in range(3)]
    assert [c.first_tick for c in chunks] == [0, 10, 20] and all(c.sample_count == 10 for c in chunks)
