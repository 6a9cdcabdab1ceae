"""The flow table: what a node enforces, in a form every back end can render and read back.

Policies are compiled into flow rules, one per (policy, address family), in precedence order,
each with a verdict: the BID whose mark the packet gets, or None for drop. The effective BID is
the first usable one of the policy's primary and fallbacks, so a fallback switch is just a
different flow table. Pure code: no kernel, no bus.

A balance rule also carries the BID of each hash bucket (`buckets`; `bid` is the first
bucket's), a duplicate rule the BIDs its copies go to (`copies`; `bid` is the original's), a
priority rule its tiers with their rates (`tiers`; `bid` is the first tier's), as `core.spread`
computes them from the usable BIDs. A rule with none of them is a plain forward or a drop, as
in version 1.
"""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.contracts.errors import Problem
from services.contracts.messages import FallbackState
from services.contracts.policy import (
    PORT_PROTOCOLS,
    Balance,
    Duplicate,
    Forward,
    Policy,
    Priority,
    Selector,
    address_bounds,
)
from services.prem.core.spread import Tiers, balance_buckets, duplicate_paths, priority_tiers


@dataclass(frozen=True)
class FlowRule:
    """One enforceable entry: packets of `family` matching `selector` get `bid` (None = drop)."""

    priority: int
    policy_id: str
    family: int
    selector: Selector
    bid: int | None
    #: Balance: the BID of each hash bucket (at least two buckets, two BIDs).
    buckets: tuple[int, ...] = ()
    #: Duplicate: the BIDs that get a copy of each packet (the original goes to `bid`).
    copies: tuple[int, ...] = ()
    #: Priority: (BID, rate in bytes per second) of each tier, at least two; the last has 0.
    tiers: Tiers = ()

    def verdict_bids(self) -> tuple[int, ...]:
        """Every BID this rule sends packets to (marks for, or copies to)."""
        if self.buckets:
            return tuple(sorted(set(self.buckets)))
        if self.tiers:
            return tuple(sorted(bid for bid, _ in self.tiers))
        return () if self.bid is None else (self.bid, *self.copies)

    def bid_of(self, packet: Packet) -> int | None:
        """The BID whose mark `packet` gets from this rule (a balance picks by flow hash; a
        priority rule's first tier, as no tier is saturated in this model, which meters
        nothing)."""
        if not self.buckets:
            return self.bid
        return self.buckets[flow_hash(packet) % len(self.buckets)]

    def precedence(self) -> tuple[int, str, int]:
        """Sort key: lower priority first, then policy id, then family (deterministic)."""
        return (self.priority, self.policy_id, self.family)

    def matches(self, packet: Packet) -> bool:
        """Whether `packet` matches this rule (the reference semantics every back end follows)."""
        if packet.family != self.family:
            return False
        sel = self.selector
        for match, address in ((sel.src_addr, packet.src), (sel.dst_addr, packet.dst)):
            if match is not None:
                _, low, high = address_bounds(match)
                if not low <= int(address) <= high:
                    return False
        if sel.next_header is not None and packet.next_header != sel.next_header:
            return False
        for port_range, port in ((sel.src_port, packet.src_port), (sel.dst_port, packet.dst_port)):
            if port_range is not None and (
                port is None or not port_range.first <= port <= port_range.last
            ):
                return False
        if sel.dscp is not None and packet.dscp != sel.dscp:
            return False
        return sel.flow_label is None or packet.flow_label == sel.flow_label


FlowTable = tuple[FlowRule, ...]


@dataclass(frozen=True)
class Packet:
    """The header fields a selector can look at."""

    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    next_header: int
    src_port: int | None = None
    dst_port: int | None = None
    dscp: int = 0
    flow_label: int = 0

    @property
    def family(self) -> int:
        """IP version of the packet."""
        return self.src.version


def flow_hash(packet: Packet) -> int:
    """A stable hash of a packet's flow (addresses, protocol, ports for port protocols): the
    in-memory model of the kernel's jhash; every packet of a flow gets the same value."""
    ports = (packet.src_port, packet.dst_port) if packet.next_header in PORT_PROTOCOLS else (0, 0)
    key = f"{packet.src}|{packet.dst}|{packet.next_header}|{ports[0]}|{ports[1]}"
    return zlib.crc32(key.encode())


def effective_bid(policy: Policy, unusable: frozenset[int]) -> int | None:
    """The BID a policy's flows use now: the first usable of primary and fallbacks.

    When none is usable the primary is kept, so flows return by themselves with its routes.
    """
    action = policy.action
    if isinstance(action, Balance):
        return balance_buckets(action, unusable)[0]
    if isinstance(action, Duplicate):
        return duplicate_paths(action, unusable)[0]
    if isinstance(action, Priority):
        return priority_tiers(action, unusable)[0][0]
    if not isinstance(action, Forward):
        return None
    for bid in action.bids():
        if bid not in unusable:
            return bid
    return action.bid


