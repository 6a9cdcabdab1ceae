"""Tunnel devices and permanent neighbours the MCoA agent owns: create, move, remove, verify.

Pipe kinds built on devices (VXLAN, ip6tnl; see `pipe_kinds`) ask for a set of `DeviceSpec`
and `NeighbourSpec`; `ensure_devices` and `ensure_neighbours` make the kernel hold exactly
that, and read it back. Ownership is by name: a device is ours when its name starts with one
of `OWNED_PREFIXES` and it is of the kind we make (`mnvx*` VXLAN, `mn6*` ip6tnl); nothing
else is read or changed.

A handover changes a device's `local` (MR) or `remote` (HA, ip6tnl) in place (netlink
changelink), so routes through the device stay; only what cannot change in place (the VNI,
flow-based or not, the UDP port) makes the device be replaced. New devices get no IPv6
link-local address (`addr_gen_mode` 1): nothing but tunnelled traffic crosses a pipe, and
MLD or DAD chatter would show in the per-BID counters.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any, Literal

from pyroute2.netlink.exceptions import NetlinkError

from services.contracts.errors import KernelError
from services.netlink_common import IFF_UP, dump

log = logging.getLogger(__name__)

OWNED_PREFIXES = ("mnvx", "mn6")
_NUD_PERMANENT = 0x80
_IPPROTO_IPV6 = 41
_ADDR_GEN_MODE_NONE = "1"

DeviceKind = Literal["vxlan", "ip6tnl"]


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One tunnel device we own.

    VXLAN: `vni` None means flow-based (`external`: the far end comes from each route);
    otherwise `local`/`remote` are this end's and the far end's addresses. ip6tnl: `local` and
    `remote` of the IPv6-in-IPv6 tunnel. `mtu` and `mac` None leave the kernel's choice.
    """

    name: str
    kind: DeviceKind
    local: IPv6Address | None = None
    remote: IPv6Address | None = None
    vni: int | None = None
    port: int = 4789
    mtu: int | None = None
    mac: str | None = None

    def same_identity(self, other: DeviceSpec) -> bool:
        """Whether `other` can become this device in place (changelink), not only by
        replacing it: same kind, and for VXLAN the same VNI, mode and port."""
        if self.kind != other.kind:
            return False
        return self.kind != "vxlan" or (self.vni, self.port) == (other.vni, other.port)


@dataclass(frozen=True, slots=True, order=True)
class NeighbourSpec:
    """A permanent IPv6 neighbour entry on one of our devices (VXLAN's fixed far-end MAC)."""

    dev: str
    address: IPv6Address
    lladdr: str


def owned(name: str) -> bool:
    """Whether a device of this name is one the agent may have made."""
    return name.startswith(OWNED_PREFIXES)


def _data(msg: Any) -> tuple[str | None, Any]:
    info = msg.get_attr("IFLA_LINKINFO")
    if info is None:
        return None, None
    return info.get_attr("IFLA_INFO_KIND"), info.get_attr("IFLA_INFO_DATA")


def _address(value: object) -> IPv6Address | None:
    if not value:
        return None
    address = IPv6Address(str(value))
    return None if address == IPv6Address("::") else address


def _device_of(msg: Any) -> DeviceSpec | None:
    name = str(msg.get_attr("IFLA_IFNAME"))
    kind, data = _data(msg)
    if not owned(name) or kind not in ("vxlan", "ip6tnl") or data is None:
        return None
    mtu = int(msg.get_attr("IFLA_MTU"))
    mac = msg.get_attr("IFLA_ADDRESS")
    if kind == "vxlan":
        external = bool(data.get_attr("IFLA_VXLAN_COLLECT_METADATA"))
        return DeviceSpec(
            name,
            "vxlan",
            local=_address(data.get_attr("IFLA_VXLAN_LOCAL6")),
            remote=_address(data.get_attr("IFLA_VXLAN_GROUP6")),
            vni=None if external else int(data.get_attr("IFLA_VXLAN_ID")),
            port=int(data.get_attr("IFLA_VXLAN_PORT")),
            mtu=mtu,
            mac=mac,
        )
    return DeviceSpec(
        name,
        "ip6tnl",
        local=_address(data.get_attr("IFLA_IP6TNL_LOCAL")),
        remote=_address(data.get_attr("IFLA_IP6TNL_REMOTE")),
        mtu=mtu,
        mac=None,
    )


