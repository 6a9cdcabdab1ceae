"""The pure parts of the pipes: route diffs and each kind's desired kernel state."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

import pytest

from services.mcoa import pipe_kinds
from services.mcoa.cache import PipeRoute
from services.mcoa.devices import DeviceSpec, NeighbourSpec
from services.mcoa.mr import choose_care_of
from services.mcoa.pipes import (
    Ip6Encap,
    RouteSpec,
    RuleSpec,
    Seg6Decap,
    Seg6Encap,
    decap_rule,
    from_pipe_rule,
    plan_routes,
)
from tests.mcoa.factories import COA1, HA, HOME, MNP, link, mcoa_settings

ANY = IPv6Network("::/0")
TO_HA = IPv6Network(HA)
SOURCE_RULE = RuleSpec(15000, 1001, IPv6Network(COA1), TO_HA)


def test_plan_replaces_in_place_and_deletes_only_what_is_not_wanted() -> None:
    old = RouteSpec(1001, MNP, "h1", encap=Seg6Encap(COA1))
    new = RouteSpec(1001, MNP, "h1", encap=Seg6Encap(IPv6Address("2001:db8:1::3")))
    stale = RouteSpec(1002, MNP, "h2", encap=Seg6Encap(COA1))
    remove, replace = plan_routes({new}, {old, stale})
    assert remove == [stale]
    assert replace == [new]


def test_plan_is_empty_when_the_kernel_already_agrees() -> None:
    spec = RouteSpec(1001, MNP, "mnvx", gateway=pipe_kinds.MR_LINK_LOCAL, encap=Ip6Encap(1, COA1))
    assert plan_routes({spec}, {spec}) == ([], [])


def _mr(kind: str, mtu: int = 1500) -> pipe_kinds.KernelState:
    return pipe_kinds.mr_state(mcoa_settings("mr"), kind, [pipe_kinds.MrLink(link(1), COA1, mtu)])


def test_mr_seg6_encapsulates_by_route_and_decapsulates_its_care_of_address() -> None:
    state = _mr("seg6")
    assert state.devices == frozenset()
    assert state.routes == {
        RouteSpec(1001, TO_HA, "m1"),
        RouteSpec(1001, ANY, "m1", encap=Seg6Encap(HA)),
        RouteSpec(999, IPv6Network(COA1), "m1", encap=Seg6Decap()),
    }
    assert state.rules == {SOURCE_RULE, decap_rule(999, 10)}
    assert state.pipes == 1


def test_mr_vxlan_is_one_device_per_bid_with_a_fixed_far_end() -> None:
    state = _mr("vxlan", mtu=1600)
    device = DeviceSpec(
        "mnvx1",
        "vxlan",
        local=COA1,
        remote=HA,
        vni=1,
        mtu=1600 - pipe_kinds.VXLAN_OVERHEAD,
        mac=pipe_kinds.MR_MAC,
    )
    assert state.devices == {device}
    assert state.neighbours == {NeighbourSpec("mnvx1", pipe_kinds.HA_LINK_LOCAL, pipe_kinds.HA_MAC)}
    gateway = IPv6Network(pipe_kinds.duplicate_gateway(1001, HOME))
    assert gateway.subnet_of(pipe_kinds.DUPLICATE_GATEWAYS)
    assert pipe_kinds.duplicate_gateway(1001, IPv6Address("2001:db8:100::3")) != gateway[0]
    assert state.routes == {
        RouteSpec(1001, TO_HA, "m1"),
        RouteSpec(1001, ANY, "mnvx1", gateway=pipe_kinds.HA_LINK_LOCAL),
        RouteSpec(1001, gateway, "mnvx1", gateway=pipe_kinds.HA_LINK_LOCAL),
    }
    # No decap rule: the device receives by itself; what comes out of it is routed by main.
    # The duplicate gateway's rule sends copies (nft dup, no mark) into the BID's table.
    assert state.rules == {
        SOURCE_RULE,
        from_pipe_rule("mnvx1", 10),
        RuleSpec(priority=10, table=1001, dst=gateway),
    }
    assert state.pipes == 1, "a duplicate gateway is not a pipe"


def test_mr_ip6tnl_is_one_tunnel_per_bid() -> None:
    state = _mr("ip6tnl")
    assert state.devices == {DeviceSpec("mn6t1", "ip6tnl", local=COA1, remote=HA)}
    assert RouteSpec(1001, ANY, "mn6t1") in state.routes
    assert state.rules == {SOURCE_RULE, from_pipe_rule("mn6t1", 10)}


def _pipe(kind: str, care_of: IPv6Address = COA1) -> PipeRoute:
    return PipeRoute(1001, MNP, care_of, 1, HOME, kind)


def test_ha_vxlan_is_one_flow_based_device_and_a_route_per_binding() -> None:
    settings = mcoa_settings("ha")
    pipes = [_pipe("vxlan"), PipeRoute(1002, MNP, IPv6Address("2001:db8:2::2"), 2, HOME, "vxlan")]
    state = pipe_kinds.ha_state(settings, ["vxlan"], "", pipes, {})
    (device,) = state.devices
    assert (device.name, device.vni, device.mtu, device.mac) == (
        "mnvx",
        None,
        1430,
        pipe_kinds.HA_MAC,
    )
    encap2 = Ip6Encap(2, IPv6Address("2001:db8:2::2"), HA)
    gateways = {t: IPv6Network(pipe_kinds.duplicate_gateway(t, HOME)) for t in (1001, 1002)}
    assert state.routes == {
        RouteSpec(1001, MNP, "mnvx", pipe_kinds.MR_LINK_LOCAL, Ip6Encap(1, COA1, HA)),
        RouteSpec(1002, MNP, "mnvx", pipe_kinds.MR_LINK_LOCAL, encap2),
        # each BID's duplicate gateway: the same encapsulation as the BID's route
        RouteSpec(1001, gateways[1001], "mnvx", pipe_kinds.MR_LINK_LOCAL, Ip6Encap(1, COA1, HA)),
        RouteSpec(1002, gateways[1002], "mnvx", pipe_kinds.MR_LINK_LOCAL, encap2),
    }
    assert state.rules == {
        from_pipe_rule("mnvx", 10),
        RuleSpec(priority=10, table=1001, dst=gateways[1001]),
        RuleSpec(priority=10, table=1002, dst=gateways[1002]),
    }
    assert state.pipes == 2


def test_ha_seg6_needs_the_way_to_the_care_of_address() -> None:
    settings = mcoa_settings("ha")
    reached = pipe_kinds.ha_state(settings, ["seg6"], "h0", [_pipe("seg6")], {COA1: "h1"})
    assert RouteSpec(1001, MNP, "h1", encap=Seg6Encap(COA1)) in reached.routes
    assert RouteSpec(999, IPv6Network(HA), "h0", encap=Seg6Decap()) in reached.routes
    assert reached.rules == {decap_rule(999, 10)}
    unreached = pipe_kinds.ha_state(settings, ["seg6"], "h0", [_pipe("seg6")], {COA1: None})
    assert unreached.pipes == 0


def test_ha_ip6tnl_device_per_binding_with_a_stable_short_name() -> None:
    settings = mcoa_settings("ha")
    state = pipe_kinds.ha_state(settings, ["ip6tnl"], "", [_pipe("ip6tnl")], {})
    (device,) = state.devices
    assert device == DeviceSpec(device.name, "ip6tnl", local=HA, remote=COA1)
    assert device.name == pipe_kinds.ip6tnl_name(HOME, 1)
    assert len(device.name) <= 15
    assert device.name != pipe_kinds.ip6tnl_name(HOME, 2)
    assert device.name != pipe_kinds.ip6tnl_name(IPv6Address("2001:db8:100::3"), 1)


@pytest.mark.parametrize(
    ("kinds", "devices", "rules"),
    [
        (["vxlan"], {"mnvx"}, 1),
        (["seg6"], set(), 1),
        (["ip6tnl"], set(), 0),
        (["seg6", "vxlan"], {"mnvx"}, 2),
    ],
)
def test_ha_base_holds_each_offered_kind_before_any_binding(
    kinds: list[str], devices: set[str], rules: int
) -> None:
    state = pipe_kinds.ha_base(mcoa_settings("ha"), kinds, "h0")
    assert {d.name for d in state.devices} == devices
    assert len(state.rules) == rules


def test_choose_care_of_keeps_the_current_address() -> None:
    a, b = IPv6Address("2001:db8:1::2"), IPv6Address("2001:db8:1::3")
    assert choose_care_of(b, [a, b]) == b
    assert choose_care_of(None, [b, a]) == a
    assert choose_care_of(a, [b]) == b
    assert choose_care_of(a, []) is None
