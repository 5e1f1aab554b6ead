"""A network namespace with one veth pair to the root namespace, whose link the chaos tests cut and restore.

    root namespace                                   namespace edge-chaos-<pid>
    <root_if> 169.254.X.(4k+1)/30  ◀── veth pair ──▶  <ns_if> 169.254.X.(4k+2)/30   (the agent runs here)

The pair's /30 is link-local (169.254/16 is never routed) and exists only on these two interfaces: there is
no default route in the namespace, so whatever runs inside can reach the root-side address and nothing else.
A server meant for the namespace listens on :attr:`NetNs.host_address` (the broker, or the fault proxy in
front of it). :meth:`NetNs.cut` sets a link down, :meth:`NetNs.restore` sets it up again; the TCP connections
across it are not told (no FIN, no RST): they time out or resume, exactly as when a modem loses the network.

Creating a namespace needs CAP_SYS_ADMIN and CAP_NET_ADMIN; :func:`netns_or_skip` turns the refusal into a
``pytest.skip`` with the reason. :meth:`NetNs.teardown` deletes the pair and the namespace (idempotent);
the processes started inside are the caller's to stop first, by their own handles.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Sequence
from typing import Literal

IP = "ip"


class NetnsUnavailable(RuntimeError):
    """This machine (or this user) cannot create a network namespace with a veth pair."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([IP, *args], capture_output=True, text=True, timeout=10)
    if check and result.returncode != 0:
        raise NetnsUnavailable(f"`ip {' '.join(args)}` failed: {result.stderr.strip() or result.returncode}")
    return result


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = _ip("-o", "-4", "addr", "show", check=False).stdout
    nets = []
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            nets.append(ipaddress.IPv4Interface(fields[fields.index("inet") + 1]).network)
    return nets


def pick_network(seed: int) -> ipaddress.IPv4Network:
    """A link-local /30 (169.254.1.0 to 169.254.254.255) that no interface of the root namespace uses."""
    used = _used_networks()
    for attempt in range(64):
        index = (seed + attempt * 7919) % (254 * 64)
        candidate = ipaddress.IPv4Network(f"169.254.{1 + index // 64}.{(index % 64) * 4}/30")
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise NetnsUnavailable("no free link-local /30 found")


class NetNs:
    """One namespace ``edge-chaos-<pid>[-n]`` and its veth pair; see the module docstring."""

    def __init__(self, suffix: str = "") -> None:
        pid = os.getpid()
        self.name = f"edge-chaos-{pid}{suffix}"
        tag = f"{pid % 10**7}{suffix}"[-9:]
        self.root_if = f"ec{tag}r"  # at most 12 characters: within IFNAMSIZ
        self.ns_if = f"ec{tag}n"
        network = pick_network(pid + sum(map(ord, suffix)))
        first, second = list(network.hosts())
        self.prefix = network.prefixlen
        self.host_address = str(first)  # the root side: servers for the namespace listen here
        self.ns_address = str(second)
        self.created = False
        self.link_up = True

    def create(self) -> NetNs:
        """Create the namespace and the pair, with addresses, up; raises :class:`NetnsUnavailable`."""
        _ip("netns", "add", self.name)
        self.created = True
        try:
            _ip("link", "add", self.root_if, "type", "veth", "peer", "name", self.ns_if)
            _ip("link", "set", self.ns_if, "netns", self.name)
            _ip("addr", "add", f"{self.host_address}/{self.prefix}", "dev", self.root_if)
            _ip("link", "set", self.root_if, "up")
            _ip("-n", self.name, "addr", "add", f"{self.ns_address}/{self.prefix}", "dev", self.ns_if)
            _ip("-n", self.name, "link", "set", self.ns_if, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.teardown()
            raise
        return self

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace. ``ip netns exec`` execs in place: the pid is the command's."""
        return [IP, "netns", "exec", self.name, *argv]

    def cut(self, side: Literal["root", "ns", "both"] = "root") -> None:
        """Set the link down (on the root side by default: the namespace's end loses its carrier)."""
        if side in ("root", "both"):
            _ip("link", "set", self.root_if, "down")
        if side in ("ns", "both"):
            _ip("-n", self.name, "link", "set", self.ns_if, "down")
        self.link_up = False

    def restore(self) -> None:
        """Set both ends up again (whichever was cut); the addresses come back with the link."""
        _ip("link", "set", self.root_if, "up")
        _ip("-n", self.name, "link", "set", self.ns_if, "up")
        self.link_up = True

    def teardown(self) -> None:
        """Delete the pair (deleting one end deletes both) and the namespace; safe to call twice."""
        _ip("link", "del", self.root_if, check=False)
        if self.created:
            _ip("netns", "del", self.name, check=False)
            self.created = False

    def __enter__(self) -> NetNs:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.teardown()


def netns_or_skip(suffix: str = "") -> NetNs:
    """A created :class:`NetNs`, or ``pytest.skip`` with the reason when this machine refuses it."""
    import pytest

    try:
        return NetNs(suffix).create()
    except (NetnsUnavailable, FileNotFoundError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"cannot create a network namespace with a veth pair here: {error}")
