"""Balance and duplicate in the pure core: buckets, paths, fallbacks, status, memory back end."""

from __future__ import annotations

import ipaddress
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.contracts.errors import PolicyRefused
from services.contracts.policy import (
    Balance,
    Duplicate,
    Install,
    Policy,
    PortRange,
    Selector,
    Share,
)
from services.prem.backends.memory import MemoryBackend
from services.prem.core.flowtable import Packet, compile_policies, fallback_states
from services.prem.core.policyset import DesiredState, apply_message
from services.prem.core.reconcile import plan
from services.prem.core.spread import balance_buckets, base_buckets, duplicate_paths, runs
from tests import policy_strategies
from tests.prem import factories


def balance(*weights: tuple[int, int], fallbacks: tuple[int, ...] = ()) -> Balance:
    return Balance(shares=tuple(Share(bid=b, weight=w) for b, w in weights), fallbacks=fallbacks)


def policy(action: Balance | Duplicate, pid: str = "p") -> Policy:
    selector = Selector(next_header=17, dst_port=PortRange(first=5001, last=5001))
    return Policy(id=pid, priority=10, selector=selector, action=action)


def test_weights_become_buckets_divided_by_their_gcd() -> None:
    assert base_buckets(balance((1, 3), (2, 1))) == (1, 1, 1, 2)
    assert base_buckets(balance((1, 1000), (2, 1000))) == (1, 2)
    assert base_buckets(balance((1, 6), (2, 4), (3, 2))) == (1, 1, 1, 2, 2, 3)
    assert len(base_buckets(balance((1, 999), (2, 1000)))) == 1999
    assert runs((1, 1, 2, 2, 2, 1)) == [(0, 1, 1), (2, 4, 2), (5, 5, 1)]


def test_an_unusable_share_goes_to_the_others_by_weight_and_nothing_else_moves() -> None:
    action = balance((1, 2), (2, 2), (3, 4))
    assert base_buckets(action) == (1, 2, 3, 3)
    assert balance_buckets(action, {2}) == (1, 3, 3, 3), "BID 3 weighs twice BID 1"
    assert balance_buckets(action, {3}) == (1, 2, 1, 2), "two buckets, split evenly"


def test_no_usable_share_takes_the_first_usable_fallback_or_keeps_the_layout() -> None:
    action = balance((1, 1), (2, 1), fallbacks=(3, 4))
    assert balance_buckets(action, {1, 2}) == (3,)
    assert balance_buckets(action, {1, 2, 3}) == (4,)
    assert balance_buckets(action, {1, 2, 3, 4}) == (1, 2)


@settings(max_examples=300, deadline=None)
@given(policy_strategies.balances(st.integers(1, 12)), st.sets(st.integers(1, 12)))
def test_buckets_keep_their_count_and_usable_buckets_never_move(
    action: Balance, unusable: set[int]
) -> None:
    base = base_buckets(action)
    now = balance_buckets(action, unusable)
    shares = [s.bid for s in action.shares]
    if all(bid in unusable for bid in shares):
        return
    assert len(now) == len(base)
    for old, new in zip(base, now, strict=True):
        assert new not in unusable
        if old not in unusable:
            assert new == old
    # Each usable share holds its own buckets plus its part of the unusable ones.
    counts = Counter(now)
    usable = [s for s in action.shares if s.bid not in unusable]
    total = sum(s.weight for s in usable)
    moved = sum(1 for old in base if old in unusable)
    for share in usable:
        own = base.count(share.bid)
        assert abs(counts[share.bid] - own - moved * share.weight / total) <= len(action.shares)


def test_duplicate_paths_replace_unusable_and_uncopyable_ones() -> None:
    action = Duplicate(paths=(1, 2), fallbacks=(3, 4))
    assert duplicate_paths(action, set()) == (1, 2)
    assert duplicate_paths(action, {1}) == (2, 3)
    assert duplicate_paths(action, {2}) == (1, 3)
    assert duplicate_paths(action, {2, 3}) == (1, 4)
    assert duplicate_paths(action, {2, 3, 4}) == (1,)
    assert duplicate_paths(action, {1, 2, 3, 4}) == (1, 2)
    assert duplicate_paths(action, set(), uncopyable={2}) == (1, 3)
    assert duplicate_paths(action, set(), uncopyable={1}) == (1, 2), "1 takes the original"


