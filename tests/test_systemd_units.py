"""The systemd units: `systemd-analyze verify` is clean and `systemd-analyze security` stays at 1.5 or below.

For reference (systemd 252, `--offline=true`): systemd-localed scores 1.2 and systemd-hostnamed 1.5.
``verify`` runs against a scratch root holding the units, the distribution's unit directory (for the
targets they name) and stand-ins for /usr/bin/edge-agent and /usr/bin/edge-receiver, so that it checks
the real ExecStart= paths without the package installed. A warning (an unknown key, a bad value) exits 0:
the test wants no output at all.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = ("edge-agent.service", "edge-receiver.service", "edge-receiver-api.service")
MAX_EXPOSURE = 1.5
SYSTEM_UNITS = next(
    (
        Path(p)
        for p in ("/usr/lib/systemd/system", "/lib/systemd/system")
        if Path(p, "multi-user.target").exists()
    ),
    None,
)

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (apt-get install systemd)",
)


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("unit", UNITS)
def test_security_exposure_is_at_most_1_5(unit: str) -> None:
    result = analyze("security", "--offline=true", "--no-pager", str(ROOT / "systemd" / unit))
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    exposure = float(found.group(1))
    assert exposure <= MAX_EXPOSURE, f"{unit}: exposure {exposure} > {MAX_EXPOSURE}\n{result.stdout}"


def test_verify_is_clean(tmp_path: Path) -> None:
    if SYSTEM_UNITS is None:
        pytest.skip("no system unit directory with multi-user.target to verify against")
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(ROOT / "systemd" / unit, root / "etc/systemd/system" / unit)
        command = root / "usr/bin" / unit.removesuffix(".service")
        command.write_text("#!/bin/sh\nexit 0\n")
        command.chmod(0o755)
    result = analyze("verify", f"--root={root}", *UNITS)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )
