"""The buffer file's health (agent/buffer/health.py): checks at open, quarantine, migration, read-only.

Damaged files at start: quarantined (``*.corrupt-*``), a fresh buffer, a critical event, and a second
start does not quarantine again. What SQLite cannot see (a flipped bit inside a value) is caught by the
per-chunk CRC; what the checks do not catch yet is pinned down by strict xfails. A file written by an
earlier version opens with every row. A read-only buffer creates nothing.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import apsw
import pytest
import structlog

import agent.buffer.health as health_module
from agent import wire
from agent.buffer import Buffer
from agent.chunk import SealedChunk
from agent.errors import StorageError
from agent.wire.values import ChunkId
from tests.harness.buffers import SCHEMA, fill, opaque, sealed
from tests.harness.mounts import tmpfs

SOAK = os.environ.get("EDGE_SOAK") == "1"  # `make soak`: many more trials
ROOT = Path(__file__).resolve().parent.parent


def test_a_corrupt_file_is_quarantined_not_a_crash_loop(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    buffer = Buffer(path)
    assert buffer.stats().chunks == 0
    assert len(list(tmp_path.glob("b.sqlite.corrupt-*"))) == 1


def test_storage_errors_name_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StorageError, match="file"):
        Buffer(blocker / "b.sqlite")


def test_read_only_directory_is_a_storage_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    with pytest.raises(StorageError):
        Buffer(folder / "b.sqlite")


# --- files of earlier versions ------------------------------------------------------------------------

# The tables as the version before the buffer's split created them: a ``degraded`` column (never used,
# since dropped from new files) beside the ``crc`` one.
DEGRADED_BUFFER_SQL = """
CREATE TABLE IF NOT EXISTS schemas (id INTEGER PRIMARY KEY, digest BLOB UNIQUE NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    boot_id BLOB NOT NULL, seq INTEGER NOT NULL, schema_id INTEGER NOT NULL REFERENCES schemas(id),
    first_tick INTEGER NOT NULL, sample_count INTEGER NOT NULL, payload BLOB NOT NULL,
    created REAL NOT NULL, degraded INTEGER NOT NULL DEFAULT 0, crc INTEGER NOT NULL DEFAULT 0,
    UNIQUE (boot_id, seq));
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS evictions (
    id INTEGER PRIMARY KEY, boot_id BLOB NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    reason TEXT NOT NULL, at REAL NOT NULL);
