"""One HA worker's core for many routers: each router's documents change its own state and
rules only, with its own versions; refusals change nothing; the store restores every router.

The memory back end stands in for the kernel here (test_fleet_kernel.py runs nftables)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from services.contracts import policy_xml
from services.contracts.errors import ConfigError
from services.contracts.policy import (
    Balance,
    Flush,
    Install,
    Operation,
    Policy,
    PolicyMessage,
    Share,
    Update,
)
from services.prem.backends.memory import MemoryBackend
from services.prem.core.fleetscope import ServedRouter
from services.prem.core.policyset import DesiredState
from services.prem.fleet import FleetEnforcer
from services.prem.fleetstore import FleetStore
from tests.prem.factories import settings, udp_to

ROUTERS = tuple(
    ServedRouter(f"ha1-mr{i}", f"mr{i}", ipaddress.IPv6Network(f"2001:db8:{i}::/48"))
    for i in range(1, 4)
)


def document(router: ServedRouter, version: int, operation: Operation) -> bytes:
    return policy_xml.render(
        PolicyMessage(
            node=router.node,
            mobile_router=router.mobile_router,
            direction="downlink",
            version=version,
            operation=operation,
        )
    )


def classes(*bids: int) -> Install:
    """voice, video, web to the BIDs given: the same ids for every router."""
    names = ("voice", "video", "web")
    return Install(
        policies=tuple(
            udp_to(n, 5000 + i, b) for i, (n, b) in enumerate(zip(names, bids, strict=True))
        )
    )


def make(tmp_path: Path, backend: MemoryBackend | None = None, **kw: Any) -> FleetEnforcer:
    return FleetEnforcer(
        settings(tmp_path, **kw),
        ROUTERS,
        backend or MemoryBackend(),
        FleetStore(tmp_path / "fleet.db"),
    )


def ids(fleet: FleetEnforcer) -> set[str]:
    return {r.policy_id for r in fleet.backend.read()}


def test_each_router_document_changes_that_router_only(tmp_path: Path) -> None:
    backend = MemoryBackend()
    fleet = make(tmp_path, backend)
    r1, r2, _ = ROUTERS
    for router in ROUTERS:
        status = fleet.handle(router.node, document(router, 1, classes(1, 2, 3)))
        assert (status.result, status.node, status.mobile_router) == (
            "applied",
            router.node,
            router.mobile_router,
        )
    assert len(fleet.backend.read()) == 9
    before = {r for r in fleet.backend.read() if not r.policy_id.startswith("ha1-mr1:")}
    status = fleet.handle(r1.node, document(r1, 2, classes(3, 3, 1)))
    assert (status.result, status.version, status.replaced) == ("applied", 2, 3)
    held = fleet.backend.read()
    assert {r for r in held if not r.policy_id.startswith("ha1-mr1:")} == before
    voice = next(r for r in held if r.policy_id == "ha1-mr1:voice")
    assert (voice.bid, voice.selector.dst_addr) == (3, r1.prefix)
    assert backend.applied_batches == 4  # one element delta per document
    # Versions are per router: router 2 is still at 1 and takes its own 2.
    assert fleet.handle(r2.node, document(r2, 2, Flush())).result == "applied"
    assert not any(pid.startswith("ha1-mr2:") for pid in ids(fleet))
    # The totals the worker's gauges read follow every change.
    assert fleet.rule_count == len(fleet.backend.read()) == len(fleet.table())
    assert fleet.policy_count == sum(len(s.policies) for s in fleet.states.values()) == 6


def test_a_refused_document_changes_nothing_and_says_why(tmp_path: Path) -> None:
    fleet = make(tmp_path)
    r1, r2, _ = ROUTERS
    fleet.handle(r1.node, document(r1, 5, classes(1, 2, 3)))
    held = fleet.backend.read()
    outside = Install(policies=(udp_to("x", 1, 1, dst="2001:db8:2::/64"),))
    balance = Install(
        policies=(
            Policy(
                id="b",
                priority=1,
                selector=udp_to("b", 1, 1).selector,
                action=Balance(shares=(Share(bid=1, weight=1), Share(bid=2, weight=1))),
            ),
        )
    )
    cases = [
        (document(r1, 6, outside), "selector.dst-addr"),
        (document(r1, 6, balance), "action"),
        (document(r1, 5, classes(2, 2, 2)), "version"),  # not above the enforced 5
        (document(r2, 6, classes(1, 1, 1)), "node"),  # router 2's document on router 1
        (b"<not a policy document", None),
    ]
    for payload, field in cases:
        status = fleet.handle(r1.node, payload)
        assert status.result == "refused", payload
        assert status.version == 5
        if field is not None:
            assert field in {r.field for r in status.refusals}, status.refusals
    assert fleet.backend.read() == held
    assert fleet.store.load()[r1.node].version == 5


def test_a_redelivered_document_is_acknowledged_again_without_a_change(tmp_path: Path) -> None:
    backend = MemoryBackend()
    fleet = make(tmp_path, backend)
    r1 = ROUTERS[0]
    payload = document(r1, 1, classes(1, 2, 3))
    fleet.handle(r1.node, payload)
    batches = backend.applied_batches
    again = fleet.handle(r1.node, payload)
    assert (again.result, again.version) == ("applied", 1)
    assert backend.applied_batches == batches


def test_a_store_failure_puts_the_router_rules_back(tmp_path: Path) -> None:
    fleet = make(tmp_path)
    r1 = ROUTERS[0]
    fleet.handle(r1.node, document(r1, 1, classes(1, 2, 3)))
    held = fleet.backend.read()

    def broken(state: object) -> None:
        raise OSError("disk full")

    fleet.store.save = broken  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk full"):
        fleet.handle(r1.node, document(r1, 2, classes(3, 3, 3)))
    assert fleet.backend.read() == held
    assert fleet.states[r1.node].version == 1


def test_a_restart_restores_every_router_from_the_store(tmp_path: Path) -> None:
    fleet = make(tmp_path)
    for i, router in enumerate(ROUTERS):
        fleet.handle(router.node, document(router, 1 + i, classes(1 + i, 1, 2)))
    update = Update(delete=("web",))
    fleet.handle(ROUTERS[0].node, document(ROUTERS[0], 9, update))
    wanted = fleet.backend.read()
    fleet.store.close()

    backend = MemoryBackend()
    restarted = make(tmp_path, backend)
    assert restarted.reconcile() == len(wanted)
    assert backend.read() == wanted
    assert {n: s.version for n, s in restarted.states.items()} == {
        "ha1-mr1": 9,
        "ha1-mr2": 2,
        "ha1-mr3": 3,
    }
    assert restarted.reconcile() == 0


def test_routers_that_clash_are_refused_at_start(tmp_path: Path) -> None:
    net = ipaddress.IPv6Network
    clashes = [
        (
            ServedRouter("a", "m1", net("2001:db8::/48")),
            ServedRouter("a", "m2", net("2001:db9::/48")),
        ),
        (
            ServedRouter("a", "m1", net("2001:db8::/48")),
            ServedRouter("b", "m1", net("2001:db9::/48")),
        ),
        (
            ServedRouter("a", "m1", net("2001:db8::/32")),
            ServedRouter("b", "m2", net("2001:db8:5::/48")),
        ),
        (ServedRouter("a" * 41, "m1", net("2001:db8::/48")),),
    ]
    for routers in clashes:
        with pytest.raises(ConfigError):
            FleetEnforcer(
                settings(tmp_path), routers, MemoryBackend(), FleetStore(tmp_path / "c.db")
            )


def test_a_router_whose_prefix_changed_starts_empty_not_at_all(tmp_path: Path) -> None:
    fleet = make(tmp_path)
    r1 = ROUTERS[0]
    inside = Install(policies=(udp_to("cam", 554, 1, dst="2001:db8:1:5::/64"),))
    fleet.handle(r1.node, document(r1, 4, inside))
    fleet.store.close()
    moved = (
        ServedRouter(r1.node, r1.mobile_router, ipaddress.IPv6Network("2001:db8:99::/48")),
        *ROUTERS[1:],
    )
    backend = MemoryBackend()
    restarted = FleetEnforcer(settings(tmp_path), moved, backend, FleetStore(tmp_path / "fleet.db"))
    assert restarted.states[r1.node] == DesiredState(node=r1.node)
    assert restarted.reconcile() == 0
    assert backend.read() == ()
