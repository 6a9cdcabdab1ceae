"""Pure tests of the nftables layering, rendering and parsing (no kernel)."""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.contracts.policy import (
    AddressRange,
    Drop,
    Forward,
    Policy,
    PortRange,
    Selector,
    selectors_overlap,
)
from services.prem.config import PremSettings
from services.prem.core import nft_render
from services.prem.core.flowtable import FlowRule, Packet, classify, compile_policies
from services.prem.core.nft_layers import (
    Layer,
    assign_layers,
    box_of,
    boxes_overlap,
    flatten,
    greedy_layers,
    mappable,
    shape_of,
)
from services.prem.core.nft_parse import parse_table
from services.prem.core.nft_render import (
    comment,
    element,
    key_text,
    layer_commands,
    parse_address,
    table_commands,
    table_sets,
)
from tests.contracts.test_policy_xml_properties import selectors as any_selectors

SETTINGS = PremSettings(node="ha1", role="ha", mobile_router="mr1", bids=[{"bid": 1}, {"bid": 2}])


def rule(pid: str, prio: int, bid: int | None = 1, family: int = 6, **sel: Any) -> FlowRule:
    return FlowRule(prio, pid, family, Selector(**sel), bid)


def udp(port: int) -> dict[str, Any]:
    return {"next_header": 17, "dst_port": PortRange(first=port, last=port)}


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def test_shape_follows_key_order_and_mappability() -> None:
    sel = Selector(dscp=10, dst_addr=net("2001:db8::/64"), next_header=6)
    assert shape_of(sel) == ("da", "pr", "ds")
    assert mappable(6, ("da", "pr", "ds"))
    assert mappable(6, ("sa", "da", "pr", "sp", "dp", "ds"))  # the DSCP is a guard in IPv6
    assert not mappable(6, ())
    assert not mappable(6, ("ds",))
    assert not mappable(6, ("sa", "fl"))
    assert not mappable(4, ("sa", "da", "pr", "sp", "dp", "ds"))


def test_non_overlapping_rules_of_one_shape_share_one_layer() -> None:
    table = tuple(rule(f"p{i}", i, **udp(1000 + i)) for i in range(50))
    layers = assign_layers(table)
    assert len(layers) == 1
    assert layers[0].shape == ("pr", "dp")
    assert flatten(layers) == table


def test_overlapping_lower_precedence_goes_to_a_later_layer() -> None:
    high = rule("a", 1, 1, **udp(80))
    low = rule("b", 2, 2, next_header=17, dst_port=PortRange(first=1, last=1000))
    layers = assign_layers((low, high))
    assert [layer.rules for layer in layers] == [(high,), (low,)]


def test_rule_reuses_the_first_layer_of_its_shape_after_its_floor() -> None:
    a = rule("a", 1, **udp(80))
    b = rule("b", 2, **udp(81))
    wide = rule("w", 3, next_header=17)  # overlaps both, other shape: layer 1
    c = rule("c", 4, **udp(82))  # overlaps w only: must be after layer 1 -> new layer 2
    d = rule("d", 5, next_header=6)  # TCP overlaps none: joins w's layer (same shape)
    layers = assign_layers((a, b, wide, c, d))
    assert [layer.rules for layer in layers] == [(a, b), (wide, d), (c,)]


def test_families_never_share_a_layer() -> None:
    v4 = rule("x", 1, family=4, **udp(80))
    v6 = rule("x", 1, family=6, **udp(80))
    layers = assign_layers((v4, v6))
    assert [(layer.family, layer.rules) for layer in layers] == [(4, (v4,)), (6, (v6,))]


def test_unmappable_rules_get_a_layer_each() -> None:
    a = rule("a", 1, flow_label=5)
    b = rule("b", 2, flow_label=6)
    anything = rule("c", 3)
    layers = assign_layers((a, b, anything))
    assert [layer.rules for layer in layers] == [(a,), (b,), (anything,)]
    assert not any(layer.is_map for layer in layers)


