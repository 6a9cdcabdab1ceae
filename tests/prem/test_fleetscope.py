"""An HA serving many routers scopes each router's policies to the router's prefix and names
them apart in the shared table."""

from __future__ import annotations

import ipaddress

import pytest

from services.contracts.errors import PolicyRefused
from services.contracts.policy import AddressRange, Forward, Policy, Selector
from services.prem.core.fleetscope import ServedRouter, kernel_id, scope, split_kernel_id
from tests.prem.factories import udp_to

ROUTER = ServedRouter("ha1-mr7", "mr7", ipaddress.IPv6Network("2001:db8:7::/48"))


def test_a_class_policy_gets_the_router_prefix_as_its_destination() -> None:
    (scoped,) = scope((udp_to("voice", 5004, 2),), ROUTER)
    assert scoped.selector.dst_addr == ROUTER.prefix
    assert (scoped.id, scoped.action, scoped.selector.dst_port) == (
        "voice",
        Forward(bid=2),
        udp_to("voice", 5004, 2).selector.dst_port,
    )


def test_a_destination_inside_the_prefix_is_kept() -> None:
    inside = udp_to("cam", 554, 1, dst="2001:db8:7:1::/64")
    assert scope((inside,), ROUTER) == (inside,)


def test_destinations_outside_the_prefix_are_refused_each_by_name() -> None:
    other_router = udp_to("a", 5004, 1, dst="2001:db8:8::/64")
    wider = udp_to("b", 5004, 1, dst="2001:db8::/32")
    straddling = Policy(
        id="c",
        priority=1,
        selector=Selector(
            dst_addr=AddressRange(
                first=ipaddress.IPv6Address("2001:db8:7:ffff::"),
                last=ipaddress.IPv6Address("2001:db8:8::1"),
            )
        ),
        action=Forward(bid=1),
    )
    ipv4 = udp_to("d", 5004, 1, dst="10.0.0.0/8")
    ipv4_source = Policy(
        id="e",
        priority=1,
        selector=Selector(src_addr=ipaddress.IPv4Network("192.0.2.0/24")),
        action=Forward(bid=1),
    )
    with pytest.raises(PolicyRefused) as refused:
        scope((udp_to("ok", 1, 1), other_router, wider, straddling, ipv4, ipv4_source), ROUTER)
    problems = refused.value.problems
    assert [(p.policy_id, p.field) for p in problems] == [
        (pid, "selector.dst-addr") for pid in ("a", "b", "c", "d", "e")
    ]
    assert "2001:db8:8::/64 is outside mobile router 'mr7'" in problems[0].reason
    assert "2001:db8:7::/48" in problems[0].reason


def test_kernel_ids_split_back_into_node_and_policy_id() -> None:
    value = kernel_id("ha1-mr7", "video.0:x")
    assert value == "ha1-mr7:video.0:x"
    assert split_kernel_id(value) == ("ha1-mr7", "video.0:x")
    assert split_kernel_id("plain") is None
    assert split_kernel_id(":x") is None
