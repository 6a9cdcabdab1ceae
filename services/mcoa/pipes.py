"""The kernel edge of the bit pipes: routes and policy rules the MCoA agent owns.

What a pipe is made of depends on its kind (`pipe_kinds`: SRv6 routes, VXLAN or ip6tnl
devices); this module only makes the kernel hold a desired set of routes and rules, and reads
them back. A route names its device by name (`dev`), so desired state can mention a tunnel
device before it exists; names are resolved when the routes are applied.

Route encapsulations we write and read back: SRv6 `encap.red` with one segment (plain
IPv6-in-IPv6 from one end to the other), `seg6local End.DT6` (decapsulation into the main
table) and `encap ip6 id VNI dst A src B` through a flow-based VXLAN device. pyroute2 0.9.7
knows neither the `encap.red` mode name nor the `ip6` encap: `_enable_encap_red` and
`lwt_ip6.install` teach it both.

SRv6 has two consequences to know. End.DT6 with a table routes the inner packet by the main
table alone, so a destination held only in the local table (an MNP address on the MR's own
`lo`) is not reached: mobile network nodes sit behind an interface. And its decap rule must
come before the `local` rule, which `move_local_rule` moves from pref 0 to
`local_rule_priority`; the PREM's fwmark rules (20000) then come before it too, so marks must
only be set on transit traffic.

Ownership: routes carry protocol `RTPROT_MCOA`, rules sit at our priorities; nothing else is
read or changed. Every change is idempotent (`replace`, "not found" on delete is success) and
verified by reading back.
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
from services.mcoa import devices, lwt_ip6
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
lwt_ip6.install()


@dataclass(frozen=True, slots=True)
class Seg6Encap:
    """SRv6 `encap.red` with one segment: an outer IPv6 header towards `segment`."""

    segment: IPv6Address


@dataclass(frozen=True, slots=True)
class Seg6Decap:
    """`seg6local End.DT6`: strip the outer header, route the inner packet by `table`."""

    table: int = MAIN_TABLE


@dataclass(frozen=True, slots=True)
class Ip6Encap:
    """`encap ip6 id VNI dst A src B` through a flow-based VXLAN device."""

    vni: int
    dst: IPv6Address
    src: IPv6Address | None = None


Encap = Seg6Encap | Seg6Decap | Ip6Encap


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One route we own: on `dev` (by name), via `gateway` or on-link, maybe encapsulated."""

    table: int
    dst: IPv6Network
    dev: str
    gateway: IPv6Address | None = None
    encap: Encap | None = None

    @property
    def key(self) -> tuple[int, IPv6Network]:
        return self.table, self.dst

    @property
    def is_pipe(self) -> bool:
        """Whether this route leads into a pipe (not a decapsulation, not the underlay)."""
        return isinstance(self.encap, Seg6Encap | Ip6Encap) or devices.owned(self.dev)

    def sort_key(self) -> tuple[int, IPv6Network, str, str, str]:
        return self.table, self.dst, self.dev, str(self.gateway), repr(self.encap)


@dataclass(frozen=True)
class RuleSpec:
    """One IPv6 policy rule we own (at one of our priorities)."""

    priority: int
    table: int
    src: IPv6Network | None = None
    dst: IPv6Network | None = None
    ip_proto: int = 0
    iif: str | None = None

    def sort_key(self) -> tuple[int, int, str, str, int, str]:
        return self.priority, self.table, str(self.src), str(self.dst), self.ip_proto, str(self.iif)


def _attr(msg: Any, name: str, default: Any = None) -> Any:
    value = msg.get_attr(name)
    return default if value is None else value


def _network(msg: Any, attr: str, length_field: str) -> IPv6Network | None:
    address = msg.get_attr(attr)
    if address is None:
        return None
    return IPv6Network((address, int(msg[length_field])), strict=False)


