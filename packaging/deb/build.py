#!/usr/bin/python3
"""Build ``edge-agent_<version>_<arch>.deb``, byte for byte the same from the same tree.

    make deb                                    # dist/edge-agent_0.1.0-1_amd64.deb
    /usr/bin/python3 packaging/deb/build.py --out DIR [--version 0.1.0-2] [--work DIR] [--cache DIR]

Run it with the target's Python (Debian 12 / Raspberry Pi OS bookworm: /usr/bin/python3, 3.11), on the
target's architecture (natively, or in a chroot of it: see README.md beside this file). It needs
python3-venv, dpkg, help2man and binutils (readelf), and the network to PyPI for the pinned wheels
(cached by pip afterwards).

What it does, and why, is in README.md beside this file. In short: one package holding a virtual
environment in /opt/edge-agent/venv whose interpreter is Debian's /usr/bin/python3; the project's wheel
and the dependencies pinned with hashes in requirements.txt installed into it with ``installer`` (no pip
in the package, no build path anywhere); no bytecode in the package (postinst writes it); every mtime set
to SOURCE_DATE_EPOCH (the last commit's time), modes normalized, root ownership, sorted tar members.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEBIAN = HERE / "debian"
ROOT = HERE.parent.parent
PACKAGE = "edge-agent"
PREFIX = "/opt/edge-agent/venv"  # the venv's path on the target
TARGET_PYTHON = Path("/usr/bin/python3")  # the target's interpreter: the venv's python3 links to it
FALLBACK_EPOCH = 1767225600  # 2026-01-01, for a tree that is not a git checkout
MAINTAINER = "edge-agent maintainers <maintainers@edge-agent.invalid>"
DESCRIPTION = """\
fault-tolerant CAN telemetry agent, with its MQTT receiver
 edge-agent reads CAN frames from SocketCAN interfaces (or replays recorded
 logs), decodes them with DBC files, samples the selected signals within a
 bounded error, keeps them in an SQLite buffer on disk and uploads them over
 MQTT until the receiver has acknowledged every batch: a lost connection, a
 crash or a power cut loses nothing that was committed.
 .
 edge-receiver, the cloud side, subscribes to the agents' batches, stores
 them and acknowledges them. Its service is installed but not enabled.
 .
 Both run from a virtual environment bundled in /opt/edge-agent/venv, built
 for Debian's Python 3.11, with python-can, cantools, paho-mqtt, protobuf and
 apsw (which carries its own SQLite) from PyPI."""
# Shared libraries the bundled extension modules may link to, and the Debian package of each. A library
# not listed here fails the build, so that a new dependency never goes missing from Depends silently.
LIBC = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "libutil.so.1", "librt.so.1"}
LIBC |= {"ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1", "ld-linux-armhf.so.3"}  # the dynamic loader
SHLIB_PACKAGES = {
    "libstdc++.so.6": "libstdc++6",
    "libgcc_s.so.1": "libgcc-s1",
    "libz.so.1": "zlib1g",
    "libyaml-0.so.2": "libyaml-0-2",  # PyYAML compiled from its sdist (armhf) against libyaml-dev
    "libffi.so.8": "libffi8",
}


def log(message: str) -> None:
    print(f"build.py: {message}", file=sys.stderr, flush=True)


def run(cmd: list[str | Path], env: dict[str, str], quiet: bool = True, **kwargs: object) -> str:
    """Run a command; its output is shown only when it fails (or when not quiet)."""
    result = subprocess.run(
        [str(c) for c in cmd], env=env, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, **kwargs,  # type: ignore[call-overload]
    )  # fmt: skip
    if result.returncode != 0 or not quiet:
        sys.stderr.write(result.stdout)
    if result.returncode != 0:
        raise SystemExit(f"build.py: failed ({result.returncode}): {' '.join(map(str, cmd))}")
    return str(result.stdout)


def source_date_epoch() -> int:
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%ct"], capture_output=True, text=True, check=True
        ).stdout.strip()
        return int(out)
    except (OSError, subprocess.CalledProcessError, ValueError):
        return FALLBACK_EPOCH


def build_env(epoch: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(
        SOURCE_DATE_EPOCH=str(epoch), TZ="UTC", LC_ALL="C.UTF-8", LANG="C.UTF-8", COLUMNS="80",
        PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1", PIP_PROGRESS_BAR="off",
    )  # fmt: skip
    env["PATH"] = ":".join(p for p in env.get("PATH", "/usr/bin:/bin").split(":") if ".venv" not in p)
    return env


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tool_venv(cache: Path, env: dict[str, str]) -> Path:
    """A venv with the pinned pip, setuptools and installer (build-requirements.txt), cached."""
    requirements = HERE / "build-requirements.txt"
    key = hashlib.sha256(requirements.read_bytes() + sys.version.encode()).hexdigest()[:12]
    path = cache / f"tools-{key}"
    if not (path / "complete").exists():
        log(f"creating the build tools' venv in {path}")
        scratch = cache / f"tools-{key}.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        run([TARGET_PYTHON, "-m", "venv", scratch], env)
        run(
            [scratch / "bin/python", "-m", "pip", "install", "-q", "--require-hashes", "-r", requirements],
            env,
        )
        (scratch / "complete").touch()
        shutil.rmtree(path, ignore_errors=True)
        scratch.rename(path)  # its scripts keep the old path: only ever run bin/python -m ...
    return path / "bin" / "python"


def project_wheel(tools: Path, work: Path, wheels: Path, env: dict[str, str]) -> Path:
    """The project's wheel, built from a copy of the tree (the tree itself is left untouched)."""
    src = work / "src"
    src.mkdir()
    for item in sorted(ROOT.iterdir()):
        if item.is_file() and (
            item.suffix in (".toml", ".cfg", ".py", ".md", ".in") or "LICENSE" in item.name
        ):
            shutil.copy2(item, src / item.name)
    for package in ("agent", "receiver"):
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "node_modules", "vendor")
        shutil.copytree(ROOT / package, src / package, ignore=ignore)
    script = "import sys, setuptools.build_meta as b; print(b.build_wheel(sys.argv[1]))"
    name = run([tools, "-c", script, wheels], env, cwd=src).strip().splitlines()[-1]
    return wheels / name


