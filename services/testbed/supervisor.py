"""Start each service as its own process, know when it is ready, stop them all in order.

Every process gets its own session (so a Ctrl-C at the terminal reaches only the runner, which
then stops the services in reverse start order, the MR before the HA), its own log file, and
an entry in a registry file under /run (pid and kernel start time). The registry is what lets
a second build, `multinet testbed down` or a later run find and end processes a crashed or
`--keep` run left behind, without ever signalling a process that merely reused a pid.

A service that exits while the run needs it is an error: `check_alive` raises `ServiceDied`
with the end of its log, and the runner fails loudly: a service that dies is a broken run,
never something to wait out.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

REGISTRY_DIR = Path("/run/multinet-testbed")
_STOP_GRACE_S = 5.0
_POLL_S = 0.05
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Readiness:
    """How to tell that a service is ready: a named check polled until true."""

    what: str
    check: Callable[[], bool]


@dataclass(frozen=True)
class ServiceSpec:
    """One process of the test bed: its name, command line, namespace and readiness."""

    name: str
    argv: tuple[str, ...]
    ready: Readiness | None = None
    node: str = "operator"


class ServiceDied(RuntimeError):  # noqa: N818 - the name reads as what happened
    """A supervised process ended while the run still needed it."""

    def __init__(self, name: str, code: int | None, tail: str) -> None:
        self.name = name
        self.code = code
        self.tail = tail
        super().__init__(f"{name} exited with status {code}; its log ends with:\n{tail}")


class NotReady(TimeoutError):  # noqa: N818 - the name reads as what happened
    """A service did not become ready before its deadline."""

    def __init__(self, name: str, what: str, timeout_s: float, tail: str) -> None:
        self.name = name
        super().__init__(f"{name} not ready after {timeout_s:g} s ({what}); log:\n{tail}")


@dataclass
class _Running:
    spec: ServiceSpec
    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float


@dataclass
class Supervisor:
    """The processes of one run, in start order."""

    log_dir: Path
    registry: Path
    running: list[_Running] = field(default_factory=list)

    def start(self, spec: ServiceSpec) -> subprocess.Popen[bytes]:
        """Start one process (its own session, stdout and stderr to its log)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{spec.name.replace('@', '-')}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                list(spec.argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )
        self.running.append(_Running(spec, proc, log_path, time.monotonic()))
        _record(self.registry, spec.name, proc.pid)
        log.info("started %s (pid %d)", spec.name, proc.pid)
        return proc

    def start_group(self, specs: Iterable[ServiceSpec], timeout_s: float) -> None:
        """Start several processes at once, then wait until every one is ready."""
        group = list(specs)
        for spec in group:
            self.start(spec)
        deadline = time.monotonic() + timeout_s
        pending = [s for s in group if s.ready is not None]
        while pending:
            self.check_alive()
            pending = [s for s in pending if not _ready(s)]
            if not pending:
                break
            if time.monotonic() > deadline:
                spec = pending[0]
                assert spec.ready is not None
                raise NotReady(spec.name, spec.ready.what, timeout_s, self.tail(spec.name))
            time.sleep(_POLL_S)

    def check_alive(self) -> None:
        """Raise ServiceDied for the first process that has ended."""
        for item in self.running:
            code = item.proc.poll()
            if code is not None:
                raise ServiceDied(item.spec.name, code, self.tail(item.spec.name))

    def process(self, name: str) -> subprocess.Popen[bytes]:
        """The process started under `name` (KeyError if none)."""
        for item in self.running:
            if item.spec.name == name:
                return item.proc
        raise KeyError(name)

    def stop(self, name: str, timeout_s: float = _STOP_GRACE_S) -> int | None:
        """SIGTERM one process and wait for it (SIGKILL after the grace period)."""
        for item in list(self.running):
            if item.spec.name == name:
                self.running.remove(item)
                return _end(item.proc, timeout_s)
        return None

    def stop_all(self, timeout_s: float = _STOP_GRACE_S) -> None:
        """Stop every process, last started first, then forget the registry."""
        while self.running:
            item = self.running.pop()
            code = _end(item.proc, timeout_s)
            log.info("stopped %s (status %s)", item.spec.name, code)
        with contextlib.suppress(FileNotFoundError):
            self.registry.unlink()

    def tail(self, name: str, size: int = 3000) -> str:
        """The end of one process's log."""
        path = self.log_dir / f"{name.replace('@', '-')}.log"
        try:
            data = path.read_bytes()
        except OSError:
            return "(no log)"
        return data[-size:].decode(errors="replace")


def _ready(spec: ServiceSpec) -> bool:
    assert spec.ready is not None
    try:
        return spec.ready.check()
    except Exception:  # a check that cannot run yet (socket refused, file missing) is "not yet"
        log.debug("readiness check of %s failed", spec.name, exc_info=True)
        return False


def _end(proc: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout_s)
    return proc.returncode


def registry_path(prefix: str) -> Path:
    """Where the processes of the test bed with namespace prefix `prefix` are recorded."""
    return REGISTRY_DIR / f"{prefix}.json"


def _start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19])


def _record(registry: Path, name: str, pid: int) -> None:
    entries = _read(registry)
    entries.append({"name": name, "pid": pid, "start_time": _start_time(pid)})
    registry.parent.mkdir(parents=True, exist_ok=True)
    tmp = registry.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries), encoding="utf-8")
    tmp.replace(registry)


def _read(registry: Path) -> list[dict[str, object]]:
    try:
        data = json.loads(registry.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []


def kill_recorded(registry: Path, timeout_s: float = _STOP_GRACE_S) -> list[str]:
    """End the processes a previous run recorded (same pid and start time only); return their
    names. Used by a new build and by `multinet testbed down`."""
    ended: list[str] = []
    alive: list[int] = []
    for entry in _read(registry):
        pid, started = entry.get("pid"), entry.get("start_time")
        if not isinstance(pid, int) or started is None or _start_time(pid) != started:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            alive.append(pid)
            ended.append(str(entry.get("name")))
    deadline = time.monotonic() + timeout_s
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _start_time(pid) is not None and not _zombie(pid)]
        time.sleep(_POLL_S)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        registry.unlink()
    return ended


def _zombie(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(") ", 1)[1][:1] == "Z"
    except (OSError, IndexError):
        return True
