"""Which policy-routing rules a node wants, and the change from what the kernel holds.

One `fwmark -> table` rule per BID and family, at the node's own priority: a marked packet
finds its BID's table through it. `routing` (the shell) reads and changes the kernel's rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.prem.core.settings import NodeSettings

RuleKey = tuple[int, int, int, int]
"""(family, fwmark, fwmask, table) of one rule at our priority."""

#: Linux's address family numbers (`socket.AF_INET6`, `socket.AF_INET`), as netlink carries them.
AF_INET6 = 10
AF_INET = 2

FAMILIES: tuple[int, ...] = (AF_INET6, AF_INET)
"""IPv6 is the primary family; IPv4 rules are kept too so marked IPv4 traffic also moves."""


@dataclass(frozen=True)
class RulePlan:
    """Rules to delete and to add at our priority so the kernel holds the desired set."""

    remove: tuple[RuleKey, ...] = ()
    add: tuple[RuleKey, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.remove or self.add)


def desired_rules(settings: NodeSettings) -> set[RuleKey]:
    """Per BID and family: `fwmark mark_of(bid)/mark_mask lookup table_of(bid)`."""
    return {
        (family, settings.mark_of(bid), settings.mark_mask, settings.table_of(bid))
        for bid in settings.bid_numbers()
        for family in FAMILIES
    }


def plan_rules(desired: Iterable[RuleKey], actual: Iterable[RuleKey]) -> RulePlan:
    """Pure diff, deletes first; equal sets give an empty plan, so a second apply is a no-op."""
    wanted = set(desired)
    present = set(actual)
    return RulePlan(remove=tuple(sorted(present - wanted)), add=tuple(sorted(wanted - present)))