@dataclass(frozen=True, slots=True)
class Links:
    """One dump of this namespace's devices: every name by index, and ours in detail."""

    names: dict[int, str]
    ours: dict[str, tuple[int, DeviceSpec, bool]]

    @property
    def indexes(self) -> dict[str, int]:
        return {name: index for index, name in self.names.items()}


def read_links(ipr: Any) -> Links:
    """Every device's name, and our devices as the kernel holds them (one dump)."""
    names: dict[int, str] = {}
    ours: dict[str, tuple[int, DeviceSpec, bool]] = {}
    for msg in dump("links", ipr.get_links):
        index = int(msg["index"])
        names[index] = str(msg.get_attr("IFLA_IFNAME"))
        spec = _device_of(msg)
        if spec is not None:
            ours[spec.name] = (index, spec, bool(int(msg["flags"]) & IFF_UP))
    return Links(names, ours)


def read_devices(ipr: Any) -> dict[str, tuple[int, DeviceSpec, bool]]:
    """Our devices as the kernel holds them: name -> (ifindex, spec, admin up)."""
    return read_links(ipr).ours


def _matches(want: DeviceSpec, have: DeviceSpec) -> bool:
    """`have` is what `want` asks for (an MTU or MAC left None in `want` is the kernel's)."""
    if (want.kind, want.local, want.remote) != (have.kind, have.local, have.remote):
        return False
    if want.kind == "vxlan" and (want.vni, want.port) != (have.vni, have.port):
        return False
    return want.mtu in (None, have.mtu) and want.mac in (None, have.mac)


def _link_fields(spec: DeviceSpec) -> dict[str, Any]:
    if spec.kind == "ip6tnl":
        fields: dict[str, Any] = {"kind": "ip6tnl", "ip6tnl_proto": _IPPROTO_IPV6}
        if spec.local is not None:
            fields["ip6tnl_local"] = str(spec.local)
        if spec.remote is not None:
            fields["ip6tnl_remote"] = str(spec.remote)
        return fields
    fields = {
        "kind": "vxlan",
        "vxlan_port": spec.port,
        "vxlan_udp_zero_csum6_tx": 1,
        "vxlan_udp_zero_csum6_rx": 1,
        "vxlan_learning": 0,
    }
    if spec.vni is None:
        fields["vxlan_collect_metadata"] = 1
    else:
        fields["vxlan_id"] = spec.vni
    if spec.local is not None:
        fields["vxlan_local6"] = str(spec.local)
    if spec.remote is not None:
        fields["vxlan_group6"] = str(spec.remote)
    return fields


