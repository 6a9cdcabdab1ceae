"""Policy routing of a PREM worker in the kernel: the `fwmark -> table` rules of
`core.rules`, through netlink.

The worker owns exactly one rule priority (`rule_priority`); it reconciles the rules there
against the declared BIDs and never touches rules at any other priority. Every change is read
back from the kernel afterwards.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from services.contracts.errors import KernelError
from services.prem.core.nft_render import CopyTarget
from services.prem.core.rules import AF_INET, AF_INET6, FAMILIES, RuleKey, desired_rules, plan_rules
from services.prem.core.settings import NodeSettings

log = logging.getLogger(__name__)

_FR_ACT_TO_TBL = 1
_MAX_DELETE_PASSES = 8


@contextmanager
def _session(ipr: IPRoute | None) -> Iterator[Any]:
    """Use the caller's socket, or open one (in the current netns) for this call only."""
    if ipr is not None:
        yield ipr
        return
    own = IPRoute()
    try:
        yield own
    finally:
        own.close()


def _int_attr(msg: Any, name: str, default: int) -> int:
    value = msg.get_attr(name)
    return default if value is None else int(value)


def _key_of(msg: Any) -> RuleKey:
    """FRA_TABLE holds tables above 255; the header field then only says 252 (compat)."""
    table = _int_attr(msg, "FRA_TABLE", int(msg["table"]))
    return (
        int(msg["family"]),
        _int_attr(msg, "FRA_FWMARK", 0),
        _int_attr(msg, "FRA_FWMASK", 0),
        table,
    )


def _dump_rules(ipr: Any, family: int) -> list[Any]:
    try:
        return list(ipr.get_rules(family=family))
    except NetlinkError as exc:
        raise KernelError("dump rules", str(exc), exc.code) from exc


def _read_keys(ipr: Any, priority: int) -> set[RuleKey]:
    return {
        _key_of(msg)
        for family in FAMILIES
        for msg in _dump_rules(ipr, family)
        if _int_attr(msg, "FRA_PRIORITY", 0) == priority
    }


def _rule_fields(key: RuleKey, priority: int) -> dict[str, int]:
    family, mark, mask, table = key
    fields = {"family": family, "priority": priority, "table": table}
    if mark or mask:
        fields["fwmark"] = mark
        fields["fwmask"] = mask
    return fields


def _change(ipr: Any, command: str, key: RuleKey, priority: int) -> None:
    """Add or delete one rule; "already exists" on add and "not found" on delete are success."""
    fields = _rule_fields(key, priority)
    if command == "add":
        fields["action"] = _FR_ACT_TO_TBL
    benign = errno.EEXIST if command == "add" else errno.ENOENT
    try:
        ipr.rule(command, **fields)
    except NetlinkError as exc:
        if exc.code == benign:
            return
        raise KernelError(f"rule {command} {fields}", str(exc), exc.code) from exc


def _delete_until_gone(ipr: Any, priority: int, keep: set[RuleKey]) -> None:
    """Delete rules outside `keep`, re-reading: several kernel rules can share one key."""
    for _ in range(_MAX_DELETE_PASSES):
        stale = plan_rules(keep, _read_keys(ipr, priority)).remove
        if not stale:
            return
        for key in stale:
            _change(ipr, "del", key, priority)


def owned_rules(settings: NodeSettings, ipr: IPRoute | None = None) -> set[RuleKey]:
    """The rules at our priority, as read back from the kernel (both families)."""
    with _session(ipr) as sock:
        return _read_keys(sock, settings.rule_priority)


def ensure_rules(settings: NodeSettings, ipr: IPRoute | None = None) -> None:
    """Make the rules at our priority exactly the desired ones, then verify by reading back.

    Stale rules (a BID removed from the config) are deleted first. Additions are computed from a
    fresh read after the deletes, because a delete matches loosely in the kernel and could take a
    rule we want along with it.
    """
    priority = settings.rule_priority
    wanted = desired_rules(settings)
    with _session(ipr) as sock:
        plan = plan_rules(wanted, _read_keys(sock, priority))
        _delete_until_gone(sock, priority, keep=wanted)
        for key in plan_rules(wanted, _read_keys(sock, priority)).add:
            _change(sock, "add", key, priority)
        actual = _read_keys(sock, priority)
    if actual != wanted:
        raise KernelError(
            "ensure rules",
            f"read back at priority {priority}: missing {sorted(wanted - actual)}, "
            f"unexpected {sorted(actual - wanted)}",
        )
    if plan:
        log.info(
            "node %s: rules at priority %d: removed %d, added %d",
            settings.node,
            priority,
            len(plan.remove),
            len(plan.add),
        )


