"""The process supervisor: readiness with a deadline, a dead service is an error with its log."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from services.testbed.supervisor import (
    NotReady,
    Readiness,
    ServiceDied,
    ServiceSpec,
    Supervisor,
    kill_recorded,
)


def _python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def test_a_group_is_ready_when_every_check_holds(tmp_path: Path) -> None:
    flag = tmp_path / "up"
    supervisor = Supervisor(tmp_path / "logs", tmp_path / "registry.json")
    spec = ServiceSpec(
        "writer",
        _python(f"import pathlib, time; pathlib.Path({str(flag)!r}).touch(); time.sleep(60)"),
        ready=Readiness("the flag file", flag.exists),
    )
    try:
        supervisor.start_group([spec], timeout_s=20)
        assert flag.exists()
    finally:
        supervisor.stop_all()
    assert not (tmp_path / "registry.json").exists()


def test_a_service_that_dies_is_reported_with_its_log(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs", tmp_path / "registry.json")
    spec = ServiceSpec(
        "crasher",
        _python("import sys; print('cannot bind: address in use'); sys.exit(3)"),
        ready=Readiness("never", lambda: False),
    )
    try:
        with pytest.raises(ServiceDied) as info:
            supervisor.start_group([spec], timeout_s=20)
    finally:
        supervisor.stop_all()
    assert info.value.code == 3
    assert "address in use" in info.value.tail


def test_readiness_has_a_deadline(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs", tmp_path / "registry.json")
    spec = ServiceSpec(
        "idle", _python("import time; time.sleep(60)"), ready=Readiness("never", lambda: False)
    )
    started = time.monotonic()
    try:
        with pytest.raises(NotReady, match=r"idle not ready after 0\.5 s"):
            supervisor.start_group([spec], timeout_s=0.5)
    finally:
        supervisor.stop_all()
    assert time.monotonic() - started < 10


def test_kill_recorded_spares_a_reused_pid(tmp_path: Path) -> None:
    registry = tmp_path / "registry.json"
    registry.write_text('[{"name": "old", "pid": 1, "start_time": 12345}]', encoding="utf-8")
    assert kill_recorded(registry) == []  # pid 1 started at another time: not ours
    assert not registry.exists()
