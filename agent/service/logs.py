"""Operational logging through structlog: to the journal under systemd, else key=value or JSON lines.

Events are named in snake_case (``state_changed``, ``frame_undecodable``) with fields as keyword
arguments, so that they can be filtered on. Thread-safe (structlog's loggers are stateless wrappers; the
journal's datagram socket is shared, and each entry is one ``sendmsg``).

Formats (``logging.format``)
- ``console``: ``timestamp [level] event key=value ...`` on stderr, for a person at a terminal.
- ``json``: one JSON object per line on stderr (``event``, ``level``, ``timestamp`` and the fields).
- ``journal``: one journal entry per event, sent over journald's native protocol: every field upper-cased
  (``vin`` → ``VIN``, ``backlog_samples`` → ``BACKLOG_SAMPLES``), ``EVENT`` = the event name, ``MESSAGE``
  = the event name followed by its fields as ``key=value`` (what ``journalctl`` and ``systemctl status``
  show), ``PRIORITY`` from the level (syslog numbers), ``SYSLOG_IDENTIFIER`` = the program, ``LOGGER`` =
  the module; no timestamp of its own (journald stamps every entry). Sent through systemd-python when it
  is installed (the ``systemd`` extra), else by :class:`NativeJournal` (the same datagram format,
  implemented here). If journald cannot be reached, the entry goes to stderr as a JSON line instead.
- ``auto``: ``journal`` when stderr is connected to the journal (``$JOURNAL_STREAM`` names stderr's
  device and inode, as systemd sets it for a service, systemd.exec(5)), else ``console`` on a terminal,
  else ``json``. ``journal`` asked for explicitly needs journald's socket, else ``json`` is used.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib
import json
import logging
import math
import os
import re
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO, cast

import structlog

from agent.service.schema import Choice, Section

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
JOURNAL_SOCKET = "/run/systemd/journal/socket"
# syslog(3) priorities, as journald's PRIORITY= field wants them.
PRIORITIES = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "warn": 4, "info": 6, "debug": 7}

Field = tuple[str, str]


def journal_stream_is_stderr(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """True if ``$JOURNAL_STREAM`` (``device:inode``) names the file that ``fd`` (stderr) is open on."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


def resolve_format(
    fmt: str,
    environ: Mapping[str, str] | None = None,
    journal_socket: str = JOURNAL_SOCKET,
    stderr: Any = None,
) -> str:
    """The renderer ``configure`` will use for ``fmt`` (auto, console, json or journal), see the module."""
    stderr = sys.stderr if stderr is None else stderr
    if fmt == "auto":
        if journal_stream_is_stderr(environ):
            return "journal"
        return "console" if stderr.isatty() else "json"
    if fmt == "journal" and not Path(journal_socket).exists():
        return "json"
    return fmt


# --- journal ---------------------------------------------------------------------------------------------

_FIELD_BAD = re.compile(r"[^A-Z0-9_]")
_RESERVED = {"event", "level", "timestamp"}


def field_name(key: str) -> str:
    """A journal field name for a structlog key: upper case, ``[A-Z0-9_]``, no leading ``_`` (those are
    journald's trusted fields) or digit, at most 64 characters (systemd.journal-fields(7))."""
    name = _FIELD_BAD.sub("_", key.upper()).lstrip("_")
    if not name or name[0].isdigit():
        name = "F_" + name
    return name[:64]


