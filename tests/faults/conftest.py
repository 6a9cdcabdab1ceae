"""Fixtures of the fault tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.conftest import _require
from tests.faults.broker import OwnBroker


@pytest.fixture
def own_broker() -> Iterator[OwnBroker]:
    """A started mosquitto of the test's own (restartable on its port), removed afterwards."""
    _require(shutil.which("mosquitto") is not None, "needs mosquitto")
    own = OwnBroker()
    own.start()
    try:
        yield own
    finally:
        own.remove()
