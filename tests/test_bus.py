"""Live buses: frames from python-can's virtual bus to the feed, error frames counted and not sampled, the
kernel's drop counter read from a real socket, the receive buffer sized; on a kernel with vcan, the same
through SocketCAN (skipped here, with the reason, where the kernel lacks the module)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import can
import pytest
from can.interfaces.socketcan.socketcan import build_can_frame, capture_message

from agent import bus, bushealth
from agent.bus import SO_RXQ_OVFL, DropCountingSocket, bus_frames, open_bus, size_receive_buffer
from agent.bushealth import BusHealth
from agent.source import FrameFeed
from tests.harness.waiting import wait_for

SO_TIMESTAMPNS = 35
VCAN = Path("/sys/class/net/vcan0")
NO_VCAN = "no vcan0 interface: this kernel has no vcan module (nor AF_CAN); the virtual bus and a UDP socket stand in"


@pytest.fixture(autouse=True)
def quick_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader sees its stop within QUIET_WAIT_S on a quiet bus: short here, so each test ends at once."""
    monkeypatch.setattr(bus, "QUIET_WAIT_S", 0.2)


def frames(count: int) -> list[can.Message]:
    return [
        can.Message(arbitration_id=0x100 + i % 3, data=bytes([i % 256] * 8), is_extended_id=False)
        for i in range(count)
    ]


def error_frame(error_class: int, controller: int = 0) -> can.Message:
    return can.Message(
        arbitration_id=error_class,
        is_error_frame=True,
        is_extended_id=False,
        data=bytes([0, controller, 0, 0, 0, 0, 0, 0]),
    )


def collect(feed: FrameFeed, count: int) -> list[can.Message]:
    got: list[can.Message] = []
    deadline = time.monotonic() + 5
    while len(got) < count and time.monotonic() < deadline:
        got.extend(feed.get(0.2) or [])
    return got


@contextmanager
def reading(bus: can.BusABC, feed: FrameFeed, health: BusHealth | None = None) -> Iterator[threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=feed.pump, args=(bus_frames(bus, "can0", stop, health=health), stop))
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join()


@contextmanager
def virtual_pair(channel: str) -> Iterator[tuple[can.BusABC, can.BusABC]]:
    """A sender on python-can's virtual bus ``channel`` and a receiver opened as the agent opens it."""
    sender, receiver = can.Bus(interface="virtual", channel=channel), open_bus("virtual", channel, None)
    try:
        yield sender, receiver
    finally:
        sender.shutdown()
        receiver.shutdown()


def test_virtual_bus_frames_reach_the_feed() -> None:
    feed = FrameFeed(producers=1)
    with virtual_pair("edge-test-bus") as (sender, receiver), reading(receiver, feed):
        for message in frames(5):
            sender.send(message)
        got = collect(feed, 5)
    assert [m.arbitration_id for m in got] == [m.arbitration_id for m in frames(5)]
    assert {m.channel for m in got} == {"can0"}


def test_error_frames_are_counted_in_the_buses_health_and_never_sampled() -> None:
    feed = FrameFeed(producers=1)
    health = BusHealth("can0")
    sick = [
        error_frame(bushealth.ERR_PROT | bushealth.ERR_BUSERROR),
        error_frame(bushealth.ERR_ACK),
        error_frame(bushealth.ERR_CRTL, bushealth.CRTL_RX_OVERFLOW),
        error_frame(bushealth.ERR_CRTL, 0x10),  # RX error-passive
        error_frame(bushealth.ERR_BUSOFF),
    ]
    with virtual_pair("edge-error-bus") as (sender, receiver), reading(receiver, feed, health):
        for message in [*frames(2), *sick, *frames(3)]:
            sender.send(message)
        got = collect(feed, 5)
        wait_for(lambda: health.report().error_frames == 5, timeout=5)
    assert len(got) == 5 and not any(m.is_error_frame for m in got)
    report = health.report()
    assert (report.bus_errors, report.controller_overflows, report.bus_off) == (2, 1, 1)
    assert report.state == bushealth.BUS_OFF
    assert report.summary() == "can0: BUS-OFF, 1 frames lost, 2 bus errors, bus-off 1x"


