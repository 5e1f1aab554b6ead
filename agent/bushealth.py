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
:meth:`BusHealth.report`, an immutable snapshot swapped in whole (it may be one frame behind, never
torn).
"""

from __future__ import annotations

import time
from typing import NamedTuple

from agent.service.logs import get_logger

log = get_logger("agent.bushealth")

DROPS_LOG_EVERY_S = 60.0

# <linux/can/error.h>: error classes in the id ...
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
    """One bus's running counters: a :class:`BusReport` replaced whole on every change (see the module's
    contract), so that :meth:`report` is a snapshot however often the reader writes."""

    def __init__(self, channel: str) -> None:
        self._report = BusReport(channel)
        self._drops_logged = 0
        self._drops_logged_at = -DROPS_LOG_EVERY_S

    def report(self) -> BusReport:
        return self._report

    def receive_buffer(self, granted_bytes: int) -> None:
        """The socket's receive buffer, as the kernel granted it."""
        self._report = self._report._replace(receive_buffer_bytes=granted_bytes)

    def kernel_drops(self, total: int) -> None:
        """The socket's drop count as the kernel reported it with a frame (a running total)."""
        now = self._report
        if total == now.kernel_dropped:
            return
        self._report = now._replace(kernel_dropped=total)
        clock = time.monotonic()
        if clock - self._drops_logged_at >= DROPS_LOG_EVERY_S:
            log.warning(
                "bus_frames_dropped",
                channel=now.channel,
                dropped=total,
                since_last=total - self._drops_logged,
                receive_buffer_bytes=now.receive_buffer_bytes,
                action="the agent fell behind the bus: raise receive_buffer_bytes, or sample fewer signals",
            )
            self._drops_logged, self._drops_logged_at = total, clock

    def error_frame(self, error_class: int, data: bytes) -> None:
        """Count one error frame: ``error_class`` its id's class bits, ``data`` its payload."""
        was = self._report
        controller = data[1] if len(data) > 1 else 0
        crtl = controller if error_class & ERR_CRTL else 0  # byte 1 means something in a CRTL frame only
        state = was.state
        if error_class & ERR_BUSOFF:
            state = BUS_OFF
        elif error_class & ERR_RESTARTED or crtl & CRTL_ACTIVE:
            state = ACTIVE
        elif crtl & CRTL_PASSIVE:
            state = PASSIVE
        elif crtl & CRTL_WARNING:
            state = WARNING
        self._report = was._replace(
            state=state,
            error_frames=was.error_frames + 1,
            bus_errors=was.bus_errors + bool(error_class & BUS_ERROR_CLASSES),
            controller_overflows=was.controller_overflows
            + bool(crtl & (CRTL_RX_OVERFLOW | CRTL_TX_OVERFLOW)),
            bus_off=was.bus_off + bool(error_class & ERR_BUSOFF),
        )
        if state != was.state:
            level = log.info if state in (ACTIVE, WARNING) else log.warning
            level("bus_state", channel=was.channel, state=state, was=was.state, bus_off=self._report.bus_off)
