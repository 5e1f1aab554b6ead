from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.broker import Broker, require_mosquitto, serving
from tests.harness.postgres import Postgres, Targets, binaries
from tests.harness.processes import receiver_yaml, running_receiver

ROOT = Path(__file__).resolve().parent.parent
REALDATA = ROOT.parent / "shared" / "realdata"
if not REALDATA.exists() and os.environ.get("EDGE_REALDATA"):
    REALDATA = Path(os.environ["EDGE_REALDATA"])


@pytest.fixture
def broker() -> Iterator[Broker]:
    require_mosquitto()
    with serving(Broker()) as instance:
        yield instance


@pytest.fixture
def receiver(broker: Broker, tmp_path: Path) -> Iterator[Path]:
    """``edge-receiver run`` on the test's broker, subscribed; yields the path of its store."""
    store = tmp_path / "store.sqlite"
    config = receiver_yaml(tmp_path / "receiver.yaml", broker.port, store)
    with running_receiver(config, tmp_path / "receiver.log"):
        yield store


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
