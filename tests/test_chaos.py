"""Chaos, end to end (issue 4): real agents, a real Mosquitto, real receivers, faults at random, a checker.

Topology of the main scenario (every byte stays on loopback or on the tests' own veth pair):

    agent A ─(netns edge-chaos-<pid>, veth /30)─▶ proxy A ──┐
    agent B ─────────────(loopback)──────────────▶ proxy B ──┼─▶ Mosquitto ◀── proxy R ◀── receivers 1 and 2
    agent C, small buffer cap ─(loopback)────────▶ proxy B   │                  (one share group, one store)
    sniffer, for late duplicates ────────────────────────────┘
Faults, drawn from a seeded schedule (``EDGE_CHAOS_SEED`` replays one; the seed is printed): the broker
killed and restarted; the namespace's link cut and restored; latency, stalls, half-open connections and
resets from the proxies (no netem on these kernels); agents killed with SIGKILL and restarted (a new boot
that replays the log from its start and re-sends what the buffer holds), once right after a backlog
built up, so mid-upload; receivers killed with SIGKILL, once with their acks held in the proxy, so after
their commit and before their ack reached the broker; PUBLISH packets duplicated (as a broker redelivers)
and swapped by the proxies, and old batches published again by the sniffer (late duplicates).
Then everything heals, the agents finish their replay and drain, and :mod:`tests.harness.checker` says
whether anything committed was lost, duplicated at rest or stored out of order.

The default run injects at least 30 faults; ``EDGE_SOAK=1`` (``make soak``) at least 300.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import io
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import apsw
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent import wire
from agent.buffer import Buffer
from agent.config import BufferConfig, MqttConfig, UploadConfig
from agent.sim import simulate, write_log
from agent.upload import State, Uploader
from agent.wire.values import ChunkData, Schema, SignalSpec
from receiver import pki
from receiver.store import Store
from receiver.timeline import write_csv
from tests.harness.broker import Broker, SecureBroker
from tests.harness.buffers import SCHEMA as BUFFER_SCHEMA
from tests.harness.buffers import sealed
from tests.harness.checker import (
    Boot,
    BufferWatcher,
    CommitHistory,
    Observed,
    boot_id_from_log,
    check,
)
from tests.harness.drive import DBC, ROOT, SIGNALS  # one drive set-up for the end-to-end suites
from tests.harness.faultproxy import FaultProxy, ProxyTls, publish_packet, split_packets
from tests.harness.netns import NetNs, NetnsUnavailable, netns_or_skip
from tests.harness.processes import truth

SOAK = os.environ.get("EDGE_SOAK") == "1"
SEED = int(os.environ.get("EDGE_CHAOS_SEED") or random.SystemRandom().randrange(1, 2**31))
FAULTS = int(os.environ.get("EDGE_CHAOS_FAULTS") or (300 if SOAK else 36))
ACK_TIMEOUT_S = 2
# Agent C: a buffer cap of a few seconds of its data, so that outages make it evict, and small batches, so
# that a backlog spans several of them; its full policy alternates with the seed's parity.
CAPPED = (
    "max_bytes: 2500, full_policy: " + ("refuse_new" if SEED % 2 else "drop_oldest"),
    "max_batch_bytes: 1024",
)
KEEPALIVE_S = 2


# --- processes ------------------------------------------------------------------------------------------


def agent_yaml(
    path: Path,
    vin: str,
    log: Path,
    buffer: Path,
    host: str,
    port: int,
    speed: float,
    extra: tuple[str, str] = ("", ""),
    tls: str = "",
) -> Path:
    path.write_text(
        f"vin: {vin}\nsource: {{kind: replay, log: {log}, speed: {speed}}}\n"
        f"buses:\n  - {{channel: can0, dbc: [{DBC}]}}\n"
        f"sampling: {{signals: [{', '.join(SIGNALS)}]}}\n"
        f"buffer: {{path: {buffer}, commit_interval_s: 0.2, {extra[0]}}}\n"
        f"mqtt: {{host: '{host}', port: {port}, keepalive_s: {KEEPALIVE_S}{tls}}}\n"
        f"upload: {{ack_timeout_s: {ACK_TIMEOUT_S}, {extra[1]}}}\nlogging: {{format: json}}\n"
    )
    return path


def receiver_yaml(path: Path, store: Path, port: int, tls: str = "", security: str = "") -> Path:
    path.write_text(
        f"mqtt: {{host: 127.0.0.1, port: {port}, keepalive_s: {KEEPALIVE_S}{tls}}}\nstore: {{path: {store}}}\n"
        f"logging: {{format: json}}\n{security}"
    )
    return path


class Fleet:
    """The chaos fleet's PKI (``receiver.pki``): a certificate per vehicle and per receiver process, the
    broker's for loopback and the namespace's address; each client's YAML fields and the proxies' TLS."""

    def __init__(self, root: Path, addresses: list[str], vins: list[str], receivers: list[str]) -> None:
        self.pki = pki.init(root, ["localhost"], addresses)
        for vin in vins:
            pki.issue(root, vin)
        for name in receivers:
            pki.issue(root, name, receiver=True)
        self.vins, self.receivers = vins, receivers

    def tls(self, name: str, receiver: bool = False) -> str:
        """The ``mqtt`` flow-style fields of client ``name``; a vehicle's signs with its MAC key."""
        cert, key = self.pki.client(name, receiver)
        fields = f", tls: true, ca_file: {self.pki.ca_cert}, cert_file: {cert}, key_file: {key}"
        return fields if receiver else f"{fields}, auth_key_file: {self.pki.auth_key(name)}"

    def security(self) -> str:
        return f"security: {{fleet_key_file: {self.pki.fleet_key}}}\n"

    def proxy_tls(self) -> ProxyTls:
        clients = {vin: self.pki.client(vin) for vin in self.vins}
        clients |= {name: self.pki.client(name, receiver=True) for name in self.receivers}
        files = {name: (str(cert), str(key)) for name, (cert, key) in clients.items()}
        broker = (str(self.pki.broker_cert), str(self.pki.broker_key))
        return ProxyTls.from_files(str(self.pki.ca_cert), broker, files)


