"""The kernel edge against a real namespace: idempotent, verified, and only our own state."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv6Address, IPv6Network

import pytest
from pyroute2 import IPRoute

from services import netns
from services.mcoa import pipes

pytestmark = pytest.mark.kernel

COA = IPv6Address("2001:db8:1::2")
MNP = IPv6Network("2001:db8:ff::/64")


def _exercise() -> list[bool]:
    """Apply a pipe, a decap and their rules twice, then move; report each 'changed' flag."""
    ipr = IPRoute()
    try:
        oif = ipr.link_lookup(ifname="v1")[0]
        pipes.move_local_rule(ipr, 32000)
        pipes.move_local_rule(ipr, 32000)
        routes = {
            pipes.RouteSpec(1001, MNP, oif, segment=COA),
            *pipes.decap_specs(999, [IPv6Address("2001:db8:1::1")], oif),
        }
        rules = {pipes.decap_rule(999, 10)}
        flags = [
            pipes.ensure_routes(ipr, routes),
            pipes.ensure_routes(ipr, routes),
            pipes.ensure_rules(ipr, {10}, rules),
            pipes.ensure_rules(ipr, {10}, rules),
        ]
        moved = {pipes.RouteSpec(1001, MNP, oif, segment=IPv6Address("2001:db8:1::3"))}
        flags.append(pipes.ensure_routes(ipr, moved))
        flags.append(pipes.ensure_routes(ipr, set()))
        flags.append(pipes.ensure_rules(ipr, {10}, set()))
        return flags
    finally:
        ipr.close()


def test_apply_twice_changes_nothing_and_foreign_state_stays(
    make_netns: Callable[[str], str],
) -> None:
    ns = make_netns("pipes")
    netns.run(ns, ["ip", "link", "add", "v1", "type", "veth", "peer", "name", "v2"])
    for dev in ("v1", "v2"):
        netns.run(ns, ["ip", "link", "set", dev, "up"])
    netns.run(ns, ["ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "v1", "nodad"])
    netns.run(ns, ["ip", "-6", "route", "add", "2001:db8:ee::/64", "dev", "v1", "table", "1001"])

    flags = netns.call_in(ns, _exercise)

    assert flags == [True, False, True, False, True, True, True]
    table = netns.run(ns, ["ip", "-6", "route", "show", "table", "1001"])
    assert table.strip().startswith("2001:db8:ee::/64 dev v1")  # not ours: untouched
    assert "proto 147" not in netns.run(ns, ["ip", "-6", "route", "show", "table", "all"])
    rules = netns.run(ns, ["ip", "-6", "rule"])
    assert "32000:\tfrom all lookup local" in rules
    assert not rules.startswith("0:")
