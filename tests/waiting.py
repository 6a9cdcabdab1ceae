"""Waiting in tests for something a process should bring about, and failing at once when that
process has died instead.

A helper that only polls its condition turns "the agent exited with the real reason in its
log" into "timed out after 10 s waiting for HA listening". `wait_for` watches the processes
it is given on every poll: when one has exited, it fails right away with that process's exit
status and the end of its log.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TAIL_LINES = 20


class ProcessExitedError(AssertionError):
    """A watched process ended while a test waited for something it should do."""


@dataclass(frozen=True)
class Watched:
    """A process a wait depends on, and where its output goes."""

    name: str
    proc: subprocess.Popen[Any]
    log: Path | None = None

    def tail(self) -> str:
        if self.log is None or not self.log.exists():
            return ""
        lines = self.log.read_text(errors="replace").splitlines()[-_TAIL_LINES:]
        return "\n".join(lines)


def check_alive(watch: Iterable[Watched], what: str) -> None:
    """Raise ProcessExitedError for the first watched process that has exited."""
    for item in watch:
        code = item.proc.poll()
        if code is not None:
            raise ProcessExitedError(
                f"{item.name} exited with status {code} while waiting for {what}; "
                f"its log ends with:\n{item.tail()}"
            )


def wait_for(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    *,
    watch: Iterable[Watched] = (),
    step: float = 0.01,
) -> float:
    """Poll `check` until true and return the seconds it took; fail with `what` at the
    deadline, or at once (ProcessExitedError) when a process of `watch` has exited."""
    watched = tuple(watch)
    start = time.monotonic()
    while not check():
        check_alive(watched, what)
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - start