#: Per address family (4, 6), the BIDs that cannot take a duplicate's copy.
Uncopyable = Mapping[int, frozenset[int]]


def by_family(reasons: Mapping[tuple[int, int], str]) -> dict[int, frozenset[int]]:
    """The uncopyable BIDs per family, from a back end's (family, BID) -> reason."""
    found: dict[int, set[int]] = {}
    for family, bid in reasons:
        found.setdefault(family, set()).add(bid)
    return {family: frozenset(bids) for family, bids in found.items()}


def copy_warnings(
    policies: Iterable[Policy], reasons: Mapping[tuple[int, int], str]
) -> tuple[Problem, ...]:
    """Why a duplicate policy's path takes no copy (in the status: the sender should know
    that a BID it named cannot be copied to, and what the kernel lacks for it)."""
    found = []
    for policy in sorted(policies, key=Policy.sort_key):
        action = policy.action
        if not isinstance(action, Duplicate):
            continue
        for family in policy.selector.families():
            for bid in action.bids():
                reason = reasons.get((family, bid))
                if reason is not None:
                    field = "duplicate.path" if bid in action.paths else "duplicate.fallback"
                    text = f"no IPv{family} copy to BID {bid}: {reason}"
                    found.append(Problem(text, policy.id, field))
    return tuple(found)


def _rule(
    policy: Policy, family: int, unusable: frozenset[int], uncopyable: Uncopyable
) -> FlowRule:
    action = policy.action
    if isinstance(action, Balance):
        buckets = balance_buckets(action, unusable)
        many = buckets if len(set(buckets)) > 1 else ()
        return FlowRule(policy.priority, policy.id, family, policy.selector, buckets[0], many)
    if isinstance(action, Duplicate):
        paths = duplicate_paths(action, unusable, uncopyable.get(family, frozenset()))
        return FlowRule(
            policy.priority, policy.id, family, policy.selector, paths[0], copies=paths[1:]
        )
    if isinstance(action, Priority):
        tiers = priority_tiers(action, unusable)
        tiered = tiers if len(tiers) > 1 else ()
        return FlowRule(
            policy.priority, policy.id, family, policy.selector, tiers[0][0], tiers=tiered
        )
    return FlowRule(
        policy.priority, policy.id, family, policy.selector, effective_bid(policy, unusable)
    )


def compile_policies(
    policies: Iterable[Policy],
    unusable: frozenset[int] = frozenset(),
    uncopyable: Uncopyable | None = None,
) -> FlowTable:
    """Flow rules for `policies`, sorted by precedence (priority, then id, then family)."""
    rules = [
        _rule(p, family, unusable, uncopyable or {})
        for p in policies
        for family in p.selector.families()
    ]
    return tuple(sorted(rules, key=FlowRule.precedence))


def fallback_states(
    policies: Iterable[Policy],
    unusable: frozenset[int],
    uncopyable: Uncopyable | None = None,
) -> tuple[FallbackState, ...]:
    """The policies whose primary BID is unusable, with the BID their flows use instead; the
    balance, duplicate and priority policies with any share, path or tier unusable (or, for a
    duplicate, unable to take a copy in some family), with the BIDs they use now."""
    no_copy = frozenset().union(*(uncopyable or {}).values())
    states = []
    for policy in sorted(policies, key=Policy.sort_key):
        action = policy.action
        if isinstance(action, Balance | Duplicate | Priority):
            state = _spread_state(policy.id, action, unusable, no_copy)
            if state is not None:
                states.append(state)
        elif isinstance(action, Forward) and action.bid in unusable:
            active = effective_bid(policy, unusable)
            states.append(
                FallbackState(
                    policy_id=policy.id,
                    primary_bid=action.bid,
                    active_bid=None if active in unusable else active,
                )
            )
    return tuple(states)


def _spread_state(
    policy_id: str,
    action: Balance | Duplicate | Priority,
    unusable: frozenset[int],
    no_copy: frozenset[int],
) -> FallbackState | None:
    if isinstance(action, Balance | Priority):
        if isinstance(action, Balance):
            declared = tuple(share.bid for share in action.shares)
            now = balance_buckets(action, unusable)
        else:
            declared = tuple(tier.bid for tier in action.tiers)
            now = tuple(bid for bid, _ in priority_tiers(action, unusable))
        skipped = tuple(bid for bid in declared if bid in unusable)
    else:
        declared = action.paths
        now = duplicate_paths(action, unusable, no_copy)
        skipped = tuple(bid for bid in declared if bid not in now)
    if not skipped:
        return None
    active = tuple(dict.fromkeys(bid for bid in now if bid not in unusable))
    return FallbackState(
        policy_id=policy_id,
        primary_bid=declared[0],
        active_bid=active[0] if active else None,
        active_bids=active,
        skipped_bids=skipped,
    )


def classify(table: FlowTable, packet: Packet) -> FlowRule | None:
    """The rule that decides `packet`: the first match in precedence order, or None."""
    for rule in table:
        if rule.matches(packet):
            return rule
    return None
