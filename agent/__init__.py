"""Fault-tolerant edge telemetry agent: CAN frames in, bounded-error batches out, nothing lost."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edge-agent")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
