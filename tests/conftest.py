"""Shared fixtures: unique network namespaces and a real MQTT broker.

Kernel tests need root; in CI (CI=true) a missing capability is a failure, not a skip, so the
kernel and broker tests can never silently stop running there.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from services import netns

BROKER_HOST = "127.0.0.1"
BROKER_PORT = 1883


def _require(condition: bool, why: str) -> None:
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run this test but cannot: {why}")
    pytest.skip(why)


@pytest.fixture
def make_netns() -> Iterator[Callable[[str], str]]:
    """Factory for namespaces with unique names, all deleted at teardown."""
    _require(os.geteuid() == 0, "needs root for network namespaces")
    _require(shutil.which("ip") is not None, "needs iproute2")
    made: list[str] = []
    tag = uuid.uuid4().hex[:6]

    def make(role: str) -> str:
        name = f"mnt-{role}-{tag}"
        netns.create(name)
        made.append(name)
        return name

    yield make
    for name in reversed(made):
        netns.delete(name)


def _broker_up() -> bool:
    try:
        with socket.create_connection((BROKER_HOST, BROKER_PORT), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def broker() -> tuple[str, int]:
    """A running mosquitto on 127.0.0.1:1883, started when it is not running."""
    if not _broker_up() and shutil.which("mosquitto"):
        subprocess.run(["mosquitto", "-d", "-p", str(BROKER_PORT)], check=False)
        deadline = time.monotonic() + 10
        while not _broker_up() and time.monotonic() < deadline:
            time.sleep(0.1)
    _require(_broker_up(), f"needs an MQTT broker on {BROKER_HOST}:{BROKER_PORT}")
    return BROKER_HOST, BROKER_PORT


@pytest.fixture
def topic_root() -> str:
    """A unique topic root per test, so tests sharing the broker never see each other."""
    return f"test-{uuid.uuid4().hex[:10]}/multinet/v1"
