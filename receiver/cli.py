"""``edge-receiver``: the receiver service and the tools that read its store.

Sub-commands
- ``run --config FILE``: the MQTT service (:class:`receiver.ingest.Receiver`) until SIGTERM or SIGINT;
  logs through :mod:`agent.logs`.
- ``export --db PATH --vin VIN [--signals A.B,C.D]``: CSV on stdout, ``timestamp,<names>`` then one line
  per stored tick; byte-identical to ``edge-agent sample`` for the same data (see :mod:`receiver.export`).
- ``stats --db PATH``: per vin, chunks, samples, evicted chunks and unexplained gaps in chunk sequences.

Runs on the main thread; ``export`` and ``stats`` open the store read-only and may run beside a live
receiver (WAL). Errors of the project's tree print as one line on stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import __version__, logs
from agent.errors import EdgeError
from receiver import accuracy
from receiver.config import DEFAULT_RECEIVER_CONFIG, load_receiver_config
from receiver.export import write_csv
from receiver.store import NotFoundError, Store


def _did_you_mean(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def run(args: argparse.Namespace) -> int:
    from receiver.ingest import Receiver  # paho is needed by this command only

    config = load_receiver_config(args.config, check_files=True)
    logs.configure(config.logging.level, config.logging.format)
    Receiver(config).run_forever()
    return 0


def check_config(args: argparse.Namespace) -> int:
    config = load_receiver_config(args.config, check_files=True)
    print(f"{args.config}: ok (broker {config.mqtt.host}:{config.mqtt.port}, store {config.store.path})")
    return 0


def export(args: argparse.Namespace) -> int:
    with Store(args.db, readonly=True) as store:
        vins = store.vins()
        if args.vin not in vins:
            raise NotFoundError(f"unknown vin {args.vin!r} in {args.db}{_did_you_mean(args.vin, vins)}")
        known = store.signals(args.vin)
        if args.signals is None:
            names = known
        else:
            names = [name.strip() for name in args.signals.split(",")]
            if not all(names):
                raise NotFoundError(f"--signals {args.signals!r}: an empty signal name")
            for name in names:
                if name not in known:
                    raise NotFoundError(
                        f"vin {args.vin!r} has no signal {name!r}{_did_you_mean(name, known)}"
                    )
        write_csv(sys.stdout, store.rate(args.vin), names, store.rows(args.vin, names))
    sys.stdout.flush()
    return 0


def stats(args: argparse.Namespace) -> int:
    with Store(args.db, readonly=True) as store:
        per_vin = store.stats()
    if not per_vin:
        print(f"{args.db}: no vehicles")
    for entry in per_vin:
        missing = sum(last - first + 1 for _, first, last in entry.missing)
        print(
            f"{entry.vin}: {entry.chunks} chunks, {entry.samples} samples, {entry.values} values, "
            f"{entry.overlaps} overlapping, {entry.evicted} evicted, {missing} missing"
        )
        for boot_id, first, last in entry.missing:
            print(f"  missing: boot {boot_id.hex()} seq {first}-{last}")
    return 0


def _config_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_RECEIVER_CONFIG,
        metavar="FILE",
        help=f"the receiver's YAML config file (default {DEFAULT_RECEIVER_CONFIG})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-receiver", description="Cloud receiver of edge telemetry.")
    parser.add_argument("--version", action="version", version=f"edge-receiver {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    command = sub.add_parser("run", help="receive batches over MQTT, store them, ack them")
    _config_argument(command)
    command.set_defaults(handler=run)

    command = sub.add_parser("check-config", help="validate the configuration file and exit")
    _config_argument(command)
    command.set_defaults(handler=check_config)

    command = sub.add_parser(
        "accuracy", help="largest error per signal: an export beside `edge-agent sample` of the same log"
    )
    accuracy.add_arguments(command)
    command.set_defaults(handler=accuracy.run)

    command = sub.add_parser("export", help="print a vehicle's stored samples as CSV")
    command.add_argument("--db", type=Path, required=True, metavar="PATH", help="the receiver's store")
    command.add_argument("--vin", required=True, help="the vehicle")
    command.add_argument(
        "--signals", metavar="A.B,C.D", help="comma-separated MESSAGE.SIGNAL names (default: all, sorted)"
    )
    command.set_defaults(handler=export)

    command = sub.add_parser("stats", help="per vehicle: chunks, samples, evicted and missing chunks")
    command.add_argument("--db", type=Path, required=True, metavar="PATH", help="the receiver's store")
    command.set_defaults(handler=stats)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except EdgeError as error:
        print(f"edge-receiver {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edge-receiver export ... | head` closed the pipe: not an error
        return 0


if __name__ == "__main__":
    sys.exit(main())