def test_ten_thousand_disjoint_rules_are_layered_quickly() -> None:
    table = tuple(
        rule(f"p{i}", 10, dst_addr=net(f"2001:db8::{i:x}/128"), **udp(5000)) for i in range(10000)
    )
    start = time.perf_counter()
    layers = assign_layers(table)
    assert time.perf_counter() - start < 5
    assert len(layers) == 1


# ---- the layers classify exactly like the reference -------------------------------------------

PORTS = st.one_of(
    st.none(),
    st.tuples(st.integers(0, 7), st.integers(0, 7)).map(
        lambda t: PortRange(first=min(t), last=max(t))
    ),
)
ADDRS = st.one_of(
    st.none(),
    st.integers(0, 15).map(lambda i: net(f"2001:db8::{i * 4:x}/126")),
    st.tuples(st.integers(0, 63), st.integers(0, 63)).map(
        lambda t: AddressRange(
            first=ipaddress.IPv6Address(f"2001:db8::{min(t):x}"),
            last=ipaddress.IPv6Address(f"2001:db8::{max(t):x}"),
        )
    ),
)


@st.composite
def selectors(draw: st.DrawFn) -> Selector:
    src_port, dst_port = draw(PORTS), draw(PORTS)
    proto = 17 if (src_port or dst_port) else draw(st.sampled_from([None, 6, 17]))
    return Selector(
        src_addr=draw(ADDRS),
        dst_addr=draw(ADDRS),
        next_header=proto,
        src_port=src_port,
        dst_port=dst_port,
        dscp=draw(st.sampled_from([None, 0, 46])),
        flow_label=draw(st.sampled_from([None, None, None, 3])),
    )


@st.composite
def policies(draw: st.DrawFn) -> list[Policy]:
    count = draw(st.integers(1, 12))
    return [
        Policy(
            id=f"p{i}",
            priority=draw(st.integers(0, 5)),
            selector=draw(selectors()),
            action=draw(st.sampled_from([Drop(), Forward(bid=1), Forward(bid=2)])),
        )
        for i in range(count)
    ]


PACKETS = st.builds(
    Packet,
    src=st.integers(0, 70).map(lambda i: ipaddress.IPv6Address(f"2001:db8::{i:x}")),
    dst=st.integers(0, 70).map(lambda i: ipaddress.IPv6Address(f"2001:db8::{i:x}")),
    next_header=st.sampled_from([6, 17, 58]),
    src_port=st.integers(0, 8),
    dst_port=st.integers(0, 8),
    dscp=st.sampled_from([0, 46, 10]),
    flow_label=st.sampled_from([0, 3]),
)


def layered_classify(layers: tuple[Layer, ...], packet: Packet) -> FlowRule | None:
    """What the kernel does: the first layer with a hit decides; a layer has at most one hit."""
    for layer in layers:
        hits = [r for r in layer.rules if r.matches(packet)]
        assert len(hits) <= 1
        if hits:
            return hits[0]
    return None


POINT_ADDRS = st.one_of(
    st.integers(0, 5).map(lambda i: net(f"2001:db8::{i:x}/128")),
    st.integers(0, 5).map(lambda i: net(f"10.0.0.{i}/32")),
    # prefixes: of one length, points of that length (masked keys); mixed with hosts, not
    st.integers(0, 5).map(lambda i: net(f"2001:db8:{i:x}::/48")),
    st.integers(0, 5).map(lambda i: net(f"10.{i}.0.0/16")),
    st.integers(0, 5).map(
        lambda i: AddressRange(
            first=ipaddress.IPv6Address(f"2001:db8::{i:x}"),
            last=ipaddress.IPv6Address(f"2001:db8::{i + i % 2:x}"),
        )
    ),
)


