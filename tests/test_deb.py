"""The Debian package (issue 5): `make deb` is reproducible and lintian-clean, and the .deb installs,
runs, upgrades, is removed and purged on a clean Debian 12 root.

The clean root is `debootstrap --variant=minbase bookworm` (about 30 s), kept as a tarball in
/var/cache/edge-agent-test (EDGE_DEB_TEST_CACHE) so that later runs only unpack it; the packages that
apt downloads into it are kept there too. Every command runs in it through chroot, in a private mount
namespace (unshare -m), so nothing is mounted on the host for longer than the command. It shares the
host's network: Mosquitto runs on the host, on a free loopback port.

Needs root, Debian 12 (its /usr/bin/python3 is the package's interpreter) and Debian's mirror (for
debootstrap and apt-get): the test skips, saying why, where that is not so. lintian's check skips when
lintian is not installed (`apt-get install lintian` for it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.harness.broker import Broker, free_port

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("EDGE_DEB_TEST_CACHE", "/var/cache/edge-agent-test"))
ROOT_TAR = CACHE / "bookworm-root.tar"
ARCHIVES = CACHE / "apt-archives"
MIRROR = os.environ.get("EDGE_DEB_TEST_MIRROR", "http://deb.debian.org/debian")
ROOT_MAX_AGE_S = 14 * 86400  # a clean root older than this is made again
# What the package needs from the project tree: copied once, so that both builds see the same files
# even while the tree is being edited, and from two different paths, so that no path leaks in.
TREE = ("pyproject.toml", "README.md", "agent", "receiver", "dbc", "config", "systemd")
IN_ROOT_ENV = (
    "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LC_ALL=C.UTF-8",
    "DEBIAN_FRONTEND=noninteractive",
)
DBC = "/usr/share/edge-agent/dbc/reference_ev.dbc"
CITY = "/usr/share/edge-agent/replay_logs/city.log.gz"
BUFFER = "/var/lib/edge-agent/buffer.sqlite"
SIGNALS = ["DriveSpeed.VehicleSpeed", "MotorStatus.MotorRPM", "BatteryState.StateOfCharge"]


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_lock_pins_every_dependency() -> None:
    """packaging/deb/requirements.txt (what the .deb bundles) satisfies pyproject.toml's dependencies.

    When this fails, run `.venv/bin/python packaging/deb/lock.py` and commit the two files it rewrites.
    """
    lock = (ROOT / "packaging" / "deb" / "requirements.txt").read_text()
    pins = {normalized(name): version for name, version in re.findall(r"^([\w.-]+)==(\S+)", lock, re.M)}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate({"python_version": "3.11"}):
            continue
        pinned = pins.get(normalized(requirement.name))
        assert pinned is not None, (
            f"{text}: not in packaging/deb/requirements.txt (run packaging/deb/lock.py)"
        )
        assert requirement.specifier.contains(pinned, prereleases=True), (
            f"{text}: packaging/deb/requirements.txt pins {pinned} (run packaging/deb/lock.py)"
        )
    assert all(" --hash=sha256:" in block for block in lock.split("==")[1:]), "every pin has its hashes"


def requirements_missing() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux (chroot, mount namespaces, dpkg)"
    if not Path("/usr/bin/dpkg-deb").exists() or not shutil.which("unshare"):
        return "needs Debian's dpkg-deb and util-linux's unshare"
    debian = Path("/etc/debian_version")
    if not debian.exists() or not debian.read_text().startswith("12"):
        return "builds for Debian 12 (bookworm): this machine is not"
    python = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
    )
    if python.stdout.strip() != "(3, 11)":
        return "needs Debian 12's /usr/bin/python3 (3.11), the interpreter of the package's venv"
    return None


def sh(*cmd: str | Path, timeout: float = 600, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{cmd}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result  # type: ignore[no-any-return]


def snapshot(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in TREE:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif source.exists():
            shutil.copy2(source, dest / name)
    (dest / "replay_logs").mkdir()
    shutil.copy2(ROOT / "replay_logs" / "city.log.gz", dest / "replay_logs" / "city.log.gz")
    return dest


def make_deb(source: Path, out: Path, work: Path, epoch: str, version: str | None = None) -> Path:
    flags = f"--source {source} --work {work} --cache {CACHE / 'deb-build'}"
    cmd = ["make", "--no-print-directory", "deb", f"DEB_OUT={out}", f"DEB_FLAGS={flags}"]
    if version:
        cmd.append(f"DEB_VERSION={version}")
    sh(*cmd, cwd=ROOT, timeout=900, env={**os.environ, "SOURCE_DATE_EPOCH": epoch})
    (deb,) = out.glob("edge-agent_*.deb")
    return deb


@dataclass(frozen=True)
class Debs:
    first: Path  # the package
    twin: Path  # the same tree built again, from another path into another folder
    next: Path  # the same with the Debian revision + 1, for the upgrade
    build_seconds: float


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> Debs:
    missing = requirements_missing()
    if missing:
        pytest.skip(missing)
    base = tmp_path_factory.mktemp("deb")
    # The snapshots are no git checkouts: the epoch is the tree's last commit's, as `make deb` takes it.
    git = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%ct"], capture_output=True, text=True
    )
    epoch = os.environ.get("SOURCE_DATE_EPOCH") or git.stdout.strip() or "1767225600"
    tree_a, tree_b = snapshot(base / "tree-a"), snapshot(base / "elsewhere" / "tree-b")
    started = time.monotonic()
    first = make_deb(tree_a, base / "out-a", base / "work-a", epoch)
    seconds = time.monotonic() - started
    twin = make_deb(tree_b, base / "out-b", base / "other" / "work-b", epoch)
    version = sh("dpkg-deb", "-f", first, "Version").stdout.strip()
    upstream, _, revision = version.rpartition("-")
    following = make_deb(tree_a, base / "out-c", base / "work-c", epoch, f"{upstream}-{int(revision) + 1}")
    return Debs(first, twin, following, seconds)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_build_is_reproducible(debs: Debs) -> None:
    print(f"\n{debs.first.name}: {debs.first.stat().st_size} bytes, built in {debs.build_seconds:.1f} s")
    assert debs.first.name == debs.twin.name
    assert sha256(debs.first) == sha256(debs.twin), (
        "two builds of the same tree differ (diffoscope tells how)"
    )


@pytest.mark.slow
def test_package_layout(debs: Debs) -> None:
    fields = {k: sh("dpkg-deb", "-f", debs.first, k).stdout.strip() for k in ("Package", "Depends")}
    assert fields["Package"] == "edge-agent"
    assert "python3 (>= 3.11~), python3 (<< 3.12~)" in fields["Depends"]
    listing = sh("dpkg-deb", "-c", debs.first).stdout
    paths = {line.split()[5].removeprefix(".") for line in listing.splitlines()}
    for path in (
        "/etc/edge-agent/config.yaml",
        "/etc/edge-receiver/config.yaml",
        DBC,
        CITY,
        "/usr/lib/systemd/system/edge-agent.service",
        "/usr/lib/sysusers.d/edge-agent.conf",
        "/usr/lib/sysctl.d/60-edge-agent.conf",
        "/usr/share/doc/edge-agent/copyright",
        "/usr/share/doc/edge-agent/changelog.Debian.gz",
        "/opt/edge-agent/venv/pyvenv.cfg",
        "/usr/bin/edge-agent",
        "/usr/bin/edge-receiver",
    ):
        assert path in paths, f"{path} is not in the package"
    assert not [p for p in paths if "__pycache__" in p or p.endswith(".pyc")], (
        "bytecode is written by postinst"
    )
    conffiles = sh("dpkg-deb", "-I", debs.first, "conffiles").stdout.split()
    assert conffiles == ["/etc/edge-agent/config.yaml", "/etc/edge-receiver/config.yaml"]


@pytest.mark.slow
def test_lintian_reports_no_error(debs: Debs) -> None:
    if not shutil.which("lintian"):
        pytest.skip("lintian is not installed (apt-get install lintian)")
    result = subprocess.run(
        ["lintian", "--fail-on", "error", "--display-level", ">=warning", str(debs.first)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    tags = [line for line in result.stdout.splitlines() if line[:2] in ("E:", "W:")]
    print("\n" + "\n".join(tags or ["lintian: no error, no warning"]))
    assert result.returncode == 0 and not [t for t in tags if t.startswith("E:")], (
        result.stdout + result.stderr
    )


# --- the clean root -----------------------------------------------------------------------------------


def ensure_root_tarball() -> Path:
    """A debootstrap'ed minimal bookworm as a tarball, made once per machine (or when too old)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    (ARCHIVES / "partial").mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ROOT_TAR.exists() and time.time() - ROOT_TAR.stat().st_mtime < ROOT_MAX_AGE_S:
            return ROOT_TAR
        if not shutil.which("debootstrap"):
            sh("sh", ROOT / "packaging" / "bootstrap.sh", "debootstrap")
        scratch = CACHE / "bookworm-root.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        sh("debootstrap", "--variant=minbase", "bookworm", scratch, MIRROR, timeout=900)
        sh("tar", "-C", scratch, "-cf", f"{ROOT_TAR}.partial", ".")
        os.replace(f"{ROOT_TAR}.partial", ROOT_TAR)
        shutil.rmtree(scratch, ignore_errors=True)
        return ROOT_TAR