def field_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value) if not isinstance(value, float) or math.isfinite(value) else json.dumps(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return json.dumps(value, default=str, separators=(",", ":"))


_PLAIN = re.compile(r"[^\s'\"=]+")


def _summary(event: str, fields: Iterable[tuple[str, Any]]) -> str:
    parts = [event]
    for key, value in fields:
        text = field_value(value)
        if key == "exception":
            continue
        parts.append(f"{key}={text if _PLAIN.fullmatch(text) else repr(text)}")
    return " ".join(parts)


def journal_fields(event_dict: Mapping[str, Any], identifier: str) -> list[Field]:
    """The journal entry of one structlog event (see the module docstring)."""
    event = str(event_dict.get("event", ""))
    level = str(event_dict.get("level", "info"))
    extra = [(k, v) for k, v in event_dict.items() if k not in _RESERVED and v is not None]
    message = _summary(event, extra)
    if "exception" in event_dict:
        message += "\n" + str(event_dict["exception"])
    fields: list[Field] = [
        ("MESSAGE", message),
        ("EVENT", event),
        ("PRIORITY", str(PRIORITIES.get(level, 6))),
        ("SYSLOG_IDENTIFIER", identifier),
    ]
    taken = {name for name, _ in fields}
    for key, value in extra:
        name = field_name(key)
        if name in taken:  # a field named like one of ours keeps its value under another name
            name = field_name("field_" + key)
        taken.add(name)
        fields.append((name, field_value(value)))
    return fields


def encode_native(fields: Iterable[Field]) -> bytes:
    """journald's native protocol (systemd.io/JOURNAL_NATIVE_PROTOCOL): ``KEY=value\\n`` per field, or,
    for a value holding a newline, ``KEY\\n`` + its length (64-bit little endian) + value + ``\\n``."""
    out = bytearray()
    for key, value in fields:
        data = value.encode("utf-8", "backslashreplace")
        if b"\n" in data:
            out += key.encode("ascii") + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode("ascii") + b"=" + data + b"\n"
    return bytes(out)


class NativeJournal:
    """A client of journald's native protocol on ``path`` (an ``AF_UNIX`` datagram socket).

    An entry too large for one datagram is written to a sealed memfd whose descriptor is sent instead,
    as the protocol provides. Raises ``OSError`` when journald cannot be reached.
    """

    def __init__(self, path: str = JOURNAL_SOCKET) -> None:
        self.path = path
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()

    def _sock(self) -> socket.socket:
        with self._lock:
            if self._socket is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                with contextlib.suppress(OSError):  # as libsystemd: room for big entries (net.core.wmem_max)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
                self._socket = sock
            return self._socket

    def send(self, fields: Sequence[Field]) -> None:
        payload = encode_native(fields)
        sock = self._sock()
        try:
            sock.sendto(payload, self.path)
        except OSError as error:
            if error.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(sock, payload)

    def _send_memfd(self, sock: socket.socket, payload: bytes) -> None:
        fd = os.memfd_create("journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, payload)
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            # (socket.send_fds drops its address argument before Python 3.12: sendmsg directly.)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
            sock.sendmsg([], rights, 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


def libsystemd_sender() -> Callable[[Sequence[Field]], None] | None:
    """systemd-python's ``sendv`` (libsystemd's ``sd_journal_sendv``) if installed, else None."""
    try:
        journal = importlib.import_module("systemd.journal")
    except ImportError:
        return None
    sendv = journal.sendv

    def send(fields: Sequence[Field]) -> None:
        sendv(*(f"{key}={value}" for key, value in fields))

    return send


class JournalLogger:
    """The structlog logger of the ``journal`` format: every method sends the entry it is given."""

    def __init__(self, send: Callable[[Sequence[Field]], None], name: str | None = None) -> None:
        self._send = send
        self.name = name

    def msg(self, fields: list[Field]) -> None:
        if self.name:
            fields = [*fields, ("LOGGER", self.name)]
        try:
            self._send(fields)
        except OSError as error:  # journald is gone: keep the entry, on stderr
            record = {name.lower(): value for name, value in fields}
            record["journal_error"] = str(error)
            print(json.dumps(record), file=sys.stderr, flush=True)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg


class JournalLoggerFactory:
    def __init__(self, send: Callable[[Sequence[Field]], None]) -> None:
        self.send = send

    def __call__(self, *args: Any) -> JournalLogger:
        return JournalLogger(self.send, str(args[0]) if args else None)


class JournalRenderer:
    """The last processor of the ``journal`` format: an event dict → the journal entry's fields."""

    def __init__(self, identifier: str) -> None:
        self.identifier = identifier

    def __call__(
        self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (journal_fields(event_dict, self.identifier),), {}


def program_name() -> str:
    """The name to log under: the command's (``edge-agent``), also when started as ``python -m agent.cli``."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if name and not name.endswith(".py") and name not in ("-c", "-m", "__main__.py"):
        return name
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    package = spec.name.split(".")[0] if spec is not None and spec.name else "agent"
    return "edge-receiver" if package == "receiver" else "edge-agent"


# --- configuration ---------------------------------------------------------------------------------------


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at each event, so a redirected or replaced stderr is followed."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(
    level: str = "info",
    fmt: str = "auto",
    *,
    identifier: str | None = None,
    journal: Callable[[Sequence[Field]], None] | None = None,
) -> str:
    """Set up structlog once per process; returns the format in force (see the module docstring).

    ``journal`` replaces the journal sender of ``fmt="journal"`` (a :class:`NativeJournal` on another
    socket, say), which is then used whether or not journald's usual socket exists; ``identifier``
    replaces ``SYSLOG_IDENTIFIER`` (default: :func:`program_name`).
    """
    wanted = fmt
    fmt = fmt if journal is not None and fmt == "journal" else resolve_format(fmt)
    wrapper = structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO))
    common: list[Any] = [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level]
    if fmt == "journal":
        send = journal or libsystemd_sender() or NativeJournal().send
        structlog.configure(
            processors=[
                *common,
                structlog.processors.format_exc_info,
                JournalRenderer(identifier or program_name()),
            ],
            wrapper_class=wrapper,
            logger_factory=JournalLoggerFactory(send),
            cache_logger_on_first_use=False,
        )
        return fmt
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *common,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=wrapper,
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=False,
    )
    if wanted == "journal":
        structlog.get_logger("agent.service.logs").warning(
            "journal_unavailable", socket=JOURNAL_SOCKET, reason="no journald socket: logging JSON lines"
        )
    return fmt


def get_logger(name: str, **context: Any) -> Any:
    # A lazy proxy: it takes the configuration in force when it first logs, not at import time.
    return structlog.get_logger(name, **context)


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json", "journal"] = "auto"


LOGGING_SECTION = Section(
    LoggingConfig,
    {
        "level": Choice("debug", "info", "warning", "error"),
        "format": Choice("auto", "console", "json", "journal"),
    },
)