def remove_rules(settings: NodeSettings, ipr: IPRoute | None = None) -> None:
    """Delete every rule at our priority (both families), ours or stale; others stay."""
    priority = settings.rule_priority
    with _session(ipr) as sock:
        _delete_until_gone(sock, priority, keep=set())
        left = _read_keys(sock, priority)
    if left:
        raise KernelError("remove rules", f"still at priority {priority}: {sorted(left)}")


#: Route types a copy can follow (RTN_UNICAST); blackhole, unreachable and the like cannot.
_RTN_UNICAST = 1
_FAMILY_OF = {AF_INET6: 6, AF_INET: 4}


def _route_table(msg: Any) -> int:
    return _int_attr(msg, "RTA_TABLE", int(msg["table"]))


def _dump_routes(ipr: Any, family: int) -> list[Any]:
    try:
        return list(ipr.route("dump", family=family))
    except NetlinkError as exc:
        raise KernelError("dump routes", str(exc), exc.code) from exc


def _copy_route(routes: list[Any], gateways: set[str]) -> Any | None:
    """The route a copy follows: a host route to a duplicate gateway of this table (an
    address a `to <address> lookup <table>` rule sends here), else the default route, else
    the widest prefix (the mobile network prefix at an HA)."""
    unicast = [m for m in routes if int(m["type"]) == _RTN_UNICAST]
    for msg in unicast:
        if msg["dst_len"] in (32, 128) and str(msg.get_attr("RTA_DST")) in gateways:
            return msg
    return min(unicast, key=lambda m: int(m["dst_len"]), default=None)


def _duplicate_gateways(ipr: Any, family: int) -> dict[int, set[str]]:
    """Per table, the host addresses that a rule `to <address> lookup <table>` (no other
    selector) sends into it: a copy addressed there is routed by that table."""
    found: dict[int, set[str]] = {}
    for msg in _dump_rules(ipr, family):
        host = msg["dst_len"] in (32, 128)
        others = ("FRA_SRC", "FRA_FWMARK", "FRA_IIFNAME", "FRA_OIFNAME", "FRA_IP_PROTO")
        if host and msg.get_attr("FRA_DST") and not any(msg.get_attr(a) for a in others):
            table = _int_attr(msg, "FRA_TABLE", int(msg["table"]))
            found.setdefault(table, set()).add(str(msg.get_attr("FRA_DST")))
    return found


@dataclass(frozen=True)
class CopyPaths:
    """Where copies go per (family, BID), why some BIDs take none, and every device the BID
    tables route by (a packet that arrives from one of them has crossed a pipe already)."""

    targets: dict[tuple[int, int], CopyTarget]
    reasons: dict[tuple[int, int], str]
    devices: frozenset[str]


def copy_targets(settings: NodeSettings, ipr: IPRoute | None = None) -> CopyPaths:
    """Where a duplicate's copy for each declared BID goes, learnt from the BID's table.

    Per (family 4 or 6, BID): the kernel routes a copy by its `dup to <address> device
    <device>` alone, without any mark. So a copy goes to the BID's duplicate gateway where
    the table has one: a host route in the table to an address that a rule `to <address>
    lookup <table>` sends there (the copy then takes that route, encapsulation included);
    else to the gateway and device of the table's default route (else its widest prefix).
    The second mapping says why a BID cannot take a copy: no route for the family, no
    gateway on it, several next hops, or an encapsulation (lwtunnel) that a copy routed to
    the gateway would not get.
    """
    tables = {settings.table_of(bid): bid for bid in settings.bid_numbers()}
    targets: dict[tuple[int, int], CopyTarget] = {}
    reasons: dict[tuple[int, int], str] = {}
    devices: set[str] = set()
    with _session(ipr) as sock:
        names = {int(m["index"]): str(m.get_attr("IFLA_IFNAME")) for m in sock.get_links()}
        for family in FAMILIES:
            version = _FAMILY_OF[family]
            gateways = _duplicate_gateways(sock, family)
            found: dict[int, list[Any]] = {}
            for msg in _dump_routes(sock, family):
                table = _route_table(msg)
                if table in tables:
                    found.setdefault(table, []).append(msg)
                    oif = msg.get_attr("RTA_OIF")
                    if oif is not None and int(oif) in names:
                        devices.add(names[int(oif)])
            for table, bid in tables.items():
                found_target = _table_target(
                    table, version, found.get(table, []), gateways.get(table, set()), names
                )
                if isinstance(found_target, CopyTarget):
                    targets[version, bid] = found_target
                else:
                    reasons[version, bid] = found_target
    return CopyPaths(targets, reasons, frozenset(devices))


