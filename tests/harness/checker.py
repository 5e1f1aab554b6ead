"""The Jepsen-style checker of the chaos tests: what the agents committed against what the receiver stored.

The guarantee under test (issue 4): every sample the agent has committed to its buffer reaches the
receiver's storage exactly once, in order per vehicle, unless the buffer cap evicted it, and then the
receiver's gap ledger records it.

What "committed" is, without trusting the agent's counters
- A boot ``b`` of vin ``v`` (one agent process) numbers its chunks 0, 1, 2, ... with no hole, and the
  pipeline hands them to the buffer in that order (one transaction per commit; a failed commit is retried
  with the same chunks first; a full buffer under ``refuse_new`` refuses them and records them for the
  ledger instead). So the chunks ``b`` sealed are a prefix ``C_b = {0 .. N_b - 1}`` of its seqs, each one
  either committed or recorded as evicted.
- ``N_b`` is bounded from below by independent observations:
  (1) the agent's buffer file, read by the tests' own SQLite connection every ~200 ms during the run and
      once more after each ``kill -9`` (a post-mortem read sees every chunk the dead boot committed and
      nobody deleted), and at the end;
  (2) the receiver's store: a stored chunk was sent, and the uploader sends only from the buffer.
  ``N_b = max(1 + highest seq observed in (1) or (2), chunks_committed of b's --report)``. The report
  exists only for a boot that ended normally (chunks refused by a full buffer count as sealed: they are
  in the ledger, never in the buffer); a report below the observed bound is itself a violation,
  and so is a ``samples_committed`` that differs from the sample counts of its chunks (when every one of
  them was seen).
- Blind spot, stated: for a boot killed with ``kill -9``, chunks above every observed seq are invisible
  if they were committed, never seen by a poll, and then deleted from the buffer without being stored.
  Only a false ack deletes, and a false ack would have to hit exactly the last chunks of a dying boot
  within one poll interval; any other false ack is caught below. The sample-level check closes most of
  the rest: a killed boot's ticks are re-sampled by the next boot, and the last boot of a vin must
  complete the whole log.

The checks, per vin
- lost: ``C_b − stored_b − evicted_b`` for every boot, as (boot, seq); must be empty. ``evicted_b`` is what
  the receiver's gap ledger (``gaps`` table, reason ``evicted``) records for that boot.
- duplicates at rest: a (vin, boot, seq) stored twice; a (signal, tick) stored twice (whatever the store's
  layout: the values the chunks rows account for, summed, must equal the values the vin's export holds;
  with a row per value, also no (signal, tick) row twice); within one boot two stored chunks that share a
  tick (the same samples under two identities); a tick exported twice.
- order: within each boot, every stored chunk's ticks strictly increase and the last tick of a chunk is
  below the first tick of the next stored seq (ticks strictly increase with seq); over the whole vin the
  exported ticks strictly increase.
- integrity: a chunk observed in a buffer and stored has the same first tick and sample count on both sides.
- gaps: the receiver's own ``stats()`` must report no missing run that the ledger does not explain.
- data (the strongest check): given the log's truth (``edge-agent sample LOG``'s CSV), when some boot of
  the vin completed its replay and none of its own chunks was evicted, the export must equal the truth
  byte for byte: every tick of the log is stored exactly once, with identical values, across every kill
  and restart. A replay restarted after a crash starts again from the beginning of the log, so ticks that
  a killed boot had sampled but not committed come back through the next boot. Without such a boot, every
  exported row must be a row of the truth (nothing invented or altered).
- evictions counted exactly: the agent's own ``dropped_chunks`` counter (what ``edge-agent status``
  shows, read from its buffer at the end) equals the chunks in the vin's gap ledger, and no eviction
  notice is left undelivered in the agent's buffer.
- unacked: chunks still in the agent's buffer at the end (after the drain): must be 0, or the agent is
  stuck.
"""

from __future__ import annotations

import io
import itertools
import json
import struct
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

from agent.wire.values import PhysicalValue
from receiver.store import Store, open_store
from receiver.timeline import write_csv

ChunkKey = tuple[str, bytes, int]  # (vin, boot_id, seq)


