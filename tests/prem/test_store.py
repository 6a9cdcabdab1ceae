"""Desired state survives restarts and a crash in the middle of a write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.contracts.errors import ConfigError
from services.prem import store
from services.prem.core.policyset import DesiredState
from tests.prem.factories import udp_to


def test_round_trip_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    assert store.load(path, "ha1") == DesiredState(node="ha1")
    state = DesiredState(node="ha1", version=4, digest="abc", policies=(udp_to("a", 1, 2),))
    store.save(path, state)
    assert store.load(path, "ha1") == state


def test_interrupted_write_leaves_the_old_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    old = DesiredState(node="ha1", version=1)
    store.save(path, old)

    def crash(src: str, dst: str) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        store.save(path, DesiredState(node="ha1", version=2))
    assert store.load(path, "ha1") == old
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_corrupt_or_foreign_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="corrupt"):
        store.load(path, "ha1")
    store.save(path, DesiredState(node="mr1"))
    with pytest.raises(ConfigError, match="belongs to node 'mr1'"):
        store.load(path, "ha1")


def test_leftovers_of_an_interrupted_save_are_removed_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store.save(path, DesiredState(node="ha1", version=3))
    leftover = tmp_path / ".state.json.k2j4x9"  # as mkstemp names them
    leftover.write_bytes(b'{"node": "ha1", "vers')
    other = tmp_path / ".other.json.abc"
    other.write_bytes(b"")
    store.remove_leftovers(path)
    assert not leftover.exists()
    assert other.exists()
    assert store.load(path, "ha1").version == 3