def _table_target(
    table: int, version: int, routes: list[Any], gateways: set[str], names: dict[int, str]
) -> CopyTarget | str:
    """Where a copy for one BID table and family goes, or why it cannot go anywhere."""
    if len(gateways) > 1:
        # An HA's table holds one per mobile router: a copy takes its destination's.
        return _by_destination(table, version, routes, gateways, names)
    route = _copy_route(routes, gateways)
    if route is None:
        return f"table {table} has no IPv{version} route"
    oif = route.get_attr("RTA_OIF")
    device = None if oif is None else names.get(int(oif))
    if str(route.get_attr("RTA_DST")) in gateways and device is not None:
        return CopyTarget(str(route.get_attr("RTA_DST")), device)
    gateway = route.get_attr("RTA_GATEWAY")
    problem = _route_problem(route, gateway is not None and device is not None)
    if problem is not None or gateway is None or device is None:
        return f"the IPv{version} route of table {table} {problem or 'has no gateway'}"
    return CopyTarget(str(gateway), device)


def _route_problem(route: Any, has_gateway: bool) -> str | None:
    if route.get_attr("RTA_MULTIPATH") is not None:
        return "has several next hops"
    if route.get_attr("RTA_ENCAP") is not None:
        return (
            "encapsulates (lwtunnel), and a copy sent to its gateway would leave without that "
            "encapsulation (the pipe has no duplicate gateway)"
        )
    return None if has_gateway else "has no gateway"


def _way(msg: Any) -> tuple[object, ...]:
    """What makes two routes lead the same way: next hop, device and encapsulation."""
    return tuple(
        msg.get_attr(name) for name in ("RTA_GATEWAY", "RTA_OIF", "RTA_ENCAP_TYPE", "RTA_ENCAP")
    )


def _by_destination(
    table: int, version: int, routes: list[Any], gateways: set[str], names: dict[int, str]
) -> CopyTarget | str:
    """A table with several duplicate gateways (an HA's, one per mobile router): each prefix
    route is paired with the gateway whose host route leads the same way (same next hop,
    device and encapsulation), so a copy takes the gateway of its destination's prefix."""
    unicast = [m for m in routes if int(m["type"]) == _RTN_UNICAST]
    hosts = {_way(m): m for m in unicast if str(m.get_attr("RTA_DST")) in gateways}
    pairs: list[tuple[str, str]] = []
    devices: set[str] = set()
    for msg in unicast:
        dst = str(msg.get_attr("RTA_DST"))
        host = hosts.get(_way(msg))
        if dst in gateways or int(msg["dst_len"]) == 0 or host is None:
            continue
        prefix = ipaddress.ip_network(f"{dst}/{msg['dst_len']}").with_prefixlen
        pairs.append((prefix, str(ipaddress.ip_address(host.get_attr("RTA_DST")))))
        oif = msg.get_attr("RTA_OIF")
        devices.add(names.get(int(oif), "") if oif is not None else "")
    if not pairs:
        return (
            f"table {table} holds {len(gateways)} duplicate gateways and no IPv{version} "
            "prefix route leading their way"
        )
    if len(devices) != 1 or "" in devices:
        return (
            f"the duplicate gateways of table {table} leave by several devices "
            f"({', '.join(sorted(devices))}): one dup statement names one"
        )
    return CopyTarget("", devices.pop(), tuple(sorted(pairs)))
