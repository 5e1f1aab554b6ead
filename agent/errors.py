"""The one exception tree of the agent and the receiver.

Every error that the project raises on purpose derives from :class:`EdgeError`, so a caller (the CLI, the
daemon's supervisor) can catch one class and print one clear line. Foreign exceptions (cantools, apsw,
protobuf, OSError) are wrapped with ``raise ... from`` so that the cause survives for debugging::

    EdgeError
     +-- ConfigError          a key or value of the configuration is wrong (names file and key)
     +-- DbcError             a DBC file does not load (names file and line)
     +-- SourceError          a log or bus cannot be opened or read (names file or interface)
     |    +-- LogFormatError  a recorded log has a line that cannot be parsed (names file and line)
     +-- WireError            a payload does not decode (bad envelope, version, compression, protobuf)
     |    +-- SchemaUnknownError   a batch names its schema by a hash the receiver does not hold
     |    +-- AckRejected          an ack the agent will not honour (its MAC, its bytes, its vin)
     +-- StorageError         a buffer or store database fails (I/O, full disk, corruption)
     |    +-- StorageFullError     the disk or the configured cap is full
     |    +-- StorageCorruptError  the file is not a healthy SQLite database
     +-- UploadError          the uploader cannot reach or talk to the broker
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base class of every error the project raises on purpose."""


class ConfigError(EdgeError):
    """The configuration is invalid; the message names the file and the key."""


class DbcError(EdgeError):
    """A DBC file does not load; the message names the file (and line, when cantools says)."""


class SourceError(EdgeError):
    """A CAN source (log file or live bus) cannot be opened or read."""


class LogFormatError(SourceError):
    """A recorded log holds something that cannot be parsed; names the file and line."""


class WireError(EdgeError):
    """A payload on the wire does not decode."""


class AckRejected(WireError):
    """An ack the agent does not honour; ``forged``: its MAC is missing or wrong (counted, logged once)."""

    def __init__(self, reason: str, forged: bool = False) -> None:
        super().__init__(reason)
        self.forged = forged


class SchemaUnknownError(WireError):
    """A batch names its schema by a hash that the receiver does not hold: ask the agent for it."""

    def __init__(self, schema_hash: bytes, vin: str) -> None:
        super().__init__(
            f"batch for vin {vin} names schema {schema_hash.hex()}, which this receiver does not hold"
        )
        self.schema_hash = schema_hash
        self.vin = vin


class StorageError(EdgeError):
    """A SQLite database (the agent's buffer, the receiver's store) failed."""


class StorageFullError(StorageError):
    """The disk, or the configured cap, is full."""


class StorageCorruptError(StorageError):
    """The database file is damaged; it should be quarantined."""


class UploadError(EdgeError):
    """The uploader cannot talk to the broker."""