def dependency_wheels(tools: Path, requirements: Path, wheels: Path, env: dict[str, str]) -> None:
    """The pinned dependencies, hash-checked: PyPI's wheels, or wheels built from the sdist (armhf)."""
    run([tools, "-m", "pip", "wheel", "-q", "--require-hashes", "-r", requirements, "-w", wheels], env)


INSTALL_SCRIPT = """
import sys
from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile
destdir, prefix, version, *wheels = sys.argv[1:]
site = f"{prefix}/lib/python{version}/site-packages"
scheme = {"purelib": site, "platlib": site, "scripts": f"{prefix}/bin", "data": prefix,
          "headers": f"{prefix}/include/site/python{version}"}
for path in sorted(wheels):
    destination = SchemeDictionaryDestination(
        scheme, interpreter=f"{prefix}/bin/python3", script_kind="posix", destdir=destdir)
    with WheelFile.open(path) as source:
        install(source, destination, {"INSTALLER": b"edge-agent-deb\\n"})
"""


def make_venv(stage: Path, tools: Path, wheels: list[Path], pyver: str, env: dict[str, str]) -> Path:
    """The venv at PREFIX inside the stage: Debian's python3, the wheels, no pip, no staging path."""
    venv = stage / PREFIX.lstrip("/")
    run([TARGET_PYTHON, "-m", "venv", "--without-pip", venv], env)
    config = dict(
        line.split(" = ", 1) for line in (venv / "pyvenv.cfg").read_text().splitlines() if " = " in line
    )
    keys = ("home", "include-system-site-packages", "version", "executable")  # not "command": a path
    (venv / "pyvenv.cfg").write_text("".join(f"{k} = {config[k]}\n" for k in keys if k in config))
    (venv / "bin" / "Activate.ps1").unlink(missing_ok=True)
    shutil.rmtree(venv / "include", ignore_errors=True)
    for script in sorted((venv / "bin").glob("activate*")):
        script.write_text(script.read_text().replace(str(venv), PREFIX))
    run([tools, "-c", INSTALL_SCRIPT, stage, PREFIX, pyver, *wheels], env)
    return venv


