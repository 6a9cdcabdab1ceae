"""The nft text of balance and duplicate rules (pure): chains, maps, dup tables."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from services.contracts.policy import PortRange, Selector
from services.prem.core.flowtable import FlowRule
from services.prem.core.nft_layers import assign_layers
from services.prem.core.nft_render import (
    CopyTarget,
    balance_chain,
    balance_chain_commands,
    dup_rules,
    dup_table_commands,
    marked_bids,
    table_commands,
    verdict,
)
from services.prem.core.settings import NodeSettings, Role

SETTINGS = NodeSettings.model_validate(
    {
        "node": "ha1",
        "role": Role.HA,
        "mobile_router": "mr1",
        "bids": [{"bid": b} for b in (1, 2, 3)],
    }
)


def udp(port: int) -> Selector:
    return Selector(next_header=17, dst_port=PortRange(first=port, last=port))


def rule(pid: str, prio: int, sel: Selector, bid: int | None, **kw: Any) -> FlowRule:
    return FlowRule(prio, pid, 6, sel, bid, **kw)


def test_balance_chain_hashes_the_five_tuple_into_bucket_ranges() -> None:
    commands = balance_chain_commands("t", 6, (1, 1, 1, 2))
    name = balance_chain(6, (1, 1, 1, 2))
    assert name.startswith("bal6_4_")
    assert commands[0] == f"add chain inet t {name}"
    ports = "meta l4proto { 6, 17, 33, 132, 136 } jhash ip6 saddr . ip6 daddr . meta l4proto"
    assert f"{ports} . th sport . th dport mod 4" in commands[1]
    assert "jhash ip6 saddr . ip6 daddr . meta l4proto mod 4" in commands[2]
    assert "vmap { 0-2 : goto bid_1, 3 : goto bid_2 }" in commands[1]
    assert balance_chain(6, (1, 2)) != balance_chain(6, (2, 1)) != balance_chain(4, (2, 1))


def test_verdicts_and_marked_bids() -> None:
    bal = rule("b", 1, udp(1), 1, buckets=(1, 2, 2))
    dup = rule("d", 1, udp(2), 2, copies=(1, 3))
    assert verdict(bal) == f"goto {balance_chain(6, (1, 2, 2))}"
    assert verdict(dup) == "goto bid_2"
    assert marked_bids(bal) == (1, 2)
    assert marked_bids(dup) == (2,)
    text = "\n".join(table_commands(assign_layers([bal, dup]), SETTINGS))
    assert "add chain inet multinet_prem bid_1" in text
    assert "bid_3" not in text


def test_dup_table_returns_on_earlier_overlapping_rules_only() -> None:
    net = ipaddress.ip_network("2001:db8:ff::/64")
    rules = [
        rule("early-overlap", 1, Selector(dst_addr=net), None),
        rule("early-apart", 2, Selector(dst_addr=ipaddress.ip_network("2001:db8:fe::/64")), 1),
        rule("dup", 5, Selector(dst_addr=net, next_header=17), 1, copies=(2, 3)),
        rule("later", 9, Selector(dst_addr=net), 2),
    ]
    assert [r.policy_id for r in dup_rules(rules, 6)] == ["early-overlap", "dup"]
    assert dup_rules(rules, 4) == []
    targets = {(6, 2): CopyTarget("fe80::2", "mnvx2")}
    text = dup_table_commands(SETTINGS, rules, targets)
    assert text[:2] == ["add table ip6 multinet_dup", "delete table ip6 multinet_dup"]
    assert 'add rule ip6 multinet_dup copy_2 dup to fe80::2 device "mnvx2"' in text
    assert not any("copy_3" in line for line in text), "no target for BID 3: no copy"
    select = [line for line in text if " select " in line and line.startswith("add rule")]
    assert select[0].startswith(
        "add rule ip6 multinet_dup select ip6 daddr 2001:db8:ff::/64 return"
    )
    assert "jump copy_2" in select[1]
    assert select[2].endswith('return comment "dup 5 -n"')
    assert any("hook prerouting priority -140" in line for line in text)
    # IPv4: nothing to copy, the table is only removed
    assert [line for line in text if " ip multinet_dup" in line] == [
        "add table ip multinet_dup",
        "delete table ip multinet_dup",
    ]


def test_dup_targets_must_be_addresses_of_the_family_and_plain_device_names() -> None:
    rules = [rule("dup", 5, udp(1), 1, copies=(2,))]
    with pytest.raises(ValueError, match="bad copy target"):
        dup_table_commands(SETTINGS, rules, {(6, 2): CopyTarget("10.0.0.1", "b2")})
    with pytest.raises(ValueError, match="bad copy target"):
        dup_table_commands(SETTINGS, rules, {(6, 2): CopyTarget("fe80::2", 'b2" ; flush ruleset')})


def test_packets_out_of_a_pipe_are_never_copied_again() -> None:
    rules = [rule("dup", 5, udp(1), 1, copies=(2,))]
    targets = {(6, 2): CopyTarget("fd6d:6e00:d0::3ea", "mnvx2")}
    text = dup_table_commands(SETTINGS, rules, targets, ["mnvx2", "mnvx1"])
    select = [line for line in text if line.startswith("add rule ip6 multinet_dup select")]
    assert select[0] == 'add rule ip6 multinet_dup select iifname { "mnvx1", "mnvx2" } return'
    with pytest.raises(ValueError, match="bad device name"):
        dup_table_commands(SETTINGS, rules, targets, ['x" } accept ; {'])


def test_a_copy_target_by_destination_is_a_map_of_checked_prefixes() -> None:
    target = CopyTarget(
        "", "mnvx", (("2001:db8:fd::/64", "fd6d::b"), ("2001:db8:ff::/64", "fd6d::a"))
    )
    assert target.statement(6) == (
        "dup to ip6 daddr map { 2001:db8:fd::/64 : fd6d::b, 2001:db8:ff::/64 : fd6d::a } "
        'device "mnvx"'
    )
    with pytest.raises(ValueError, match="bad copy target"):
        target.statement(4)
    with pytest.raises(ValueError):
        CopyTarget("", "mnvx", (("2001:db8:fd::/64 } accept", "fd6d::b"),)).statement(6)
