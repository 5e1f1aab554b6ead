"""Operational logging through structlog: key=value events for a console, JSON lines elsewhere.

Events are named in snake_case (``state_changed``, ``frame_undecodable``) with fields as keyword
arguments, so that they can be filtered on. Thread-safe (structlog's loggers are stateless wrappers).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Set up structlog once per process; ``fmt`` is auto, console or json (journal: see issue 5)."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str, **context: Any) -> Any:
    # A lazy proxy: it takes the configuration in force when it first logs, not at import time.
    return structlog.get_logger(name, **context)
