"""A fault-injecting TCP proxy for MQTT, for the chaos tests (the kernel here has no netem).

    client (agent, receiver) ──TCP──▶ FaultProxy(listen) ──TCP──▶ upstream (Mosquitto)

Every accepted connection gets its own connection to the upstream and two pumps: ``up`` (client →
upstream) and ``down`` (upstream → client). The pumps cut the byte stream into whole MQTT control packets
(fixed header + remaining length, nothing more is parsed), which is what lets them duplicate or swap
PUBLISH packets; every other packet is forwarded untouched and in order.

Faults, switchable at run time from any thread (each method returns once the loop has applied it):
- ``set_latency(s)``: every forwarded read is delayed by ``s`` seconds, both directions (a slow link).
- ``stall(s, direction)``: stop forwarding (and reading) for ``s`` seconds without closing anything, as a
  path that silently stops carrying packets; the connection looks alive to both ends. ``resume()`` ends it.
- ``half_open(side)``: the current connections go silent toward ``side`` ("client", "upstream" or "both"):
  that socket is neither read nor written nor closed (no FIN, ever; it is reset quietly after
  ``zombie_ttl_s``, long after the peer gave up), while the other side, if any, is closed normally. It is
  what a NAT that forgets a flow, or a peer that lost power, looks like.
- ``reset()``: close the current connections on both sides with an RST (``SO_LINGER`` 0); bytes buffered
  in the proxy are dropped.
- ``duplicate_publishes(n, direction)``: the next ``n`` PUBLISH packets in that direction are sent twice;
  the copy has the DUP flag set when its QoS is > 0 and keeps the packet id: a broker's redelivery.
- ``swap_publishes(n, direction)``: the next ``n`` pairs of PUBLISH packets in that direction go out in
  the opposite order (a held packet is released alone after ``swap_window_s`` if no second one comes).
- ``heal()``: no latency, no stall, nothing armed (connections already half-open stay so).

With ``tls`` (:class:`ProxyTls`, built from the fleet's PKI) the proxy terminates TLS on both sides: it
answers a client as the broker would (the broker's certificate, a client certificate of the fleet's CA
required) and reaches the broker as that client (the certificate of the same CN), so the pumps still see
MQTT packets while every hop is TLS with the fleet's certificates and the broker's ACL applies to each
client as it would without the proxy. ``inject(identity, packet)`` writes a packet into the upstream side
of that client's connection: a late copy of an old batch that the broker takes as the vehicle's own.

New connections are accepted throughout; when the upstream refuses (the broker is down), the client's
connection is closed at once, as a dead broker behind a live load balancer would look.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar, cast

Direction = Literal["up", "down"]
Side = Literal["client", "upstream", "both"]
DIRECTIONS: tuple[Direction, ...] = ("up", "down")
PUBLISH = 3  # MQTT control packet type
DUP_FLAG = 0x08
T = TypeVar("T")


def split_packets(pending: bytearray) -> list[bytes]:
    """Cut the whole MQTT control packets off the front of ``pending`` (in place); keep a partial tail.

    A packet is one byte of type and flags, then its remaining length as 1 to 4 bytes of 7 bits (low
    group first, the high bit says "more"), then that many bytes.
    """
    packets: list[bytes] = []
    while len(pending) >= 2:
        length, shift, index = 0, 0, 1
        while True:
            if index >= len(pending):
                return packets  # the length itself is not complete yet
            byte = pending[index]
            length |= (byte & 0x7F) << shift
            shift += 7
            index += 1
            if not byte & 0x80:
                break
            if index > 4:
                raise ValueError("malformed MQTT remaining length (more than 4 bytes)")
        end = index + length
        if len(pending) < end:
            break
        packets.append(bytes(pending[:end]))
        del pending[:end]
    return packets


def is_publish(packet: bytes) -> bool:
    return packet[0] >> 4 == PUBLISH


def redelivery(packet: bytes) -> bytes:
    """A PUBLISH as a broker would send it again: same packet id, DUP set when QoS > 0."""
    qos = (packet[0] >> 1) & 0x03
    return bytes([packet[0] | DUP_FLAG]) + packet[1:] if qos else packet


def publish_packet(topic: str, payload: bytes, packet_id: int = 0, qos: int = 0) -> bytes:
    """An MQTT 5 PUBLISH without properties; at QoS 0 it has no packet id to collide with the client's own."""
    name = topic.encode("utf-8")
    body = (
        struct.pack(">H", len(name))
        + name
        + (struct.pack(">H", packet_id) if qos else b"")
        + b"\x00"
        + payload
    )
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([PUBLISH << 4 | qos << 1]) + bytes(encoded) + body


