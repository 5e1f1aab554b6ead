"""The import walls, as contracts over the AST of every module: who may import whom.

- ``agent.errors`` is the one exception tree, a leaf: it imports nothing of the project.
- ``agent.wire`` (the codec) imports only ``agent.wire.*`` and ``agent.errors``.
- ``agent.service`` (plumbing shared by agent and receiver) imports only ``agent.service.*``,
  ``agent.wire.*``, ``agent.errors`` and ``agent.__version__``.
- ``receiver`` imports only ``receiver.*``, ``agent.wire.*``, ``agent.service.*``, ``agent.errors`` and
  ``agent.__version__``: never the vehicle's stages.
- Nothing under ``agent`` imports ``receiver``; nothing shipped imports ``tests``.
- A test module imports no other test module: shared helpers live in ``tests/harness`` or in fixtures of
  ``tests/conftest.py``.

Every ``import`` statement counts, wherever it is (a function's lazy import, ``if TYPE_CHECKING:``).
``from package import name`` counts as importing ``package.name`` (a submodule, or a name the package
itself defines, such as ``agent.__version__``). Pure AST reading: nothing is imported to check it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "receiver", "tests")  # the project's own top-level packages


@dataclass(frozen=True)
class Wall:
    """Modules under ``layer`` may import, of the project, only what ``allowed`` names (or themselves)."""

    layer: str
    allowed: tuple[str, ...]
    why: str

    def covers(self, module: str) -> bool:
        return within(module, self.layer)

    def permits(self, target: str) -> bool:
        return any(within(target, allowed) for allowed in (self.layer, *self.allowed))


WALLS = (
    Wall("agent.errors", (), "agent.errors is a leaf: it imports nothing of the project"),
    Wall("agent.wire", ("agent.errors",), "the codec imports only agent.wire.* and agent.errors"),
    Wall(
        "agent.service",
        ("agent.wire", "agent.errors", "agent.__version__"),
        "the shared plumbing imports only agent.service.*, agent.wire.*, agent.errors, agent.__version__",
    ),
    Wall(
        "receiver",
        ("agent.wire", "agent.service", "agent.errors", "agent.__version__"),
        "the receiver imports only receiver.*, agent.wire.*, agent.service.*, agent.errors, agent.__version__",
    ),
    Wall("agent", ("agent",), "the agent never imports the receiver or the tests"),
)


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py") if "_pb2" not in p.name)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every import of the project in the file at ``path``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..wire import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if alias.name != "*" else base for alias in node.names]
            targets = [target if is_package(base) else base for target in targets]
        else:
            continue
        for target in dict.fromkeys(targets):  # once per statement
            if target.split(".")[0] in PACKAGES:
                yield node.lineno, target


def is_package(module: str) -> bool:
    return (ROOT / module.replace(".", "/") / "__init__.py").is_file()


def crossings(paths: list[Path]) -> list[str]:
    """One line per forbidden import: ``file:line: module imports target: the rule``."""
    found = []
    for path in paths:
        module = module_name(path)
        wall = next((wall for wall in WALLS if wall.covers(module)), None)
        for line, target in imports(path):
            where = f"{path.relative_to(ROOT)}:{line}: {module} imports {target}"
            if wall is not None and not wall.permits(target):
                found.append(f"{where}: {wall.why}")
            elif within(module, "tests") and is_test_module(target) and target != module:
                found.append(f"{where}: a test module imports no other (move the helper to tests/harness)")
    return found


def is_test_module(module: str) -> bool:
    return within(module, "tests") and module.split(".")[-1].startswith("test_")


def test_every_wall_holds() -> None:
    assert sources("agent", "receiver"), "no sources found"
    problems = crossings(sources("agent", "receiver"))
    assert not problems, "import walls broken:\n" + "\n".join(problems)


def test_no_test_module_imports_another() -> None:
    problems = crossings(sources("tests"))
    assert not problems, "test modules importing each other:\n" + "\n".join(problems)


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project skeleton in ``tmp_path``, checked instead of the real one."""
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    for package in ("agent", "agent.wire", "agent.service", "receiver", "tests", "tests.harness"):
        write(tmp_path, f"{package}.__init__", "")
    return tmp_path


def write(root: Path, module: str, text: str) -> Path:
    path = root / (module.replace(".", "/") + ".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("module", "text", "expected"),
    [
        ("receiver.x", "from agent.config import load_agent_config\n", "receiver.x imports agent.config"),
        ("receiver.x", "def f():\n    from agent import buffer\n", "receiver.x imports agent.buffer"),
        ("receiver.x", "import agent.daemon\n", "receiver.x imports agent.daemon"),
        ("agent.wire.x", "from agent.service import logs\n", "agent.wire.x imports agent.service.logs"),
        ("agent.wire.x", "from ..config import X\n", "agent.wire.x imports agent.config"),
        ("agent.service.x", "from agent.decode import Decoder\n", "agent.service.x imports agent.decode"),
        ("agent.errors", "import agent.wire\n", "agent.errors imports agent.wire"),
        ("agent.x", "from receiver.store import Store\n", "agent.x imports receiver.store"),
        ("agent.x", "from tests.harness import broker\n", "agent.x imports tests.harness.broker"),
        ("tests.test_x", "from tests.test_e2e import DBC\n", "tests.test_x imports tests.test_e2e"),
        ("tests.harness.x", "from tests import test_e2e\n", "tests.harness.x imports tests.test_e2e"),
    ],
)
def test_a_crossing_is_named_with_its_module_and_import(
    tree: Path, module: str, text: str, expected: str
) -> None:
    (problem,) = crossings([write(tree, module, text)])
    assert problem.startswith(f"{module.replace('.', '/')}.py:") and f": {expected}: " in problem


@pytest.mark.parametrize(
    ("module", "text"),
    [
        (
            "receiver.x",
            "from agent import __version__, wire\nfrom agent.wire.values import Schema\n"
            "from agent.service.cli import main\nfrom agent.errors import EdgeError\nfrom receiver import table\n",
        ),
        ("agent.service.x", "from agent import __version__\nfrom agent.wire import Schema\nimport yaml\n"),
        ("agent.wire.x", "from agent.errors import WireError\nfrom . import values\nimport zstandard\n"),
        ("agent.x", "from agent.service import logs\nfrom agent import config\n"),
        ("tests.test_x", "from tests.harness.broker import Broker\nfrom receiver.store import Store\n"),
    ],
)
def test_what_the_walls_permit(tree: Path, module: str, text: str) -> None:
    assert crossings([write(tree, module, text)]) == []
