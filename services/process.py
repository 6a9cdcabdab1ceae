"""Ending a child process politely, then firmly: one way for every lab, demo and benchmark."""

from __future__ import annotations

import subprocess
from typing import Any


def stop(proc: subprocess.Popen[Any], timeout_s: float = 10.0) -> int:
    """SIGTERM, wait up to `timeout_s` (the services clean up on SIGTERM), then SIGKILL.

    Returns the exit status; a process that already ended is only reaped.
    """
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()
