"""DBC files: loaded strictly with cantools, and refused in one line naming the file when unfit.

:func:`load_dbc` raises :class:`~agent.errors.DbcError` for a missing file, one that does not parse
(cantools' message, with its line), an empty one or one without messages ("has no messages", not
cantools' ``Invalid syntax at line 1``), and one that defines a frame id or a message name twice,
naming both messages: cantools would keep only the last one, saying so only in an unstructured
"Overwriting message" log line, which is dropped here.

Contract: a pure function of the file, called at start (any thread); the database it returns is
read-only for its users.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cantools
from cantools.database.errors import Error as CantoolsError

from agent.errors import DbcError


class _DropOverwriting(logging.Filter):
    """cantools logs "Overwriting message" when a DBC repeats an id or a name: :func:`load_dbc` says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Overwriting message")


@contextlib.contextmanager
def _quiet_cantools() -> Iterator[None]:
    logger, quiet = logging.getLogger("cantools.database.can.database"), _DropOverwriting()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def load_dbc(path: str | Path) -> Any:
    """Load one DBC strictly; any failure becomes a :class:`DbcError` naming the file (and line).

    Refused too: a DBC without messages (an empty file included), and one that defines a frame id or a
    message name twice, naming both messages.
    """
    try:
        with _quiet_cantools():
            database: Any = cantools.database.load_file(str(path), strict=True)
    except FileNotFoundError as error:
        raise DbcError(f"{path}: no such DBC file") from error
    except (CantoolsError, ValueError, UnicodeDecodeError) as error:
        if _is_blank(path):
            raise DbcError(f"{path}: has no messages (the file is empty)") from error
        detail = " ".join(str(error).split())
        raise DbcError(f"{path}: does not load: {detail}") from error
    if not database.messages:
        raise DbcError(f"{path}: has no messages")
    twice: list[str] = []
    by_id: dict[int, Any] = {}
    by_name: dict[str, Any] = {}
    for message in database.messages:
        first = by_id.setdefault(message.frame_id, message)
        if first is not message:
            twice.append(
                f"frame id {message.frame_id:#x} is defined twice, by {first.name} and {message.name}"
            )
        if by_name.setdefault(message.name, message) is not message:
            twice.append(f"message name {message.name} is defined twice")
    if twice:
        raise DbcError(f"{path}: " + "; ".join(twice) + " (cantools would keep only the last)")
    return database


def _is_blank(path: str | Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return not handle.read(1 << 16).strip()
    except OSError:
        return False