@st.composite
def point_tables(draw: st.DrawFn) -> list[Policy]:
    """Mostly single-point selectors of few shapes, some repeated: the tables the shortcut
    takes, and near misses it must hand to the general algorithm."""
    count = draw(st.integers(1, 10))
    pols = []
    for i in range(count):
        port = draw(st.one_of(st.none(), st.integers(1, 3)))
        pols.append(
            Policy(
                id=f"p{i}",
                priority=draw(st.integers(0, 3)),
                selector=Selector(
                    dst_addr=draw(POINT_ADDRS),
                    next_header=17 if port is not None else draw(st.sampled_from([None, 6])),
                    dst_port=None if port is None else PortRange(first=port, last=port),
                    dscp=draw(st.sampled_from([None, None, 46])),
                ),
                action=draw(st.sampled_from([Drop(), Forward(bid=1), Forward(bid=2)])),
            )
        )
    return pols


@settings(max_examples=400, deadline=None)
@given(st.one_of(point_tables(), policies()))
def test_the_point_shortcut_layers_like_the_general_algorithm(pols: list[Policy]) -> None:
    table = compile_policies(pols)
    layers = assign_layers(table, key_text)
    assert layers == greedy_layers(sorted(table, key=FlowRule.precedence))
    # The key texts the shortcut keeps render the very table the general path renders.
    plain = tuple(dataclasses.replace(layer, keys=None) for layer in layers)
    assert table_commands(layers, SETTINGS) == table_commands(plain, SETTINGS)


def test_a_large_table_of_distinct_host_flows_takes_the_shortcut_in_one_exact_layer() -> None:
    table = tuple(
        rule(f"p{i}", i, dst_addr=net(f"2001:db8::{i:x}/128"), **udp(5000 + i % 7))
        for i in range(300)
    )
    layers = assign_layers(table, key_text)
    assert layers == greedy_layers(list(table))
    assert len(layers) == 1
    assert layers[0].exact
    assert layers[0].rules == table
    assert layers[0].keys is not None
    assert layers[0].keys[1] == "2001:db8::1 . 17 . 5001"


@settings(max_examples=300, deadline=None)
@given(policies(), st.lists(PACKETS, min_size=1, max_size=20))
def test_layers_classify_like_the_reference(pols: list[Policy], packets: list[Packet]) -> None:
    table = compile_policies(pols)
    layers = assign_layers(table)
    assert flatten(layers) == table
    for packet in packets:
        assert layered_classify(layers, packet) == classify(table, packet)


@settings(max_examples=300, deadline=None)
@given(selectors(), selectors())
def test_box_overlap_agrees_with_selectors_overlap(a: Selector, b: Selector) -> None:
    ra, rb = FlowRule(0, "a", 6, a, 1), FlowRule(0, "b", 6, b, 1)
    assert boxes_overlap(box_of(ra), box_of(rb)) == selectors_overlap(a, b)


# ---- rendering ---------------------------------------------------------------------------------


def test_element_and_comment_text() -> None:
    r = rule(
        "web1",
        10,
        2,
        src_addr=AddressRange(
            first=ipaddress.IPv6Address("2001:db8::"), last=ipaddress.IPv6Address("2001:db8::ff")
        ),
        dst_addr=net("2001:db9::/64"),
        next_header=17,
        dst_port=PortRange(first=1000, last=2000),
        dscp=46,
    )
    shape = shape_of(r.selector)
    assert comment(r) == "web1 10 rn"
    assert element(r, shape) == (
        '2001:db8::-2001:db8::ff . 2001:db9::/64 . 17 . 1000-2000 . 46 comment "web1 10 rn"'
        " : goto bid_2"
    )
    assert (
        element(r, shape, with_data=False)
        == "2001:db8::-2001:db8::ff . 2001:db9::/64 . 17 . 1000-2000 . 46"
    )


def test_a_policy_id_outside_the_contract_never_reaches_nft_text() -> None:
    with pytest.raises(ValueError, match="cannot be written"):
        comment(rule('x" ; flush ruleset ; "', 1))


