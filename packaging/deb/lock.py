#!/usr/bin/python3
"""Regenerate the pinned, hash-checked requirement files that ``build.py`` installs.

    .venv/bin/python packaging/deb/lock.py          # rewrites requirements.txt and build-requirements.txt

``requirements.txt``: the project's runtime dependencies (``[project].dependencies`` of pyproject.toml)
resolved for CPython 3.11 on Linux (Debian 12's Python), every package pinned with ``==``, and for each
the sha256 of every file a Debian 12 / Raspberry Pi OS machine may pick: the wheels for x86_64, aarch64
and armv7l, the pure-Python wheels, and the sdist (which is what armhf compiles where no armv7l wheel
exists). ``build-requirements.txt``: the tools of the build (pip, setuptools, installer), pinned likewise.

Run it on purpose (a dependency update is a change to review), never from the build: the build must
give the same bytes every time, and that is what these files pin. It asks the package index for the
resolution (pip) and for the file lists (the simple API in JSON, PEP 691).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
INDEX = os.environ.get("EDGE_LOCK_INDEX", "https://pypi.org/simple")
PYTHON = "3.11"
ARCHES = ("x86_64", "aarch64", "armv7l")
TOOLS = ("pip", "setuptools", "installer")


def resolve(requirements: list[str], platform_args: list[str]) -> dict[str, str]:
    """name -> version, as pip resolves ``requirements`` for CPython 3.11 on the given platforms."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
             "--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp",
             *platform_args, "--target", str(Path(tmp) / "t"), "--report", str(report), *requirements],
            check=True,
        )  # fmt: skip
        installed = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"]: item["metadata"]["version"] for item in installed}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wanted(filename: str) -> bool:
    """A file that pip may pick for CPython 3.11 on linux x86_64, aarch64 or armv7l, or the sdist."""
    if filename.endswith((".tar.gz", ".zip")):
        return True
    if not filename.endswith(".whl"):
        return False
    _, _, *_, pythons, abi, platforms = filename[:-4].split("-")
    python_ok = any(tag in ("py3", "cp311") or (re.fullmatch(r"cp3(\d+)", tag) and int(tag[3:]) <= 11)
                    for tag in pythons.split("."))  # fmt: skip
    abi_ok = any(tag in ("none", "cp311", "abi3") for tag in abi.split("."))
    platform_ok = any(
        tag == "any" or re.fullmatch(rf"(manylinux\w*|linux)_({'|'.join(ARCHES)})", tag)
        for tag in platforms.split(".")
    )
    return bool(python_ok and abi_ok and platform_ok)


def hashes(name: str, version: str) -> list[str]:
    request = urllib.request.Request(
        f"{INDEX}/{normalize(name)}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    found = set()
    for entry in files:
        filename = entry["filename"]
        stem = filename[: -len(".tar.gz")] if filename.endswith(".tar.gz") else filename
        parts = stem.split("-")
        if len(parts) < 2 or parts[1] != version or normalize(parts[0]) != normalize(name):
            continue
        if wanted(filename) and not entry.get("yanked"):
            found.add(entry["hashes"]["sha256"])
    if not found:
        raise SystemExit(f"{name}=={version}: no file for CPython {PYTHON} on Linux in {INDEX}")
    return sorted(found)


def write(path: Path, header: str, pins: dict[str, str]) -> None:
    lines = [header]
    for name in sorted(pins, key=normalize):
        lines.append(f"{normalize(name)}=={pins[name]} \\")
        digests = hashes(name, pins[name])
        lines += [
            f"    --hash=sha256:{d}" + (" \\" if i < len(digests) - 1 else "") for i, d in enumerate(digests)
        ]
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}: {len(pins)} packages")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--out", type=Path, default=HERE, help="folder of the two files (default: beside)")
    args = parser.parse_args()
    dependencies = tomllib.loads(args.pyproject.read_text())["project"]["dependencies"]
    platforms = [arg for v in ("2_28", "2_17", "2_5") for arg in ("--platform", f"manylinux_{v}_x86_64")]
    runtime = resolve(dependencies, [*platforms, "--abi", "cp311"])
    for arch in ("aarch64",):  # armv7l lacks some wheels (see the README): same pins, sdists hashed
        other = resolve(
            dependencies,
            [a for v in ("2_28", "2_17") for a in ("--platform", f"manylinux_{v}_{arch}")]
            + ["--abi", "cp311"],
        )
        if other != runtime:
            raise SystemExit(f"the resolution differs on {arch}: {other} != {runtime}")
    note = "# Generated by packaging/deb/lock.py from pyproject.toml; do not edit by hand.\n"
    write(
        args.out / "requirements.txt",
        note + "# The runtime dependencies bundled in the .deb's venv.",
        runtime,
    )
    write(
        args.out / "build-requirements.txt",
        note + "# The tools that build the .deb.",
        resolve(list(TOOLS), []),
    )


if __name__ == "__main__":
    main()