"""


def test_a_buffer_with_the_old_degraded_column_opens_with_its_rows_and_works_on(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    old = sealed(b"D" * 16, 3)
    db = apsw.Connection(str(path))
    db.execute("PRAGMA page_size=1024; PRAGMA journal_mode=WAL")
    db.execute(DEGRADED_BUFFER_SQL)
    db.execute(
        "INSERT INTO schemas (id, digest, body) VALUES (1, ?, ?)", (SCHEMA.digest, wire.schema_bytes(SCHEMA))
    )
    for c in old:
        db.execute(
            "INSERT INTO chunks (boot_id, seq, schema_id, first_tick, sample_count, payload, created, degraded,"
            " crc) VALUES (?, ?, 1, ?, ?, ?, ?, 0, ?)",
            (
                c.id.boot_id,
                c.id.seq,
                c.first_tick,
                c.sample_count,
                c.payload,
                time.time(),
                health_module.crc(c.payload),
            ),
        )
    db.close()
    with structlog.testing.capture_logs() as events:
        buffer = Buffer(path, check=True)  # what the upgraded daemon does first
    try:
        assert not [e for e in events if e["log_level"] == "critical"] and not list(
            tmp_path.glob("*.corrupt-*")
        )
        assert buffer.stats().chunks == 3 and buffer.stats().samples == 30  # the totals healed from the rows
        assert buffer.schema_id(SCHEMA) == 1
        buffer.append(1, sealed(b"E" * 16, 2))
        assert [(c.boot_id[:1], c.seq) for c in buffer.oldest()] == [
            (b"D", 0),
            (b"D", 1),
            (b"D", 2),
            (b"E", 0),
            (b"E", 1),
        ]
        assert buffer.delete([(b"D" * 16, 0, 2)]) == 3
        assert buffer.stats().chunks == 2
    finally:
        buffer.close()
    fresh = Buffer(tmp_path / "new.sqlite")
    columns = {r[1] for r in fresh.db.execute("PRAGMA table_info(chunks)").fetchall()}
    fresh.close()
    assert "degraded" not in columns and "crc" in columns


# --- read-only ------------------------------------------------------------------------------------------


def test_read_only_creates_no_folder_and_no_file(tmp_path: Path) -> None:
    path = tmp_path / "never" / "b.sqlite"
    with pytest.raises(StorageError, match=r"never/b\.sqlite"):
        Buffer(path, read_only=True)
    assert not (tmp_path / "never").exists()
    (tmp_path / "never").mkdir()
    with pytest.raises(StorageError, match="open read-only"):
        Buffer(path, read_only=True)
    assert list((tmp_path / "never").iterdir()) == []


def test_read_only_reads_the_totals_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    fill(path, b"R" * 16, 4)
    before = path.read_bytes()
    reader = Buffer(path, read_only=True)
    try:
        assert (reader.stats().chunks, reader.stats().samples) == (4, 40)
        with pytest.raises(StorageError):
            reader.delete([(b"R" * 16, 0, 3)])
    finally:
        reader.close()
    assert path.read_bytes() == before


def test_read_only_of_a_file_that_is_no_database_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    path.write_bytes(b"not a database at all " * 100)
    with pytest.raises(StorageError, match=r"b\.sqlite"):
        Buffer(path, read_only=True)
    assert not list(tmp_path.glob("*.corrupt-*"))  # only a writer's checked open quarantines


# --- damaged files at start ---------------------------------------------------------------------------


def filled(path: Path, chunks: int = 40, size: int = 200) -> None:
    """A closed, checkpointed buffer (no WAL) with a few pages of chunks."""
    buffer = Buffer(path, check=True)
    sid = buffer.schema_id(SCHEMA)
    rnd = random.Random(3)
    buffer.append(
        sid, [SealedChunk(ChunkId(b"F" * 16, n), n, 10, rnd.randbytes(size)) for n in range(chunks)]
    )
    buffer.close()
    assert not Path(f"{path}-wal").exists()


def page_size(path: Path) -> int:
    """From the file header (the buffer picks its own page size; never assume one)."""
    with open(path, "rb") as f:
        f.seek(16)
        size = int.from_bytes(f.read(2), "big")
    return 65536 if size == 1 else size


def page_start(path: Path, page: int) -> int:
    """Where the b-tree header of a 1-based page begins (page 1 has the 100-byte file header first)."""
    return (page - 1) * page_size(path) + (100 if page == 1 else 0)


def pages_of(path: Path, table: str) -> list[int]:
    """1-based page numbers of a table's or index's b-tree (dbstat), from a read-only peek."""
    db = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return [r[0] for r in db.execute("SELECT pageno FROM dbstat WHERE name = ?", (table,)).fetchall()]
    finally:
        db.close()


def start_twice(path: Path, intact: bool = True) -> tuple[list[dict[str, Any]], list[Path], int]:
    """Two starts as the daemon does them; returns the critical events, the quarantined files, chunks."""
    with structlog.testing.capture_logs() as events:
        first = Buffer(path, check=True)
        chunks = first.stats().chunks
        first.close()
        second = Buffer(path, check=True)
        if intact:
            assert second.db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        second.close()
    quarantined = sorted(p for p in path.parent.glob(f"{path.name}.corrupt-*") if p.name.count("-") == 1)
    return [e for e in events if e["log_level"] == "critical"], quarantined, chunks


def flip(path: Path, offset: int, mask: int = 0x10) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))


def assert_quarantined_once(path: Path) -> None:
    critical, quarantined, chunks = start_twice(path)
    assert len(quarantined) == 1, "not quarantined, or quarantined again on the second start"
    assert [e["event"] for e in critical] == ["buffer_quarantined"]
    assert critical[0]["moved_to"] == str(quarantined[0])
    assert chunks == 0


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    path = tmp_path / "b.sqlite"
    filled(path)
    return path


def test_zeroed_header_is_quarantined(damaged: Path) -> None:
    with open(damaged, "r+b") as f:
        f.write(b"\0" * 100)
    assert_quarantined_once(damaged)


def test_random_garbage_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    path.write_bytes(random.Random(5).randbytes(64 * 1024))
    assert_quarantined_once(path)


def test_garbage_after_a_valid_header_is_quarantined(damaged: Path) -> None:
    data = damaged.read_bytes()
    keep = page_size(damaged)
    damaged.write_bytes(data[:keep] + random.Random(6).randbytes(len(data) - keep))
    assert_quarantined_once(damaged)


def test_a_truncated_main_file_is_quarantined(damaged: Path) -> None:
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) // 2 + 100])
    assert_quarantined_once(damaged)


@pytest.mark.parametrize("where", ["page_type", "cell_pointer", "right_child"])
def test_flipped_bits_in_a_btree_page_header_are_quarantined(damaged: Path, where: str) -> None:
    interior = pages_of(damaged, "chunks")[0]  # the root ("/" comes first): an interior page
    base = page_start(damaged, interior)
    with open(damaged, "rb") as f:
        f.seek(base)
        kind = f.read(1)[0]
    assert kind == 0x05, "the chunks table should need an interior page here"
    offset = {"page_type": base, "cell_pointer": base + 12, "right_child": base + 8 + 2}[where]
    flip(damaged, offset, 0x01 if where == "page_type" else 0x40)
    assert_quarantined_once(damaged)


@pytest.mark.slow  # bounded in `make test`, long in `make soak`
def test_flipped_bits_anywhere_never_crash_and_never_loop(damaged: Path) -> None:
    """Random bit flips in the b-tree pages of the tables and indexes: whatever SQLite makes of them, a
    start never raises and never quarantines twice. (Not in sqlite_schema's pages: damage to the schema's
    SQL text passes quick_check and breaks every query, see
    test_a_flipped_bit_in_the_schema_text_is_quarantined. What quick_check lets through in an index is
    pinned by the index test.)"""
    original = damaged.read_bytes()
    size = page_size(damaged)
    schema_pages = set(pages_of(damaged, "sqlite_schema")) | {1}
    targets = [n for n in range(len(original)) if n // size + 1 not in schema_pages]
    rnd = random.Random(int(os.environ.get("EDGE_SEED", "9")))
    for trial in range(200 if SOAK else 30):
        for stale in damaged.parent.glob("b.sqlite*"):
            stale.unlink()
        data = bytearray(original)
        for _ in range(rnd.randint(1, 4)):
            data[rnd.choice(targets)] ^= 1 << rnd.randrange(8)
        damaged.write_bytes(bytes(data))
        critical, quarantined, _ = start_twice(damaged, intact=False)
        assert len(quarantined) <= 1 and len(critical) == len(quarantined), f"trial {trial}"


def test_a_truncated_wal_opens_as_the_last_whole_commit(tmp_path: Path) -> None:
    """A WAL cut anywhere is what a crash leaves: SQLite recovers the commits whole in it, a prefix of
    the commits. That is a healthy buffer (not quarantined) holding a prefix, in order."""
    path = tmp_path / "b.sqlite"
    script = (
        f"import os, sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from agent.buffer import Buffer\nfrom tests.harness.buffers import SCHEMA, opaque\n"
        f"b = Buffer({str(path)!r}, check=True); sid = b.schema_id(SCHEMA)\n"
        "for n in range(12): b.append(sid, opaque(bytes([n]) * 16, 2, 1500))\n"
        "os.kill(os.getpid(), 9)\n"
    )
    subprocess.run([sys.executable, "-c", script], timeout=60, check=False)
    wal = Path(f"{path}-wal")
    full = wal.read_bytes()
    assert len(full) > 8 * 1024
    rnd = random.Random(11)
    for cut in [0, 20, 32, 4000, *(rnd.randrange(32, len(full)) for _ in range(8))]:
        folder = tmp_path / f"cut{cut}"
        folder.mkdir()
        shutil.copy(path, folder / "b.sqlite")
        (folder / "b.sqlite-wal").write_bytes(full[:cut])
        critical, quarantined, _ = start_twice(folder / "b.sqlite")
        assert not quarantined and not critical, f"cut at {cut}"
        buffer = Buffer(folder / "b.sqlite")
        boots = [r.boot_id[0] for r in buffer.oldest(0, max_bytes=1 << 30)]
        buffer.close()
        assert boots == sorted(boots) and all(boots.count(b) == 2 for b in set(boots))  # whole commits
        assert boots == [n for n in range(len(boots) // 2) for _ in (0, 1)], f"not a prefix at {cut}"


def test_a_bit_flip_inside_a_stored_payload_is_caught_by_its_crc(damaged: Path) -> None:
    """SQLite keeps no checksums of its own, so a flipped bit inside a chunk's payload passes quick_check and
    integrity_check; the buffer's per-chunk CRC catches it: the chunk is dropped and reported as corrupt
    instead of being uploaded as data."""
    buffer = Buffer(damaged)
    before = buffer.oldest(0, max_bytes=1 << 30)
    buffer.close()
    data = damaged.read_bytes()
    needle = before[7].payload[50:80]
    offset = data.find(needle)
    assert offset > 0
    while offset > 0:  # every copy: a b-tree split may leave a stale one in unused space
        flip(damaged, offset + 5)
        offset = data.find(needle, offset + 1)
    critical, quarantined, chunks = start_twice(damaged)
    assert not quarantined and not critical and chunks == len(before)
    buffer = Buffer(damaged)
    after = buffer.oldest(0, max_bytes=1 << 30)
    notices = buffer.notices()
    buffer.close()
    assert [c.seq for c in after] == [c.seq for c in before if c.seq != before[7].seq]
    assert all(
        c.payload == d.payload
        for c, d in zip([c for c in before if c.seq != before[7].seq], after, strict=True)
    )
    assert [(boot, first, last) for _, boot, first, last in notices][-1] == (
        before[7].boot_id,
        before[7].seq,
        before[7].seq,
    )


@pytest.mark.xfail(
    strict=True,
    reason="quick_check does not compare an index with its table: a damaged UNIQUE(boot_id, seq) index"
    " passes the start check, and acks (delete by boot_id/seq) then miss their rows",
)
def test_a_flipped_bit_in_the_index_is_quarantined(damaged: Path) -> None:
    """Today: quick_check passes, then an ack of seq 7 deletes nothing (the acked chunk is uploaded again
    at every session), an ack of 6..8 deletes only 6, and a second (boot, 7) is accepted."""
    size = page_size(damaged)
    data = damaged.read_bytes()
    key = b"F" * 16 + bytes([7])  # (boot F*16, seq 7): seq is a 1-byte int in the index record
    hits = [
        found
        for page in pages_of(damaged, "sqlite_autoindex_chunks_1")
        if (found := data.find(key, (page - 1) * size, page * size)) > 0
    ]
    assert len(hits) == 1
    offset = hits[0]
    flip(damaged, offset + 16, 0x40)  # seq 7 -> 71, in the index only
    with structlog.testing.capture_logs():
        Buffer(damaged, check=True).close()
    assert list(damaged.parent.glob("b.sqlite.corrupt-*")), "quick_check let a damaged index through"


def test_two_quarantines_in_one_second_keep_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health_module, "time", SimpleNamespace(time=lambda: 1_700_000_000.0))
    path = tmp_path / "b.sqlite"
    with structlog.testing.capture_logs():
        for text in (b"first damaged file ", b"second damaged file "):
            path.unlink(missing_ok=True)
            path.write_bytes(text * 100)
            Buffer(path, check=True).close()
    kept = sorted(p.read_bytes()[:6] for p in tmp_path.glob("b.sqlite.corrupt-*"))
    assert kept == [b"first ", b"second"]


@pytest.mark.xfail(
    strict=True,
    reason="quick_check does not read the schema's SQL text: a flipped bit there (column id -> hd)"
    " opens fine, then every query fails with StorageError 'no such column: id', at every start: the"
    " crash loop the quarantine exists to prevent",
)
def test_a_flipped_bit_in_the_schema_text_is_quarantined(damaged: Path) -> None:
    data = bytearray(damaged.read_bytes())
    needle = b" id INTEGER PRIMARY KEY AUTOINCREMENT"
    offset = data.find(needle)
    assert offset > 0
    while offset > 0:  # every copy: only the live one matters, a stale one is harmless
        data[offset + 1] ^= 0x01  # "id" -> "hd"
        offset = data.find(needle, offset + 1)
    damaged.write_bytes(bytes(data))
    for _ in range(2):  # two starts, as after a crash and a restart by systemd
        with structlog.testing.capture_logs():
            buffer = Buffer(damaged, check=True)
        try:
            buffer.stats()  # what the daemon does right after opening
            buffer.append(buffer.schema_id(SCHEMA), opaque(b"S" * 16, 1))
        finally:
            buffer.close()


# --- files that are not the buffer's (issue 10) -------------------------------------------------------


def test_a_foreign_sqlite_file_is_refused_untouched_and_not_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    other = apsw.Connection(str(path))
    other.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT); INSERT INTO notes VALUES (1, 'x')")
    other.close()
    before = path.read_bytes()
    with pytest.raises(StorageError, match=r"notes\.sqlite: not an edge-agent buffer .*tables notes"):
        Buffer(path, check=True)
    assert path.read_bytes() == before  # not altered: no table added, not even the WAL header
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.sqlite"]  # not quarantined, no side files


@pytest.fixture
def read_only_dir() -> Iterator[Path]:
    """A read-only tmpfs (root ignores permissions, not a read-only mount), unmounted after the test."""
    with tmpfs("ro,size=1m", "buffer-ro-") as mount_point:
        yield mount_point


def test_a_read_only_location_says_so(read_only_dir: Path) -> None:
    path = read_only_dir / "b.sqlite"
    with pytest.raises(StorageError, match=f"cannot create {path}: read-only file system$"):
        Buffer(path, check=True)