@dataclass(frozen=True)
class Observed:
    """A chunk as read from an agent's buffer."""

    first_tick: int
    sample_count: int


@dataclass
class Boot:
    """One agent process, as the harness saw it."""

    vin: str
    boot_id: bytes | None = None  # from the agent's ``agent_starting`` log line
    report: dict[str, object] | None = None  # its ``--report`` JSON, when it ended normally
    killed: bool = False


class CommitHistory:
    """Every chunk ever seen in the agents' buffers, per (vin, boot, seq); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.chunks: dict[ChunkKey, Observed] = {}
        self.boots: list[Boot] = []
        self.pending: dict[str, int] = {}  # vin → rows in its buffer at the last read
        self.dropped: dict[str, int] = {}  # vin → the buffer's own dropped_chunks counter, last read
        self.notices: dict[str, int] = {}  # vin → eviction notices not yet delivered, last read
        self.conflicts: list[str] = []  # a (boot, seq) seen twice with different contents
        self.read_errors = 0

    def add_boot(self, boot: Boot) -> None:
        with self._lock:
            self.boots.append(boot)

    def observe(self, vin: str, buffer_path: Path) -> int | None:
        """Read the buffer's rows (never its payloads) and remember them; ``None`` if it cannot be read."""
        try:
            if Path(buffer_path).stat().st_size < 512:
                return None  # being created by the agent: leave it alone until its header is written
        except OSError:
            return None
        try:
            db = apsw.Connection(str(buffer_path), flags=apsw.SQLITE_OPEN_READWRITE)  # never creates
            try:
                db.setbusytimeout(2000)
                db.execute("BEGIN")  # one snapshot for the rows, the counters and the notices
                rows: list[Any] = db.execute(
                    "SELECT boot_id, seq, first_tick, sample_count FROM chunks"
                ).fetchall()
                counters: dict[str, float] = dict(db.execute("SELECT name, value FROM counters").fetchall())  # type: ignore[arg-type]
                has_notices = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'evictions'").fetchall()
                notices: Any = (
                    db.execute("SELECT count(*) FROM evictions").fetchall()[0][0] if has_notices else 0
                )
                db.execute("COMMIT")
            finally:
                db.close()
        except apsw.Error:
            with self._lock:
                self.read_errors += 1
            return None
        with self._lock:
            for boot_id, seq, first_tick, count in rows:
                key, seen = (vin, bytes(boot_id), int(seq)), Observed(int(first_tick), int(count))
                known = self.chunks.setdefault(key, seen)
                if known != seen:
                    self.conflicts.append(f"{bytes(boot_id).hex()}:{seq} seen as {known} and as {seen}")
            self.pending[vin] = len(rows)
            self.dropped[vin] = int(counters.get("dropped_chunks", 0))
            self.notices[vin] = int(notices)
        return len(rows)


class BufferWatcher:
    """A thread that reads each agent buffer into a :class:`CommitHistory` every ``interval_s``."""

    def __init__(self, history: CommitHistory, buffers: Mapping[str, Path], interval_s: float = 0.2) -> None:
        self.history = history
        self.buffers = dict(buffers)
        self.interval_s = interval_s
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="buffer-watcher", daemon=True)

    def start(self) -> BufferWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for vin, path in self.buffers.items():
                self.history.observe(vin, path)
            self.polls += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        for vin, path in self.buffers.items():  # a last read, after everything stopped
            self.history.observe(vin, path)


def boot_id_from_log(lines: Iterable[str]) -> bytes | None:
    """The boot id an agent logged in its ``agent_starting`` event (JSON logs), if it got that far."""
    for line in lines:
        if '"agent_starting"' not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "agent_starting" and "boot_id" in event:
            return bytes.fromhex(str(event["boot_id"]))
    return None


@dataclass
class VinReport:
    vin: str
    boots: int = 0
    committed: int = 0  # chunks in the C_b prefixes
    stored: int = 0
    evicted: int = 0
    lost: list[tuple[str, int]] = field(default_factory=list)  # (boot hex, seq)
    duplicates: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    integrity: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    unacked: int = 0
    complete_boots: int = 0
    clean_complete_boots: int = 0  # complete, and none of their chunks evicted
    ticks: int = 0  # exported rows
    values_stored: int = 0  # what the chunks rows say they hold, summed: each (signal, tick) once

    @property
    def ok(self) -> bool:
        problems = (self.lost, self.duplicates, self.order, self.integrity, self.gaps, self.data)
        return not any(problems) and self.unacked == 0