def test_map_layer_commands_use_plain_types_and_one_lookup() -> None:
    layer = Layer(6, ("sa", "pr", "dp"), (rule("a", 1, None, src_addr=net("::/0"), **udp(53)),))
    cmds = layer_commands("multinet_prem", 3, layer)
    assert cmds == [
        "add map inet multinet_prem l3_6_sa_pr_dp "
        "{ type ipv6_addr . inet_proto . inet_service : verdict ; flags interval ; }",
        'add element inet multinet_prem l3_6_sa_pr_dp { ::/0 . 17 . 53 comment "a 1 n-" : drop }',
        "add rule inet multinet_prem classify meta nfproto ipv6 "
        "ip6 saddr . meta l4proto . th dport vmap @l3_6_sa_pr_dp",
    ]


def test_flow_label_rule_is_plain() -> None:
    layer = Layer(6, ("pr", "fl"), (rule("f", 1, 2, next_header=6, flow_label=9),))
    assert layer_commands("t", 0, layer) == [
        "add rule inet t classify meta nfproto ipv6 meta l4proto 6 ip6 flowlabel 9 "
        'goto bid_2 comment "f 1 --"'
    ]


def test_table_replaces_atomically_and_marks_within_the_mask() -> None:
    layers = assign_layers((rule("a", 1, 3, **udp(80)),))
    cmds = table_commands(layers, SETTINGS)
    assert cmds[:3] == [
        "add table inet multinet_prem",
        "delete table inet multinet_prem",
        "add table inet multinet_prem",
    ]
    assert (
        "add chain inet multinet_prem bid_3 "
        "{ meta mark set meta mark and 0xff00ffff or 0x00030000 ; accept ; }" in cmds
    )
    assert any("hook prerouting priority mangle" in c and "jump classify" in c for c in cmds)
    assert any("type route hook output priority mangle" in c for c in cmds)


@pytest.mark.parametrize(
    ("family", "low", "high", "form", "expected"),
    [
        (6, 0, 2**128 - 1, "n", net("::/0")),
        (
            4,
            int(ipaddress.IPv4Address("10.0.0.0")),
            int(ipaddress.IPv4Address("10.0.0.255")),
            "n",
            net("10.0.0.0/24"),
        ),
        (
            6,
            int(ipaddress.IPv6Address("2001:db8::")),
            int(ipaddress.IPv6Address("2001:db8::ff")),
            "r",
            AddressRange(
                first=ipaddress.IPv6Address("2001:db8::"),
                last=ipaddress.IPv6Address("2001:db8::ff"),
            ),
        ),
        (6, 5, 5, "n", net("::5/128")),
    ],
)
def test_parse_address_keeps_the_written_form(
    family: int, low: int, high: int, form: str, expected: object
) -> None:
    assert parse_address(family, low, high, form) == expected


# ---- parsing a listing as nft 1.0.6 prints it -------------------------------------------------

