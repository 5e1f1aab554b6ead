"""The buffer stage: the store-and-forward queue of sealed chunks, in one SQLite file (apsw, WAL).

One module per job:

    queue.py    Buffer: append durably, read oldest first, delete by ack, totals (one per thread)
    cap.py      Ledger: the running totals, the cap (drop_oldest / refuse_new, max age), the eviction notices
    health.py   the file: tables, checks at open, quarantine of a damaged file, migration, error wrapping
    disk.py     BufferWriter (the pipeline thread's): reserve file, headroom, full disk, chunks that wait

Threads: the daemon opens one checked :class:`Buffer` at start (and reads its totals for status); the
pipeline thread writes through its own connection and a :class:`BufferWriter`; the uploader thread
reads and deletes through its own. Every module's docstring states its part of the contract.
"""

from agent.buffer.disk import BufferWriter, Commit, DiskReserve
from agent.buffer.queue import Buffer, BufferStats, StoredChunk

__all__ = ["Buffer", "BufferStats", "BufferWriter", "Commit", "DiskReserve", "StoredChunk"]