@dataclass(frozen=True)
class ProxyTls:
    """Both TLS ends of a proxy: ``server`` answers the clients; ``upstream[cn]`` reaches the broker as
    the client whose certificate has that CN; ``hostname`` is the name checked in the broker's certificate."""

    server: ssl.SSLContext
    upstream: Mapping[str, ssl.SSLContext]
    hostname: str = "127.0.0.1"

    @classmethod
    def from_files(
        cls,
        ca: str,
        server: tuple[str, str],
        clients: Mapping[str, tuple[str, str]],
        hostname: str = "127.0.0.1",
    ) -> ProxyTls:
        """From PEM files: the CA, the broker's (certificate, key), every client's by CN."""
        answer = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
        answer.verify_mode = ssl.CERT_REQUIRED
        answer.load_cert_chain(*server)
        reach = {}
        for name, (cert, key) in clients.items():
            context = ssl.create_default_context(cafile=ca)
            context.load_cert_chain(cert, key)
            reach[name] = context
        return cls(answer, reach, hostname)


def common_name(writer: asyncio.StreamWriter) -> str | None:
    """The CN of the certificate the client presented on this TLS connection."""
    peer = writer.get_extra_info("peercert") or {}
    for entry in peer.get("subject", ()):
        for key, value in entry:
            if key == "commonName":
                return str(value)
    return None


def _abort(writer: asyncio.StreamWriter, rst: bool) -> None:
    """Close a socket at once; with ``rst`` the kernel sends an RST instead of a FIN."""
    if rst:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class ProxyStats:
    accepted: int = 0
    refused_upstream: int = 0  # client connections closed because the upstream did not answer
    publishes: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})
    duplicated: int = 0
    swapped: int = 0
    resets: int = 0  # connections reset by reset()
    half_opened: int = 0  # connections left silent by half_open()


@dataclass(eq=False)  # hashed by identity: links live in a set
class _Link:
    """One proxied connection: both sockets and the two pump tasks."""

    client: tuple[asyncio.StreamReader, asyncio.StreamWriter]
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter]
    identity: str | None = None  # the client certificate's CN, under TLS
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    done: bool = False  # closed, reset or half-open: the pumps must not touch it any more

    def writers(self) -> tuple[asyncio.StreamWriter, asyncio.StreamWriter]:
        return self.client[1], self.upstream[1]