LISTING: dict[str, Any] = {
    "nftables": [
        {"metainfo": {"json_schema_version": 1}},
        {"table": {"family": "inet", "name": "multinet_prem"}},
        {
            "map": {
                "family": "inet",
                "name": "l0_6_sa_da_pr_dp",
                "table": "multinet_prem",
                "type": ["ipv6_addr", "ipv6_addr", "inet_proto", "inet_service"],
                "map": "verdict",
                "flags": ["interval"],
                "elem": [
                    [
                        {
                            "elem": {
                                "val": {
                                    "concat": [
                                        {"range": ["2001:db9::", "2001:db9::ffff"]},
                                        "2001:db8::1",
                                        17,
                                        {"range": [1000, 2000]},
                                    ]
                                },
                                "comment": "web2 10 rn",
                            }
                        },
                        {"goto": {"target": "bid_2"}},
                    ]
                ],
            }
        },
        {
            "map": {
                "family": "inet",
                "name": "l1_4_ds",
                "table": "multinet_prem",
                "type": "dscp",
                "map": "verdict",
                "flags": ["interval"],
                "elem": [[{"elem": {"val": "ef", "comment": "v 3 --"}}, {"drop": None}]],
            }
        },
        {"chain": {"family": "inet", "table": "multinet_prem", "name": "bid_2"}},
        {
            "rule": {
                "family": "inet",
                "table": "multinet_prem",
                "chain": "bid_2",
                "expr": [
                    {
                        "mangle": {
                            "key": {"meta": {"key": "mark"}},
                            "value": {
                                "|": [{"&": [{"meta": {"key": "mark"}}, 4278386687]}, 131072]
                            },
                        }
                    }
                ],
            }
        },
        {
            "rule": {
                "family": "inet",
                "table": "multinet_prem",
                "chain": "classify",
                "expr": [{"vmap": {"key": {"concat": []}, "data": "@l0_6_sa_da_pr_dp"}}],
            }
        },
        {
            "rule": {
                "family": "inet",
                "table": "multinet_prem",
                "chain": "classify",
                "expr": [{"vmap": {"key": {}, "data": "@l1_4_ds"}}],
            }
        },
        {
            "rule": {
                "family": "inet",
                "table": "multinet_prem",
                "chain": "classify",
                "comment": "fl 7 --",
                "expr": [
                    {
                        "match": {
                            "op": "==",
                            "left": {"payload": {"protocol": "udplite", "field": "dport"}},
                            "right": 80,
                        }
                    },
                    {
                        "match": {
                            "op": "==",
                            "left": {"payload": {"protocol": "ip6", "field": "flowlabel"}},
                            "right": 77,
                        }
                    },
                    {"goto": {"target": "bid_2"}},
                ],
            }
        },
    ]
}


def _hooks(table: str) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for hook in ("prerouting", "output"):
        objects.append({"chain": {"family": "inet", "table": table, "name": hook, "hook": hook}})
        objects.append(
            {
                "rule": {
                    "family": "inet",
                    "table": table,
                    "chain": hook,
                    "expr": [{"jump": {"target": "classify"}}],
                }
            }
        )
    return objects


def test_parse_reports_nothing_without_both_hooks() -> None:
    assert parse_table(LISTING, "multinet_prem", SETTINGS).layers == ()
    partial = {"nftables": LISTING["nftables"] + _hooks("multinet_prem")[:2]}
    assert parse_table(partial, "multinet_prem", SETTINGS).layers == ()


def test_parse_listing_rebuilds_rules_and_decodes_marks() -> None:
    listing = {"nftables": LISTING["nftables"] + _hooks("multinet_prem")}
    state = parse_table(listing, "multinet_prem", SETTINGS)
    assert state.bid_chains == frozenset({2})
    web2 = rule(
        "web2",
        10,
        2,
        src_addr=AddressRange(
            first=ipaddress.IPv6Address("2001:db9::"), last=ipaddress.IPv6Address("2001:db9::ffff")
        ),
        dst_addr=net("2001:db8::1/128"),
        next_header=17,
        dst_port=PortRange(first=1000, last=2000),
    )
    v = rule("v", 3, None, family=4, dscp=46)
    fl = rule("fl", 7, 2, next_header=136, dst_port=PortRange(first=80, last=80), flow_label=77)
    assert [layer.rules for layer in state.layers] == [(web2,), (v,), (fl,)]
    assert [layer.shape for layer in state.layers] == [
        ("sa", "da", "pr", "dp"),
        ("ds",),
        ("pr", "dp", "fl"),
    ]


