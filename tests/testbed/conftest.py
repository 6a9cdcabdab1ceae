"""Fixtures of the test bed tests: root for namespaces, a unique namespace prefix per test.

Kernel tests need root; in CI (CI=true) a missing capability fails instead of skipping, as in
tests/conftest.py, so these tests can never silently stop running there.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest

from services.testbed import addressing
from services.testbed.runner import down


def _require(condition: bool, why: str) -> None:
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run this test but cannot: {why}")
    pytest.skip(why)


@pytest.fixture
def root() -> None:
    """Skip (fail in CI) unless root with iproute2."""
    _require(os.geteuid() == 0, "needs root for network namespaces")
    _require(shutil.which("ip") is not None, "needs iproute2")


@pytest.fixture
def naming(root: None) -> Iterator[addressing.Naming]:
    """A namespace prefix of this test's own; whatever carries it is removed afterwards."""
    prefix = f"mtbt{uuid.uuid4().hex[:5]}"
    yield addressing.Naming(prefix)
    down(prefix)
