"""``edge-receiver pki init|issue|revoke|list --dir DIR ...``: the fleet's certificates (:mod:`receiver.pki`).

``init`` makes a CA, its CRL, the broker's server certificate (``--name``/``--address``, repeatable: its
SANs) and the receiver certificate "receiver"; it refuses a directory that already holds a CA. ``issue VIN``
makes a vehicle's certificate (CN = the VIN), ``issue --receiver NAME`` another receiver's; ``--replace``
rotates one (the old certificate is revoked). ``revoke`` adds a certificate to ``crl.pem``, which the broker
loads on SIGHUP. Prints the files written, one per line; keys are 0600.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from receiver import pki

HELP = "the fleet's CA and certificates: init, issue, revoke, list"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="pki_command", required=True, metavar="ACTION")
    init = sub.add_parser("init", help="create the CA, the broker's and the first receiver's certificates")
    issue = sub.add_parser("issue", help="issue a vehicle's certificate (CN = VIN), or a receiver's")
    revoke = sub.add_parser("revoke", help="revoke a vehicle's or a receiver's certificate (crl.pem)")
    listing = sub.add_parser("list", help="the certificates issued and revoked")
    for action in (init, issue, revoke, listing):
        action.add_argument("--dir", type=Path, required=True, metavar="DIR", help="the PKI directory")
    init.add_argument(
        "--name", action="append", default=[], metavar="DNS", help="a DNS name of the broker (repeatable)"
    )
    init.add_argument(
        "--address",
        action="append",
        default=[],
        metavar="IP",
        help="an IP address of the broker (repeatable)",
    )
    for action in (init, issue):
        action.add_argument(
            "--days", type=int, default=pki.LEAF_DAYS, help=f"validity (default {pki.LEAF_DAYS} days)"
        )
    for action in (issue, revoke):
        action.add_argument("name", metavar="VIN", help="the vehicle's VIN (or the receiver's name)")
        action.add_argument(
            "--receiver", action="store_true", help="VIN is a receiver's name instead ('receiver-<word>')"
        )
    issue.add_argument("--replace", action="store_true", help="rotate: revoke the current certificate")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "days", 1) < 1:
        raise pki.PkiError(f"--days {args.days}: expected at least 1")
    if args.pki_command == "init":
        names = args.name or ([] if args.address else ["localhost"])
        addresses = args.address or ([] if args.name else ["127.0.0.1", "::1"])
        store = pki.init(args.dir, names, addresses, args.days)
        print(f"{store.root}: CA, CRL, broker ({', '.join(names + addresses)}), receiver")
        for path in (
            store.ca_cert,
            store.ca_key,
            store.crl,
            store.fleet_key,
            store.broker_cert,
            store.broker_key,
        ):
            print(path)
        print("\n".join(str(path) for path in store.client("receiver", receiver=True)))
    elif args.pki_command == "issue":
        store = pki.issue(args.dir, args.name, args.receiver, args.days, args.replace)
        print("\n".join(str(path) for path in store.client(args.name, args.receiver)))
        if not args.receiver:
            print(store.auth_key(args.name))
    elif args.pki_command == "revoke":
        serial = pki.revoke(args.dir, args.name, args.receiver)
        print(
            f"{args.name}: revoked (serial {serial:x}); copy {pki.Pki(args.dir).crl} to the broker, SIGHUP it"
        )
    else:
        store = pki.Pki(args.dir)
        store.require()
        revoked = len(pki.revoked_serials(store))
        print(f"receivers: {' '.join(store.receivers()) or '-'}")
        print(f"vehicles: {' '.join(store.vehicles()) or '-'}")
        print(f"revoked: {revoked}")
    return 0