def strip(site: Path, env: dict[str, str]) -> None:
    """Strip the bundled ELF files as dh_strip does, and update their sizes and hashes in RECORD."""
    changed: dict[str, Path] = {}
    for path in elf_files(site):
        library = ".so" in path.name
        before = path.read_bytes()
        run(["strip", "--remove-section=.comment", "--remove-section=.note",
             *(["--strip-unneeded"] if library else []), path], env)  # fmt: skip
        if path.read_bytes() != before:
            changed[str(path.relative_to(site))] = path
    for record in sorted(site.glob("*.dist-info/RECORD")):
        lines = record.read_text().splitlines(keepends=True)
        for i, line in enumerate(lines):
            name = line.split(",", 1)[0]
            if name in changed:
                data = changed[name].read_bytes()
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                lines[i] = f"{name},sha256={digest},{len(data)}\n"
        record.write_text("".join(lines))


# The files of the npm packages (receiver/web/package-lock.json) that the live page and /docs load, plus
# their licences; copied to receiver/web/vendor/ (receiver/api.py looks there first). Nothing else of
# node_modules ships: @scarf/scarf, swagger-ui-dist's install-time analytics, in particular.
VENDOR_FILES = (
    "uplot/LICENSE",
    "uplot/dist/uPlot.iife.min.js",
    "uplot/dist/uPlot.min.css",
    "swagger-ui-dist/LICENSE",
    "swagger-ui-dist/NOTICE",
    "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui-dist/swagger-ui-bundle.js.LICENSE.txt",
    "swagger-ui-dist/swagger-ui.css",
    "swagger-ui-dist/favicon-32x32.png",
)


def vendor(site: Path, work: Path, env: dict[str, str]) -> None:
    """The page's browser libraries into the venv, from receiver/web/node_modules or, when the tree has
    none, from ``npm ci --ignore-scripts`` on a copy of receiver/web (the lockfile pins them)."""
    web = ROOT / "receiver" / "web"
    modules = web / "node_modules"
    if not all((modules / f).is_file() for f in VENDOR_FILES):
        npm_dir = work / "npm"
        npm_dir.mkdir()
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(web / name, npm_dir / name)
        # --ignore-scripts: no install script runs (@scarf/scarf's analytics among them).
        run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], env, cwd=npm_dir)
        modules = npm_dir / "node_modules"
    for name in VENDOR_FILES:
        write(site / "receiver/web/vendor" / name, (modules / name).read_bytes())


def check_copyright(site: Path) -> None:
    """Every bundled distribution's files must have their own stanza in debian/copyright."""
    globs = [
        g.strip()
        for stanza in re.findall(r"^Files:(.*?)^\S", (DEBIAN / "copyright").read_text(), re.M | re.S)
        for g in stanza.split()
        if g.strip() != "*"
    ]
    for record in sorted(site.glob("*.dist-info/RECORD")):
        if record.parent.name.startswith("edge_agent-"):
            continue
        for line in record.read_text().splitlines():
            path = line.split(",")[0]
            if path.startswith("..") or ".dist-info/" in path or "/__pycache__/" in path:
                continue
            candidate = f"opt/edge-agent/venv/lib/{site.parent.name}/site-packages/{path}"
            wildcard = candidate.replace(site.parent.name, "python3*", 1)
            if not any(fnmatch.fnmatchcase(c, g) for g in globs for c in (candidate, wildcard)):
                raise SystemExit(f"build.py: {record.parent.name}: {path} has no stanza in debian/copyright")


