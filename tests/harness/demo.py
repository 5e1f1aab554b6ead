"""`make demo`: a broker, the receiver and five vehicles on this machine, with a broker outage mid-drive.

Every part is the real thing, in the secure setup an operator runs: the fleet's own PKI in the work folder
(`edge-receiver pki init`, `pki issue VIN` per vehicle: certificates and message authentication keys),
Mosquitto on a free port with the configuration `edge-receiver broker-config` generates (TLS only, client
certificates, the fleet's ACL), `edge-receiver run` and five `edge-agent replay` processes, each with its
own certificate and buffer. The broker is stopped for a while in the middle of the drives and
started again. At the end each vehicle's stored data is exported from the receiver and compared with
`edge-agent sample` of the same log (what the agent should have sent): the table shows samples produced,
stored, missing, duplicated and bytes on the wire. Exit status 1 if anything is missing or duplicated.

``--store postgresql`` (``make demo STORE=postgresql``) stores into a PostgreSQL server the demo starts
itself (:mod:`tests.harness.postgres`: initdb in a temporary folder, stopped and deleted at the end)
instead of the SQLite file ``demo-out/receiver.sqlite``; the vehicles and the checks are the same.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from agent.commands import sample
from agent.decode import build_decoder
from receiver import accuracy
from receiver.pki import Pki
from receiver.store import open_store
from tests.harness.broker import SecureBroker, free_port
from tests.harness.postgres import Postgres

ROOT = Path(__file__).resolve().parents[2]
DBC = ROOT / "dbc" / "reference_ev.dbc"
LOSSY = "DEMO0EV0000000005"  # this vehicle sends at the seeds' error bounds; the others are lossless
FLEET = [  # (vin, personality, seed): the first four are the committed drives
    ("DEMO0EV0000000001", "highway", 1),
    ("DEMO0EV0000000002", "city", 2),
    ("DEMO0EV0000000003", "aggressive", 3),
    ("DEMO0EV0000000004", "panic_braking", 4),
    ("DEMO0EV0000000005", "city", 5),
]


def say(text: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {text}", flush=True)


def drive_log(out: Path, personality: str, seed: int) -> Path:
    committed = ROOT / "replay_logs" / f"{personality}.log.gz"
    if seed <= 4 and committed.exists():
        return committed
    path = out / f"{personality}-seed{seed}.log.gz"
    say(f"simulating a 5-minute {personality} drive (seed {seed})")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "simulate",
            "--personality",
            personality,
            "--duration",
            "300",
            "--seed",
            str(seed),
            "--out",
            str(path),
            "--dbc",
            str(DBC),
        ],
        check=True,
    )
    return path


def receiver_cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "receiver.cli", *args], check=True, stdout=subprocess.DEVNULL)


def make_pki(out: Path) -> Pki:
    """The fleet's CA, the broker's certificate for 127.0.0.1, the receiver's, and one per vehicle."""
    root = out / "pki"
    receiver_cli("pki", "init", "--dir", str(root), "--address", "127.0.0.1", "--name", "localhost")
    for vin, _, _ in FLEET:
        receiver_cli("pki", "issue", "--dir", str(root), vin)
    receiver_cli("pki", "issue", "--dir", str(root), "--receiver", "receiver-api")  # serve's own identity
    say(f"PKI in {root}: a CA, the broker's and the receiver's certificates, {len(FLEET)} vehicles'")
    return Pki(root)


def tls_config(pki: Pki, port: int, name: str, receiver: bool = False) -> str:
    """The ``mqtt:`` section of a client holding certificate ``name``."""
    cert, key = pki.client(name, receiver)
    return (
        f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  tls: true\n  ca_file: {pki.ca_cert}\n"
        f"  cert_file: {cert}\n  key_file: {key}\n"
    )


def write_configs(out: Path, pki: Pki, port: int, vin: str, log: Path) -> Path:
    config = out / f"{vin}.yaml"
    lossy = "sampling: {bounds_preset: seeds}\n" if vin == LOSSY else ""
    config.write_text(
        f"vin: {vin}\nsource: {{kind: replay, log: {log}, speed: max}}\n"
        f"buses:\n  - {{channel: can0, dbc: [{DBC}]}}\n"
        f"buffer: {{path: {out / vin}-buffer.sqlite}}\n{lossy}"
        "status: {signals: [DriveSpeed.VehicleSpeed, BatteryState.StateOfCharge, Thermal.MotorTemp]}\n"
        f"{tls_config(pki, port, vin)}  auth_key_file: {pki.auth_key(vin)}\nlogging: {{format: json}}\n"
    )
    return config