class FaultProxy:
    """See the module docstring. One asyncio loop on its own daemon thread per proxy."""

    def __init__(
        self,
        upstream: tuple[str, int],
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        *,
        name: str = "proxy",
        swap_window_s: float = 0.5,
        zombie_ttl_s: float = 30.0,
        tls: ProxyTls | None = None,
    ) -> None:
        self.upstream = upstream
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.name = name
        self.swap_window_s = swap_window_s
        self.zombie_ttl_s = zombie_ttl_s
        self.tls = tls
        self.stats = ProxyStats()
        self._latency = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"faultproxy-{name}", daemon=True)
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._zombies: list[tuple[float, asyncio.StreamWriter]] = []  # (reset after, silent socket)
        # Created on the loop's thread (asyncio objects belong to their loop).
        self._flowing: dict[str, asyncio.Event] = {}
        self._stall_timers: dict[str, asyncio.TimerHandle] = {}
        self._duplicate = {"up": 0, "down": 0}
        self._swap = {"up": 0, "down": 0}

    # --- lifecycle (any thread) ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.listen_port

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._start)
        return self

    async def _start(self) -> None:
        for direction in DIRECTIONS:
            self._flowing[direction] = asyncio.Event()
            self._flowing[direction].set()
        tls = {} if self.tls is None else {"ssl": self.tls.server, "ssl_handshake_timeout": 5.0}
        self._server = await asyncio.start_server(self._accept, self.listen_host, self.listen_port, **tls)
        self.listen_port = int(self._server.sockets[0].getsockname()[1])
        self._loop.create_task(self._reap_zombies())

    def close(self) -> None:
        """Stop listening and reset every connection, silent ones included; stop the thread."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(RuntimeError, TimeoutError):
            self._call(self._close, timeout=5.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._reset_links(count=False)
        for _, writer in self._zombies:
            _abort(writer, rst=True)
        self._zombies.clear()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _call(self, make: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
        """Run a coroutine on the proxy's loop and wait for it: the faults are applied when this returns."""

        async def wrapper() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout)

    # --- faults (any thread) -------------------------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        async def apply() -> None:
            self._latency = max(0.0, seconds)

        self._call(apply)

    def stall(self, seconds: float | None, direction: Direction | Literal["both"] = "both") -> None:
        """Stop forwarding in ``direction`` for ``seconds`` (``None``: until :meth:`resume`)."""

        async def apply() -> None:
            for name in DIRECTIONS if direction == "both" else (direction,):
                self._flowing[name].clear()
                timer = self._stall_timers.pop(name, None)
                if timer is not None:
                    timer.cancel()
                if seconds is not None:
                    self._stall_timers[name] = self._loop.call_later(seconds, self._flowing[name].set)

        self._call(apply)

    def resume(self) -> None:
        async def apply() -> None:
            for name in DIRECTIONS:
                timer = self._stall_timers.pop(name, None)
                if timer is not None:
                    timer.cancel()
                self._flowing[name].set()

        self._call(apply)

    def half_open(self, side: Side = "both") -> int:
        """Leave the current connections silent toward ``side``; returns how many there were."""

        async def apply() -> int:
            links = list(self._links)
            for link in links:
                self._forget(link)
                client, upstream = link.writers()
                silent = [client, upstream] if side == "both" else [client if side == "client" else upstream]
                for writer in silent:
                    cast(
                        asyncio.Transport, writer.transport
                    ).pause_reading()  # the kernel's window fills; nothing is read or sent
                    self._zombies.append((time.monotonic() + self.zombie_ttl_s, writer))
                for writer in link.writers():
                    if writer not in silent:
                        writer.close()  # the other side sees an ordinary FIN
            self.stats.half_opened += len(links)
            return len(links)

        return self._call(apply)

    def reset(self) -> int:
        """Reset (RST) every current connection on both sides; returns how many there were."""

        async def apply() -> int:
            return self._reset_links(count=True)

        return self._call(apply)

    def duplicate_publishes(self, count: int, direction: Direction) -> None:
        async def apply() -> None:
            self._duplicate[direction] += count

        self._call(apply)

    def swap_publishes(self, count: int, direction: Direction) -> None:
        async def apply() -> None:
            self._swap[direction] += count

        self._call(apply)

    def heal(self) -> None:
        """No latency, no stall, no duplicate or swap armed."""
        self.resume()

        async def apply() -> None:
            self._latency = 0.0
            self._duplicate = {"up": 0, "down": 0}
            self._swap = {"up": 0, "down": 0}

        self._call(apply)

    def inject(self, identity: str, packet: bytes) -> bool:
        """Write ``packet`` toward the broker on a connection of client ``identity`` (TLS only); whether
        one was there."""

        async def apply() -> bool:
            for link in self._links:
                if link.identity == identity and not link.done:
                    link.upstream[1].write(packet)
                    return True
            return False

        return self._call(apply)

    def connections(self) -> int:
        async def count() -> int:
            return len(self._links)

        return self._call(count)

    # --- the loop's side -----------------------------------------------------------------------------------

    def _forget(self, link: _Link) -> None:
        link.done = True
        self._links.discard(link)
        for task in link.tasks:
            if task is not asyncio.current_task():
                task.cancel()

    def _reset_links(self, count: bool) -> int:
        links = list(self._links)
        for link in links:
            self._forget(link)
            for writer in link.writers():
                _abort(writer, rst=True)
        if count:
            self.stats.resets += len(links)
        return len(links)

    async def _reap_zombies(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            keep = []
            for deadline, writer in self._zombies:
                if deadline <= now:
                    _abort(writer, rst=True)
                else:
                    keep.append((deadline, writer))
            self._zombies = keep

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        identity = None if self.tls is None else common_name(writer)
        try:
            if self.tls is None:
                connecting = asyncio.open_connection(*self.upstream)
            else:
                context = self.tls.upstream[identity or ""]  # KeyError: a client the test did not expect
                connecting = asyncio.open_connection(
                    *self.upstream, ssl=context, server_hostname=self.tls.hostname, ssl_handshake_timeout=3.0
                )
            upstream = await asyncio.wait_for(connecting, 3.0)
        except (OSError, TimeoutError):
            self.stats.refused_upstream += 1
            writer.close()
            return
        link = _Link((reader, writer), upstream, identity)
        self._links.add(link)
        link.tasks = [
            self._loop.create_task(self._pump(link, "up")),
            self._loop.create_task(self._pump(link, "down")),
        ]

    async def _pump(self, link: _Link, direction: Direction) -> None:
        source, sink = (
            (link.client[0], link.upstream[1]) if direction == "up" else (link.upstream[0], link.client[1])
        )
        pending = bytearray()
        held: bytes | None = None  # a PUBLISH held back to be swapped with the next one
        held_until = 0.0
        try:
            while not link.done:
                await self._flowing[direction].wait()  # a stall stops the reading too
                if held is not None:
                    try:
                        data = await asyncio.wait_for(
                            source.read(65536), max(0.0, held_until - time.monotonic())
                        )
                    except TimeoutError:  # no second PUBLISH came in time: let the held one go alone
                        sink.write(held)
                        held = None
                        continue
                else:
                    data = await source.read(65536)
                if not data:
                    break  # EOF from this side
                pending += data
                out: list[bytes] = []
                for packet in split_packets(pending):
                    if not is_publish(packet):
                        out.append(packet)
                        continue
                    self.stats.publishes[direction] += 1
                    if held is not None:  # the swap: the newer one first
                        out += [packet, held]
                        held = None
                        self.stats.swapped += 1
                    elif self._swap[direction] > 0:
                        self._swap[direction] -= 1
                        held, held_until = packet, time.monotonic() + self.swap_window_s
                    elif self._duplicate[direction] > 0:
                        self._duplicate[direction] -= 1
                        out += [packet, redelivery(packet)]
                        self.stats.duplicated += 1
                    else:
                        out.append(packet)
                if self._latency:
                    await asyncio.sleep(self._latency)
                await self._flowing[direction].wait()  # stalled after the read: hold what was read
                if link.done:
                    return
                sink.write(b"".join(out))
                await sink.drain()
        except (OSError, ValueError, asyncio.IncompleteReadError):
            pass
        if not link.done:  # an ordinary end: close both sides normally (FIN)
            self._forget(link)
            for writer in link.writers():
                writer.close()