@dataclass
class CheckResult:
    vins: dict[str, VinReport]
    history_conflicts: list[str]

    @property
    def lost(self) -> int:
        return sum(len(r.lost) for r in self.vins.values())

    @property
    def duplicates(self) -> int:
        return sum(len(r.duplicates) for r in self.vins.values())

    @property
    def order_violations(self) -> int:
        return sum(len(r.order) for r in self.vins.values())

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.vins.values()) and not self.history_conflicts

    def summary(self) -> str:
        lines = []
        for r in self.vins.values():
            lines.append(
                f"{r.vin}: {r.boots} boots ({r.complete_boots} complete), sealed {r.committed} chunks, "
                f"stored {r.stored}, evicted {r.evicted}, lost {len(r.lost)}, duplicates "
                f"{len(r.duplicates)}, order {len(r.order)}, integrity {len(r.integrity)}, gaps "
                f"{len(r.gaps)}, data {len(r.data)}, unacked {r.unacked}, {r.ticks} ticks exported"
            )
            if r.lost:
                boots: dict[str, list[int]] = defaultdict(list)
                for boot, seq in r.lost:
                    boots[boot].append(seq)
                runs = [f"{boot} seq {a}-{b}" for boot, seqs in boots.items() for a, b in _ranges(seqs)]
                lines.append(f"  lost: {runs[:20]}{' ...' if len(runs) > 20 else ''}")
            for name in ("duplicates", "order", "integrity", "gaps", "data"):
                problems = getattr(r, name)
                if problems:
                    lines.append(f"  {name}: {problems[:10]}{' ...' if len(problems) > 10 else ''}")
        if self.history_conflicts:
            lines.append(f"buffer history conflicts: {self.history_conflicts[:10]}")
        return "\n".join(lines)


def _chunk_ticks(first: int, last: int, packed: bytes | None) -> list[int]:
    """A stored chunk's ticks: ``ticks`` is NULL when they run first..last, else int64 little-endian each."""
    if packed is None:
        return list(range(first, last + 1))
    return list(struct.unpack(f"<{len(packed) // 8}q", packed))


def _ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if out and out[-1][1] + 1 == seq:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


class RawStore:
    """The checker's own read-only connection to the receiver's store, beside the store's code: a SQLite
    file (apsw) or a ``postgresql://`` URL (psycopg); ``execute`` takes ``?`` placeholders on both."""

    def __init__(self, target: str | Path) -> None:
        self.postgresql = isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))
        if self.postgresql:
            import psycopg

            self._pg = psycopg.connect(str(target), autocommit=True)
        else:
            self._db = apsw.Connection(str(target), flags=apsw.SQLITE_OPEN_READONLY)
            self._db.setbusytimeout(10_000)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        if self.postgresql:
            return self._pg.execute(sql.replace("?", "%s").encode(), params or None).fetchall()
        return list(self._db.execute(sql, params))

    def has_table(self, name: str) -> bool:
        if self.postgresql:
            return bool(self.execute("SELECT to_regclass(?) IS NOT NULL", (name,))[0][0])
        return bool(self.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)))

    def close(self) -> None:
        (self._pg if self.postgresql else self._db).close()