def truth_csv(log: Path, names: list[str]) -> str:
    text = io.StringIO()
    args = argparse.Namespace(log=str(log), dbc=[str(DBC)], signals=",".join(names), rate_hz=50.0)
    with redirect_stdout(text), redirect_stderr(io.StringIO()):
        sample.run(args)
    return text.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--speed", default="30", help="replay speed of every vehicle (default 30x)")
    parser.add_argument("--outage-at", type=float, default=3.0, help="seconds before the broker stops")
    parser.add_argument("--outage", type=float, default=6.0, help="seconds the broker stays down")
    parser.add_argument("--out", type=Path, default=ROOT / "demo-out")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="after the table, keep the broker, the receiver and the live page running until Ctrl-C",
    )
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the receiver's store (default sqlite)",
    )
    args = parser.parse_args()
    server = Postgres(durable=True) if args.store == "postgresql" else None
    try:
        if server is not None:
            server.start()
            say(
                f"PostgreSQL {server.bin.parent.name} listening on 127.0.0.1:{server.port} (in {server.folder})"
            )
        return run_demo(args, server)
    finally:
        if server is not None:
            server.close()


def run_demo(args: argparse.Namespace, server: Postgres | None) -> int:
    out: Path = args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    logs = {vin: drive_log(out, personality, seed) for vin, personality, seed in FLEET}
    pki = make_pki(out)
    broker = SecureBroker(pki.root)
    broker.start()
    say(f"mosquitto listening on 127.0.0.1:{broker.port}: TLS, client certificates, the generated ACL")
    store = out / "receiver.sqlite" if server is None else server.database()
    where = f"path: {store}" if server is None else f"dsn: '{store}'"
    web_port = api_port()
    receiver_yaml = (
        f"store: {{{where}}}\nsecurity: {{fleet_key_file: {pki.fleet_key}}}\nlogging: {{format: json}}\n"
        f"api: {{listen: '127.0.0.1:{web_port}'}}\n"
    )
    (out / "api.yaml").write_text(
        f"{tls_config(pki, broker.port, 'receiver-api', receiver=True)}{receiver_yaml}"
    )
    (out / "receiver.yaml").write_text(
        f"{tls_config(pki, broker.port, 'receiver', receiver=True)}{receiver_yaml}"
    )
    receiver = subprocess.Popen(
        [sys.executable, "-m", "receiver.cli", "run", "--config", str(out / "receiver.yaml")],
        stderr=open(out / "receiver.log", "wb"),  # noqa: SIM115 - the child process owns it
    )
    api = subprocess.Popen(
        [sys.executable, "-m", "receiver.cli", "serve", "--config", str(out / "api.yaml")],
        stderr=open(out / "api.log", "wb"),  # noqa: SIM115 - the child process owns it
    )
    url = f"http://127.0.0.1:{web_port}/"
    say(f"the live page: {url} (API docs: {url}docs)")
    agents: dict[str, subprocess.Popen[bytes]] = {}
    try:
        time.sleep(1.0)
        for vin, personality, _ in FLEET:
            config = write_configs(out, pki, broker.port, vin, logs[vin])
            agents[vin] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agent.cli",
                    "replay",
                    str(logs[vin]),
                    "--config",
                    str(config),
                    "--speed",
                    args.speed,
                    "--report",
                    str(out / f"{vin}.json"),
                    "--drain-timeout",
                    "120",
                ],
                stderr=open(out / f"{vin}.log", "wb"),  # noqa: SIM115 - the child process owns it
            )
            say(f"{vin}: replaying {logs[vin].name} ({personality}) at {args.speed}x")
        time.sleep(args.outage_at)
        broker.stop(kill=True)
        say(f"broker killed: the vehicles buffer for {args.outage:.0f} s")
        time.sleep(args.outage)
        broker.start()
        say("broker back: the vehicles drain their backlog oldest-first")
        deadline = time.monotonic() + 300
        while any(p.poll() is None for p in agents.values()) and time.monotonic() < deadline:
            running = [v for v, p in agents.items() if p.poll() is None]
            say(f"waiting for {len(running)} vehicle(s) to be fully acked")
            time.sleep(2.0)
        if args.serve:
            code = report(out, store, logs, agents)
            say(
                f"still serving the five vehicles at {url}: Ctrl-C stops the broker, the receiver and the page"
            )
            with contextlib.suppress(KeyboardInterrupt):
                api.wait()
            return code
    finally:
        for process in agents.values():
            if process.poll() is None:
                process.kill()
        for service in (api, receiver):
            if service.poll() is None:
                service.send_signal(signal.SIGTERM)
                service.wait(30)
        broker.close()
    return report(out, store, logs, agents)