def test_prefixes_of_one_length_are_a_masked_exact_layer() -> None:
    """An HA's routers' class policies, each scoped by the router's /48: one hash set per
    BID looked up with the destination masked, the prefixes' network addresses as keys."""
    table = tuple(
        rule(f"r{r}.c{c}", c, 1 + (r + c) % 2, dst_addr=net(f"2001:db8:{r:x}::/48"), **udp(c))
        for r in range(3)
        for c in (5000, 5001)
    )
    (layer,) = assign_layers(table, key_text)
    assert layer == greedy_layers(sorted(table, key=FlowRule.precedence))[0]
    assert (layer.exact, layer.masks, layer.in_sets) == (True, (("da", 48),), True)
    commands = layer_commands("t", 0, layer, bids=(1, 2))
    assert commands[0] == (
        "add set inet t s0_6_da48_pr_dp_b1 { type ipv6_addr . inet_proto . inet_service ; }"
    )
    assert commands[1] == (
        "add element inet t s0_6_da48_pr_dp_b1 { "
        '2001:db8:: . 17 . 5000 comment "r0.c5000 5000 -n", '
        '2001:db8:2:: . 17 . 5000 comment "r2.c5000 5000 -n", '
        '2001:db8:1:: . 17 . 5001 comment "r1.c5001 5001 -n" }'
    )
    assert commands[2] == (
        "add rule inet t classify meta nfproto ipv6 ip6 daddr & ffff:ffff:ffff:: . "
        "meta l4proto . th dport @s0_6_da48_pr_dp_b1 goto bid_1"
    )


def test_prefixes_of_several_lengths_stay_an_interval_layer() -> None:
    a = rule("a", 1, 1, dst_addr=net("2001:db8:1::/48"), **udp(5000))
    b = rule("b", 2, 2, dst_addr=net("2001:db8:2::/64"), **udp(5000))
    c = rule("c", 3, 2, family=4, dst_addr=net("10.1.0.0/16"), **udp(5000))
    six, four = assign_layers((a, b, c), key_text)
    assert (six.exact, six.masks) == (False, ())
    assert (four.exact, four.masks) == (True, (("da", 16),))
    assert "ip daddr & 255.255.0.0 . meta l4proto . th dport" in "\n".join(
        layer_commands("t", 1, four)
    )


def test_ipv6_dscp_is_matched_before_the_lookup_one_map_per_value() -> None:
    # Prefixes of two lengths: interval maps (one length would make masked hash maps).
    a = rule("a", 1, 1, dst_addr=net("2001:db8::/64"), next_header=17, dscp=10)
    b = rule("b", 2, 2, dst_addr=net("2001:db8::/48"), next_header=17, dscp=46)
    (layer,) = assign_layers((a, b))
    assert layer.dscp_values() == (10, 46)
    assert layer_commands("t", 0, layer) == [
        "add map inet t l0_6_da_pr_ds_10 "
        "{ type ipv6_addr . inet_proto : verdict ; flags interval ; }",
        'add element inet t l0_6_da_pr_ds_10 { 2001:db8::/64 . 17 comment "a 1 -n" : goto bid_1 }',
        "add rule inet t classify meta nfproto ipv6 ip6 dscp 10 ip6 daddr . meta l4proto "
        "vmap @l0_6_da_pr_ds_10",
        "add map inet t l0_6_da_pr_ds_46 "
        "{ type ipv6_addr . inet_proto : verdict ; flags interval ; }",
        'add element inet t l0_6_da_pr_ds_46 { 2001:db8::/48 . 17 comment "b 2 -n" : goto bid_2 }',
        "add rule inet t classify meta nfproto ipv6 ip6 dscp 46 ip6 daddr . meta l4proto "
        "vmap @l0_6_da_pr_ds_46",
    ]


def test_ipv4_dscp_stays_in_the_key() -> None:
    (layer,) = assign_layers((rule("a", 1, 1, family=4, next_header=17, dscp=10),))
    assert layer_commands("t", 0, layer)[0] == (
        "add set inet t s0_4_pr_ds_b1 { type inet_proto . dscp ; }"
    )


def _vmap_rule(name: str) -> dict[str, Any]:
    return {
        "rule": {
            "family": "inet",
            "table": "t",
            "chain": "classify",
            "expr": [{"vmap": {"key": {}, "data": f"@{name}"}}],
        }
    }