def agent_config(example: str) -> str:
    """config/edge-agent.example.yaml with the installed layout's paths and a live CAN bus as source."""
    substitutions = [
        (r"^(\s*)kind: replay\b", r"\1kind: bus"),
        (r"^(\s*)log: \S+", r"\1# log: /usr/share/edge-agent/replay_logs/city.log.gz"),
        (r"\[\.\./dbc/([\w.-]+)\]", r"[/usr/share/edge-agent/dbc/\1]"),
        # These three change nothing: they fail the build if the example stops saying so.
        (r"^(\s*path:) /var/lib/edge-agent/buffer\.sqlite$", r"\1 /var/lib/edge-agent/buffer.sqlite"),
        (r"^(\s*)- channel: can0$", r"\1- channel: can0"),
        (r"^(\s*)interface: socketcan$", r"\1interface: socketcan"),
    ]
    text = example
    for pattern, replacement in substitutions:
        text, count = re.subn(pattern, replacement, text, flags=re.M)
        if count != 1:
            raise SystemExit(f"build.py: config/edge-agent.example.yaml: {pattern!r} matched {count} times")
    header = (
        "# Installed by the edge-agent package (a conffile: your changes survive upgrades).\n"
        "# Set this vehicle's vin and the mqtt broker, then: systemctl restart edge-agent\n"
        "# Source: a live SocketCAN bus, can0 (e.g. a Raspberry Pi CAN HAT brought up by systemd-networkd).\n"
    )
    return header + text


def write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)