def _encap_of(msg: Any) -> Encap | None:
    encap_type = msg.get_attr("RTA_ENCAP_TYPE")
    if encap_type == _ENCAP_SEG6:
        srh = msg.get_attr("RTA_ENCAP").get_attr("SEG6_IPTUNNEL_SRH")
        return Seg6Encap(IPv6Address(srh["segs"][0]))
    if encap_type == _ENCAP_SEG6LOCAL:
        return Seg6Decap()  # the only decapsulation we write: End.DT6 into main
    if encap_type == lwt_ip6.LWTUNNEL_ENCAP_IP6:
        info = msg.get_attr("RTA_ENCAP")
        src = info.get_attr("LWTUNNEL_IP6_SRC")
        return Ip6Encap(
            int(info.get_attr("LWTUNNEL_IP6_ID")),
            IPv6Address(info.get_attr("LWTUNNEL_IP6_DST")),
            None if src is None or IPv6Address(src) == IPv6Address("::") else IPv6Address(src),
        )
    return None


def _route_of(msg: Any, names: dict[int, str]) -> RouteSpec:
    gateway = msg.get_attr("RTA_GATEWAY")
    oif = int(_attr(msg, "RTA_OIF", 0))
    return RouteSpec(
        table=int(_attr(msg, "RTA_TABLE", msg["table"])),
        dst=_network(msg, "RTA_DST", "dst_len") or IPv6Network("::/0"),
        dev=names.get(oif, f"#{oif}"),
        gateway=None if gateway is None else IPv6Address(gateway),
        encap=_encap_of(msg),
    )


def device_names(ipr: Any) -> dict[int, str]:
    """ifindex -> name of every device in this namespace."""
    links = dump("links", ipr.get_links)
    return {int(m["index"]): str(m.get_attr("IFLA_IFNAME")) for m in links}


def read_routes(ipr: Any, names: dict[int, str] | None = None) -> set[RouteSpec]:
    """Every IPv6 route with our protocol, in any table (an independent read-back);
    `names` (ifindex -> name) saves a link dump when the caller has one."""
    names = device_names(ipr) if names is None else names
    msgs = dump("routes", lambda: ipr.route("dump", family=socket.AF_INET6, proto=RTPROT_MCOA))
    return {_route_of(m, names) for m in msgs if int(m["proto"]) == RTPROT_MCOA}


def _encap_fields(encap: Encap | None) -> dict[str, Any]:
    if isinstance(encap, Seg6Encap):
        return {"type": "seg6", "mode": "encap.red", "segs": [str(encap.segment)]}
    if isinstance(encap, Seg6Decap):
        return {"type": "seg6local", "action": "End.DT6", "table": encap.table}
    if isinstance(encap, Ip6Encap):
        return {"type": "ip6", "id": encap.vni, "dst": encap.dst, "src": encap.src}
    return {}


def _route_fields(spec: RouteSpec, indexes: dict[str, int]) -> dict[str, Any]:
    if spec.dev not in indexes:
        raise KernelError(f"route {spec}", f"no device {spec.dev}")
    fields: dict[str, Any] = {
        "family": socket.AF_INET6,
        "dst": str(spec.dst),
        "table": spec.table,
        "oif": indexes[spec.dev],
        "proto": RTPROT_MCOA,
    }
    if spec.gateway is not None:
        fields["gateway"] = str(spec.gateway)
    if spec.encap is not None:
        fields["encap"] = _encap_fields(spec.encap)
    return fields


def plan_routes(
    desired: Iterable[RouteSpec], actual: Iterable[RouteSpec]
) -> tuple[list[RouteSpec], list[RouteSpec]]:
    """(to delete, to replace): replace is atomic per (table, prefix), so a pipe never gaps."""
    wanted = {spec.key: spec for spec in desired}
    present = set(actual)
    remove = sorted((s for s in present if s.key not in wanted), key=RouteSpec.sort_key)
    replace = sorted((s for s in wanted.values() if s not in present), key=RouteSpec.sort_key)
    return remove, replace


