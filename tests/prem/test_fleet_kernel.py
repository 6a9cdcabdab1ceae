"""One HA worker's core for many routers on the real kernel (nftables in a namespace): each
router's document is an element delta on the shared table, what the kernel holds reads back
as every router's rules, and a restart from the store reconciles nothing."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest

from services import netns
from services.prem.backends.nftables import NftablesBackend
from services.prem.core.fleetscope import ServedRouter
from services.prem.fleet import FleetEnforcer
from services.prem.fleetstore import FleetStore
from tests.features import need_backend
from tests.prem.factories import settings
from tests.prem.test_fleet_enforcer import classes, document

pytestmark = pytest.mark.kernel

ROUTERS = tuple(
    ServedRouter(f"ha1-mr{i}", f"mr{i}", ipaddress.IPv6Network(f"2001:db8:{i:x}::/48"))
    for i in range(1, 31)
)


def _fleet(tmp_path: Path) -> FleetEnforcer:
    cfg = settings(tmp_path, backend="nftables")
    return FleetEnforcer(cfg, ROUTERS, NftablesBackend(cfg), FleetStore(tmp_path / "fleet.db"))


def _scenario(tmp_path: Path) -> dict[str, object]:
    fleet = _fleet(tmp_path)
    fleet.reconcile()
    modes = []
    for i, router in enumerate(ROUTERS):
        status = fleet.handle(router.node, document(router, 1, classes(1 + i % 3, 2, 3)))
        assert status.result == "applied", status.refusals
        modes.append(fleet.backend.last_apply)  # type: ignore[attr-defined]
    changed = ROUTERS[7]
    assert fleet.handle(changed.node, document(changed, 2, classes(3, 1, 1))).result == "applied"
    change_mode = fleet.backend.last_apply  # type: ignore[attr-defined]
    held = NftablesBackend(fleet.settings).read()  # a reader that never wrote
    fleet.store.close()

    restarted = _fleet(tmp_path)
    reconciled = restarted.reconcile()
    other = ROUTERS[3]
    assert restarted.handle(other.node, document(other, 2, classes(2, 2, 2))).result == "applied"
    return {
        "first": modes[0],
        "later": set(modes[1:]),
        "change": change_mode,
        "held_is_table": held == fleet.table(),
        "held": len(held),
        "reconciled": reconciled,
        "after_restart": restarted.backend.last_apply,  # type: ignore[attr-defined]
        "final_is_table": NftablesBackend(fleet.settings).read() == restarted.table(),
    }


def test_routers_documents_are_deltas_on_one_table_and_survive_a_restart(
    make_netns: Callable[[str], str], tmp_path: Path
) -> None:
    need_backend("nftables")
    ns = make_netns("fleet")
    found = netns.call_in(ns, _scenario, tmp_path)
    assert found == {
        "first": "replace",  # the table is made
        "later": {"delta"},
        "change": "delta",
        "held_is_table": True,
        "held": 3 * len(ROUTERS),
        "reconciled": 0,
        "after_restart": "delta",
        "final_is_table": True,
    }
