"""Priority policies in the PREM's pure core: tiers per usable BID, rules, nft text, refusals.

The kernel behaviour (flows pinned, new flows overflowing) is in
`tests/kernel/test_priority_kernel.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.contracts.errors import PolicyRefused
from services.contracts.policy import Install, Policy, Priority, Tier
from services.prem.core.flowtable import compile_policies, fallback_states
from services.prem.core.nft_layers import assign_layers
from services.prem.core.nft_render import (
    marked_bids,
    parse_priority_chain,
    priority_chain,
    priority_chain_commands,
    spread_chain_names,
    table_commands,
    verdict,
)
from services.prem.core.policyset import DesiredState, apply_message
from services.prem.core.settings import NodeSettings, Role
from services.prem.core.spread import priority_tiers
from tests.prem import factories

SETTINGS = NodeSettings.model_validate(
    {
        "node": "ha1",
        "role": Role.HA,
        "mobile_router": "mr1",
        "bids": [{"bid": b} for b in (1, 2, 3)],
    }
)
THREE = Priority(
    tiers=(Tier(bid=1, rate_bps=8_000_000), Tier(bid=2, rate_bps=800_000), Tier(bid=3)),
    fallbacks=(4,),
)


def policy(action: Priority, pid: str = "p") -> Policy:
    return Policy(id=pid, priority=10, action=action)


def test_tiers_are_the_usable_ones_in_bytes_per_second_and_the_last_takes_the_rest() -> None:
    assert priority_tiers(THREE, frozenset()) == ((1, 1_000_000), (2, 100_000), (3, 0))
    assert priority_tiers(THREE, frozenset({1})) == ((2, 100_000), (3, 0))
    assert priority_tiers(THREE, frozenset({3})) == ((1, 1_000_000), (2, 0)), "no rate on last"
    assert priority_tiers(THREE, frozenset({1, 2, 3})) == ((4, 0),), "the fallback takes all"
    assert priority_tiers(THREE, frozenset({1, 2, 3, 4})) == ((1, 1_000_000), (2, 100_000), (3, 0))


def test_compiled_rules_carry_tiers_or_become_a_forward() -> None:
    rules = compile_policies([policy(THREE)])
    assert {r.family for r in rules} == {4, 6}
    assert all(r.bid == 1 and r.tiers == ((1, 1_000_000), (2, 100_000), (3, 0)) for r in rules)
    assert rules[0].verdict_bids() == (1, 2, 3)
    alone = compile_policies([policy(THREE)], frozenset({1, 2}))
    assert {(r.bid, r.tiers) for r in alone} == {(3, ())}
    states = fallback_states([policy(THREE)], frozenset({2}))
    assert [(s.primary_bid, s.active_bids, s.skipped_bids) for s in states] == [(1, (1, 3), (2,))]
    assert fallback_states([policy(THREE)], frozenset()) == ()


def test_chain_names_say_their_tiers_and_are_the_policys_own() -> None:
    tiers = priority_tiers(THREE, frozenset())
    name = priority_chain("p", tiers)
    assert name.startswith("pri_")
    assert name.endswith("_1r1000000_2r100000_3")
    assert parse_priority_chain(name) == tiers
    assert priority_chain("q", tiers) != name, "two classes never share a meter"
    assert parse_priority_chain("bal6_4_0123456789ab") is None
    assert parse_priority_chain("pri_0123456789ab_1") is None, "one tier is a forward"


def test_chain_pins_flows_meters_tiers_and_overflows_new_flows() -> None:
    tiers = ((1, 1000), (2, 0))
    name = priority_chain("p", tiers)
    commands = priority_chain_commands("t", name, tiers, SETTINGS)
    mask, mark1, mark2 = SETTINGS.mark_mask, SETTINGS.mark_of(1), SETTINGS.mark_of(2)
    ct = f"ct mark and {mask:#010x}"
    rule = f"add rule inet t {name}"
    assert commands[0].startswith(f"add set inet t {name}_sat {{ type mark ; flags dynamic")
    assert commands[2:] == [
        f"{rule} ct state {{ invalid, untracked }} goto bid_1",
        f"{rule} {ct} {mark1:#010x} limit rate over 1000 bytes/second "
        f"update @{name}_sat {{ {ct} }}",
        f"{rule} {ct} {mark1:#010x} goto bid_1",
        f"{rule} {ct} {mark2:#010x} goto bid_2",
        f"{rule} ct mark set ct mark and {~mask & 0xFFFFFFFF:#010x} or {mark1:#010x}",
        f"{rule} {ct} != @{name}_sat goto bid_1",
        f"{rule} ct mark set ct mark and {~mask & 0xFFFFFFFF:#010x} or {mark2:#010x} goto bid_2",
    ]


def test_the_table_holds_one_chain_per_policy_for_both_families() -> None:
    rules = compile_policies([policy(THREE), policy(THREE, "other")])
    layers = assign_layers(rules)
    text = "\n".join(table_commands(layers, SETTINGS))
    assert len(spread_chain_names(layers)) == 2
    for rule in rules:
        assert verdict(rule) == f"goto {priority_chain(rule.policy_id, rule.tiers)}"
        assert marked_bids(rule) == (1, 2, 3)
        assert f"add chain inet multinet_prem {priority_chain(rule.policy_id, rule.tiers)}" in text
    assert text.count("limit rate over 1000000 bytes/second") == 2, "one meter per class"
    # Every tier's marking chain exists: the chains jump to each of them.
    for bid in (1, 2, 3):
        assert f"add chain inet multinet_prem bid_{bid} " in text


def test_undeclared_tier_bids_are_refused_naming_the_field(tmp_path: Path) -> None:
    op = Install(policies=(policy(THREE),))
    with pytest.raises(PolicyRefused) as info:
        apply_message(
            DesiredState(node="ha1"), factories.message(1, op), factories.settings(tmp_path)
        )
    assert {(p.policy_id, p.field) for p in info.value.problems} == {("p", "priority.fallback")}
    bad = Priority(tiers=(Tier(bid=9, rate_bps=8000), Tier(bid=1)))
    with pytest.raises(PolicyRefused) as info:
        apply_message(
            DesiredState(node="ha1"),
            factories.message(1, Install(policies=(policy(bad),))),
            factories.settings(tmp_path),
        )
    assert [(p.policy_id, p.field) for p in info.value.problems] == [("p", "priority.tier")]


def test_the_iptables_back_end_is_refused_by_the_enforcer_before_the_kernel(
    tmp_path: Path,
) -> None:
    from services.contracts import policy_xml
    from services.prem.backends.memory import MemoryBackend
    from services.prem.enforcer import Enforcer

    backend = MemoryBackend()
    backend.actions = frozenset({"forward", "drop"})  # what the iptables back end enforces
    enforcer = Enforcer(factories.settings(tmp_path), backend)
    two = Priority(tiers=(Tier(bid=1, rate_bps=8000), Tier(bid=2)))
    doc = policy_xml.render(factories.message(1, Install(policies=(policy(two),))))
    status = enforcer.handle_document(doc)
    assert status.result == "refused"
    assert [(r.policy_id, r.field) for r in status.refusals] == [("p", "priority")]
    assert "cannot enforce priority policies" in status.refusals[0].reason
    assert backend.applied_batches == 0