def ensure_routes(ipr: Any, desired: set[RouteSpec], names: dict[int, str] | None = None) -> bool:
    """Make our routes exactly `desired`; True if anything changed. Verified by a re-read.
    `names` (ifindex -> name, current) saves link dumps when the caller has one."""
    names = device_names(ipr) if names is None else names
    remove, replace = plan_routes(desired, read_routes(ipr, names))
    indexes = {name: index for index, name in names.items()}
    for spec in replace:
        try:
            ipr.route("replace", **_route_fields(spec, indexes))
        except NetlinkError as exc:
            raise KernelError(f"route replace {spec}", str(exc), exc.code) from exc
    for spec in remove:
        fields: dict[str, Any] = {
            "family": socket.AF_INET6,
            "dst": str(spec.dst),
            "table": spec.table,
            "proto": RTPROT_MCOA,
        }
        try:
            ipr.route("del", **fields)
        except NetlinkError as exc:
            if exc.code not in (errno.ESRCH, errno.ENOENT):
                raise KernelError(f"route del {spec}", str(exc), exc.code) from exc
    if not (remove or replace):
        return False
    actual = read_routes(ipr, names)
    if actual != desired:
        missing = sorted(desired - actual, key=RouteSpec.sort_key)
        unexpected = sorted(actual - desired, key=RouteSpec.sort_key)
        raise KernelError("ensure routes", f"read back: missing {missing}, unexpected {unexpected}")
    log.info("pipes: removed %d routes, replaced %d", len(remove), len(replace))
    return True


def _rule_of(msg: Any) -> RuleSpec:
    return RuleSpec(
        priority=int(_attr(msg, "FRA_PRIORITY", 0)),
        table=int(_attr(msg, "FRA_TABLE", msg["table"])),
        src=_network(msg, "FRA_SRC", "src_len"),
        dst=_network(msg, "FRA_DST", "dst_len"),
        ip_proto=int(_attr(msg, "FRA_IP_PROTO", 0)),
        iif=msg.get_attr("FRA_IIFNAME"),
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
    if spec.iif is not None:
        fields["iifname"] = spec.iif
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
    if actual == desired:
        return False
    for spec in sorted(desired - actual, key=RuleSpec.sort_key):
        _rule(ipr, "add", spec)
    for spec in sorted(actual - desired, key=RuleSpec.sort_key):
        _rule(ipr, "del", spec)
    after = read_rules(ipr, priorities)
    if after != desired:
        missing = sorted(desired - after, key=RuleSpec.sort_key)
        unexpected = sorted(after - desired, key=RuleSpec.sort_key)
        raise KernelError("ensure rules", f"read back: missing {missing}, unexpected {unexpected}")
    return actual != desired


def move_local_rule(ipr: Any, priority: int) -> None:
    """Put the IPv6 `lookup local` rule at `priority` instead of 0, so decap rules come first."""
    local = RuleSpec(priority=priority, table=LOCAL_TABLE)
    _rule(ipr, "add", local)
    _rule(ipr, "del", RuleSpec(priority=0, table=LOCAL_TABLE))
    if local not in read_rules(ipr, {priority}):
        raise KernelError("move local rule", f"no local rule at priority {priority}")


def decap_specs(table: int, addresses: Iterable[IPv6Address], dev: str) -> set[RouteSpec]:
    """End.DT6 routes for our own pipe endpoints: the inner packet is then routed by main."""
    return {RouteSpec(table, IPv6Network(a), dev, encap=Seg6Decap()) for a in addresses}


def decap_rule(table: int, priority: int) -> RuleSpec:
    """The rule sending IPv6-in-IPv6 packets to the decap table first."""
    return RuleSpec(priority=priority, table=table, ip_proto=socket.IPPROTO_IPV6)


def from_pipe_rule(dev: str, priority: int) -> RuleSpec:
    """Packets that came out of pipe device `dev` are routed by the main table, whatever
    their mark: what End.DT6 does for SRv6. Without it a packet leaving a VXLAN or ip6tnl pipe
    at the MR could carry a mark for a BID (a policy whose selector also matches the other
    direction) and be sent straight back into a pipe."""
    return RuleSpec(priority=priority, table=MAIN_TABLE, iif=dev)


def dev_towards(ipr: Any, address: IPv6Address, names: dict[int, str]) -> str | None:
    """The device (named from `names`, ifindex -> name) the main routing reaches `address`
    by, or None when it is unreachable."""
    try:
        answer = ipr.route("get", dst=str(address), family=socket.AF_INET6)
    except NetlinkError:
        return None
    for msg in answer:
        oif = msg.get_attr("RTA_OIF")
        if oif is not None:
            return names.get(int(oif))
    return None
