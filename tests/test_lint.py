"""The code stays ruff- and mypy-clean: `make test` fails when either regresses (`make lint` shows why)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = BIN / name
    if not found.exists():
        found_on_path = shutil.which(name)
        if found_on_path is None:
            pytest.skip(f"{name} is not installed (it comes with the [dev] extra)")
        return found_on_path
    return str(found)


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]], ids=["ruff-check", "ruff-format"])
def test_ruff(args: list[str]) -> None:
    result = subprocess.run(
        [tool("ruff"), *args, "agent", "receiver", "tests"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = subprocess.run([tool("mypy")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
