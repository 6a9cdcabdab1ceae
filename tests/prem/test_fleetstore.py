"""The fleet store: one SQLite row per router, replaced whole, in WAL mode."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from services.contracts.errors import ConfigError
from services.prem.core.policyset import DesiredState
from services.prem.fleetstore import FleetStore
from tests.prem.factories import udp_to


def test_each_router_is_one_row_replaced_on_save(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db"
    store = FleetStore(path)
    one = DesiredState(node="r1", version=3, digest="d", policies=(udp_to("a", 1, 1),))
    store.save(one)
    store.save(DesiredState(node="r2", version=1))
    newer = one.model_copy(update={"version": 4, "policies": ()})
    store.save(newer)
    store.close()
    again = FleetStore(path)
    assert again.load() == {"r1": newer, "r2": DesiredState(node="r2", version=1)}
    again.remove("r2")
    assert set(again.load()) == {"r1"}
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT count(*) FROM routers").fetchone()[0] == 1


def test_a_corrupt_or_misplaced_row_stops_the_start_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db"
    FleetStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO routers VALUES ('r1', '{not json')")
    with pytest.raises(ConfigError, match="row of 'r1' is corrupt"):
        FleetStore(path).load()
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM routers")
        db.execute(
            "INSERT INTO routers VALUES ('r1', ?)", (DesiredState(node="r9").model_dump_json(),)
        )
    with pytest.raises(ConfigError, match="row of 'r1' is 'r9'"):
        FleetStore(path).load()
