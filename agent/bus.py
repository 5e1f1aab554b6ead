"""Acquisition from live buses: open, wait for, read and watch a CAN interface.

Contract
- :func:`open_bus` opens a bus through python-can. A SocketCAN bus is a :class:`CountingSocketcanBus`:
  python-can's own bus with one hook filled (``_recv_internal``), so that the kernel's drop counter
  (``SO_RXQ_OVFL``) is read with every frame, and its receive buffer sized for bursts
  (``receive_buffer_bytes``; python-can leaves the kernel's default, about 200 KiB: a few hundred
  frames). The size granted is logged (``bus_receive_buffer``) and shown in the status.
- :func:`bus_unavailable` says why a SocketCAN interface cannot be bound yet (missing, down), and
  :func:`wait_for_bus` waits for it on the calling (reader) thread: logged once per reason
  (``bus_waiting``), retried with a backoff doubling from ``BUS_RETRY_FIRST_S`` up to
  ``BUS_RETRY_MAX_S``, until it opens or ``stop`` is set. Any other failure to open is a
  :class:`~agent.errors.SourceError` (an unknown interface type, a kernel without CAN): fatal.
- :func:`bus_frames` yields a bus's data frames re-stamped on a :class:`agent.clock.LiveClock` (the
  process's shared one by default), so that a wall-clock step never reorders or merges samples. Error
  frames are not data: they are counted in the bus's :class:`~agent.bushealth.BusHealth` (bus errors,
  controller overflows, error-passive, bus-off), which the supervisor shows in the status.
- Everything here runs on the bus's reader thread and blocks only in the kernel's receive (at most
  ``QUIET_WAIT_S`` at a time, so a stop is seen within it).
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import can
from can.interfaces.socketcan.socketcan import SocketcanBus, capture_message

from agent import clock
from agent.bushealth import BusHealth
from agent.errors import SourceError
from agent.service.logs import get_logger

log = get_logger("agent.bus")

BUS_RETRY_FIRST_S = 0.5  # the first wait for a missing or down interface; doubles up to the next
BUS_RETRY_MAX_S = 30.0
IFF_UP = 0x1  # <linux/if.h>
SYS_NET = Path("/sys/class/net")
FRAME_GAP_S = 0.05  # a live bus quiet this long after a frame: hand over what is pending
QUIET_WAIT_S = 5.0  # then wait this long at a time until the next frame (and see a stop within it)
SO_RXQ_OVFL = 40  # <asm-generic/socket.h>: a cmsg with the socket's drop count on every frame
SO_RCVBUFFORCE = 33  # beyond net.core.rmem_max, with CAP_NET_ADMIN
DROPS = struct.Struct("=I")
ANCILLARY_BYTES = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(DROPS.size)  # the timestamp, the drops


def size_receive_buffer(sock: socket.socket, requested: int) -> int:
    """Ask for a receive buffer of ``requested`` bytes (past ``net.core.rmem_max`` where the process
    may); the bytes granted, as the kernel reports them (twice what it holds for frames: its own
    bookkeeping is the other half). ``requested`` 0 leaves the kernel's default."""
    if requested > 0:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, requested)
        except OSError:  # no CAP_NET_ADMIN: the kernel caps it at net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, requested)
    granted: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return granted


class DropCountingSocket:
    """A socket whose ``recvmsg`` also reads the kernel's drop counter (``SO_RXQ_OVFL``) into ``health``
    and hands python-can only the timestamp it asked for (its parser accepts nothing else)."""

    def __init__(self, sock: socket.socket, health: BusHealth) -> None:
        self.sock = sock
        self.health = health
        sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)

    def recvmsg(self, size: int, _ancillary_size: int = 0) -> tuple[bytes, list[Any], int, Any]:
        data, ancillary, flags, address = self.sock.recvmsg(size, ANCILLARY_BYTES)
        kept = []
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(payload) >= DROPS.size:
                self.health.kernel_drops(DROPS.unpack_from(payload)[0])
            else:
                kept.append((level, kind, payload))
        return data, kept, flags, address


class CountingSocketcanBus(SocketcanBus):
    """python-can's SocketCAN bus with its receive buffer sized and its kernel drops counted: the one hook
    of python-can's template (``_recv_internal``) filled again, its frame parser reused."""

    def __init__(
        self, channel: str, receive_buffer_bytes: int = 0, health: BusHealth | None = None, **kwargs: Any
    ) -> None:
        super().__init__(channel=channel, **kwargs)
        self.health = health if health is not None else BusHealth(channel)
        self.health.receive_buffer(size_receive_buffer(self.socket, receive_buffer_bytes))
        self._counting = DropCountingSocket(self.socket, self.health)

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        try:
            ready, _, _ = select.select([self.socket], [], [], timeout)
        except OSError as error:  # the interface went away
            raise can.CanOperationError(f"Failed to receive: {error.strerror}", error.errno) from error
        if not ready:
            return None, self._is_filtered
        message = capture_message(self._counting, self.channel == "")  # type: ignore[arg-type]
        if message is not None and not message.channel:
            message.channel = self.channel
        return message, self._is_filtered


