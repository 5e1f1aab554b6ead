from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.broker import Broker, mosquitto_binary

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