class CleanRoot:
    """A fresh bookworm root in a folder; commands run in it by chroot in a private mount namespace."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def argv(self, cmd: Sequence[str], user: str | None = None) -> list[str]:
        mounts = (
            'mount -t proc proc "$1/proc" && mount --bind /dev "$1/dev" && '
            'mount --bind "$2" "$1/var/cache/apt/archives" && shift 2 && exec "$@"'
        )
        as_user = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"] if user else []
        chroot = ["chroot", str(self.path), "env", "-i", *IN_ROOT_ENV, *as_user, *cmd]
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            mounts,
            "sh",
            str(self.path),
            str(ARCHIVES),
            *chroot,
        ]

    def run(
        self, *cmd: str, user: str | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(cmd, user), capture_output=True, text=True, timeout=timeout)

    def ok(self, *cmd: str, user: str | None = None, timeout: float = 300) -> str:
        result = self.run(*cmd, user=user, timeout=timeout)
        assert result.returncode == 0, f"{cmd}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def file(self, path: str) -> Path:
        return self.path / path.lstrip("/")

    def install(self, deb: Path) -> str:
        shutil.copy2(deb, self.file(f"/tmp/{deb.name}"))
        result = self.run("apt-get", "install", "-y", "-q", "--no-install-recommends", f"/tmp/{deb.name}")
        output = result.stdout + result.stderr
        assert result.returncode == 0 and "edge-agent: warning" not in output, output
        return output

    def installed_version(self) -> str:
        result = self.run("dpkg-query", "-W", "-f=${Status} ${Version}", "edge-agent")
        return result.stdout.strip() if result.returncode == 0 else ""


@pytest.fixture
def clean_root(tmp_path: Path) -> Iterator[CleanRoot]:
    tarball = ensure_root_tarball()
    root = CleanRoot(tmp_path / "root")
    root.path.mkdir()
    sh("tar", "-C", root.path, "-xf", tarball)
    shutil.copy2("/etc/resolv.conf", root.file("/etc/resolv.conf"))
    root.ok("apt-get", "update", "-q", timeout=600)
    yield root
    shutil.rmtree(root.path, ignore_errors=True)


BUFFER_DIGEST = """
import apsw, hashlib, json, sys
db = apsw.Connection(sys.argv[1], flags=apsw.SQLITE_OPEN_READONLY)
tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
out = {}
for table in tables:
    rows = list(db.execute(f'SELECT * FROM "{table}" ORDER BY rowid'))
    out[table] = [len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()]