def test_compiled_rules_carry_buckets_or_copies() -> None:
    rules = compile_policies(
        [policy(balance((1, 3), (2, 1)), "b"), policy(Duplicate(paths=(1, 2)), "d")]
    )
    by_id = {(r.policy_id, r.family): r for r in rules}
    assert by_id["b", 6].buckets == (1, 1, 1, 2)
    assert by_id["b", 6].bid == 1
    assert by_id["d", 4].bid == 1
    assert by_id["d", 4].copies == (2,)
    assert by_id["d", 6].verdict_bids() == (1, 2)
    # One usable share left: a plain forward; one path left: no copies.
    alone = compile_policies([policy(balance((1, 3), (2, 1)))], frozenset({1}))
    assert {(r.bid, r.buckets) for r in alone} == {(2, ())}
    single = compile_policies([policy(Duplicate(paths=(1, 2)))], frozenset({2}))
    assert {(r.bid, r.copies) for r in single} == {(1, ())}
    uncopyable = compile_policies([policy(Duplicate(paths=(1, 2)))], uncopyable={4: frozenset({2})})
    assert {r.family: r.copies for r in uncopyable} == {4: (), 6: (2,)}


def test_fallback_states_name_what_balance_and_duplicate_use_now() -> None:
    policies = [
        policy(balance((1, 1), (2, 1), (3, 2)), "b"),
        policy(Duplicate(paths=(1, 2), fallbacks=(3,)), "d"),
    ]
    assert fallback_states(policies, frozenset()) == ()
    states = {s.policy_id: s for s in fallback_states(policies, frozenset({2}))}
    assert states["b"].active_bids == (1, 3)
    assert states["b"].skipped_bids == (2,)
    assert states["b"].primary_bid == 1
    assert states["b"].active_bid == 1
    assert states["d"].active_bids == (1, 3)
    assert states["d"].skipped_bids == (2,)
    copy_lost = fallback_states(policies[1:], frozenset(), {6: frozenset({2, 3})})
    assert copy_lost[0].active_bids == (1,)
    assert copy_lost[0].skipped_bids == (2,)


def test_undeclared_bids_of_new_actions_are_refused_naming_the_field(tmp_path: Path) -> None:
    op = Install(
        policies=(
            policy(balance((1, 1), (9, 1)), "b"),
            policy(Duplicate(paths=(1, 2), fallbacks=(8,)), "d"),
        )
    )
    with pytest.raises(PolicyRefused) as info:
        apply_message(
            DesiredState(node="ha1"), factories.message(1, op), factories.settings(tmp_path)
        )
    found = {(p.policy_id, p.field) for p in info.value.problems}
    assert found == {("b", "balance.share"), ("d", "duplicate.fallback")}


def udp_packet(sport: int, dport: int = 5001) -> Packet:
    return Packet(
        src=ipaddress.ip_address("2001:db8:a::1"),
        dst=ipaddress.ip_address("2001:db8:ff::1"),
        next_header=17,
        src_port=sport,
        dst_port=dport,
    )


def test_memory_backend_splits_flows_by_weight_pins_them_and_copies() -> None:
    backend = MemoryBackend()
    desired = compile_policies([policy(balance((1, 3), (2, 1)))])
    backend.apply(desired, plan(desired, backend.read()))
    assert backend.read() == desired
    assert not plan(desired, backend.read())
    flows = [udp_packet(40000 + i) for i in range(400)]
    first = [backend.bid_for(p) for p in flows]
    counts = Counter(first)
    assert abs(counts[1] - 300) <= 40
    assert counts[1] + counts[2] == 400
    assert [backend.bid_for(p) for p in flows] == first, "a flow keeps its BID"
    # BID 2 unusable: its flows go to 1; flows on 1 stay.
    moved = compile_policies([policy(balance((1, 3), (2, 1)))], frozenset({2}))
    backend.apply(moved, plan(moved, backend.read()))
    assert {backend.bid_for(p) for p in flows} == {1}
    duplicate = compile_policies([policy(Duplicate(paths=(2, 1)))])
    backend.apply(duplicate, plan(duplicate, backend.read()))
    assert backend.paths_for(udp_packet(1)) == (2, 1)