def check(
    history: CommitHistory,
    store_path: str | Path,
    signals: list[str],
    truths: Mapping[str, str] | None = None,
) -> CheckResult:
    """Check every vin of ``history`` and of the store (a SQLite file or a ``postgresql://`` URL); see the
    module docstring for the formulation."""
    truths = truths or {}
    db = RawStore(store_path)
    try:
        vins = sorted({vin for vin, _, _ in history.chunks} | {b.vin for b in history.boots} | set(truths))
        duplicate_samples: list[Any] = []
        if db.has_table("samples"):  # a row per value
            duplicate_samples = db.execute(
                "SELECT s.vin, count(*) FROM (SELECT signal_id, tick FROM samples GROUP BY signal_id, tick "
                "HAVING count(*) > 1) d JOIN signals s ON s.id = d.signal_id GROUP BY s.vin"
            )
        duplicate_chunks: list[Any] = db.execute(
            "SELECT vin, boot_id, seq, count(*) FROM chunks GROUP BY vin, boot_id, seq HAVING count(*) > 1"
        )
        reports = {vin: _check_vin(vin, history, db) for vin in vins}
    finally:
        db.close()
    for vin, count in duplicate_samples:
        if vin in reports:
            reports[vin].duplicates.append(f"{count} (signal, tick) pairs stored more than once")
    for vin, boot_id, seq, count in duplicate_chunks:
        if vin in reports:
            reports[vin].duplicates.append(f"chunk {bytes(boot_id).hex()}:{seq} stored {count} times")
    with open_store(store_path, readonly=True) as store:
        known = set(store.vins())
        for entry in store.stats():
            if entry.vin in reports:
                for boot_id, first, last in entry.missing:
                    reports[entry.vin].gaps.append(
                        f"receiver reports {boot_id.hex()} seq {first}-{last} missing"
                    )
        for vin, report in reports.items():
            if vin in known:
                _check_data(report, store, signals, truths.get(vin))
                held = sum(v is not None for _, row in store.rows(vin, store.signals(vin)) for v in row)
                if held != report.values_stored:
                    report.duplicates.append(
                        f"the chunks account for {report.values_stored} values at rest, the vin holds {held}"
                    )
            elif truths.get(vin) is not None:
                report.data.append("nothing stored for this vin")
    return CheckResult(reports, list(history.conflicts))