print(json.dumps(out))
"""


def buffer_rows(root: CleanRoot) -> dict[str, list[object]]:
    """Per table of the buffer: the number of rows and a digest of them, read as the service's user."""
    output = root.ok("/opt/edge-agent/venv/bin/python3", "-c", BUFFER_DIGEST, BUFFER, user="edge-agent")
    return json.loads(output)  # type: ignore[no-any-return]


def agent_config(path: Path, port: int, buffer: str, vin: str) -> None:
    path.write_text(
        f"vin: {vin}\nsource: {{kind: replay, log: {CITY}, speed: max}}\n"
        f"buses:\n  - {{channel: can0, dbc: [{DBC}]}}\nsampling: {{signals: [{', '.join(SIGNALS)}]}}\n"
        f"buffer: {{path: {buffer}, commit_interval_s: 0.2}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {port}}}\nupload: {{ack_timeout_s: 3}}\nlogging: {{format: json}}\n"
    )
    path.chmod(0o644)


@contextlib.contextmanager
def receiver_in(root: CleanRoot, port: int) -> Iterator[subprocess.Popen[str]]:
    config = root.file("/tmp/receiver.yaml")
    config.write_text(
        f"mqtt: {{host: 127.0.0.1, port: {port}}}\nstore: {{path: /tmp/store.sqlite}}\nlogging: {{format: json}}\n"
    )
    # unshare, sh, chroot and env all exec: the process is edge-receiver itself, SIGTERM reaches it.
    process = subprocess.Popen(
        root.argv(["edge-receiver", "run", "--config", "/tmp/receiver.yaml"]),
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


@pytest.mark.slow
def test_install_run_upgrade_remove_purge(debs: Debs, clean_root: CleanRoot, broker: Broker) -> None:
    root = clean_root
    started = time.monotonic()
    output = root.install(debs.first)
    installed_in = time.monotonic() - started

    # Installed: the programs, the user, the state directory, the units (the agent's enabled).
    version = sh("dpkg-deb", "-f", debs.first, "Version").stdout.strip()
    assert root.installed_version() == f"install ok installed {version}"
    assert root.ok("edge-agent", "--version").strip().startswith("edge-agent ")
    assert root.ok("edge-receiver", "--version").strip().startswith("edge-receiver ")
    checked = root.ok("edge-agent", "check-config", "--config", "/etc/edge-agent/config.yaml")
    assert "ok" in checked and "source bus socketcan:can0" in checked, checked
    passwd = {
        line.split(":")[0]: line.split(":") for line in root.file("/etc/passwd").read_text().splitlines()
    }
    assert passwd["edge-agent"][5:] == ["/var/lib/edge-agent", "/usr/sbin/nologin"], passwd["edge-agent"]
    state = root.file("/var/lib/edge-agent").stat()
    assert (state.st_uid, oct(state.st_mode & 0o777)) == (int(passwd["edge-agent"][2]), "0o750")
    assert root.file("/usr/lib/systemd/system/edge-agent.service").exists()
    wants = root.file("/etc/systemd/system/multi-user.target.wants")
    assert (wants / "edge-agent.service").is_symlink(), output
    if root.file("/usr/lib/systemd/system/edge-receiver.service").exists():
        assert not (wants / "edge-receiver.service").exists(), "the receiver's unit must not be enabled"
    assert list(root.file("/opt/edge-agent/venv/lib").rglob("__pycache__")), "postinst compiles the venv"

    # A short replay from the installed files alone: sample | head, then a real replay, acked by the
    # installed receiver through Mosquitto.
    head = root.ok("sh", "-c", f"edge-agent sample {CITY} --dbc {DBC} --signals {SIGNALS[0]} | head -n 5")
    assert head.splitlines()[0] == f"timestamp,{SIGNALS[0]}" and len(head.splitlines()) == 5, head
    agent_config(root.file("/tmp/agent.yaml"), broker.port, "/tmp/acked.sqlite", "DEBTEST0000000001")
    with receiver_in(root, broker.port) as receiver:
        replay = root.run(
            "edge-agent", "replay", CITY, "--config", "/tmp/agent.yaml", "--drain-timeout", "30", timeout=240
        )
        assert replay.returncode == 0, replay.stderr[-3000:]
        assert "; complete" in replay.stderr  # every sample acked: stored by the receiver
        assert receiver.poll() is None, "edge-receiver exited"
    assert root.file("/tmp/store.sqlite").exists()

    # A backlog in the real buffer: the installed agent, as its user, with no broker to send to.
    agent_config(root.file("/tmp/backlog.yaml"), free_port(), BUFFER, "DEBTEST0000000002")
    backlog = root.run(
        "edge-agent",
        "replay",
        CITY,
        "--config",
        "/tmp/backlog.yaml",
        "--drain-timeout",
        "1",
        user="edge-agent",
    )
    assert backlog.returncode == 1 and "INCOMPLETE" in backlog.stderr, backlog.stderr[-3000:]
    before = buffer_rows(root)
    assert before["chunks"][0] > 0, before

    # Upgrade (the next Debian revision) with a non-empty buffer and an edited conffile: both kept.
    config = root.file("/etc/edge-agent/config.yaml")
    edited = config.read_text().replace('vin: "5YJ3E1EA0KF000001"', 'vin: "EDITED00000000001"')
    assert edited != config.read_text()
    config.write_text(edited)
    root.install(debs.next)
    assert root.installed_version().endswith(sh("dpkg-deb", "-f", debs.next, "Version").stdout.strip())
    assert buffer_rows(root) == before
    assert config.read_text() == edited
    assert (wants / "edge-agent.service").is_symlink()
    root.ok("edge-agent", "check-config", "--config", "/etc/edge-agent/config.yaml")

    # remove: the programs go, the buffer, the configuration and the user stay.
    root.ok("apt-get", "remove", "-y", "-q", "edge-agent")
    assert not root.file("/usr/bin/edge-agent").exists() and not root.file("/opt/edge-agent").exists()
    assert root.file(BUFFER).exists() and config.exists()
    assert root.installed_version().startswith("deinstall ok config-files")
    assert "edge-agent:" in root.file("/etc/passwd").read_text()

    # purge: the buffer and the configuration go too.
    root.ok("apt-get", "purge", "-y", "-q", "edge-agent")
    assert not root.file("/var/lib/edge-agent").exists() and not root.file("/etc/edge-agent").exists()
    assert not (wants / "edge-agent.service").exists()
    assert root.installed_version() == ""
    print(f"\ninstalled in {installed_in:.1f} s; whole install test {time.monotonic() - started:.1f} s")
