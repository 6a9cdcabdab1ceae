"""One HA worker for many mobile routers: what it does to each router's policies before they
share one table. Pure code: no kernel, no bus.

Each served router is a node of its own on the bus (documents, statuses and versions as for a
worker serving one router), but the HA's table holds every router's policies side by side, so
two things must hold that a one-router worker never needed:

- a router's policies match only that router's traffic. Downlink traffic for a router is
  addressed to its mobile network prefix, so each policy is scoped to it: a selector without
  a destination gets the prefix, one inside the prefix is kept, one outside (or of the other
  address family) is refused. Class policies of every router then have destinations of the
  prefix length, which the nftables back end looks up as masked exact keys (`Layer.masks`);
- two routers may use the same policy id, so each rule carries `<node>:<policy id>` in the
  kernel (node names have no ':'; `kernel_id`, `split_kernel_id`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from services.contracts.errors import PolicyRefused, Problem
from services.contracts.policy import AddressRange, Policy, address_bounds

#: Longest node name of a served router: `<node>:<policy id>` (a policy id has at most 64
#: characters), priority and address forms must fit an nft element comment (128 bytes).
MAX_NODE_LENGTH = 40
#: Between the node and the policy id in a kernel rule's id (a node name has no ':').
SEPARATOR = ":"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ServedRouter:
    """A mobile router this HA worker serves: the node its documents are addressed to, the
    router's id, and its mobile network prefix (where its downlink traffic goes)."""

    node: str
    mobile_router: str
    prefix: IPNetwork


def kernel_id(node: str, policy_id: str) -> str:
    """The id a router's policy has in the shared table."""
    return f"{node}{SEPARATOR}{policy_id}"


def split_kernel_id(value: str) -> tuple[str, str] | None:
    """(node, policy id) of a shared table's rule id; None when it is not one."""
    node, separator, policy_id = value.partition(SEPARATOR)
    return (node, policy_id) if separator and node and policy_id else None


def scope(policies: tuple[Policy, ...], router: ServedRouter) -> tuple[Policy, ...]:
    """The policies limited to the router's prefix, ids unchanged; PolicyRefused naming each
    policy whose destination lies outside it."""
    prefix = router.prefix
    family, low, high = address_bounds(prefix)
    scoped: list[Policy] = []
    problems: list[Problem] = []
    for policy in policies:
        selector = policy.selector
        destination = selector.dst_addr
        if destination is None:
            if family not in selector.families():
                problems.append(_outside(policy, router, "an address of the other family"))
                continue
            selector = selector.model_copy(update={"dst_addr": prefix})
            scoped.append(policy.model_copy(update={"selector": selector}))
            continue
        d_family, d_low, d_high = address_bounds(destination)
        if d_family != family or d_low < low or d_high > high:
            problems.append(_outside(policy, router, _text(destination)))
            continue
        scoped.append(policy)
    if problems:
        raise PolicyRefused(problems)
    return tuple(scoped)


def _text(match: IPNetwork | AddressRange) -> str:
    if isinstance(match, AddressRange):
        return f"{match.first}-{match.last}"
    return match.with_prefixlen


def _outside(policy: Policy, router: ServedRouter, what: str) -> Problem:
    return Problem(
        f"destination {what} is outside mobile router {router.mobile_router!r}'s prefix "
        f"{router.prefix.with_prefixlen}: this HA enforces a router's policies on its own "
        "prefix only",
        policy.id,
        "selector.dst-addr",
    )
