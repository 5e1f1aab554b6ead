from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.broker import Broker, mosquitto_binary
from tests.harness.postgres import Postgres, Targets, binaries

ROOT = Path(__file__).resolve().parent.parent
REALDATA = ROOT.parent / "shared" / "realdata"
if not REALDATA.exists() and os.environ.get("EDGE_REALDATA"):
    REALDATA = Path(os.environ["EDGE_REALDATA"])


@pytest.fixture
def broker() -> Iterator[Broker]:
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed: run the tests through `make test`, which installs it")
    instance = Broker()
    instance.start()
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.exists():
        pytest.skip(f"real recordings not found at {REALDATA} (set EDGE_REALDATA to their folder)")
    return REALDATA


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL server per test session (per xdist worker), in a temporary folder."""
    if binaries() is None:
        pytest.fail("PostgreSQL is not installed: run the tests through `make test`, which installs it")
    with Postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def new_target(request: pytest.FixtureRequest, tmp_path: Path) -> Targets:
    """A factory of fresh, empty stores of one kind, the test run once per kind: a SQLite file's path in
    the test's folder, or the URL of a fresh PostgreSQL database (a copy of a template); see :class:`Targets`."""
    server = None if request.param == "sqlite" else request.getfixturevalue("postgres")
    return Targets(tmp_path, server)
