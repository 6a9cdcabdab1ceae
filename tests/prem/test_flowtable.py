"""The reference semantics every back end follows, checked on the in-memory data plane."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from services.contracts.policy import Forward, Policy, PortRange, Selector
from services.prem.backends.memory import MemoryBackend
from services.prem.core.flowtable import Packet, compile_policies, fallback_states
from services.prem.core.reconcile import plan
from tests.prem.factories import settings, udp_to

V6 = ipaddress.IPv6Address
V4 = ipaddress.IPv4Address


def _udp6(port: int, dst: str = "2001:db8::1") -> Packet:
    return Packet(V6("2001:db8:a::1"), V6(dst), 17, 40000, port)


def _plane(
    tmp_path: Path, policies: list[Policy], unusable: frozenset[int] = frozenset()
) -> MemoryBackend:
    backend = MemoryBackend(settings(tmp_path))
    desired = compile_policies(policies, unusable)
    backend.apply(desired, plan(desired, backend.read()))
    return backend


def test_lower_priority_number_wins_where_selectors_overlap(tmp_path: Path) -> None:
    broad = Policy(
        id="all-udp", priority=20, selector=Selector(next_header=17), action=Forward(bid=1)
    )
    narrow = udp_to("dns", 53, 2, priority=5)
    plane = _plane(tmp_path, [broad, narrow])
    assert plane.bid_for(_udp6(53)) == 2
    assert plane.bid_for(_udp6(54)) == 1
    swapped = _plane(tmp_path, [broad, udp_to("dns", 53, 2, priority=30)])
    assert swapped.bid_for(_udp6(53)) == 1


def test_unmatched_packet_gets_no_bid_and_drop_is_reported(tmp_path: Path) -> None:
    plane = _plane(tmp_path, [udp_to("block", 9, None)])
    assert plane.bid_for(_udp6(9)) == "drop"
    assert plane.bid_for(_udp6(10)) is None


def test_selector_without_addresses_covers_both_families(tmp_path: Path) -> None:
    plane = _plane(tmp_path, [udp_to("v", 5001, 2)])
    assert plane.bid_for(_udp6(5001)) == 2
    assert plane.bid_for(Packet(V4("10.0.0.1"), V4("10.255.0.1"), 17, 1, 5001)) == 2
    assert {r.family for r in plane.read()} == {4, 6}


def test_address_family_and_ranges(tmp_path: Path) -> None:
    policy = udp_to("net", 80, 3, dst="2001:db8::/64")
    plane = _plane(tmp_path, [policy])
    assert plane.bid_for(_udp6(80, "2001:db8::ffff")) == 3
    assert plane.bid_for(_udp6(80, "2001:db9::1")) is None
    assert plane.bid_for(Packet(V4("10.0.0.1"), V4("10.0.0.2"), 17, 1, 80)) is None


def test_fallback_used_when_primary_unusable_and_reported(tmp_path: Path) -> None:
    policy = udp_to("video", 5001, 2, fallbacks=(3, 1))
    assert _plane(tmp_path, [policy], frozenset({2})).bid_for(_udp6(5001)) == 3
    assert _plane(tmp_path, [policy], frozenset({2, 3})).bid_for(_udp6(5001)) == 1
    (state,) = fallback_states([policy], frozenset({2, 3}))
    assert (state.primary_bid, state.active_bid) == (2, 1)
    (none_left,) = fallback_states([policy], frozenset({1, 2, 3}))
    assert none_left.active_bid is None
    assert _plane(tmp_path, [policy], frozenset({1, 2, 3})).bid_for(_udp6(5001)) == 2


def test_port_ranges_are_inclusive(tmp_path: Path) -> None:
    policy = Policy(
        id="r",
        priority=1,
        selector=Selector(next_header=6, dst_port=PortRange(first=10, last=20)),
        action=Forward(bid=1),
    )
    plane = _plane(tmp_path, [policy])
    tcp = [Packet(V6("::1"), V6("::2"), 6, 1, port) for port in (9, 10, 20, 21)]
    assert [plane.bid_for(p) for p in tcp] == [None, 1, 1, None]


def test_plan_is_empty_when_state_already_holds(tmp_path: Path) -> None:
    plane = _plane(tmp_path, [udp_to("a", 1, 1), udp_to("b", 2, 2)])
    again = compile_policies([udp_to("a", 1, 1), udp_to("b", 2, 2)])
    assert not plan(again, plane.read())


def test_plan_moves_a_changed_verdict_by_remove_then_add(tmp_path: Path) -> None:
    old = compile_policies([udp_to("a", 1, 1)])
    new = compile_policies([udp_to("a", 1, 2)])
    changes = plan(new, old)
    assert [r.bid for r in changes.remove] == [1, 1]
    assert [r.bid for r in changes.add] == [2, 2]