class AgentProc:
    """One vin: a sequence of ``edge-agent replay`` boots on one buffer file, each a real process."""

    def __init__(
        self,
        vin: str,
        log: Path,
        workdir: Path,
        host: str,
        port: int,
        speed: float,
        history: CommitHistory,
        netns: NetNs | None = None,
        proxy: FaultProxy | None = None,
        extra: tuple[str, str] = ("", ""),
        tls: str = "",
    ) -> None:
        self.vin, self.log, self.workdir, self.history, self.netns = vin, log, workdir, history, netns
        self.proxy = proxy  # the one between this agent and the broker, if any
        self.buffer = workdir / f"{vin}.sqlite"
        self.config = agent_yaml(
            workdir / f"{vin}.yaml", vin, log, self.buffer, host, port, speed, extra, tls
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.boots = 0
        self.kills = 0
        self.completed = 0
        self.exit_codes: list[int] = []
        self.last_outcome = "none"  # of the latest boot: "killed", "complete" or "incomplete"
        self.crashes = 0  # boots that failed within seconds of their start: a crash loop, not chaos
        self._started_at = 0.0
        self._stderr: Path | None = None
        self._report: Path | None = None

    def start(self) -> None:
        assert self.process is None
        self.boots += 1
        self._started_at = time.monotonic()
        self._stderr = self.workdir / f"{self.vin}-boot{self.boots}.log"
        self._report = self.workdir / f"{self.vin}-boot{self.boots}.json"
        command = [sys.executable, "-m", "agent.cli", "replay", str(self.log), "--config", str(self.config)]
        command += ["--report", str(self._report), "--drain-timeout", "30"]
        with open(self._stderr, "wb") as stderr:
            self.process = subprocess.Popen(
                self.netns.command(command) if self.netns else command,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> bool:
        """SIGKILL the current boot (if any), then read its buffer post mortem."""
        if self.process is None:
            return False
        self.process.kill()  # SIGKILL, by this handle only
        self.process.wait(10)
        self.kills += 1
        self.last_outcome = "killed"
        self._record(killed=True)
        return True

    def reap(self) -> int | None:
        """The exit code if the current boot ended on its own (and record it), else ``None``."""
        if self.process is None or self.process.poll() is None:
            return None
        code = self.process.returncode
        self.exit_codes.append(code)
        report = self._record(killed=False)
        complete = code == 0 and report is not None and bool(report.get("complete"))
        if code != 0 and time.monotonic() - self._started_at < 5.0:
            self.crashes += 1
        self.completed += complete
        self.last_outcome = "complete" if complete else "incomplete"
        return code

    def _record(self, killed: bool) -> dict[str, Any] | None:
        assert self._stderr is not None and self._report is not None
        self.process = None
        lines = self._stderr.read_text(errors="replace").splitlines()
        report = None
        with contextlib.suppress(OSError, ValueError):  # none, or half-written by a boot killed meanwhile
            report = json.loads(self._report.read_text())
        self.history.add_boot(Boot(self.vin, boot_id_from_log(lines), report, killed))
        self.history.observe(self.vin, self.buffer)
        return report

    def tail(self, lines: int = 15) -> str:
        return "" if self._stderr is None else "\n".join(self._stderr.read_text().splitlines()[-lines:])


class ReceiverProc:
    """One ``edge-receiver run`` process (restartable); all of them share one store and one share group."""

    def __init__(self, name: str, workdir: Path, store: Path, port: int, fleet: Fleet | None = None) -> None:
        self.name = name
        self.workdir = workdir
        tls, security = ("", "") if fleet is None else (fleet.tls(name, receiver=True), fleet.security())
        self.config = receiver_yaml(workdir / f"{name}.yaml", store, port, tls, security)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.stderr: Path | None = None

    def start(self) -> None:
        assert self.process is None
        self.starts += 1
        self.stderr = self.workdir / f"{self.name}-{self.starts}.log"
        with open(self.stderr, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "receiver.cli", "run", "--config", str(self.config)],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None
            self.kills += 1

    def stop(self) -> dict[str, Any]:
        """SIGTERM and wait; returns the counters of its ``receiver_stopped`` log line."""
        if self.process is None:
            return {}
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None
        assert self.stderr is not None
        for line in reversed(self.stderr.read_text().splitlines()):
            if '"receiver_stopped"' in line:
                return dict(json.loads(line))
        return {}

    @property
    def crashed(self) -> bool:
        return self.process is not None and self.process.poll() is not None


def stop_receiver(receiver: ReceiverProc, into: dict[str, dict[str, Any]]) -> None:
    into[receiver.name] = receiver.stop()


class Sniffer:
    """A receiver's certificate beside the receivers, outside their share group: keeps recent batches, and
    sends copies of old ones back toward the broker inside the vehicle's own connection (the proxy's
    :meth:`~FaultProxy.inject`), since under the ACL only the vehicle may publish on its telemetry topic."""

    def __init__(self, port: int, rng: random.Random, fleet: Fleet, proxies: dict[str, FaultProxy]) -> None:
        self.rng = rng
        self.proxies = proxies  # by VIN: the proxy that carries that vehicle's connection
        self.seen: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=400)
        self.republished = 0
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="receiver-sniffer")
        cert, key = fleet.pki.client("receiver-sniffer", receiver=True)
        self.client.tls_set(ca_certs=str(fleet.pki.ca_cert), certfile=str(cert), keyfile=str(key))
        self.client.on_connect = lambda c, *_: c.subscribe("fleet/+/telemetry", qos=0)
        self.client.on_message = lambda _c, _u, m: self.seen.append((m.topic, bytes(m.payload)))
        self.client.reconnect_delay_set(1, 2)
        self.client.connect_async("127.0.0.1", port, keepalive=KEEPALIVE_S)
        self.client.loop_start()

    def republish(self, count: int) -> int:
        old = list(self.seen)[: max(1, len(self.seen) // 2)]  # the older half: long acked, most likely
        sent = 0
        for topic, payload in self.rng.sample(old, min(count, len(old))) if old else []:
            vin = topic.split("/")[1]
            if self.proxies[vin].inject(vin, publish_packet(topic, payload)):
                sent += 1
        self.republished += sent
        return sent

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- the fault schedule ---------------------------------------------------------------------------------


class Chaos:
    """Injects faults one after another (each held a random while, then healed) and keeps the agents going."""

    def __init__(
        self,
        rng: random.Random,
        broker: Broker,
        agents: list[AgentProc],
        receivers: list[ReceiverProc],
        agent_proxies: dict[str, FaultProxy],
        receiver_proxy: FaultProxy,
        sniffer: Sniffer,
        netns: NetNs | None,
    ) -> None:
        self.rng = rng
        self.broker = broker
        self.agents = agents
        self.receivers = receivers
        self.agent_proxies = agent_proxies
        self.receiver_proxy = receiver_proxy
        self.proxies = [*agent_proxies.values(), receiver_proxy]
        self.sniffer = sniffer
        self.netns = netns
        self.keep_agents_busy = True
        self.events: list[tuple[float, str, str]] = []
        self.started = time.monotonic()
        self.unexpected: list[str] = []
        self.kinds: dict[str, Callable[[], str]] = {
            "broker_kill": self.broker_kill,
            "proxy_latency": self.proxy_latency,
            "proxy_stall": self.proxy_stall,
            "proxy_half_open": self.proxy_half_open,
            "proxy_reset": self.proxy_reset,
            "agent_kill": self.agent_kill,
            "agent_kill_mid_upload": self.agent_kill_mid_upload,
            "receiver_kill": self.receiver_kill,
            "receiver_kill_before_ack": self.receiver_kill_before_ack,
            "duplicate_publish": self.duplicate_publish,
            "reorder_publish": self.reorder_publish,
            "late_duplicate": self.late_duplicate,
        }
        if netns is not None:
            self.kinds["link_cut"] = self.link_cut

    # --- time passes, the agents are kept running ------------------------------------------------------------

    def hold(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self.maintain()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.1, left))

    def maintain(self) -> None:
        for agent in self.agents:
            code = agent.reap()
            if code is not None:
                self.note("agent_exit", f"{agent.vin} exited {code}")
                if agent.crashes > 5:  # not chaos any more: stop here, with the reason
                    raise AssertionError(f"{agent.vin} keeps failing at start:\n{agent.tail()}")
                if self.keep_agents_busy:
                    agent.start()
        for receiver in self.receivers:
            if receiver.crashed:  # not killed by us: a finding, keep going so the checker still runs
                assert receiver.process is not None and receiver.stderr is not None
                self.unexpected.append(f"{receiver.name} exited {receiver.process.returncode} on its own")
                if len(self.unexpected) > 5:
                    tail = "\n".join(receiver.stderr.read_text().splitlines()[-5:])
                    raise AssertionError(f"receivers keep exiting on their own: {self.unexpected}\n{tail}")
                receiver.process = None
                receiver.start()

    def note(self, kind: str, detail: str) -> None:
        self.events.append((round(time.monotonic() - self.started, 2), kind, detail))

    # --- the schedule -------------------------------------------------------------------------------------

    def schedule(self, count: int) -> list[str]:
        """Every kind at least twice (when ``count`` allows), the rest at random; shuffled."""
        kinds = sorted(self.kinds)
        plan = kinds * max(1, min(2, count // len(kinds)))
        plan += [self.rng.choice(kinds) for _ in range(max(0, count - len(plan)))]
        self.rng.shuffle(plan)
        return plan

    def run(self, count: int) -> collections.Counter[str]:
        done: collections.Counter[str] = collections.Counter()
        for kind in self.schedule(count):
            self.note(kind, self.kinds[kind]())
            done[kind] += 1
            self.hold(self.rng.uniform(0.3, 1.2))
        return done

    def heal(self) -> None:
        if self.netns is not None and not self.netns.link_up:
            self.netns.restore()
        for proxy in self.proxies:
            proxy.heal()
        if self.broker.process is None:
            self.broker.start()
        for receiver in self.receivers:
            if receiver.process is None:
                receiver.start()

    # --- the faults (each returns what it did) ----------------------------------------------------------------

    def broker_kill(self) -> str:
        down = self.rng.uniform(0.3, 3.0)
        self.broker.stop(kill=True)
        self.hold(down)
        self.broker.start()
        return f"broker SIGKILL, down {down:.1f} s"

    def link_cut(self) -> str:
        assert self.netns is not None
        side = self.rng.choice(["root", "ns", "both"])
        down = self.rng.uniform(0.5, 5.0)
        self.netns.cut(side)  # type: ignore[arg-type]
        self.hold(down)
        self.netns.restore()
        return f"link cut on the {side} side for {down:.1f} s"

    def _proxy(self) -> tuple[str, FaultProxy]:
        name = self.rng.choice([*self.agent_proxies, "receivers"])
        return name, self.agent_proxies.get(name, self.receiver_proxy)

    def proxy_latency(self) -> str:
        name, proxy = self._proxy()
        latency, span = self.rng.uniform(0.05, 0.6), self.rng.uniform(2.0, 5.0)
        proxy.set_latency(latency)
        self.hold(span)
        proxy.set_latency(0.0)
        return f"{name}: +{latency * 1000:.0f} ms each way for {span:.1f} s"

    def proxy_stall(self) -> str:
        name, proxy = self._proxy()
        direction = self.rng.choice(["up", "down", "both"])
        span = self.rng.uniform(0.5, 4.0)
        proxy.stall(None, direction)  # type: ignore[arg-type]
        self.hold(span)
        proxy.resume()
        return f"{name}: stalled {direction} for {span:.1f} s"

    def proxy_half_open(self) -> str:
        name, proxy = self._proxy()
        side = self.rng.choice(["client", "upstream", "both"])
        links = proxy.half_open(side)  # type: ignore[arg-type]
        self.hold(self.rng.uniform(0.5, 2.0))
        return f"{name}: {links} connections half-open toward the {side}"

    def proxy_reset(self) -> str:
        name, proxy = self._proxy()
        links = proxy.reset()
        self.hold(self.rng.uniform(0.2, 1.0))
        return f"{name}: {links} connections reset"

    def agent_kill(self) -> str:
        agent = self.rng.choice(self.agents)
        killed = agent.kill()
        self.hold(self.rng.uniform(0.0, 1.5))
        agent.start()
        return f"{agent.vin}: SIGKILL{'' if killed else ' (was between boots)'}, restarted"

    def agent_kill_mid_upload(self) -> str:
        """Build a backlog behind a dead link, heal it, and kill the agent while the backlog drains."""
        agent = self.rng.choice(self.agents)
        offline = self.rng.uniform(1.5, 3.0)
        proxy = agent.proxy
        assert proxy is not None
        if agent.netns is not None:
            agent.netns.cut("root")
        else:
            proxy.stall(None, "both")
        self.hold(offline)
        if agent.netns is not None:
            agent.netns.restore()
        else:
            proxy.resume()
        after = self.rng.uniform(0.1, 1.0)
        self.hold(after)
        killed = agent.kill()
        self.hold(self.rng.uniform(0.0, 1.0))
        agent.start()
        how = "link cut" if agent.netns is not None else "proxy stalled"
        return f"{agent.vin}: {how} {offline:.1f} s, SIGKILL {after:.1f} s after healing{'' if killed else ' (idle)'}"

    def receiver_kill(self) -> str:
        receiver = self.rng.choice(self.receivers)
        receiver.kill()
        down = self.rng.uniform(0.3, 2.0)
        self.hold(down)
        receiver.start()
        return f"{receiver.name}: SIGKILL, down {down:.1f} s"

    def receiver_kill_before_ack(self) -> str:
        """The receivers' outgoing bytes (PUBACKs, acks) are held while they commit; then one dies and the
        held bytes are dropped: its commits happened, its acks never reach the broker."""
        receiver = self.rng.choice(self.receivers)
        held = self.rng.uniform(0.3, 1.2)
        self.receiver_proxy.stall(None, "up")
        self.hold(held)
        receiver.kill()
        links = self.receiver_proxy.reset()  # drops what was held, both receivers' connections
        self.receiver_proxy.resume()
        self.hold(self.rng.uniform(0.3, 1.5))
        receiver.start()
        return f"{receiver.name}: acks held {held:.1f} s, SIGKILL, {links} connections reset"

    def _arm(self) -> tuple[str, FaultProxy, str]:
        """A proxy and direction where PUBLISH packets flow: batches up from agents, acks down to agents,
        batches down to the receivers."""
        name, proxy = self._proxy()
        direction = self.rng.choice(["up", "down"]) if name != "receivers" else "down"
        return name, proxy, direction

    def duplicate_publish(self) -> str:
        name, proxy, direction = self._arm()
        count = self.rng.randint(1, 6)
        proxy.duplicate_publishes(count, direction)  # type: ignore[arg-type]
        self.hold(self.rng.uniform(1.0, 3.0))
        return f"{name}: next {count} PUBLISH {direction} duplicated"

    def reorder_publish(self) -> str:
        name, proxy, direction = self._arm()
        count = self.rng.randint(1, 4)
        proxy.swap_publishes(count, direction)  # type: ignore[arg-type]
        self.hold(self.rng.uniform(1.0, 3.0))
        return f"{name}: next {count} PUBLISH pairs {direction} swapped"

    def late_duplicate(self) -> str:
        sent = self.sniffer.republish(self.rng.randint(1, 4))
        self.hold(self.rng.uniform(0.3, 1.0))
        return f"{sent} old batches published again"


# --- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture
def namespace() -> Iterator[NetNs | None]:
    """The agents' namespace when this machine allows one; without it the link-cut faults are left out."""
    try:
        ns = NetNs().create()
    except (NetnsUnavailable, FileNotFoundError) as error:
        print(f"no network namespace ({error}): link cuts are left out of the schedule")
        yield None
        return
    try:
        yield ns
    finally:
        ns.teardown()


def drives(workdir: Path) -> list[Path]:
    """The logs the agents replay: the recorded drives for a soak, shorter simulated ones by default."""
    if SOAK:
        return [ROOT / "replay_logs" / "city.log.gz", ROOT / "replay_logs" / "highway.log.gz"]
    paths = []
    for personality, seed in (("city", 41), ("aggressive", 42)):
        path = workdir / f"{personality}.log.gz"
        write_log(path, simulate(personality, 60.0, seed=seed, dbc_path=DBC))
        paths.append(path)
    return paths


# --- the scenario ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_chaos_nothing_committed_is_lost_duplicated_or_reordered(
    namespace: NetNs | None, tmp_path: Path
) -> None:
    """The fleet's secure setup throughout: the generated broker config (TLS, client certificates, the
    ACL), a certificate and a MAC key per vehicle, a certificate per receiver process, the fleet key."""
    print(f"chaos seed {SEED} (replay with EDGE_CHAOS_SEED={SEED}), {FAULTS} faults, soak={SOAK}")
    rng = random.Random(SEED)
    logs = drives(tmp_path)
    speed = 6.0 if SOAK else 3.0
    vins = ["CHAOS0000000000A", "CHAOS0000000000B", "CHAOS0000000000C"]
    a_host = namespace.host_address if namespace else "127.0.0.1"
    fleet = Fleet(
        tmp_path / "pki",
        sorted({"127.0.0.1", a_host}),
        vins,
        ["receiver-1", "receiver-2", "receiver-sniffer"],
    )
    broker = SecureBroker(fleet.pki.root)
    broker.start()
    history = CommitHistory()
    store = tmp_path / "store.sqlite"
    upstream = ("127.0.0.1", broker.port)
    proxy_a = FaultProxy(upstream, a_host, name="A", tls=fleet.proxy_tls()).start()
    proxy_b = FaultProxy(upstream, name="B", tls=fleet.proxy_tls()).start()
    proxy_r = FaultProxy(upstream, name="R", tls=fleet.proxy_tls()).start()
    proxies = {"A": proxy_a, "B": proxy_b}
    # A behind the namespace's link; C shares B's proxy and has a small buffer cap: it evicts
    routes = [(a_host, proxy_a, namespace, ("", "")), ("127.0.0.1", proxy_b, None, ("", ""))]
    routes.append(("127.0.0.1", proxy_b, None, CAPPED))
    agents = [
        AgentProc(vin, log, tmp_path, host, proxy.port, speed, history, ns, proxy, extra, fleet.tls(vin))
        for vin, log, (host, proxy, ns, extra) in zip(vins, [logs[0], logs[1], logs[0]], routes, strict=True)
    ]
    receivers = [ReceiverProc(f"receiver-{n}", tmp_path, store, proxy_r.port, fleet) for n in (1, 2)]
    by_vin = {vins[0]: proxy_a, vins[1]: proxy_b, vins[2]: proxy_b}
    sniffer = Sniffer(
        broker.port, random.Random(SEED + 1), fleet, by_vin
    )  # its own rng: the seed's schedule stays
    watcher = BufferWatcher(history, {a.vin: a.buffer for a in agents})
    chaos = Chaos(rng, broker, agents, receivers, proxies, proxy_r, sniffer, namespace)
    began = time.monotonic()
    done: collections.Counter[str] = collections.Counter()
    finished: set[str] = set()
    chaos_s = drain_s = 0.0
    try:
        for receiver in receivers:
            receiver.start()
        watcher.start()
        for agent in agents:
            agent.start()
        truths = {agent.vin: truth(agent.log) for agent in agents}
        chaos.hold(1.0)
        done = chaos.run(FAULTS)
        chaos_s = time.monotonic() - began

        # Heal everything and let each agent finish a whole replay and drain its buffer.
        chaos.keep_agents_busy = False
        chaos.heal()
        deadline = time.monotonic() + 150
        while len(finished) < len(agents) and time.monotonic() < deadline:
            chaos.maintain()
            for agent in agents:
                if agent.vin in finished or agent.running:
                    continue
                if agent.last_outcome == "complete":
                    finished.add(agent.vin)
                else:  # killed last, or gave up draining during the chaos: one more boot
                    chaos.note("restart", f"{agent.vin} restarted for the drain")
                    agent.start()
            time.sleep(0.2)
        drain_s = time.monotonic() - began - chaos_s
    finally:  # every step on its own, so that one failing cannot leave processes behind
        stopped: dict[str, dict[str, Any]] = {}
        cleanup: list[Callable[[], object]] = [agent.kill for agent in agents]
        cleanup += [watcher.stop, sniffer.close, proxy_a.close, proxy_b.close, proxy_r.close]
        cleanup += [functools.partial(stop_receiver, r, stopped) for r in receivers]
        cleanup.append(broker.close)
        for step in cleanup:
            try:
                step()
            except Exception as error:  # report it, carry on cleaning
                print(f"cleanup step failed: {error!r}")

    result = check(history, store, SIGNALS, truths)
    capped = agents[2]
    status = subprocess.run(
        [sys.executable, "-m", "agent.cli", "status", "--config", str(capped.config), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    shown = json.loads(status.stdout) if status.returncode == 0 else {"error": status.stderr}
    summary = (
        f"seed {SEED}: {sum(done.values())} faults in {chaos_s:.0f} s, drain {drain_s:.0f} s: {dict(done)}\n"
        f"agents (vin, boots, kills, complete, exit codes): "
        f"{[(a.vin, a.boots, a.kills, a.completed, a.exit_codes) for a in agents]}\n"
        f"receivers (starts, kills): {[(r.name, r.starts, r.kills) for r in receivers]}\n"
        f"receiver counters at the end: {stopped}\n"
        f"proxies: {dict((p.name, p.stats) for p in (proxy_a, proxy_b, proxy_r))}\n"
        f"sniffer republished {sniffer.republished}, watcher polls {watcher.polls}, "
        f"read errors {history.read_errors}; status of {capped.vin}: dropped {shown.get('dropped_chunks')}\n"
        f"{result.summary()}"
    )
    (tmp_path / "chaos.json").write_text(json.dumps({"seed": SEED, "events": chaos.events}, indent=1))
    print(summary)
    print("\n".join(f"{t:7.2f} {kind}: {detail}" for t, kind, detail in chaos.events))
    assert finished == set(vins), (
        f"not every agent completed a replay after healing\n{summary}\n" + "\n".join(a.tail() for a in agents)
    )
    assert sum(done.values()) >= min(FAULTS, 30) and set(done) == set(chaos.kinds), summary
    assert not chaos.unexpected, f"{chaos.unexpected}\n{summary}"
    assert result.lost == 0, summary
    assert result.duplicates == 0, summary
    assert result.order_violations == 0, summary
    assert result.ok, summary
    assert shown.get("dropped_chunks") == result.vins[capped.vin].evicted, summary  # shown in status, exactly
    for vin in vins[:2]:  # no cap: nothing evicted, and the export is the log's truth byte for byte
        assert result.vins[vin].evicted == 0 and result.vins[vin].clean_complete_boots > 0, summary


# --- receiver killed between its commit and its ack, deterministically --------------------------------------


@pytest.mark.slow
def test_batch_committed_but_never_acked_is_resent_stored_once_and_acked(
    broker: Broker, tmp_path: Path
) -> None:
    """The receiver's window between its commit and its ack, forced: the test plays a receiver that commits a
    batch with the receiver's own ``Store.store_batch`` and dies before acking; then the real receiver
    starts on that store, and the agent's resend must be stored once (nothing new) and acked."""
    log = tmp_path / "short.log.gz"
    write_log(log, simulate("city", 10.0, seed=7, dbc_path=DBC))
    vin = "CHAOSWINDOW00001"
    store = tmp_path / "store.sqlite"
    first: list[bytes] = []
    got = threading.Event()

    def on_message(_c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        if not first:
            first.append(bytes(message.payload))
            got.set()

    spy = paho.Client(CallbackAPIVersion.VERSION2, client_id="chaos-window-spy")
    spy.on_message = on_message
    spy.connect("127.0.0.1", broker.port)
    spy.subscribe(f"fleet/{vin}/telemetry", qos=1)
    spy.loop_start()
    history = CommitHistory()
    agent = AgentProc(vin, log, tmp_path, "127.0.0.1", broker.port, 4.0, history)
    receiver = ReceiverProc("receiver", tmp_path, store, broker.port)
    watcher = BufferWatcher(history, {vin: agent.buffer}).start()
    try:
        agent.start()
        assert got.wait(20), "the agent published nothing"
        batch = wire.decode_batch(first[0])
        with Store(store) as direct:  # the commit ...
            result = direct.store_batch(batch)
        assert result.new == len(batch.chunks) > 0  # ... and no ack: this "receiver" died here
        committed_at = time.time()
        time.sleep(ACK_TIMEOUT_S + 0.5)  # the agent's ack timeout passes: it will send the batch again
        receiver.start()
        assert agent.process is not None
        agent.process.wait(60)
        code = agent.reap()
    finally:
        agent.kill()
        watcher.stop()
        counters = receiver.stop()
        spy.disconnect()
        spy.loop_stop()
    report = json.loads((tmp_path / f"{vin}-boot1.json").read_text())
    assert code == 0 and report["complete"], agent.tail()
    assert report["chunks_acked"] == report["chunks_committed"] and report["resends"] >= 1
    assert counters["chunks_duplicate"] >= len(batch.chunks), counters  # the resend reached the receiver
    reader = apsw.Connection(str(store), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        received = dict(
            reader.execute(
                "SELECT seq, received_at FROM chunks WHERE vin = ? AND boot_id = ?",
                (vin, batch.chunks[0].boot_id),
            ).fetchall()
        )
    finally:
        reader.close()
    for chunk in batch.chunks:  # stored once, by the first commit: the resend added nothing
        assert received[chunk.seq] <= committed_at
    checked = check(history, store, SIGNALS, {vin: truth(log)})
    assert checked.ok, checked.summary()


# --- the harness's own tests (fast) ----------------------------------------------------------------------


class Upstream:
    """A TCP server on loopback that records what it receives, for the proxy's tests."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.closed: list[socket.socket] = []  # connections that ended (FIN or RST)
        self.data = bytearray()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.server.accept()
                self.conns.append(conn)
                threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                self.data += data
        self.closed.append(conn)

    def wait_for(self, size: int, timeout: float = 3.0) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.data) < size and time.monotonic() < deadline:
            time.sleep(0.01)
        return bytes(self.data)

    def close(self) -> None:
        self.server.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def proxy(upstream: Upstream) -> Iterator[FaultProxy]:
    instance = FaultProxy(("127.0.0.1", upstream.port), name="unit").start()
    yield instance
    instance.close()


def test_split_packets_cuts_whole_mqtt_packets_and_keeps_the_tail() -> None:
    big = publish_packet("t", b"x" * 300, 7, qos=1)  # a remaining length of two bytes
    pending = bytearray(b"\xc0\x00" + big + big[:5])
    assert split_packets(pending) == [b"\xc0\x00", big]
    assert pending == big[:5]
    pending += big[5:]
    assert split_packets(pending) == [big] and not pending


def test_proxy_duplicates_and_swaps_publishes_and_forwards_the_rest(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    connect, a, b, c = (
        b"\x10\x02ab",
        publish_packet("t", b"A", 1, qos=1),
        publish_packet("t", b"B", 2, qos=1),
        publish_packet("t", b"C", 3, qos=1),
    )
    with socket.create_connection(("127.0.0.1", proxy.port)) as client:
        proxy.duplicate_publishes(1, "up")
        client.sendall(connect + a + b)
        assert upstream.wait_for(len(connect + a + a + b)) == connect + a + bytes([a[0] | 0x08]) + a[1:] + b
        proxy.swap_publishes(1, "up")
        client.sendall(c + a)
        assert upstream.wait_for(len(connect + a * 2 + b + c + a))[-len(c + a) :] == a + c
        proxy.swap_publishes(1, "up")
        client.sendall(b)  # a lone held packet goes after the swap window
        assert upstream.wait_for(len(connect + a * 3 + b * 2 + c))[-len(b) :] == b
    assert proxy.stats.duplicated == 1 and proxy.stats.swapped == 1


def test_proxy_stall_latency_reset_and_half_open(proxy: FaultProxy, upstream: Upstream) -> None:
    ping = b"\xc0\x00"
    with socket.create_connection(("127.0.0.1", proxy.port)) as client:
        proxy.stall(None, "up")
        client.sendall(ping)
        time.sleep(0.3)
        assert upstream.data == b""  # held, the connection still open
        proxy.resume()
        assert upstream.wait_for(2) == ping
        proxy.set_latency(0.3)
        sent = time.monotonic()
        client.sendall(ping)
        upstream.wait_for(4)
        assert time.monotonic() - sent >= 0.29
        proxy.set_latency(0)
        assert proxy.reset() == 1
        client.settimeout(2)
        with pytest.raises(ConnectionResetError):
            client.recv(10)
    with socket.create_connection(("127.0.0.1", proxy.port)) as client:
        client.sendall(ping)
        upstream.wait_for(6)
        assert proxy.half_open("client") == 1
        deadline = time.monotonic() + 2
        while upstream.conns[-1] not in upstream.closed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert upstream.conns[-1] in upstream.closed  # the broker's side was closed normally ...
        client.settimeout(0.5)
        with pytest.raises(TimeoutError):
            client.recv(10)  # ... the client's side is silent: no FIN, no RST, no data
        client.sendall(ping)  # and what it sends goes nowhere
        time.sleep(0.2)
        assert len(upstream.data) == 6


def test_netns_link_cut_and_restore(tmp_path: Path) -> None:
    ns = netns_or_skip("u")
    try:
        server = socket.create_server((ns.host_address, 0))
        port = server.getsockname()[1]
        probe = (
            f"import socket\ntry:\n socket.create_connection(('{ns.host_address}', {port}), 0.7).close()\n"
            " print('ok')\nexcept OSError as e:\n print('fail', e)\n"
        )

        def reach() -> str:
            command = ns.command([sys.executable, "-c", probe])
            return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip()

        assert reach() == "ok"
        ns.cut()
        assert reach().startswith("fail")
        ns.restore()
        assert reach() == "ok"
        server.close()
    finally:
        ns.teardown()
    assert ns.name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_checker_finds_lost_duplicated_and_misordered_chunks(tmp_path: Path) -> None:
    schema = Schema(Fraction(50), (SignalSpec("M.a"),))
    vin, boot = "CHECK", b"\x01" * 16
    store_path = tmp_path / "store.sqlite"

    def chunk(seq: int, ticks: list[int]) -> ChunkData:
        return ChunkData(boot, seq, ticks, [[t * 2 for t in ticks]])

    truth_csv = io.StringIO()
    write_csv(truth_csv, schema.rate, ["M.a"], ((t, [t * 2]) for t in range(0, 12)))
    history = CommitHistory()
    history.add_boot(
        Boot(vin, boot, {"complete": True, "chunks_committed": 4, "samples_committed": 12}, False)
    )
    for seq, first in enumerate((0, 3, 6, 9)):
        history.chunks[(vin, boot, seq)] = Observed(first, 3)
    with Store(store_path) as store:
        store.store_batch(wire.DecodedBatch(vin, schema, [chunk(0, [0, 1, 2]), chunk(1, [3, 4, 5])], [], 0.0))
        store.store_batch(wire.DecodedBatch(vin, schema, [chunk(3, [9, 10, 11])], [], 0.0))
    result = check(history, store_path, ["M.a"], {vin: truth_csv.getvalue()})
    assert result.lost == 1 and result.vins[vin].lost == [(boot.hex()[:12], 2)]
    assert result.vins[vin].gaps and result.vins[vin].data and not result.ok
    with Store(store_path) as store:  # the ledger explains seq 2; a chunk repeating ticks 9-11 appears
        store.store_batch(wire.DecodedBatch(vin, schema, [chunk(4, [9, 10, 11])], [(boot, 2, 2)], 0.0))
    history.chunks[(vin, boot, 4)] = Observed(9, 3)
    assert history.boots[0].report is not None
    history.boots[0].report["chunks_committed"] = 5
    result = check(history, store_path, ["M.a"], {vin: truth_csv.getvalue()})
    assert result.lost == 0 and result.duplicates == 1 and result.order_violations == 1
    assert not result.vins[vin].gaps and not result.vins[vin].data  # evictions: a subset of the truth is fine
    db = apsw.Connection(str(store_path))  # a store whose chunks account for a value twice
    db.execute("UPDATE chunks SET values_stored = values_stored + 1 WHERE seq = 1")
    db.close()
    assert check(history, store_path, ["M.a"], {vin: truth_csv.getvalue()}).duplicates == 2


# --- bugs found by the chaos work: minimal reproductions (the lead fixes them in agent/) -------------------


def offline_uploader(tmp_path: Path, max_batch_bytes: int) -> tuple[Uploader, list[bytes]]:
    """A real :class:`Uploader` whose publish only records the payload: its decisions, step by step."""
    uploader = Uploader(
        "REPRO0001",
        UploadConfig(max_inflight_batches=8, max_batch_bytes=max_batch_bytes, ack_timeout_s=2.0),
        MqttConfig(client_id="repro"),
        tmp_path / "buffer.sqlite",
        threading.Event(),
    )
    sent: list[bytes] = []

    def publish(_topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> Any:
        sent.append(payload)
        return types.SimpleNamespace(rc=paho.MQTT_ERR_SUCCESS)

    uploader.client.publish = publish  # type: ignore[method-assign]
    uploader.state = State.ONLINE
    return uploader, sent


def test_a_late_ack_for_another_batch_does_not_clear_eviction_notices(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "buffer.sqlite")
    sid = buffer.schema_id(BUFFER_SCHEMA)
    chunks = sealed(b"N" * 16, 5)
    sizes = [len(c.payload) for c in chunks]
    buffer.append(sid, chunks[:4])
    uploader, sent = offline_uploader(tmp_path, max(a + b for a, b in itertools.pairwise(sizes)))
    assert uploader._send_one(buffer) and uploader._send_one(buffer)  # Y0 = seqs 0-1 (lost), Y = 2-3
    lost, late = (wire.decode_batch(p) for p in sent)
    assert [c.seq for c in lost.chunks] == [0, 1] and [c.seq for c in late.chunks] == [2, 3]
    with Store(tmp_path / "store.sqlite") as store:  # a receiver stores Y; its ack is slow to come back
        ack_of_y = wire.encode_ack("REPRO0001", store.store_batch(late).stored)
    uploader.window.reset()  # the ack timeout: everything unacked goes again, oldest first
    buffer.append(sid, [chunks[4]], BufferConfig(max_bytes=sum(sizes[:4]) - sizes[0] // 2))  # evicts seqs 0-1
    assert uploader._send_one(buffer)
    carrier = wire.decode_batch(sent[-1])  # seqs 2-3 again, now with the notice for 0-1; it is lost
    assert [c.seq for c in carrier.chunks] == [2, 3] and carrier.evicted == [(b"N" * 16, 0, 1)]
    uploader._handle_ack(buffer, ack_of_y)  # the late ack of Y names 2-3: the carrier's chunks
    with Store(tmp_path / "store.sqlite", readonly=True) as store:
        ledger = store.stats()[0].evicted
    assert ledger == 0  # the receiver never saw the notice ...
    assert buffer.notices(), "... and the agent forgot it: seqs 0-1 are gone with no gap recorded"


def test_eviction_notices_are_sent_even_when_no_chunk_is_left(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "buffer.sqlite")
    sid = buffer.schema_id(BUFFER_SCHEMA)
    chunks = sealed(b"R" * 16, 5)
    buffer.append(sid, chunks[:4])
    uploader, sent = offline_uploader(tmp_path, 1 << 20)
    assert uploader._send_one(buffer)  # seqs 0-3 in flight
    full = BufferConfig(max_bytes=sum(len(c.payload) for c in chunks[:4]), full_policy="refuse_new")
    assert buffer.append(sid, [chunks[4]], full) == [chunks[4]]  # the last commit is refused: a notice
    with Store(tmp_path / "store.sqlite") as store:
        ack = wire.encode_ack("REPRO0001", store.store_batch(wire.decode_batch(sent[0])).stored)
    uploader._handle_ack(buffer, ack)
    assert buffer.stats().chunks == 0 and buffer.notices()  # "complete" for replay, yet a notice pends
    while uploader._send_one(buffer):
        pass
    assert any(wire.decode_batch(p).evicted for p in sent), "the notice for seq 4 never left the agent"


# The buffer's tables as the last committed agent (HEAD when this was written) creates them: no crc column.
PREVIOUS_BUFFER_SQL = """
CREATE TABLE schemas (id INTEGER PRIMARY KEY, digest BLOB UNIQUE NOT NULL, body BLOB NOT NULL);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    boot_id BLOB NOT NULL, seq INTEGER NOT NULL, schema_id INTEGER NOT NULL REFERENCES schemas(id),
    first_tick INTEGER NOT NULL, sample_count INTEGER NOT NULL, payload BLOB NOT NULL,
    created REAL NOT NULL, degraded INTEGER NOT NULL DEFAULT 0, UNIQUE (boot_id, seq));
CREATE TABLE counters (name TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE evictions (
    id INTEGER PRIMARY KEY, boot_id BLOB NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    reason TEXT NOT NULL, at REAL NOT NULL);
"""


def test_an_upgraded_agent_keeps_the_buffer_of_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    chunk = sealed(b"U" * 16, 1)[0]
    db = apsw.Connection(str(path))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(PREVIOUS_BUFFER_SQL)
    db.execute(
        "INSERT INTO schemas (id, digest, body) VALUES (1, ?, ?)",
        (BUFFER_SCHEMA.digest, wire.schema_bytes(BUFFER_SCHEMA)),
    )
    db.execute(
        "INSERT INTO chunks (boot_id, seq, schema_id, first_tick, sample_count, payload, created)"
        " VALUES (?, ?, 1, ?, ?, ?, ?)",
        (chunk.id.boot_id, chunk.id.seq, chunk.first_tick, chunk.sample_count, chunk.payload, time.time()),
    )
    db.close()
    buffer = Buffer(path, check=True)  # what the upgraded daemon does first
    try:
        assert not list(tmp_path.glob("*.corrupt-*")), "the previous version's buffer was quarantined"
        assert [c.seq for c in buffer.oldest()] == [0]
    finally:
        buffer.close()
