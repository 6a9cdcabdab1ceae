"""The bit pipes in the kernel: SRv6 encap.red routes, End.DT6 decap, and their rules.

One pipe per BID is an SRv6 `encap.red` route with one segment, i.e. plain IPv6-in-IPv6 from
one end to the other (KERNEL.md; no ip6tnl here). The receiving end decapsulates with a
`seg6local End.DT6` route for its own endpoint address in a decap table; one rule
`ipproto 41 lookup <decap table>` leads there, before the `local` rule, which is moved from
pref 0 to `local_rule_priority` so it can be passed. (KERNEL.md adds `to <address>` to the
rule; the decap table already holds exactly our endpoint addresses, so a miss falls through
to the next rule and one rule serves every care-of address as it changes.)

Two consequences to know. End.DT6 with a table routes the inner packet by the main table
alone, so a destination held only in the local table (an MNP address on the MR's own `lo`) is
not reached: mobile network nodes sit behind an interface. And with `local` moved to 32000,
the PREM's fwmark rules (20000) come before it: a marked packet for one of the node's own
addresses would be routed into a pipe, so marks must only be set on transit traffic.

Ownership: routes carry protocol `RTPROT_MCOA`, rules sit at our priorities; nothing else is
read or changed. Every change is idempotent (`replace`, "not found" on delete is success) and
verified by reading back. pyroute2 0.9.7 does not know the `encap.red` mode name, so
`_enable_encap_red` registers it (kernel value SEG6_IPTUN_MODE_ENCAP_RED = 3) in its table.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.rtmsg import rtmsg_base

from services.contracts.errors import KernelError
from services.netlink_common import dump

log = logging.getLogger(__name__)

RTPROT_MCOA = 147
MAIN_TABLE = 254
LOCAL_TABLE = 255
_ENCAP_SEG6 = 5
_ENCAP_SEG6LOCAL = 7
_SEG6_ENCAP_RED = 3
_FR_ACT_TO_TBL = 1


def _enable_encap_red() -> None:
    hdr: Any = rtmsg_base.seg6_encap_info.ipv6_sr_hdr
    hdr.encapmodes["encap.red"] = _SEG6_ENCAP_RED
    hdr.r_encapmodes[_SEG6_ENCAP_RED] = "encap.red"


_enable_encap_red()


@dataclass(frozen=True, order=True)
class RouteSpec:
    """One route we own: plain (`gateway` or on-link), into a pipe (`segment`), or a decap."""

    table: int
    dst: IPv6Network
    oif: int
    gateway: IPv6Address | None = None
    segment: IPv6Address | None = None
    decap: bool = False

    @property
    def key(self) -> tuple[int, IPv6Network]:
        return self.table, self.dst


@dataclass(frozen=True, order=True)
class RuleSpec:
    """One IPv6 policy rule we own (at one of our priorities)."""

    priority: int
    table: int
    src: IPv6Network | None = None
    dst: IPv6Network | None = None
    ip_proto: int = 0


def _attr(msg: Any, name: str, default: Any = None) -> Any:
    value = msg.get_attr(name)
    return default if value is None else value


def _network(msg: Any, attr: str, length_field: str) -> IPv6Network | None:
    address = msg.get_attr(attr)
    if address is None:
        return None
    return IPv6Network((address, int(msg[length_field])), strict=False)


def _route_of(msg: Any) -> RouteSpec:
    table = int(_attr(msg, "RTA_TABLE", msg["table"]))
    dst = _network(msg, "RTA_DST", "dst_len") or IPv6Network("::/0")
    gateway = msg.get_attr("RTA_GATEWAY")
    encap_type = msg.get_attr("RTA_ENCAP_TYPE")
    segment = None
    if encap_type == _ENCAP_SEG6:
        srh = msg.get_attr("RTA_ENCAP").get_attr("SEG6_IPTUNNEL_SRH")
        segment = IPv6Address(srh["segs"][0])
    return RouteSpec(
        table=table,
        dst=dst,
        oif=int(_attr(msg, "RTA_OIF", 0)),
        gateway=None if gateway is None else IPv6Address(gateway),
        segment=segment,
        decap=encap_type == _ENCAP_SEG6LOCAL,
    )


def read_routes(ipr: Any) -> set[RouteSpec]:
    """Every IPv6 route with our protocol, in any table (an independent read-back)."""
    msgs = dump("routes", lambda: ipr.route("dump", family=socket.AF_INET6))
    return {_route_of(m) for m in msgs if int(m["proto"]) == RTPROT_MCOA}


def _route_fields(spec: RouteSpec) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "family": socket.AF_INET6,
        "dst": str(spec.dst),
        "table": spec.table,
        "oif": spec.oif,
        "proto": RTPROT_MCOA,
    }
    if spec.gateway is not None:
        fields["gateway"] = str(spec.gateway)
    if spec.segment is not None:
        fields["encap"] = {"type": "seg6", "mode": "encap.red", "segs": [str(spec.segment)]}
    if spec.decap:
        fields["encap"] = {"type": "seg6local", "action": "End.DT6", "table": MAIN_TABLE}
    return fields


def plan_routes(
    desired: Iterable[RouteSpec], actual: Iterable[RouteSpec]
) -> tuple[list[RouteSpec], list[RouteSpec]]:
    """(to delete, to replace): replace is atomic per (table, prefix), so a pipe never gaps."""
    wanted = {spec.key: spec for spec in desired}
    present = set(actual)
    remove = sorted(s for s in present if s.key not in wanted)
    replace = sorted(s for s in wanted.values() if s not in present)
    return remove, replace


def ensure_routes(ipr: Any, desired: set[RouteSpec]) -> bool:
    """Make our routes exactly `desired`; True if anything changed. Verified by a re-read."""
    remove, replace = plan_routes(desired, read_routes(ipr))
    for spec in replace:
        try:
            ipr.route("replace", **_route_fields(spec))
        except NetlinkError as exc:
            raise KernelError(f"route replace {spec}", str(exc), exc.code) from exc
    for spec in remove:
        fields = {k: v for k, v in _route_fields(spec).items() if k != "encap"}
        try:
            ipr.route("del", **fields)
        except NetlinkError as exc:
            if exc.code not in (errno.ESRCH, errno.ENOENT):
                raise KernelError(f"route del {spec}", str(exc), exc.code) from exc
    actual = read_routes(ipr)
    if actual != desired:
        raise KernelError(
            "ensure routes",
            f"read back: missing {sorted(desired - actual)}, unexpected {sorted(actual - desired)}",
        )
    if remove or replace:
        log.info("pipes: removed %d routes, replaced %d", len(remove), len(replace))
    return bool(remove or replace)


def _rule_of(msg: Any) -> RuleSpec:
    return RuleSpec(
        priority=int(_attr(msg, "FRA_PRIORITY", 0)),
        table=int(_attr(msg, "FRA_TABLE", msg["table"])),
        src=_network(msg, "FRA_SRC", "src_len"),
        dst=_network(msg, "FRA_DST", "dst_len"),
        ip_proto=int(_attr(msg, "FRA_IP_PROTO", 0)),
    )


def read_rules(ipr: Any, priorities: set[int]) -> set[RuleSpec]:
    """The IPv6 rules at `priorities`, as the kernel holds them."""
    msgs = dump("rules", lambda: ipr.get_rules(family=socket.AF_INET6))
    return {r for r in map(_rule_of, msgs) if r.priority in priorities}


def _rule_fields(spec: RuleSpec) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "family": socket.AF_INET6,
        "priority": spec.priority,
        "table": spec.table,
    }
    for name, net in (("src", spec.src), ("dst", spec.dst)):
        if net is not None:
            fields[name] = str(net.network_address)
            fields[f"{name}_len"] = net.prefixlen
    if spec.ip_proto:
        fields["ip_proto"] = spec.ip_proto
    return fields


def _rule(ipr: Any, command: str, spec: RuleSpec) -> None:
    fields = _rule_fields(spec)
    if command == "add":
        fields["action"] = _FR_ACT_TO_TBL
    benign = (errno.EEXIST,) if command == "add" else (errno.ENOENT, errno.ESRCH)
    try:
        ipr.rule(command, **fields)
    except NetlinkError as exc:
        if exc.code not in benign:
            raise KernelError(f"rule {command} {spec}", str(exc), exc.code) from exc


def ensure_rules(ipr: Any, priorities: set[int], desired: set[RuleSpec]) -> bool:
    """Make the rules at `priorities` exactly `desired` (adds before deletes); verify."""
    actual = read_rules(ipr, priorities)
    for spec in sorted(desired - actual):
        _rule(ipr, "add", spec)
    for spec in sorted(actual - desired):
        _rule(ipr, "del", spec)
    after = read_rules(ipr, priorities)
    if after != desired:
        raise KernelError(
            "ensure rules",
            f"read back: missing {sorted(desired - after)}, unexpected {sorted(after - desired)}",
        )
    return actual != desired


def move_local_rule(ipr: Any, priority: int) -> None:
    """Put the IPv6 `lookup local` rule at `priority` instead of 0, so decap rules come first."""
    local = RuleSpec(priority=priority, table=LOCAL_TABLE)
    _rule(ipr, "add", local)
    _rule(ipr, "del", RuleSpec(priority=0, table=LOCAL_TABLE))
    if local not in read_rules(ipr, {priority}):
        raise KernelError("move local rule", f"no local rule at priority {priority}")


def decap_specs(table: int, addresses: Iterable[IPv6Address], oif: int) -> set[RouteSpec]:
    """End.DT6 routes for our own pipe endpoints: the inner packet is then routed by main."""
    return {RouteSpec(table, IPv6Network(a), oif, decap=True) for a in addresses}


def decap_rule(table: int, priority: int) -> RuleSpec:
    """The rule sending IPv6-in-IPv6 packets to the decap table first."""
    return RuleSpec(priority=priority, table=table, ip_proto=socket.IPPROTO_IPV6)


def oif_towards(ipr: Any, address: IPv6Address) -> int | None:
    """The device the main routing reaches `address` by, or None when it is unreachable."""
    try:
        answer = ipr.route("get", dst=str(address), family=socket.AF_INET6)
    except NetlinkError:
        return None
    for msg in answer:
        oif = msg.get_attr("RTA_OIF")
        if oif is not None:
            return int(oif)
    return None
