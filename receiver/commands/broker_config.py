"""``edge-receiver broker-config --pki DIR --port PORT --out DIR [--prefix fleet] [--bind ADDRESS]
[--install-dir PATH]``: the broker's ``mosquitto.conf`` and ACL, generated from the PKI
(:mod:`receiver.broker_config`), with the CA, CRL and the broker's certificate and key beside them.

``--install-dir`` is the directory where these files will be on the broker's host, when that is not
``--out`` itself (the configuration names them by absolute path). Prints the files written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from receiver.broker_config import BrokerSettings, write
from receiver.pki import Pki

HELP = "write the broker's Mosquitto configuration and ACL for a PKI"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pki", type=Path, required=True, metavar="DIR", help="the PKI (`pki init`)")
    parser.add_argument("--port", type=int, required=True, help="the TLS listener's port (usually 8883)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write the files")
    parser.add_argument("--prefix", default="fleet", help="the topic prefix (default fleet)")
    parser.add_argument("--bind", metavar="ADDRESS", help="listen on this address only (default: every one)")
    parser.add_argument(
        "--install-dir",
        type=Path,
        metavar="PATH",
        help="where the files will be on the broker (default --out)",
    )


def run(args: argparse.Namespace) -> int:
    settings = BrokerSettings(args.port, args.prefix, args.bind, args.install_dir)
    for path in write(Pki(args.pki), args.out, settings):
        print(path)
    return 0
