"""Durable desired state: written atomically so a crash mid-write leaves the old or the new file."""

from __future__ import annotations

import contextlib
from pathlib import Path

from pydantic import ValidationError

from services.contracts.errors import ConfigError, Problem
from services.durable import replace_file
from services.prem.core.policyset import DesiredState


def load(path: Path, node: str) -> DesiredState:
    """The stored state, or an empty one at version 0 when the file does not exist yet."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return DesiredState(node=node)
    try:
        state = DesiredState.model_validate_json(raw)
    except ValidationError as exc:
        raise ConfigError([Problem(f"state file {path} is corrupt: {exc}")]) from exc
    if state.node != node:
        raise ConfigError(
            [Problem(f"state file {path} belongs to node {state.node!r}, not {node!r}")]
        )
    return state


def remove_leftovers(path: Path) -> None:
    """Delete the temporary files a crash left in the middle of `save`.

    They never replaced the state file, so they hold nothing it does not. Only the state file's
    owner may call this (at start): another process's `save` in progress would lose its file.
    """
    if not path.parent.is_dir():
        return
    for leftover in path.parent.glob(f".{path.name}.*"):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def save(path: Path, state: DesiredState) -> None:
    """Write to a temporary file in the same directory, fsync, rename over, fsync the directory."""
    replace_file(path, state.model_dump_json().encode())