def test_a_restart_after_bus_off_returns_the_bus_to_error_active() -> None:
    health = BusHealth("can1")
    health.error_frame(bushealth.ERR_BUSOFF, b"")
    health.error_frame(bushealth.ERR_RESTARTED, b"")
    assert health.report().state == bushealth.ACTIVE and health.report().bus_off == 1
    health.error_frame(bushealth.ERR_CRTL, bytes([0, 0x04]))  # RX warning
    assert health.report().state == bushealth.WARNING and health.report().troubled
    assert BusHealth("can2").report().summary() == ""


def test_the_kernels_drop_count_is_read_with_every_frame_and_python_can_still_parses_them() -> None:
    """A real socket of the same kernel (UDP on loopback: this machine has no AF_CAN) overflows its
    receive buffer with SocketCAN frames as python-can builds them; the frames that made it parse, and
    the next frame brings the exact count of those that did not."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel's floor: a few frames
        receiver.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # as python-can's SocketcanBus does
        receiver.bind(("127.0.0.1", 0))
        health = BusHealth("can0")
        counting = DropCountingSocket(receiver, health)
        assert receiver.getsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL) == 1
        burst = frames(300)
        for message in burst:
            sender.sendto(build_can_frame(message), receiver.getsockname())
        receiver.setblocking(False)
        kept = []
        while True:
            try:
                message = capture_message(counting)  # type: ignore[arg-type]
            except can.CanOperationError:
                break
            assert message is not None
            kept.append(message)
        assert 0 < len(kept) < len(burst), "the burst overflowed the buffer"
        assert [m.arbitration_id for m in kept] == [m.arbitration_id for m in burst[: len(kept)]]
        assert [bytes(m.data) for m in kept] == [bytes(m.data) for m in burst[: len(kept)]]
        assert health.report().kernel_dropped == 0  # frames queued before the drops carry no count
        sender.sendto(build_can_frame(frames(1)[0]), receiver.getsockname())
        receiver.setblocking(True)
        assert capture_message(counting) is not None  # type: ignore[arg-type]
        assert health.report().kernel_dropped == len(burst) - len(kept)
        assert health.report().troubled
    finally:
        receiver.close()
        sender.close()


def net_admin() -> bool:
    """Whether this process holds CAP_NET_ADMIN (bit 12 of its effective capabilities)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("CapEff:"))
    return bool(int(line.split()[1], 16) >> 12 & 1)


def test_the_receive_buffer_is_sized_as_asked() -> None:
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        default = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        small = default // 8  # under every cap: granted as asked (the kernel reports twice the size)
        assert size_receive_buffer(sock, small) == 2 * small != default
        asked = 4 * 1024 * 1024
        granted = size_receive_buffer(sock, asked)
        # With CAP_NET_ADMIN past rmem_max, without it capped there.
        assert granted == 2 * (asked if net_admin() else min(asked, rmem_max))
        assert granted == sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        default = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert size_receive_buffer(sock, 0) == default  # 0: the kernel's own


def test_vcan_needs_a_kernel_module() -> None:
    if not VCAN.exists():
        pytest.skip(NO_VCAN)
    open_bus("socketcan", "vcan0", None).shutdown()


def test_a_socketcan_reader_that_falls_behind_counts_every_frame_the_kernel_dropped() -> None:
    if not VCAN.exists():
        pytest.skip(NO_VCAN)
    health = BusHealth("vcan0")
    receiver = open_bus("socketcan", "vcan0", None, receive_buffer_bytes=1, health=health)  # the floor
    sender = can.Bus(interface="socketcan", channel="vcan0")
    try:
        burst = frames(2000)
        for message in burst:  # nobody reads meanwhile: the receiver's buffer overflows
            sender.send(message)
        got = 0
        while receiver.recv(timeout=0.5) is not None:
            got += 1
        sender.send(frames(1)[0])  # the frame after the drops brings their count
        assert receiver.recv(timeout=1.0) is not None
        dropped = health.report().kernel_dropped
        assert dropped > 0 and got + dropped == len(burst)
    finally:
        sender.shutdown()
        receiver.shutdown()
