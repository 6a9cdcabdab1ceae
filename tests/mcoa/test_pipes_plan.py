"""The pure parts of the kernel edge: route diffs and the MR's desired state."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

from services.mcoa.mr import choose_care_of, desired_state
from services.mcoa.pipes import RouteSpec, decap_rule, plan_routes
from tests.mcoa.factories import COA1, HA, MNP, link, mcoa_settings


def test_plan_replaces_in_place_and_deletes_only_what_is_not_wanted() -> None:
    old = RouteSpec(1001, MNP, 5, segment=COA1)
    new = RouteSpec(1001, MNP, 5, segment=IPv6Address("2001:db8:1::3"))
    stale = RouteSpec(1002, MNP, 6, segment=COA1)
    remove, replace = plan_routes({new}, {old, stale})
    assert remove == [stale]
    assert replace == [new]


def test_plan_is_empty_when_the_kernel_already_agrees() -> None:
    spec = RouteSpec(1001, MNP, 5, segment=COA1)
    assert plan_routes({spec}, {spec}) == ([], [])


def test_mr_desired_state_per_link() -> None:
    settings = mcoa_settings("mr")
    routes, rules = desired_state(settings, [(link(1), 7, COA1)])
    ha = IPv6Network(HA)
    assert routes == {
        RouteSpec(1001, ha, 7),
        RouteSpec(1001, IPv6Network("::/0"), 7, segment=HA),
        RouteSpec(999, IPv6Network(COA1), 7, decap=True),
    }
    source_rule = next(r for r in rules if r.priority == 15000)
    assert (source_rule.src, source_rule.dst, source_rule.table) == (IPv6Network(COA1), ha, 1001)
    assert decap_rule(999, 10) in rules


def test_choose_care_of_keeps_the_current_address() -> None:
    a, b = IPv6Address("2001:db8:1::2"), IPv6Address("2001:db8:1::3")
    assert choose_care_of(b, [a, b]) == b
    assert choose_care_of(None, [b, a]) == a
    assert choose_care_of(a, [b]) == b
    assert choose_care_of(a, []) is None