def _map(name: str, elements: list[Any]) -> dict[str, Any]:
    return {"map": {"family": "inet", "name": name, "table": "t", "elem": elements}}


def test_parse_joins_the_guarded_maps_of_one_layer() -> None:
    listing = {
        "nftables": [
            _map("h0_6_pr_ds_10", [[{"elem": {"val": 17, "comment": "a 1 --"}}, {"drop": None}]]),
            _map("h0_6_pr_ds_46", [[{"elem": {"val": 6, "comment": "b 2 --"}}, {"drop": None}]]),
            _map("h1_6_pr_ds_46", [[{"elem": {"val": 6, "comment": "c 3 --"}}, {"drop": None}]]),
            _vmap_rule("h0_6_pr_ds_10"),
            _vmap_rule("h0_6_pr_ds_46"),
            _vmap_rule("h1_6_pr_ds_46"),
            *_hooks("t"),
        ]
    }
    state = parse_table(listing, "t", SETTINGS)
    a = rule("a", 1, None, next_header=17, dscp=10)
    b = rule("b", 2, None, next_header=6, dscp=46)
    c = rule("c", 3, None, next_header=6, dscp=46)  # overlaps b: a later layer
    assert [layer.rules for layer in state.layers] == [(a, b), (c,)]
    assert state.layers == assign_layers((a, b, c))


def test_exact_layers_are_sets_per_bid_and_ranges_need_an_interval_map() -> None:
    host = rule("h", 1, 1, dst_addr=net("2001:db8::1/128"), **udp(80))
    prefix = rule("p", 2, 1, dst_addr=net("2001:db9::/64"), **udp(80))
    (exact,) = assign_layers((host,))
    assert exact.exact
    assert exact.in_sets
    set_text, element_text, rule_text, *drop = layer_commands("t", 0, exact, (1, 2))
    assert set_text == (
        "add set inet t s0_6_da_pr_dp_b1 { type ipv6_addr . inet_proto . inet_service ; }"
    )
    assert element_text == (
        'add element inet t s0_6_da_pr_dp_b1 { 2001:db8::1 . 17 . 80 comment "h 1 -n" }'
    )
    assert rule_text == (
        "add rule inet t classify meta nfproto ipv6 ip6 daddr . meta l4proto . th dport "
        "@s0_6_da_pr_dp_b1 goto bid_1"
    )
    # A set for every declared BID and drop, empty until a rule goes there (a change of
    # verdict then moves an element).
    assert drop == [
        "add set inet t s0_6_da_pr_dp_b2 { type ipv6_addr . inet_proto . inet_service ; }",
        "add rule inet t classify meta nfproto ipv6 ip6 daddr . meta l4proto . th dport "
        "@s0_6_da_pr_dp_b2 goto bid_2",
        "add set inet t s0_6_da_pr_dp_drop { type ipv6_addr . inet_proto . inet_service ; }",
        "add rule inet t classify meta nfproto ipv6 ip6 daddr . meta l4proto . th dport "
        "@s0_6_da_pr_dp_drop drop",
    ]
    (mixed,) = assign_layers((host, prefix))
    assert not mixed.exact
    assert "flags interval" in layer_commands("t", 0, mixed)[0]
    assert exact.descriptor() != mixed.descriptor(), "a hash map cannot take a prefix: replace"


@settings(max_examples=400, deadline=None)
@given(any_selectors())
def test_a_key_is_the_field_by_field_text_whatever_the_selector(selector: Selector) -> None:
    """`key_text` writes host addresses and single ports its own quick way: the same text."""
    shape = shape_of(selector)
    if not shape:
        return
    reference = " . ".join(nft_render._FIELD_TEXT[field](selector) for field in shape)
    assert key_text(selector, shape) == reference