def open_bus(
    interface: str,
    channel: str,
    bitrate: int | None,
    receive_buffer_bytes: int = 0,
    health: BusHealth | None = None,
) -> can.BusABC:
    """Open a live bus through python-can; failures name the interface and channel. A SocketCAN bus
    counts its kernel drops in ``health`` (see the module's contract)."""
    kwargs: dict[str, Any] = {"bitrate": bitrate} if bitrate else {}
    try:
        if interface == "socketcan":
            bus = CountingSocketcanBus(channel, receive_buffer_bytes, health, **kwargs)
            granted = bus.health.report().receive_buffer_bytes
            log.info(
                "bus_receive_buffer",
                channel=channel,
                requested_bytes=receive_buffer_bytes,
                granted_bytes=granted,
                action="raise net.core.rmem_max, or run with CAP_NET_ADMIN, for a larger one"
                if granted < receive_buffer_bytes
                else "",
            )
            return bus
        return can.Bus(interface=interface, channel=channel, **kwargs)
    except (can.CanError, OSError, ValueError, ImportError) as error:
        raise SourceError(f"cannot open CAN bus {interface}:{channel}: {error}") from error


def bus_unavailable(interface: str, channel: str) -> str | None:
    """Why the SocketCAN interface ``channel`` cannot be bound yet (missing, down), or ``None``."""
    if interface != "socketcan":
        return None
    try:
        flags = int((SYS_NET / channel / "flags").read_text().strip(), 0)
    except FileNotFoundError:
        return f"network interface {channel} does not exist"
    except (OSError, ValueError):
        return None  # no sysfs to ask: let the open say what is wrong
    if not flags & IFF_UP:
        return f"network interface {channel} is down"
    return None


def wait_for_bus(
    interface: str,
    channel: str,
    bitrate: int | None,
    stop: threading.Event,
    receive_buffer_bytes: int = 0,
    health: BusHealth | None = None,
) -> can.BusABC | None:
    """Open the bus once it can be bound, waiting for a missing or down interface (see the module's
    contract); ``None`` if ``stop`` was set first. Blocks the calling (reader) thread."""
    delay, reported = BUS_RETRY_FIRST_S, None
    while True:
        reason = bus_unavailable(interface, channel)
        if reason is None:
            bus = open_bus(interface, channel, bitrate, receive_buffer_bytes, health)
            if reported is not None:
                log.info("bus_bound", interface=interface, channel=channel)
            return bus
        if reason != reported:
            log.warning(
                "bus_waiting",
                interface=interface,
                channel=channel,
                reason=reason,
                action=f"retrying every {BUS_RETRY_FIRST_S:g} s to {BUS_RETRY_MAX_S:g} s until it is up",
            )
            reported = reason
        if stop.wait(delay):
            return None
        delay = min(BUS_RETRY_MAX_S, delay * 2)


def bus_frames(
    bus: can.BusABC,
    channel: str,
    stop: threading.Event,
    live_clock: clock.LiveClock | None = None,
    health: BusHealth | None = None,
) -> Iterator[can.Message | None]:
    """Frames from a live bus, named ``channel`` and stamped on ``live_clock`` (default: the process's
    shared one); ``None`` after a quiet 50 ms that follows a frame (what is pending goes at once), then
    waits up to ``QUIET_WAIT_S`` at a time while the bus stays quiet (an idle bus costs no polling). Error
    frames are counted in ``health`` (the daemon passes the one it gave :func:`open_bus`). Runs on a reader thread;
    ``stop`` is seen within ``QUIET_WAIT_S``."""
    stamp = (live_clock or clock.SHARED).stamp
    health = health or BusHealth(channel)
    timeout = FRAME_GAP_S
    while not stop.is_set():
        try:
            frame = bus.recv(timeout=timeout)
        except can.CanError as error:
            log.error("bus_receive_failed", channel=channel, reason=str(error))
            stop.wait(1.0)
            continue
        if frame is None:
            if timeout == FRAME_GAP_S:
                yield None  # quiet after a frame: what is pending goes now
            timeout = QUIET_WAIT_S
            continue
        if frame.is_error_frame:
            health.error_frame(frame.arbitration_id, bytes(frame.data))
            continue
        if frame.is_remote_frame:
            continue
        timeout = FRAME_GAP_S
        frame.channel = channel
        frame.timestamp = stamp(frame.timestamp)
        yield frame