def gzipped(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as out:
        out.write(data)
    return buffer.getvalue()


def changelog(version: str, epoch: int, maintainer: str) -> str:
    date = subprocess.run(
        ["date", "-u", "-R", "-d", f"@{epoch}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return (
        f"{PACKAGE} ({version}) unstable; urgency=medium\n\n"
        f"  * Package of edge-agent {version.rsplit('-', 1)[0]}: see the project's history for the\n"
        f"    changes.\n\n -- {maintainer}  {date}\n"
    )


MAN_FILES = """[FILES]
.TP
.I /etc/{name}/config.yaml
The configuration ({name} check-config validates it{receiver_note}).
.TP
.I {state}
{state_note}
.TP
.I /usr/lib/systemd/system/{name}.service
The systemd unit{unit_note}.
[SEE ALSO]
.BR {other} (1);
.B {name} COMMAND --help
for each command's options.
"""


def man_pages(stage: Path, venv: Path, work: Path, env: dict[str, str]) -> None:
    """edge-agent(1) and edge-receiver(1) with help2man, from the staged programs' --help."""
    pages = {
        "edge-agent": ("agent.cli", "fault-tolerant CAN telemetry agent", "edge-receiver"),
        "edge-receiver": ("receiver.cli", "receiver and store of edge-agent telemetry", "edge-agent"),
    }
    notes = {
        "edge-agent": dict(
            receiver_note="", state="/var/lib/edge-agent/buffer.sqlite",
            state_note="The buffer: samples not yet acknowledged by the receiver.",
            unit_note=", enabled when the package is installed",
        ),
        "edge-receiver": dict(
            receiver_note=" for edge-agent; edge-receiver run reads it",
            state="/var/lib/edge-receiver/store.sqlite", state_note="The store of received samples.",
            unit_note=", installed but not enabled; and\n.I /usr/lib/systemd/system/edge-receiver-api.service\n"
            "for edge-receiver serve (the HTTP API and the live page), installed but not enabled too",
        ),
    }  # fmt: skip
    bindir = work / "man-bin"
    bindir.mkdir()
    for name, (module, summary, other) in pages.items():
        wrapper = bindir / name
        write(wrapper, f'#!/bin/sh\nexec "{venv}/bin/python3" -I -B -m {module} "$@"\n', 0o755)
        include = work / f"{name}.h2m"
        include.write_text(MAN_FILES.format(name=name, other=other, **notes[name]).replace("{name}", name))
        page = work / f"{name}.1"
        run(["help2man", "--no-info", "--no-discard-stderr", "--name", summary, "--section", "1",
             "--include", include, "--output", page, wrapper], env)  # fmt: skip
        text = page.read_text()
        if str(work) in text:
            raise SystemExit(f"build.py: the man page of {name} names the build directory")
        write(stage / "usr/share/man/man1" / f"{name}.1.gz", gzipped(text.encode()))


def elf_files(stage: Path) -> list[Path]:
    found = []
    for path in sorted(stage.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as f:
                if f.read(4) == b"\x7fELF":
                    found.append(path)
    return found


def shlib_depends(stage: Path, env: dict[str, str]) -> list[str]:
    """Depends for the shared libraries the bundled extension modules link to (readelf)."""
    elves = elf_files(stage)
    bundled = {p.name for p in elves}
    glibc = (2, 17)
    packages: set[str] = set()
    for path in elves:
        dynamic = run(["readelf", "-dW", path], env)
        for soname in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic):
            if soname in LIBC or soname in bundled:
                continue
            if soname not in SHLIB_PACKAGES:
                raise SystemExit(f"build.py: {path.name} needs {soname}: add its package to SHLIB_PACKAGES")
            packages.add(SHLIB_PACKAGES[soname])
        for found in re.findall(r"Name: GLIBC_(\d+)\.(\d+)", run(["readelf", "-VW", path], env)):
            glibc = max(glibc, (int(found[0]), int(found[1])))
    return [f"libc6 (>= {glibc[0]}.{glibc[1]})", *sorted(packages)]


def normalize(stage: Path, epoch: int) -> None:
    """Modes 0755 or 0644, every mtime at SOURCE_DATE_EPOCH.

    Executable: the maintainer scripts, the venv's scripts, and ELF programs (not shared objects) that
    their wheel marked executable. Not: Python modules, even with a #! line or an x bit in their wheel.
    """
    for path in sorted(stage.rglob("*"), reverse=True):
        if path.is_symlink():
            pass
        elif path.is_dir():
            path.chmod(0o755)
        else:
            marked = bool(path.stat().st_mode & 0o111)
            if path.parent.name == "DEBIAN":
                executable = path.name in ("postinst", "prerm", "postrm")
            elif "site-packages" in path.parts:
                executable = marked and ".so" not in path.name and path.read_bytes()[:4] == b"\x7fELF"
            else:
                executable = marked
            path.chmod(0o755 if executable else 0o644)
        os.utime(path, (epoch, epoch), follow_symlinks=False)
    os.utime(stage, (epoch, epoch))


def installed_size(stage: Path) -> int:
    """In KiB, as dpkg-gencontrol counts: each file rounded up, 1 for each directory or symlink."""
    total = 0
    for path in stage.rglob("*"):
        if path.parts[len(stage.parts)] == "DEBIAN":
            continue
        total += (path.stat().st_size + 1023) // 1024 if path.is_file() and not path.is_symlink() else 1
    return total


def main() -> None:
    global ROOT
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where the .deb goes (default dist/)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "deb", help="scratch (emptied first)")
    parser.add_argument("--cache", type=Path, default=ROOT / "build" / "deb-cache", help="the tools' venv")
    parser.add_argument("--version", help="Debian version (default: pyproject's version, revision -1)")
    parser.add_argument("--units", type=Path, default=ROOT / "systemd", help="the systemd units' folder")
    parser.add_argument("--maintainer", default=os.environ.get("DEB_MAINTAINER", MAINTAINER))
    parser.add_argument("--source", type=Path, help="the project tree to package (default: this one)")
    parser.add_argument(
        "--requirements", type=Path, default=HERE / "requirements.txt", help="the pinned dependencies"
    )
    args = parser.parse_args()
    if args.source:
        ROOT = args.source.resolve()
        if args.units == HERE.parent.parent / "systemd":
            args.units = ROOT / "systemd"

    if not TARGET_PYTHON.exists():
        raise SystemExit(
            f"build.py: {TARGET_PYTHON} is missing: build on Debian 12 or Raspberry Pi OS bookworm"
        )
    pyver = subprocess.run(
        [TARGET_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    major, minor = (int(x) for x in pyver.split("."))
    upstream = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    version = args.version or f"{upstream}-1"
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    epoch = source_date_epoch()
    env = build_env(epoch)
    agent_unit = args.units / "edge-agent.service"
    if not agent_unit.exists():
        raise SystemExit(f"build.py: {agent_unit} is missing")
    optional = (args.units / "edge-receiver.service", args.units / "edge-receiver-api.service")
    units = [agent_unit] + [u for u in optional if u.exists()]
    for unit in optional:
        if not unit.exists():
            log(f"warning: {unit} is missing: the package will not have it")

    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    stage, wheels = work / "root", work / "wheels"
    for path in (stage, wheels, args.cache, args.out):
        path.mkdir(parents=True, exist_ok=True)
    log(f"{PACKAGE} {version} for {arch}, Python {pyver}, SOURCE_DATE_EPOCH={epoch}")

    tools = tool_venv(args.cache.resolve(), env)
    own = project_wheel(tools, work, wheels, env)
    dependency_wheels(tools, args.requirements, wheels, env)
    venv = make_venv(stage, tools, sorted(wheels.glob("*.whl")), pyver, env)
    site = venv / "lib" / f"python{pyver}" / "site-packages"
    strip(site, env)
    vendor(site, work, env)
    # The pins must satisfy the project's dependencies as pyproject.toml declares them now.
    check = subprocess.run(
        [tools, "-m", "pip", "--python", venv / "bin/python3", "check"],
        env=env,
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        raise SystemExit(
            f"build.py: the bundled dependencies do not satisfy the project's:\n{check.stdout}{check.stderr}"
            "run packaging/deb/lock.py to update packaging/deb/requirements.txt"
        )
    check_copyright(site)
    log(f"installed {own.name} and {len(list(wheels.glob('*.whl'))) - 1} dependencies into {PREFIX}")

    # The programs run from the staged venv: the imports resolve, the versions match.
    smoke = run([venv / "bin/python3", "-I", "-B", "-m", "agent.cli", "--version"], env, cwd=work).strip()
    if smoke != f"edge-agent {upstream}":
        raise SystemExit(f"build.py: the staged edge-agent says {smoke!r}, not edge-agent {upstream}")
    run(
        [
            venv / "bin/python3",
            "-I",
            "-B",
            "-c",
            "import receiver.ingest, agent.daemon, apsw, google.protobuf, yaml",
        ],
        env,
        cwd=work,
    )
    man_pages(stage, venv, work, env)
    if any(venv.rglob("__pycache__")) or any(venv.rglob("*.pyc")):
        raise SystemExit("build.py: bytecode in the staged venv (postinst writes it on the target)")

    usr_share = stage / "usr/share" / PACKAGE
    for dbc in sorted((ROOT / "dbc").glob("*.dbc")):
        write(usr_share / "dbc" / dbc.name, dbc.read_bytes())
    write(usr_share / "replay_logs/city.log.gz", (ROOT / "replay_logs/city.log.gz").read_bytes())
    write(
        stage / "etc/edge-agent/config.yaml",
        agent_config((ROOT / "config/edge-agent.example.yaml").read_text()),
    )
    receiver_example = (ROOT / "config/edge-receiver.example.yaml").read_text()
    write(
        stage / "etc/edge-receiver/config.yaml",
        receiver_example.replace(
            "# edge-receiver configuration (example).",
            "# edge-receiver configuration, installed by the edge-agent package (a conffile).",
            1,
        ),
    )
    for unit in units:
        write(stage / "usr/lib/systemd/system" / unit.name, unit.read_bytes())
    write(stage / "usr/lib/sysusers.d/edge-agent.conf", (DEBIAN / "sysusers.conf").read_bytes())
    write(stage / "usr/lib/sysctl.d/60-edge-agent.conf", (DEBIAN / "sysctl.conf").read_bytes())
    (stage / "usr/bin").mkdir(parents=True)
    for program in ("edge-agent", "edge-receiver"):
        if not (venv / "bin" / program).exists():
            raise SystemExit(f"build.py: the venv has no {program} script")
        (stage / "usr/bin" / program).symlink_to(f"{PREFIX}/bin/{program}")
    doc = stage / "usr/share/doc" / PACKAGE
    write(doc / "copyright", (DEBIAN / "copyright").read_bytes())
    write(doc / "changelog.Debian.gz", gzipped(changelog(version, epoch, args.maintainer).encode()))
    if (ROOT / "README.md").exists():  # the unit's Documentation= points at it
        write(doc / "README.md", (ROOT / "README.md").read_bytes())
    write(doc / "README.Debian", (HERE / "README.md").read_bytes())
    for example in sorted((HERE.parent / "examples").glob("*")):  # systemd-networkd: can0, vcan0
        write(doc / "examples" / example.name, example.read_bytes())
    write(stage / "usr/share/lintian/overrides" / PACKAGE, (DEBIAN / "lintian-overrides").read_bytes())

    conffiles = sorted("/" + str(p.relative_to(stage)) for p in (stage / "etc").rglob("*") if p.is_file())
    md5sums = "".join(
        f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(stage)}\n"
        for p in sorted(stage.rglob("*"))
        if p.is_file() and not p.is_symlink() and "/" + str(p.relative_to(stage)) not in conffiles
    )
    depends = [
        f"python3 (>= {major}.{minor}~)", f"python3 (<< {major}.{minor + 1}~)", *shlib_depends(stage, env),
        "systemd | systemd-standalone-sysusers",
    ]  # fmt: skip
    control = (
        f"Package: {PACKAGE}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: {args.maintainer}\n"
        f"Installed-Size: {installed_size(stage)}\nDepends: {', '.join(depends)}\n"
        f"Suggests: mosquitto, can-utils, libpq5\nSection: net\nPriority: optional\nDescription: {DESCRIPTION}\n"
    )
    meta = stage / "DEBIAN"
    write(meta / "control", control)
    write(meta / "conffiles", "".join(f"{c}\n" for c in conffiles))
    write(meta / "md5sums", md5sums)
    for script in ("postinst", "prerm", "postrm"):
        write(meta / script, (DEBIAN / script).read_bytes(), 0o755)

    # No file may name the build folder, nor the tree's (unless that is too short a path to tell: /src).
    needles = [f"{work}/".encode()] + ([f"{ROOT}/".encode()] if len(ROOT.parts) >= 3 else [])
    leaks = [
        p for p in sorted(stage.rglob("*"))
        if p.is_file() and not p.is_symlink() and any(n in p.read_bytes() for n in needles)
    ]  # fmt: skip
    if leaks:
        raise SystemExit(f"build.py: the build path is written in {[str(p) for p in leaks][:10]}")
    normalize(stage, epoch)

    deb = args.out.resolve() / f"{PACKAGE}_{version.split(':')[-1]}_{arch}.deb"
    deb.unlink(missing_ok=True)
    run(["dpkg-deb", "--root-owner-group", "-Zxz", "-z6", "--threads-max=1", "--build", stage, deb], env)
    log(f"{deb} ({deb.stat().st_size} bytes) sha256 {sha256(deb)}")
    print(deb)


if __name__ == "__main__":
    main()