def _bid_chain(bid: int) -> dict[str, Any]:
    mark = {"|": [{"&": [{"meta": {"key": "mark"}}, 0xFF00FFFF]}, bid << 16]}
    return {
        "rule": {
            "family": "inet",
            "table": "multinet_prem",
            "chain": f"bid_{bid}",
            "expr": [{"mangle": {"key": {"meta": {"key": "mark"}}, "value": mark}}],
        }
    }


def _set(name: str, elements: list[Any]) -> dict[str, Any]:
    return {"set": {"family": "inet", "name": name, "table": "multinet_prem", "elem": elements}}


def _set_rule(name: str, verdict: dict[str, Any]) -> dict[str, Any]:
    key = {
        "concat": [
            {"payload": {"protocol": "ip6", "field": "daddr"}},
            {"meta": {"key": "l4proto"}},
            {"payload": {"protocol": "th", "field": "dport"}},
        ]
    }
    match = {"match": {"op": "==", "left": key, "right": f"@{name}"}}
    return {
        "rule": {
            "family": "inet",
            "table": "multinet_prem",
            "chain": "classify",
            "expr": [match, verdict],
        }
    }


def _host(address: str, port: int, comment: str) -> dict[str, Any]:
    return {"elem": {"val": {"concat": [address, 17, port]}, "comment": comment}}


SET_LISTING = [
    _bid_chain(1),
    _bid_chain(2),
    _set(
        "s0_6_da_pr_dp_b1", [_host("2001:db8::1", 80, "a 1 -n"), _host("2001:db8::2", 80, "b 2 -n")]
    ),
    _set("s0_6_da_pr_dp_b2", []),
    _set("s0_6_da_pr_dp_drop", [_host("2001:db8::3", 81, "c 3 -n")]),
    _set_rule("s0_6_da_pr_dp_b1", {"goto": {"target": "bid_1"}}),
    _set_rule("s0_6_da_pr_dp_b2", {"goto": {"target": "bid_2"}}),
    _set_rule("s0_6_da_pr_dp_drop", {"drop": None}),
    *_hooks("multinet_prem"),
]


def test_parse_joins_the_sets_of_one_layer_each_with_its_rules_verdict() -> None:
    state = parse_table({"nftables": SET_LISTING}, "multinet_prem", SETTINGS)
    a = rule("a", 1, 1, dst_addr=net("2001:db8::1/128"), **udp(80))
    b = rule("b", 2, 1, dst_addr=net("2001:db8::2/128"), **udp(80))
    c = rule("c", 3, None, dst_addr=net("2001:db8::3/128"), **udp(81))
    (layer,) = state.layers
    assert layer.in_sets
    assert flatten(state.layers) == (a, b, c)
    assert state.sets == {"s0_6_da_pr_dp_b1", "s0_6_da_pr_dp_b2", "s0_6_da_pr_dp_drop"}
    assert state.bid_chains == {1, 2}
    assert layer == assign_layers((a, b, c))[0]


def test_a_set_whose_rule_goes_elsewhere_than_its_name_says_is_not_ours() -> None:
    listing = [
        o
        if o != _set_rule("s0_6_da_pr_dp_b1", {"goto": {"target": "bid_1"}})
        else _set_rule("s0_6_da_pr_dp_b1", {"goto": {"target": "bid_2"}})
        for o in SET_LISTING
    ]
    assert parse_table({"nftables": listing}, "multinet_prem", SETTINGS).layers == ()


def test_moving_every_flow_of_a_set_layer_to_another_bid_keeps_its_layout() -> None:
    """Every declared BID has its set, so a change of verdict is an element batch, not a
    replace of the table."""
    before = assign_layers((rule("h", 1, 1, dst_addr=net("2001:db8::1/128"), **udp(80)),))
    after = assign_layers((rule("h", 1, 2, dst_addr=net("2001:db8::1/128"), **udp(80)),))
    assert before[0].in_sets
    assert before[0].descriptor() == after[0].descriptor()
    assert table_sets(before, SETTINGS) == table_sets(after, SETTINGS)