# ---- the enforcer: version-2 documents end to end on the memory back end ---------------------


def _doc(version: int, *policies: Policy) -> bytes:
    from services.contracts import policy_xml

    return policy_xml.render(factories.message(version, Install(policies=policies)))


def test_enforcer_applies_balance_and_duplicate_and_reports_their_fallbacks(
    tmp_path: Path,
) -> None:
    from services.prem.enforcer import Enforcer

    backend = MemoryBackend()
    backend.no_copy = {(4, 3): "no route", (6, 3): "no route"}
    enforcer = Enforcer(factories.settings(tmp_path), backend)
    doc = _doc(
        1,
        policy(balance((1, 1), (2, 1)), "b"),
        Policy(
            id="d",
            priority=5,
            selector=Selector(next_header=17, dst_port=PortRange(first=1, last=1)),
            action=Duplicate(paths=(1, 3), fallbacks=(2,)),
        ),
    )
    status = enforcer.handle_document(doc)
    assert status.result == "applied", status
    assert backend.paths_for(
        udp_packet(1).__class__(**{**udp_packet(1).__dict__, "dst_port": 1})
    ) == (1, 2)
    # BID 3 cannot take a copy: its fallback BID 2 does, and the status says so
    assert [(f.policy_id, f.active_bids, f.skipped_bids) for f in status.fallbacks] == [
        ("d", (1, 2), (3,))
    ]
    assert [(w.policy_id, w.field, w.reason) for w in status.warnings] == [
        ("d", "duplicate.path", f"no IPv{family} copy to BID 3: no route") for family in (4, 6)
    ]
    moved = enforcer.handle_unusable(frozenset({2}))
    assert moved is not None
    assert {f.policy_id: f.active_bids for f in moved.fallbacks} == {"b": (1,), "d": (1,)}
    assert {backend.bid_for(udp_packet(40000 + i)) for i in range(50)} == {1}


def test_enforcer_refuses_actions_its_back_end_lacks_and_changes_nothing(tmp_path: Path) -> None:
    from services.prem.enforcer import Enforcer

    backend = MemoryBackend()
    backend.actions = frozenset({"forward", "drop"})
    enforcer = Enforcer(factories.settings(tmp_path), backend)
    status = enforcer.handle_document(_doc(1, policy(Duplicate(paths=(1, 2)), "d")))
    assert status.result == "refused"
    assert [(r.policy_id, r.field) for r in status.refusals] == [("d", "duplicate")]
    assert "memory back end cannot enforce duplicate policies" in status.refusals[0].reason
    assert status.version == 0
    assert backend.applied_batches == 0


def test_enforcer_follows_route_changes_of_copies(tmp_path: Path) -> None:
    from services.prem.enforcer import Enforcer

    backend = MemoryBackend()
    enforcer = Enforcer(factories.settings(tmp_path), backend)
    assert enforcer.handle_routes() is None, "no duplicate policy: nothing to recheck"
    enforcer.handle_document(_doc(1, policy(Duplicate(paths=(1, 2)), "d")))
    assert backend.paths_for(udp_packet(1)) == (1, 2)
    assert enforcer.handle_routes() is None, "nothing changed"
    backend.no_copy = {(6, 2): "the IPv6 route of table 1002 has no gateway"}
    status = enforcer.handle_routes()
    assert status is not None
    assert status.result == "fallback"
    assert [(f.policy_id, f.skipped_bids) for f in status.fallbacks] == [("d", (2,))]
    assert backend.paths_for(udp_packet(1)) == (1,)
    backend.no_copy = {}
    status = enforcer.handle_routes()
    assert status is not None
    assert status.fallbacks == ()
    assert backend.paths_for(udp_packet(1)) == (1, 2)