def _check_vin(vin: str, history: CommitHistory, db: RawStore) -> VinReport:
    report = VinReport(vin)
    stored: dict[bytes, dict[int, tuple[int | None, int | None, int, bytes | None]]] = defaultdict(dict)
    for boot_id, seq, first, last, count, ticks, values in db.execute(
        "SELECT boot_id, seq, first_tick, last_tick, sample_count, ticks, values_stored FROM chunks "
        "WHERE vin = ?",
        (vin,),
    ):
        stored[bytes(boot_id)][int(seq)] = (first, last, int(count), None if ticks is None else bytes(ticks))
        report.values_stored += int(values)
    evicted: dict[bytes, set[int]] = defaultdict(set)
    for boot_id, first, last in db.execute(
        "SELECT boot_id, first_seq, last_seq FROM gaps WHERE vin = ? AND reason = 'evicted'", (vin,)
    ):
        evicted[bytes(boot_id)].update(range(int(first), int(last) + 1))
    observed: dict[bytes, dict[int, Observed]] = defaultdict(dict)
    for (chunk_vin, boot_id, seq), chunk in history.chunks.items():
        if chunk_vin == vin:
            observed[boot_id][seq] = chunk
    reported: dict[bytes, int] = {}  # chunks_committed of the boots that ended normally
    reported_samples: dict[bytes, int] = {}
    unknown_refusals: set[bytes] = set()
    boots = [b for b in history.boots if b.vin == vin]
    for boot in boots:
        if boot.report is not None and boot.report.get("complete"):
            report.complete_boots += 1
            if boot.boot_id is not None and not evicted.get(boot.boot_id):
                report.clean_complete_boots += 1
        if boot.boot_id is not None and boot.report is not None:
            # Chunks refused by a full buffer (refuse_new) were sealed, never committed: the ledger has
            # them. A report that does not count them separately allows for as many as the ledger holds.
            refused = boot.report.get("chunks_refused")
            reported[boot.boot_id] = int(str(boot.report.get("chunks_committed", 0))) + int(str(refused or 0))
            if refused is None:
                unknown_refusals.add(boot.boot_id)
            reported_samples[boot.boot_id] = int(str(boot.report.get("samples_committed", 0)))
    report.boots = len({b.boot_id for b in boots if b.boot_id is not None} | set(observed) | set(stored))
    report.unacked = history.pending.get(vin, 0)

    ledger = sum(len(seqs) for seqs in evicted.values())
    if vin in history.dropped and history.dropped[vin] != ledger:
        report.gaps.append(f"the agent counts {history.dropped[vin]} chunks dropped, the ledger {ledger}")
    if history.notices.get(vin):
        report.gaps.append(f"{history.notices[vin]} eviction notices never reached the receiver's ledger")

    for boot_id in sorted(set(observed) | set(stored) | set(reported) | set(evicted)):
        name = boot_id.hex()[:12]
        held, seen, gone = stored.get(boot_id, {}), observed.get(boot_id, {}), evicted.get(boot_id, set())
        bound = 1 + max([*held, *seen, *gone], default=-1)
        slack = len(gone) if boot_id in unknown_refusals else 0
        if boot_id in reported and reported[boot_id] + slack < bound:
            report.integrity.append(f"{name}: reports {reported[boot_id]} chunks committed, {bound} observed")
        committed = max(bound, reported.get(boot_id, 0))
        report.committed += committed
        report.stored += len(held)
        report.evicted += len(gone)
        report.lost += [(name, seq) for seq in range(committed) if seq not in held and seq not in gone]
        counts = {seq: chunk.sample_count for seq, chunk in seen.items()} | {s: h[2] for s, h in held.items()}
        complete_view = boot_id in reported_samples and not gone and len(counts) == committed
        if complete_view and sum(counts.values()) != reported_samples[boot_id]:
            report.integrity.append(
                f"{name}: reports {reported_samples[boot_id]} samples committed, its chunks hold "
                f"{sum(counts.values())}"
            )
        for seq, chunk in seen.items():
            if seq in held and (held[seq][0], held[seq][2]) != (chunk.first_tick, chunk.sample_count):
                report.integrity.append(
                    f"{name}:{seq} committed as ({chunk.first_tick}, {chunk.sample_count}) samples, "
                    f"stored as ({held[seq][0]}, {held[seq][2]})"
                )
        previous: tuple[int, list[int]] | None = None  # (seq, ticks) of the previous stored chunk
        for seq in sorted(held):
            first, last, count, packed = held[seq]
            if count == 0 or first is None or last is None:
                continue
            ticks = _chunk_ticks(first, last, packed)
            if len(ticks) != count or any(a >= b for a, b in itertools.pairwise(ticks)):
                report.order.append(f"{name}:{seq} ticks do not strictly increase ({count} samples)")
            if previous is not None and previous[1][-1] >= ticks[0]:
                report.order.append(
                    f"{name}: chunk {seq} starts at tick {ticks[0]}, chunk {previous[0]} ends at {previous[1][-1]}"
                )
                shared = set(previous[1]) & set(ticks)
                if shared:
                    report.duplicates.append(
                        f"{name}: chunks {previous[0]} and {seq} both hold {len(shared)} ticks"
                    )
            previous = (seq, ticks)
    return report


def _check_data(report: VinReport, store: Store, signals: list[str], truth: str | None) -> None:
    out = io.StringIO()
    last: int | None = None
    ticks = 0

    def rows() -> Iterable[tuple[int, list[PhysicalValue | None]]]:
        nonlocal last, ticks
        for tick, values in store.rows(report.vin, signals):
            if last is not None and tick <= last:
                report.order.append(f"exported tick {tick} after {last}")
            last = tick
            ticks += 1
            yield tick, values

    write_csv(out, store.rate(report.vin), signals, rows())
    report.ticks = ticks
    if truth is None:
        return
    exported = out.getvalue()
    if report.clean_complete_boots:
        if exported != truth:
            report.data.append(_diff(truth, exported))
        return
    truth_rows = set(truth.splitlines())
    foreign = [line for line in exported.splitlines() if line not in truth_rows]
    if foreign:
        report.data.append(f"{len(foreign)} exported rows are not in the log's truth, first: {foreign[0]!r}")


def _diff(truth: str, exported: str) -> str:
    want, got = truth.splitlines(), exported.splitlines()
    missing = set(want) - set(got)
    extra = set(got) - set(want)
    first = next(
        (i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), min(len(want), len(got))
    )
    sample = (want[first] if first < len(want) else None, got[first] if first < len(got) else None)
    return (
        f"export differs from the truth: {len(want)} truth rows, {len(got)} exported, {len(missing)} "
        f"missing, {len(extra)} extra; first difference at row {first}: truth {sample[0]!r}, export {sample[1]!r}"
    )
