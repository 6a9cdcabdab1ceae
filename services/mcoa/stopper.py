"""A stop request a poll loop can wait on: an event plus a pipe whose read end wakes `poll`.

Both agents block in `poll` on raw and netlink sockets; a signal handler or a test thread
calls `stop()`, which makes the loop return from `poll` at once instead of at its timeout.
"""

from __future__ import annotations

import contextlib
import os
import threading


class Stopper:
    """Set once; `fileno()` becomes readable when set."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)

    def stop(self) -> None:
        """Request the stop (safe from a signal handler and from other threads)."""
        if not self._event.is_set():
            self._event.set()
            with contextlib.suppress(OSError):
                os.write(self._write, b"x")

    @property
    def stopped(self) -> bool:
        return self._event.is_set()

    def fileno(self) -> int:
        return self._read

    def close(self) -> None:
        """Release the pipe (after the loop has ended)."""
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)
