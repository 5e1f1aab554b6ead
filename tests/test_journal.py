"""Logging to journald (agent.service.logs): the format's rules, then a real systemd-journald reading it back.

The journald is private to the test: a journal namespace instance (``systemd-journald NAMESPACE``, what
``LogNamespace=`` starts) inside its own mount namespace, where tmpfs hides the host's /run and
/var/log/journal. As systemd does for a ``LogNamespace=`` service, the namespace's socket directory is
bind-mounted over /run/systemd/journal there, so a process run inside (``nsenter``) logs to it through
the usual socket, systemd-python included. Nothing of it is left on the host: the tmpfs mounts vanish
with the namespace when the journald we started (and only it, by pid) stops. Needs root.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from agent.service import logs
from tests.harness.broker import Broker

ROOT = Path(__file__).resolve().parent.parent
HIGHWAY = ROOT / "replay_logs" / "highway.log.gz"
DBC = ROOT / "dbc" / "reference_ev.dbc"
JOURNALD = next(
    (p for p in ("/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald") if Path(p).exists()),
    None,
)

# Mount a private /run and /var/log/journal, then become the journal namespace's journald.
START = """
set -e
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/systemd/journal
if [ -d /var/log/journal ]; then mount -t tmpfs -o mode=2755 tmpfs /var/log/journal; fi
exec "$0" "$1"
"""


# --- the rules of the format -------------------------------------------------------------------------


def test_field_names_follow_journald_rules() -> None:
    assert logs.field_name("backlog_samples") == "BACKLOG_SAMPLES"
    assert logs.field_name("_private") == "PRIVATE"  # a leading "_" is journald's (trusted fields)
    assert logs.field_name("2nd-try") == "F_2ND_TRY"
    assert len(logs.field_name("x" * 100)) == 64


def test_journal_fields_of_an_event() -> None:
    fields = logs.journal_fields(
        {
            "event": "state_changed",
            "level": "warning",
            "vin": "V1",
            "state": "ONLINE",
            "reason": "connected (Success)",
            "backlog_samples": 600,
            "ok": True,
            "gone": None,
            "message": "a field named like ours",
        },
        "edge-agent",
    )
    as_dict = dict(fields)
    assert as_dict["MESSAGE"] == (
        "state_changed vin=V1 state=ONLINE reason='connected (Success)' backlog_samples=600 ok=true"
        " message='a field named like ours'"
    )
    assert as_dict["EVENT"] == "state_changed"
    assert as_dict["PRIORITY"] == "4"
    assert as_dict["SYSLOG_IDENTIFIER"] == "edge-agent"
    assert as_dict["BACKLOG_SAMPLES"] == "600" and as_dict["OK"] == "true"
    assert as_dict["FIELD_MESSAGE"] == "a field named like ours"
    assert "GONE" not in as_dict and "TIMESTAMP" not in as_dict and "LEVEL" not in as_dict
    assert len(fields) == len(as_dict), "no field twice"


def test_priorities_are_syslog_levels() -> None:
    def priority(level: str) -> str:
        return dict(logs.journal_fields({"event": "e", "level": level}, "x"))["PRIORITY"]

    assert [priority(level) for level in ("critical", "error", "warning", "info", "debug")] == [
        "2",
        "3",
        "4",
        "6",
        "7",
    ]


def test_native_encoding_is_binary_safe_for_newlines() -> None:
    assert logs.encode_native([("MESSAGE", "hello"), ("EVENT", "e")]) == b"MESSAGE=hello\nEVENT=e\n"
    assert (
        logs.encode_native([("EXCEPTION", "a\nb")]) == b"EXCEPTION\n" + (3).to_bytes(8, "little") + b"a\nb\n"
    )


def test_auto_format_picks_the_journal_only_for_a_journal_stream(tmp_path: Path) -> None:
    left, right = socket.socketpair()
    with left, right:
        st = os.fstat(left.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert logs.journal_stream_is_stderr(env, fd=left.fileno())
        assert not logs.journal_stream_is_stderr(env, fd=right.fileno())  # another socket
        assert not logs.journal_stream_is_stderr({"JOURNAL_STREAM": "garbage"}, fd=left.fileno())
        assert not logs.journal_stream_is_stderr({}, fd=left.fileno())

    class Pipe:
        def isatty(self) -> bool:
            return False

    assert logs.resolve_format("auto", environ={}, stderr=Pipe()) == "json"
    assert logs.resolve_format("journal", journal_socket=str(tmp_path / "none")) == "json"
    assert logs.resolve_format("console") == "console"


def test_unreachable_journal_falls_back_to_json_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        logs.configure("info", "journal", journal=logs.NativeJournal(str(tmp_path / "no-journald")).send)
        logs.get_logger("agent.test", vin="V9").error("commit_failed", reason="disk full")
    finally:
        structlog.reset_defaults()
    record = json.loads(capsys.readouterr().err)
    assert record["event"] == "commit_failed" and record["vin"] == "V9" and record["priority"] == "3"
    assert "journal_error" in record


# --- a real journald ----------------------------------------------------------------------------------


@dataclass
class Journald:
    pid: int
    namespace: str

    @property
    def mount_ns(self) -> str:
        return f"/proc/{self.pid}/ns/mnt"

    @property
    def socket_dir(self) -> Path:
        """The namespace's socket directory, reached from the host through the journald's root."""
        return Path(f"/proc/{self.pid}/root/run/systemd/journal.{self.namespace}")

    def inside(self, *command: str) -> list[str]:
        """``command`` run in the journald's mount namespace (where /run/systemd/journal is its)."""
        return ["nsenter", f"--mount={self.mount_ns}", f"--wd={ROOT}", *command]

    def stream(self, identifier: str) -> socket.socket:
        """A stdout stream into the journal, set up as systemd does for a service's stderr."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self.socket_dir / "stdout"))
        sock.shutdown(socket.SHUT_RD)
        # identifier, unit, priority, level prefix, forward to syslog, to kmsg, to console
        sock.sendall(f"{identifier}\n\n6\n0\n0\n0\n0\n".encode())
        return sock

    def entries(self, match: str, until: Any = None, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The entries matching ``match`` (``FIELD=value``), polled until ``until(entries)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(
                self.inside(
                    "journalctl", f"--namespace={self.namespace}", "-o", "json", "--all", "--no-pager", match
                ),
                capture_output=True,
                text=True,
                timeout=10,
            )
            found = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
            if until is None or until(found) or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


def journald_unavailable() -> str | None:
    if JOURNALD is None:
        return "systemd-journald is not installed"
    if os.geteuid() != 0:
        return "a private journald needs root (mount namespaces and tmpfs)"
    for tool in ("unshare", "nsenter", "journalctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@pytest.fixture(scope="module")
def journald() -> Iterator[Journald]:
    reason = journald_unavailable()
    if reason:
        pytest.skip(reason)
    assert JOURNALD is not None
    namespace = f"edgetest{uuid.uuid4().hex[:12]}"
    process = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", START, JOURNALD, namespace],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    instance = Journald(process.pid, namespace)
    keepalive: socket.socket | None = None
    try:
        deadline = time.monotonic() + 10
        while not (instance.socket_dir / "socket").exists():
            if process.poll() is not None:
                pytest.skip(
                    f"cannot start a private journald: {process.stderr.read() if process.stderr else ''}"
                )
            if time.monotonic() > deadline:
                pytest.fail("the private journald made no socket within 10 s")
            time.sleep(0.05)
        subprocess.run(
            instance.inside("mount", "--bind", f"/run/systemd/journal.{namespace}", "/run/systemd/journal"),
            check=True,
            timeout=10,
        )
        # A namespace's journald exits when idle (no stream open) for a while: hold one open.
        keepalive = instance.stream("edge-test-keepalive")
        yield instance
    finally:
        if keepalive is not None:
            keepalive.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_native_protocol_reaches_journald(journald: Journald) -> None:
    tag = uuid.uuid4().hex
    sender = logs.NativeJournal(str(journald.socket_dir / "socket"))
    small = logs.NativeJournal(str(journald.socket_dir / "socket"))
    small._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    small._socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # too small: the memfd path
    try:
        logs.configure("debug", "journal", journal=sender.send, identifier="edge-agent-test")
        log = logs.get_logger("agent.test", test_tag=tag)
        log.debug("probe_debug", detail="x")
        log.error("commit_failed", reason="database is locked", pending_chunks=3, note="two\nlines")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("message_failed", topic="fleet/V/telemetry")
        logs.configure("info", "journal", journal=small.send, identifier="edge-agent-test")
        logs.get_logger("agent.test", test_tag=tag).critical("big_entry", blob="y" * 100_000)
    finally:
        structlog.reset_defaults()
        sender.close()
        small.close()
    entries = journald.entries(f"TEST_TAG={tag}", until=lambda found: len(found) >= 4)
    by_event = {e["EVENT"]: e for e in entries}
    assert set(by_event) == {"probe_debug", "commit_failed", "message_failed", "big_entry"}
    failed = by_event["commit_failed"]
    assert failed["PRIORITY"] == "3" and failed["REASON"] == "database is locked"
    assert failed["PENDING_CHUNKS"] == "3" and failed["NOTE"] == "two\nlines"
    assert failed["SYSLOG_IDENTIFIER"] == "edge-agent-test" and failed["LOGGER"] == "agent.test"
    assert failed["_TRANSPORT"] == "journal" and failed["_PID"] == str(os.getpid())
    assert failed["MESSAGE"] == (
        f"commit_failed test_tag={tag} reason='database is locked' pending_chunks=3 note='two\\nlines'"
    )
    assert by_event["probe_debug"]["PRIORITY"] == "7"
    crashed = by_event["message_failed"]
    assert crashed["PRIORITY"] == "3" and "ValueError: boom" in crashed["EXCEPTION"]
    assert "Traceback" in crashed["MESSAGE"]  # journalctl and systemctl status show it
    assert by_event["big_entry"]["PRIORITY"] == "2"
    assert by_event["big_entry"]["BLOB"] == "y" * 100_000  # sent as a sealed memfd: too big for a datagram
    for entry in entries:
        assert "TIMESTAMP" not in entry, "journald stamps entries; we add no timestamp"


@pytest.mark.slow
def test_agent_under_journald_logs_structured_fields(
    journald: Journald, broker: Broker, tmp_path: Path
) -> None:
    vin = f"J{uuid.uuid4().hex[:15].upper()}"
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"vin: {vin}\nsource: {{kind: replay, log: {HIGHWAY}, speed: 1}}\n"
        f"buses:\n  - {{channel: can0, dbc: [{DBC}]}}\n"
        "sampling: {signals: [DriveSpeed.VehicleSpeed, MotorStatus.MotorRPM]}\n"
        f"buffer: {{path: {tmp_path / 'buffer.sqlite'}, commit_interval_s: 0.2}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}}}\n"
        "upload: {ack_timeout_s: 1}\n"  # no receiver runs: unacked batches time out (a warning)
        "logging: {format: auto}\n"
    )
    stream = journald.stream("edge-agent")
    st = os.fstat(stream.fileno())
    env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(name, None)
    process = subprocess.Popen(
        journald.inside(sys.executable, "-m", "agent.cli", "run", "--config", str(config)),
        stdout=subprocess.DEVNULL,
        stderr=stream.fileno(),
        env=env,
    )
    stream.close()  # the agent holds it now
    try:
        journald.entries(f"VIN={vin}", until=lambda found: any(e["EVENT"] == "ack_timeout" for e in found))
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    entries = journald.entries(
        f"VIN={vin}", until=lambda found: any(e["EVENT"] == "agent_stopped" for e in found)
    )
    events = [e["EVENT"] for e in entries]
    assert {"agent_starting", "state_changed", "ack_timeout", "signal_received", "agent_stopped"} <= set(
        events
    )
    online = next(e for e in entries if e["EVENT"] == "state_changed" and e["STATE"] == "ONLINE")
    assert online["PREVIOUS"] == "OFFLINE" and online["REASON"].startswith("connected")
    assert int(online["BACKLOG_SAMPLES"]) >= 0 and int(online["BACKLOG_CHUNKS"]) >= 0
    assert online["PRIORITY"] == "6" and online["SYSLOG_IDENTIFIER"] == "edge-agent"
    assert online["LOGGER"] == "agent.upload" and online["MESSAGE"].startswith("state_changed ")
    assert online["_TRANSPORT"] == "journal", "native entries, not text lines on the stderr stream"
    assert online["_PID"] == str(process.pid)
    assert next(e for e in entries if e["EVENT"] == "ack_timeout")["PRIORITY"] == "4"
    assert all("TIMESTAMP" not in e and "LEVEL" not in e for e in entries)
    # Nothing came as text through stderr (the stream): the structured path carried every event.
    text = journald.entries(f"_PID={process.pid}", until=None)
    assert not [e for e in text if e.get("_TRANSPORT") == "stdout"], [e.get("MESSAGE") for e in text]


@pytest.mark.slow
def test_a_bus_that_cannot_open_is_an_error_in_the_journal(
    journald: Journald,
    broker: Broker,
    tmp_path: Path,
) -> None:
    # "lo" exists and is up, but is no CAN interface (or the kernel has no CAN at all): fatal.
    config = tmp_path / "agent.yaml"
    config.write_text(
        "vin: JFAIL00000000001\nsource: {kind: bus}\n"
        f"buses:\n  - {{interface: socketcan, channel: lo, dbc: [{DBC}]}}\n"
        "sampling: {signals: [DriveSpeed.VehicleSpeed]}\n"
        f"buffer: {{path: {tmp_path / 'buffer.sqlite'}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}}}\nlogging: {{format: auto}}\n"
    )
    stream = journald.stream("edge-agent")
    st = os.fstat(stream.fileno())
    env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(name, None)
    done = subprocess.run(
        journald.inside(sys.executable, "-m", "agent.cli", "run", "--config", str(config)),
        stdout=subprocess.DEVNULL,
        stderr=stream.fileno(),
        env=env,
        timeout=60,
    )
    stream.close()
    assert done.returncode == 2
    entries = journald.entries("EVENT=agent_failed", until=lambda found: bool(found))
    [failed] = [e for e in entries if str(config) == e.get("CONFIG")]
    assert failed["PRIORITY"] == "3" and failed["ERROR"] == "SourceError"
    assert failed["REASON"].startswith("cannot open CAN bus socketcan:lo: ")