def api_port() -> int:
    """The live page's port: 8080 when it is free, else any free one."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 8080))
        except OSError:
            return free_port()
    return 8080


def _bounded_only(text: str) -> str:
    """The accuracy table's header, its rows for signals with a bound > 0, and its summary line."""
    lines = text.splitlines()
    keep = [lines[0]] + [line for line in lines[1:-1] if float(line.split()[1]) > 0] + lines[-1:]
    return "\n".join(keep)


def report(
    out: Path, store: Path | str, logs: dict[str, Path], agents: dict[str, subprocess.Popen[bytes]]
) -> int:
    names = [s.name for s in build_decoder([("can0", [DBC], "auto")]).signals]
    print()
    header = (
        f"{'vehicle':<18} {'log':<22} {'produced':>9} {'stored':>9} {'missing':>8} {'dup':>5} {'wire bytes':>11} "
        f"{'B/sample':>9}  exact"
    )
    print(header)
    print("-" * len(header))
    failed = False
    accuracy_text = ""
    for vin, log in logs.items():
        truth = truth_csv(log, names).splitlines()
        exported = subprocess.run(
            [
                sys.executable,
                "-m",
                "receiver.cli",
                "export",
                "--db",
                str(store),
                "--vin",
                vin,
                "--signals",
                ",".join(names),
            ],
            capture_output=True,
            text=True,
        )
        rows = exported.stdout.splitlines()
        truth_ticks = {line.split(",", 1)[0] for line in truth[1:]}
        stored_ticks = [line.split(",", 1)[0] for line in rows[1:]]
        missing = len(truth_ticks - set(stored_ticks))
        duplicated = len(stored_ticks) - len(set(stored_ticks))
        figures = json.loads((out / f"{vin}.json").read_text()) if (out / f"{vin}.json").exists() else {}
        wire_bytes = int(figures.get("bytes_sent", 0))
        if vin == LOSSY:  # not byte-identical by design: every value must lie within its bound instead
            with open_store(store, readonly=True) as stored:  # the bounds its agent declared on the wire
                bounds, angles = accuracy.declared_bounds(stored.declared(vin).values())
            checked = accuracy.compare(truth, rows, bounds, angles)
            exact = checked.ok
            accuracy_text = accuracy.format_report(checked)
            verdict = "within ε" if exact else "BEYOND ε"
        else:
            exact = rows == truth
            verdict = "yes" if exact else "NO"
        failed |= bool(missing or duplicated or not exact or agents[vin].returncode != 0)
        per_sample = wire_bytes / max(1, len(truth) - 1)
        print(
            f"{vin:<18} {log.name:<22} {len(truth) - 1:>9} {len(stored_ticks):>9} {missing:>8} {duplicated:>5} "
            f"{wire_bytes:>11} {per_sample:>9.2f}  {verdict}"
        )
    print(f"\n{LOSSY} sends at the seeds' bounds (bounds_preset: seeds); largest error per bounded signal:")
    print(_bounded_only(accuracy_text))
    if isinstance(store, Path):
        print(f"\nstored in {store} (edge-receiver export --db {store} --vin VIN); logs and buffers in {out}")
    else:
        print(f"\nstored in PostgreSQL, {store} (stopped and deleted now); logs and buffers in {out}")
    print(
        f"{len(names)} signals per sample; 'exact' = the export equals `edge-agent sample` byte for byte"
        " (for the lossy vehicle: every value within its bound, lossless signals exact)"
    )
    print(
        "RESULT: "
        + (
            "FAILED: something is missing, duplicated or different"
            if failed
            else "nothing missing, nothing duplicated"
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
