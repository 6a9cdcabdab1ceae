"""The flow table: what a node enforces, in a form every back end can render and read back.

Policies are compiled into flow rules, one per (policy, address family), in precedence order,
each with a verdict: the BID whose mark the packet gets, or None for drop. The effective BID is
the first usable one of the policy's primary and fallbacks, so a fallback switch is just a
different flow table. Pure code: no kernel, no bus.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from services.contracts.messages import FallbackState
from services.contracts.policy import Forward, Policy, Selector, address_bounds


@dataclass(frozen=True)
class FlowRule:
    """One enforceable entry: packets of `family` matching `selector` get `bid` (None = drop)."""

    priority: int
    policy_id: str
    family: int
    selector: Selector
    bid: int | None

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


def effective_bid(policy: Policy, unusable: frozenset[int]) -> int | None:
    """The BID a policy's flows use now: the first usable of primary and fallbacks.

    When none is usable the primary is kept, so flows return by themselves with its routes.
    """
    action = policy.action
    if not isinstance(action, Forward):
        return None
    for bid in action.bids():
        if bid not in unusable:
            return bid
    return action.bid


def compile_policies(
    policies: Iterable[Policy], unusable: frozenset[int] = frozenset()
) -> FlowTable:
    """Flow rules for `policies`, sorted by precedence (priority, then id, then family)."""
    rules = [
        FlowRule(p.priority, p.id, family, p.selector, effective_bid(p, unusable))
        for p in policies
        for family in p.selector.families()
    ]
    return tuple(sorted(rules, key=FlowRule.precedence))


def fallback_states(
    policies: Iterable[Policy], unusable: frozenset[int]
) -> tuple[FallbackState, ...]:
    """The policies whose primary BID is unusable, with the BID their flows use instead."""
    states = []
    for policy in sorted(policies, key=Policy.sort_key):
        action = policy.action
        if isinstance(action, Forward) and action.bid in unusable:
            active = effective_bid(policy, unusable)
            states.append(
                FallbackState(
                    policy_id=policy.id,
                    primary_bid=action.bid,
                    active_bid=None if active in unusable else active,
                )
            )
    return tuple(states)


def classify(table: FlowTable, packet: Packet) -> FlowRule | None:
    """The rule that decides `packet`: the first match in precedence order, or None."""
    for rule in table:
        if rule.matches(packet):
            return rule
    return None