def _call(operation: str, spec: DeviceSpec, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except NetlinkError as exc:
        raise KernelError(
            f"{operation} {spec.kind} device {spec.name}", str(exc), exc.code
        ) from exc


def _no_link_local(name: str) -> None:
    """No autoconfigured addresses on a new device (`addr_gen_mode` none), before it is up."""
    path = Path("/proc/sys/net/ipv6/conf") / name / "addr_gen_mode"
    try:
        path.write_text(_ADDR_GEN_MODE_NONE)
    except OSError as exc:
        log.warning("pipes: could not turn off address generation on %s: %s", name, exc)


def _create(ipr: Any, spec: DeviceSpec) -> None:
    extra: dict[str, Any] = {}
    if spec.mtu is not None:
        extra["mtu"] = spec.mtu
    if spec.mac is not None:
        extra["address"] = spec.mac
    _call("create", spec, ipr.link, "add", ifname=spec.name, **_link_fields(spec), **extra)
    _no_link_local(spec.name)
    _call("bring up", spec, ipr.link, "set", ifname=spec.name, state="up")


def _delete(ipr: Any, index: int, spec: DeviceSpec) -> None:
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code not in (errno.ENODEV, errno.ENOENT):
            raise KernelError(f"remove device {spec.name}", str(exc), exc.code) from exc


def _update(ipr: Any, index: int, want: DeviceSpec, have: DeviceSpec) -> None:
    """Change in place what differs: the tunnel's ends, then MTU and MAC."""
    if (want.local, want.remote) != (have.local, have.remote):
        ends = ("vxlan_local6", "vxlan_group6", "ip6tnl_local", "ip6tnl_remote")
        fields = {k: v for k, v in _link_fields(want).items() if k in ends}
        _call("move", want, ipr.link, "set", index=index, kind=want.kind, **fields)
    if want.mtu is not None and want.mtu != have.mtu:
        _call("set the MTU of", want, ipr.link, "set", index=index, mtu=want.mtu)
    if want.mac is not None and want.mac != have.mac:
        _call("set the MAC of", want, ipr.link, "set", index=index, address=want.mac)


def ensure_devices(
    ipr: Any, desired: Iterable[DeviceSpec], links: Links | None = None
) -> tuple[bool, Links]:
    """Make our devices exactly `desired`, each up, starting from `links` (None: dump them
    now); return whether anything changed and the links as read back after the change."""
    wanted = {spec.name: spec for spec in desired}
    actual = (read_links(ipr) if links is None else links).ours
    changed = False
    for name, (index, have, up) in sorted(actual.items()):
        want = wanted.get(name)
        if want is None or not want.same_identity(have):
            _delete(ipr, index, have)
            changed = True
            continue
        if not _matches(want, have):
            _update(ipr, index, want, have)
            changed = True
        if not up:
            _call("bring up", want, ipr.link, "set", index=index, state="up")
            changed = True
    for name, want in sorted(wanted.items()):
        if name not in actual or not want.same_identity(actual[name][1]):
            _create(ipr, want)
            changed = True
    if not changed:
        return False, read_links(ipr) if links is None else links
    after = read_links(ipr)
    wrong = sorted(
        name
        for name in set(after.ours) | set(wanted)
        if name not in after.ours
        or name not in wanted
        or not _matches(wanted[name], after.ours[name][1])
        or not after.ours[name][2]
    )
    if wrong:
        raise KernelError("ensure pipe devices", f"read back differs for {wrong}")
    log.info("pipes: devices now %s", sorted(wanted) or "none")
    return True, after


def _neighbour_of(msg: Any, names: dict[int, str]) -> NeighbourSpec | None:
    name = names.get(int(msg["ifindex"]))
    if name is None or not int(msg["state"]) & _NUD_PERMANENT:
        return None
    lladdr = msg.get_attr("NDA_LLADDR")
    if lladdr is None:
        return None
    return NeighbourSpec(name, IPv6Address(msg.get_attr("NDA_DST")), str(lladdr))


def read_neighbours(ipr: Any, links: Links | None = None) -> set[NeighbourSpec]:
    """The permanent IPv6 neighbours on our devices."""
    ours = (read_links(ipr) if links is None else links).ours
    names = {index: name for name, (index, _s, _u) in ours.items()}
    msgs = dump("neighbours", lambda: ipr.neigh("dump", family=socket.AF_INET6))
    return {n for m in msgs if (n := _neighbour_of(m, names)) is not None}


def ensure_neighbours(ipr: Any, desired: set[NeighbourSpec], links: Links | None = None) -> bool:
    """Make the permanent neighbours on our devices exactly `desired`; verified."""
    links = read_links(ipr) if links is None else links
    indexes = {name: index for name, (index, _s, _u) in links.ours.items()}
    actual = read_neighbours(ipr, links)
    for spec in sorted(actual - desired):
        try:
            ipr.neigh("del", dst=str(spec.address), ifindex=indexes[spec.dev])
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.ESRCH):
                raise KernelError(f"neighbour del {spec}", str(exc), exc.code) from exc
    for spec in sorted(desired - actual):
        if spec.dev not in indexes:
            raise KernelError(f"neighbour {spec}", f"no device {spec.dev}")
        try:
            ipr.neigh(
                "replace",
                dst=str(spec.address),
                lladdr=spec.lladdr,
                ifindex=indexes[spec.dev],
                state=_NUD_PERMANENT,
            )
        except NetlinkError as exc:
            raise KernelError(f"neighbour replace {spec}", str(exc), exc.code) from exc
    if actual == desired:
        return False
    after = read_neighbours(ipr, links)
    if after != desired:
        raise KernelError(
            "ensure neighbours",
            f"read back: missing {sorted(desired - after)}, unexpected {sorted(after - desired)}",
        )
    return True
