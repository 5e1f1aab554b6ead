"""A real Mosquitto broker on a free loopback port, for tests, the demo and the benchmarks.

:class:`Broker` is open (anonymous, no TLS); :class:`SecureBroker` runs exactly the configuration that
``edge-receiver broker-config`` generates for a PKI (TLS, client certificates, the fleet's ACL).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in MOSQUITTO_PATHS if Path(p).exists()), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Broker:
    """Start, stop (gracefully or with SIGKILL) and restart one Mosquitto on a fixed port."""

    def __init__(self, port: int | None = None, extra_config: str = "") -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (make test installs the Debian package)")
        self.binary = binary
        self.port = port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="edge-broker-"))
        self.config = self.workdir / "mosquitto.conf"
        self.config.write_text(
            f"{self.listener_config()}persistence true\n"
            f"persistence_location {self.workdir}/\nmax_queued_messages 100000\n{extra_config}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def listener_config(self) -> str:
        """The listener and its access control: the start of the configuration file."""
        return f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"

    def start(self, timeout: float = 10.0) -> None:
        log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115 - the process owns it
        self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {(self.workdir / 'mosquitto.log').read_text()}")
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class SecureBroker(Broker):
    """A broker that runs what ``edge-receiver broker-config`` writes for ``pki`` (into ``workdir/tls``).

    Run as root, Mosquitto drops to the user "mosquitto", so the working directory is handed to that user
    (as an operator installs the files: the broker's key 0600, owned by the broker's user).
    """

    def __init__(
        self, pki: Path, prefix: str = "fleet", port: int | None = None, extra_config: str = ""
    ) -> None:
        self.pki, self.prefix = pki, prefix
        super().__init__(port, extra_config)

    def listener_config(self) -> str:
        from receiver.broker_config import CONFIG_NAME, BrokerSettings, write
        from receiver.pki import Pki

        out = self.workdir / "tls"
        write(Pki(self.pki), out, BrokerSettings(self.port, self.prefix, bind="127.0.0.1"))
        return (out / CONFIG_NAME).read_text()

    def start(self, timeout: float = 10.0) -> None:
        self._hand_over()
        super().start(timeout)

    def reload(self, timeout: float = 10.0) -> None:
        """Regenerate the files from the PKI (after ``pki revoke`` or a new receiver) and SIGHUP the broker;
        returns once the broker has begun reloading (it serves no client before it has finished)."""
        assert self.process is not None, "the broker is not running"
        self.listener_config()
        self._hand_over()
        log = self.workdir / "mosquitto.log"
        before = log.read_text().count("Reloading config")
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while log.read_text().count("Reloading config") == before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not reload within {timeout} s")
            time.sleep(0.02)

    def _hand_over(self) -> None:
        if os.geteuid() != 0:
            return  # Mosquitto keeps our user and reads our files
        try:
            user = pwd.getpwnam("mosquitto")
        except KeyError:
            user = pwd.getpwnam("nobody")  # what Mosquitto falls back to
        for path in [self.workdir, *self.workdir.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)


B = TypeVar("B", bound=Broker)


def require_mosquitto() -> None:
    """Fail the test (not skip it) when Mosquitto is missing: `make test` installs it."""
    import pytest

    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed: run the tests through `make test`, which installs it")


@contextlib.contextmanager
def serving(broker: B) -> Iterator[B]:
    """``broker`` started, and closed (its folder removed) after."""
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


def running_broker(extra_config: str = "") -> contextlib.AbstractContextManager[Broker]:
    require_mosquitto()
    return serving(Broker(extra_config=extra_config))
