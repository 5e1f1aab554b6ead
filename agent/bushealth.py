"""A live bus's health: frames the kernel dropped, bus errors, error-passive and bus-off.

A reader that falls behind loses frames in the kernel (its socket's receive buffer overflows: the count
comes with every later frame, ``SO_RXQ_OVFL``, see :mod:`agent.bus`), a controller that falls behind loses
them in its FIFO, and a sick bus (a loose connector, a missing terminator, a node babbling) shows as error
frames, then as error-passive, then bus-off, where the controller stops receiving at all. None of these
is a frame, and none must pass silently: each is counted here, shown in the status (``edge-agent
status``, the retained MQTT status) and logged when it changes (``bus_state``; ``bus_frames_dropped``
at most once per ``DROPS_LOG_EVERY_S``).

Error frames are decoded as Linux defines them (``<linux/can/error.h>``): the class in the id, the
controller's detail in byte 1. python-can's other interfaces that report error frames use the same
layout.

Contract: a :class:`BusHealth` is written by its bus's reader thread only; the supervisor reads
:meth:`BusHealth.report`, an immutable snapshot (it may be one frame behind, never torn: each counter is
one attribute).
"""

from __future__ import annotations

import time
from typing import NamedTuple

from agent.service.logs import get_logger

log = get_logger("agent.bushealth")

DROPS_LOG_EVERY_S = 60.0

# <linux/can/error.h>: error classes in the id ...
ERR_LOSTARB = 0x002
ERR_CRTL = 0x004
ERR_PROT = 0x008
ERR_TRX = 0x010
ERR_ACK = 0x020
ERR_BUSOFF = 0x040
ERR_BUSERROR = 0x080
ERR_RESTARTED = 0x100
BUS_ERROR_CLASSES = ERR_PROT | ERR_TRX | ERR_ACK | ERR_BUSERROR  # a frame on the wire went wrong
# ... and the controller's status in byte 1 of a CRTL error frame
CRTL_RX_OVERFLOW = 0x01
CRTL_TX_OVERFLOW = 0x02
CRTL_WARNING = 0x04 | 0x08
CRTL_PASSIVE = 0x10 | 0x20
CRTL_ACTIVE = 0x40

ACTIVE, WARNING, PASSIVE, BUS_OFF = "error-active", "error-warning", "error-passive", "bus-off"


class BusReport(NamedTuple):
    """What the status shows of one bus."""

    channel: str
    state: str = ACTIVE  # error-active, error-warning, error-passive or bus-off
    kernel_dropped: int = 0  # frames the kernel dropped: the socket's receive buffer was full
    controller_overflows: int = 0  # error frames saying the controller's own FIFO overflowed
    bus_errors: int = 0  # error frames of a broken frame on the wire (protocol, ACK, transceiver)
    bus_off: int = 0  # times the controller went bus-off
    error_frames: int = 0  # every error frame, whatever its class
    receive_buffer_bytes: int = 0  # the socket's receive buffer as the kernel reports it (0: not SocketCAN)

    @property
    def troubled(self) -> bool:
        return self.state != ACTIVE or bool(
            self.kernel_dropped or self.controller_overflows or self.bus_errors
        )

    def summary(self) -> str:
        """One clause for the status line: what is wrong with the bus, or ``""``."""
        parts = [f"{self.state.upper()}"] if self.state != ACTIVE else []
        if self.kernel_dropped or self.controller_overflows:
            parts.append(f"{self.kernel_dropped + self.controller_overflows} frames lost")
        if self.bus_errors:
            parts.append(f"{self.bus_errors} bus errors")
        if self.bus_off:
            parts.append(f"bus-off {self.bus_off}x")
        return f"{self.channel}: {', '.join(parts)}" if parts else ""


class BusHealth:
    """One bus's running counters (see the module's contract)."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.state = ACTIVE
        self.kernel_dropped = 0
        self.controller_overflows = 0
        self.bus_errors = 0
        self.bus_off = 0
        self.error_frames = 0
        self.receive_buffer_bytes = 0
        self._drops_logged = 0
        self._drops_logged_at = -DROPS_LOG_EVERY_S

    def kernel_drops(self, total: int) -> None:
        """The socket's drop count as the kernel reported it with a frame (a running total)."""
        if total == self.kernel_dropped:
            return
        self.kernel_dropped = total
        now = time.monotonic()
        if now - self._drops_logged_at >= DROPS_LOG_EVERY_S:
            log.warning(
                "bus_frames_dropped",
                channel=self.channel,
                dropped=total,
                since_last=total - self._drops_logged,
                receive_buffer_bytes=self.receive_buffer_bytes,
                action="the agent fell behind the bus: raise receive_buffer_bytes, or sample fewer signals",
            )
            self._drops_logged, self._drops_logged_at = total, now

    def error_frame(self, error_class: int, data: bytes) -> None:
        """Count one error frame: ``error_class`` its id's class bits, ``data`` its payload."""
        self.error_frames += 1
        controller = data[1] if len(data) > 1 else 0
        if error_class & BUS_ERROR_CLASSES:
            self.bus_errors += 1
        if error_class & ERR_CRTL and controller & (CRTL_RX_OVERFLOW | CRTL_TX_OVERFLOW):
            self.controller_overflows += 1
        state = self.state
        if error_class & ERR_BUSOFF:
            self.bus_off += 1
            state = BUS_OFF
        elif error_class & ERR_RESTARTED or (error_class & ERR_CRTL and controller & CRTL_ACTIVE):
            state = ACTIVE
        elif error_class & ERR_CRTL and controller & CRTL_PASSIVE:
            state = PASSIVE
        elif error_class & ERR_CRTL and controller & CRTL_WARNING:
            state = WARNING
        if state != self.state:
            level = log.info if state in (ACTIVE, WARNING) else log.warning
            level("bus_state", channel=self.channel, state=state, was=self.state, bus_off=self.bus_off)
            self.state = state

    def report(self) -> BusReport:
        return BusReport(
            self.channel,
            self.state,
            self.kernel_dropped,
            self.controller_overflows,
            self.bus_errors,
            self.bus_off,
            self.error_frames,
            self.receive_buffer_bytes,
        )
