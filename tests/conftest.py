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
from pathlib import Path

import pytest

from services import capabilities, netns
from tests.mcoa.lab import McoaLab

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


def _kernel_pipe_kinds() -> tuple[str, ...]:
    """The pipe kinds this kernel has; no kind at all fails (nothing could carry a binding)."""
    _require(os.geteuid() == 0, "needs root to probe the kernel")
    caps = capabilities.probe()
    kinds = caps.pipe_kinds()
    if not kinds:
        reasons = "; ".join(caps.check(k).missing_text for k in capabilities.PIPE_KINDS)
        pytest.fail(f"no pipe kind can be built on this kernel: {reasons}")
    return kinds


@pytest.fixture(params=capabilities.PIPE_KINDS)
def pipe_kind(request: pytest.FixtureRequest) -> str:
    """Each pipe kind in turn; a kind this kernel lacks is skipped, naming the missing option
    (in CI too: kernels differ, and every kind the kernel has still runs)."""
    kind: str = request.param
    if kind not in _kernel_pipe_kinds():
        pytest.skip(capabilities.probe().check(kind).missing_text)
    return kind


@pytest.fixture
def auto_pipe_kind() -> str:
    """The kind `pipe = "auto"` takes on this kernel (for tests about something else)."""
    return _kernel_pipe_kinds()[0]


def _mcoa_lab(make: Callable[[str], str], workdir: Path, pipe: str) -> Iterator[McoaLab]:
    built = McoaLab(make, workdir, pipe=pipe)
    built.build()
    try:
        yield built
    finally:
        built.stop_all()


@pytest.fixture
def mcoa_lab(
    make_netns: Callable[[str], str], tmp_path: Path, auto_pipe_kind: str
) -> Iterator[McoaLab]:
    """The MCoA agents' namespace lab (tests/mcoa/lab.py), pipes of this kernel's auto kind."""
    yield from _mcoa_lab(make_netns, tmp_path, auto_pipe_kind)


@pytest.fixture
def mcoa_lab_each_kind(
    make_netns: Callable[[str], str], tmp_path: Path, pipe_kind: str
) -> Iterator[McoaLab]:
    """The same lab once per pipe kind this kernel has."""
    yield from _mcoa_lab(make_netns, tmp_path, pipe_kind)
