"""Real ``edge-agent`` and ``edge-receiver`` processes for the end-to-end suites (``test_e2e``, ``test_auth_e2e``).

:func:`cli` runs one verb to its end; :func:`running_receiver` starts ``edge-receiver run`` on a config,
yields once the broker has granted its subscription (a condition read from its JSON log, not a sleep),
and stops it with SIGTERM. :func:`exported` and :func:`truth` are the two sides every suite compares.
The caller owns the folders; nothing here deletes a file.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager
from pathlib import Path

from tests.harness.drive import DBC, ROOT, SIGNALS
from tests.harness.waiting import wait_for_text


def cli(module: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module args`` from the project's root; its output as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def start_replay(drive: Path, config: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``edge-agent replay drive --config config args`` in the background, its stderr in ``log``."""
    with open(log, "w") as errors:
        command = [sys.executable, "-m", "agent.cli", "replay", str(drive), "--config", str(config), *args]
        return subprocess.Popen(command, cwd=ROOT, stderr=errors)


@contextmanager
def replaying(drive: Path, config: Path, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """:func:`start_replay`, killed (by its id) if it is still running when the block ends."""
    agent = start_replay(drive, config, log, *args)
    try:
        yield agent
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


def receiver_yaml(path: Path, port: int, store: Path, extra: str = "") -> Path:
    """Write a receiver config at ``path``: the broker on loopback ``port``, the store, JSON logs."""
    path.write_text(
        f"mqtt: {{host: 127.0.0.1, port: {port}}}\nstore: {{path: {store}}}\nlogging: {{format: json}}\n{extra}"
    )
    return path


@contextmanager
def running_service(
    verb: str, config: Path, log: Path, ready: str, timeout: float = 30.0
) -> Iterator[subprocess.Popen[bytes]]:
    """``edge-receiver <verb> --config config``, its stderr in ``log``, yielded once the JSON event
    ``ready`` is in its log (a condition, not a sleep); stopped with SIGTERM."""
    with open(log, "w") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "receiver.cli", verb, "--config", str(config)], cwd=ROOT, stderr=errors
        )
    try:
        wait_for_text(log, f'"event": "{ready}"', timeout, process)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)


def running_receiver(
    config: Path, log: Path, timeout: float = 30.0
) -> ContextManager[subprocess.Popen[bytes]]:
    """``edge-receiver run``, subscribed before this yields."""
    return running_service("run", config, log, "subscribed", timeout)


def running_api(config: Path, log: Path, timeout: float = 30.0) -> ContextManager[subprocess.Popen[bytes]]:
    """``edge-receiver serve``, listening before this yields."""
    return running_service("serve", config, log, "api_started", timeout)


def sample_csv(log: Path, names: list[str]) -> str:
    """The CSV ``edge-agent sample`` prints for ``log``'s signals ``names`` (the reference EV's DBC)."""
    result = cli("agent.cli", "sample", str(log), "--dbc", str(DBC), "--signals", ",".join(names))
    assert result.returncode == 0, result.stderr
    return result.stdout


def exported(store: Path, vin: str) -> str:
    """The CSV ``edge-receiver export`` prints for ``vin``'s suite signals."""
    result = cli("receiver.cli", "export", "--db", str(store), "--vin", vin, "--signals", ",".join(SIGNALS))
    assert result.returncode == 0, result.stderr
    return result.stdout


def truth(log: Path) -> str:
    """The CSV ``edge-agent sample`` prints for ``log``: what the store must hold, byte for byte."""
    return sample_csv(log, SIGNALS)
