"""Durable replacement of a small state file, shared by every service that keeps one (the
PREM's desired set, the monitor's data budgets).

A temporary file beside the target, written and fsynced, renamed over the target, then the
directory fsynced: a crash at any point leaves either the old file or the new one, never a
mix, and the rename itself survives a power loss. Temporaries are named `.<name>.*`, so the
owner can sweep leftovers of a crash at start.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def replace_file(path: Path, data: bytes) -> None:
    """Make `path` hold `data`, atomically and durably (see the module docstring)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    directory = os.open(path.parent, os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
