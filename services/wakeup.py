"""A stop request a poll loop can wait on: an event plus a pipe whose read end wakes `poll`.

Every background loop that blocks in `poll`/`select` on sockets (the link watcher, the
Mobility Header capture, the SOAP UDP receiver, the MCoA agents) uses one of these: `stop()`
from a signal handler or another thread makes the loop return from `poll` at once.
"""

from __future__ import annotations

import contextlib
import os
import threading


class Stopper:
    """Set once; `fileno()` becomes readable when set. `close()` after the loop has ended."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._closed = False

    def stop(self) -> None:
        """Request the stop (safe from a signal handler, from other threads, and repeatedly)."""
        if self._event.is_set():
            return
        self._event.set()
        # No lock: this may run in a signal handler. `close` only follows the loop's end.
        if not self._closed:  # never write to a descriptor number reused after close
            with contextlib.suppress(OSError):
                os.write(self._write, b"x")

    @property
    def stopped(self) -> bool:
        """Whether `stop()` was called."""
        return self._event.is_set()

    def fileno(self) -> int:
        """The read end: poll it beside the loop's sockets."""
        return self._read

    def close(self) -> None:
        """Release the pipe once (a second call does nothing)."""
        if self._closed:
            return
        self._closed = True
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)
