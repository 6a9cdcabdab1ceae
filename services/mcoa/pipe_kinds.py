"""What each pipe kind needs in the kernel, as pure functions of the bindings.

A pipe carries one binding's traffic between the home agent and one care-of address of the
mobile router. Three kinds build one, and a kernel may have any of them
(`services.capabilities`; `multinet doctor` shows which):

- `ip6tnl`: an IPv6-in-IPv6 tunnel device per binding (RFC 2473), what NEMO stacks use. The
  HA's device `mn6<home hash>-<bid>` goes from the HA address to the care-of address, the MR's
  `mn6t<bid>` back; a BID's table routes into it. No MTU work: the device takes its underlay's
  MTU minus 40 bytes and answers Packet Too Big itself.
- `seg6`: SRv6 `encap.red` routes with one segment (the same outer header as ip6tnl, made by
  a route, no device) and an `End.DT6` route that decapsulates at the receiving end, reached
  through a rule for IPv6-in-IPv6 placed before the `local` rule. Path-MTU discovery does not
  work through it on the forwarding path: the underlay needs an MTU of 1540 or more.
- `vxlan`: on the MR one VXLAN device per BID (`mnvx<bid>`, VNI = BID, from the care-of
  address to the HA address); on the HA one flow-based device (`mnvx`) whose routes carry the
  far end (`encap ip6 id BID dst <care-of> src <HA>`), so one device serves every mobile
  router and a handover is a route replace. VXLAN carries Ethernet frames, so both ends use
  fixed MACs and a permanent neighbour for the other end's fixed link-local address: no
  neighbour discovery ever crosses a pipe. The devices' MTU is the underlay's minus 70 bytes
  (IPv6 40, UDP 8, VXLAN 8, Ethernet 14); larger packets get Packet Too Big, so TCP finds the
  path MTU instead of black-holing.

A VXLAN binding also gets a duplicate gateway (`duplicate_gateway`): a host route in its BID
table to an address of its own (one per table and mobile router: at an HA, the mobile routers'
bindings of one BID share a table), the same way into the pipe as the BID's route, and a rule
`to <address> lookup <table>`. The PREM's `duplicate` policies copy packets with nft
`dup to <address> device <device>`; the kernel routes such a copy by that address and device
alone, without a mark, so neither `fe80::1` on the MR's `mnvx<bid>` (no link-local prefix on
the device) nor `fe80::2` on the HA's flow-based `mnvx` (no tunnel metadata) carries it
(measured); the duplicate gateway does, at both ends.

What comes out of a pipe device (VXLAN, ip6tnl) is routed by the main table whatever its mark
(`pipes.from_pipe_rule`), as SRv6's End.DT6 does: a policy whose selector also matches the
downlink direction must not send a packet straight back into a pipe.

The functions here return a `KernelState` (devices, routes, rules, neighbours); the agents'
shells apply it with `pipes` and `devices`, which touch only what is ours.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from services.mcoa.cache import PipeRoute
from services.mcoa.config import LinkSettings, McoaSettings
from services.mcoa.devices import DeviceSpec, NeighbourSpec
from services.mcoa.pipes import (
    Ip6Encap,
    RouteSpec,
    RuleSpec,
    Seg6Encap,
    decap_rule,
    decap_specs,
    from_pipe_rule,
)

IP6TNL = "ip6tnl"
SEG6 = "seg6"
VXLAN = "vxlan"

VXLAN_OVERHEAD = 70
DEFAULT_UNDERLAY_MTU = 1500
HA_MAC = "02:6d:6e:00:00:01"
MR_MAC = "02:6d:6e:00:00:02"
HA_LINK_LOCAL = IPv6Address("fe80::1")
MR_LINK_LOCAL = IPv6Address("fe80::2")
HA_VXLAN_DEVICE = "mnvx"
_ANY = IPv6Network("::/0")
#: Duplicate gateways: one address per BID table and mobile router (unique-local, never on a
#: link; only a rule and a host route know it).
DUPLICATE_GATEWAYS = IPv6Network("fd6d:6e00:d0::/64")


def duplicate_gateway(table: int, home: IPv6Address) -> IPv6Address:
    """The duplicate gateway of BID table `table` for the mobile router `home`: its interface
    identifier is a hash of both, so the mobile routers sharing an HA's table never collide."""
    digest = hashlib.sha256(f"{table}|{home}".encode()).digest()
    return DUPLICATE_GATEWAYS[int.from_bytes(digest[:8], "big")]


def _duplicate_gateway(settings: McoaSettings, route: RouteSpec, home: IPv6Address) -> KernelState:
    """The host route to the duplicate gateway of `route.table` and `home`, the same way as
    `route`, and the rule that sends the gateway's address into that table."""
    address = IPv6Network(duplicate_gateway(route.table, home))
    host = RouteSpec(route.table, address, route.dev, route.gateway, route.encap)
    rule = RuleSpec(priority=settings.decap_rule_priority, table=route.table, dst=address)
    return KernelState(routes=frozenset({host}), rules=frozenset({rule}))


@dataclass(frozen=True, slots=True)
class KernelState:
    """Everything of ours one node's kernel should hold."""

    devices: frozenset[DeviceSpec] = frozenset()
    routes: frozenset[RouteSpec] = frozenset()
    rules: frozenset[RuleSpec] = frozenset()
    neighbours: frozenset[NeighbourSpec] = frozenset()

    def __or__(self, other: KernelState) -> KernelState:
        return KernelState(
            self.devices | other.devices,
            self.routes | other.routes,
            self.rules | other.rules,
            self.neighbours | other.neighbours,
        )

    @property
    def pipes(self) -> int:
        """How many routes lead into a pipe (the agents' `pipes` gauge); duplicate gateways
        are not counted."""
        return sum(
            1
            for route in self.routes
            if route.is_pipe and not route.dst.subnet_of(DUPLICATE_GATEWAYS)
        )


@dataclass(frozen=True, slots=True)
class MrLink:
    """One link of the mobile router that has a care-of address now."""

    link: LinkSettings
    care_of: IPv6Address
    mtu: int = DEFAULT_UNDERLAY_MTU


def uses_decap_rule(kinds: Iterable[str]) -> bool:
    """Whether one of `kinds` decapsulates through a rule before `local` (SRv6 only)."""
    return SEG6 in kinds


def ip6tnl_name(home: IPv6Address, bid: int) -> str:
    """The HA's tunnel device of one binding: `mn6` + 6 hex digits of the home address + BID."""
    digest = hashlib.sha256(home.packed).hexdigest()[:6]
    return f"mn6{digest}-{bid:x}"[:15]


def _pipe_mtu(settings: McoaSettings, underlay: int) -> int:
    return settings.pipe_mtu if settings.pipe_mtu is not None else underlay - VXLAN_OVERHEAD


# --- home agent ----------------------------------------------------------------------------


def ha_base(settings: McoaSettings, kinds: Iterable[str], endpoint_dev: str) -> KernelState:
    """What the HA holds for the kinds it offers, bindings or not."""
    assert settings.ha is not None
    state = KernelState()
    kinds = set(kinds)
    if SEG6 in kinds:
        state |= KernelState(
            routes=frozenset(
                decap_specs(settings.decap_table, [settings.ha.ha_address], endpoint_dev)
            ),
            rules=frozenset({decap_rule(settings.decap_table, settings.decap_rule_priority)}),
        )
    if VXLAN in kinds:
        device = DeviceSpec(
            HA_VXLAN_DEVICE,
            "vxlan",
            port=settings.vxlan_port,
            mtu=_pipe_mtu(settings, DEFAULT_UNDERLAY_MTU),
            mac=HA_MAC,
        )
        state |= KernelState(
            devices=frozenset({device}),
            neighbours=frozenset({NeighbourSpec(HA_VXLAN_DEVICE, MR_LINK_LOCAL, MR_MAC)}),
            rules=frozenset({from_pipe_rule(HA_VXLAN_DEVICE, settings.decap_rule_priority)}),
        )
    return state


def ha_pipe(settings: McoaSettings, pipe: PipeRoute, towards: str | None) -> KernelState:
    """One prefix of one binding into its pipe; `towards` is the device by which the HA
    reaches the care-of address (SRv6 routes name it; the others ignore it)."""
    assert settings.ha is not None
    ha = settings.ha.ha_address
    if pipe.kind == SEG6:
        if towards is None:
            return KernelState()
        route = RouteSpec(pipe.table, pipe.prefix, towards, encap=Seg6Encap(pipe.care_of))
        return KernelState(routes=frozenset({route}))
    if pipe.kind == VXLAN:
        route = RouteSpec(
            pipe.table,
            pipe.prefix,
            HA_VXLAN_DEVICE,
            gateway=MR_LINK_LOCAL,
            encap=Ip6Encap(pipe.bid, pipe.care_of, ha),
        )
        return KernelState(routes=frozenset({route})) | _duplicate_gateway(
            settings, route, pipe.home
        )
    name = ip6tnl_name(pipe.home, pipe.bid)
    device = DeviceSpec(name, "ip6tnl", local=ha, remote=pipe.care_of)
    return KernelState(
        devices=frozenset({device}),
        routes=frozenset({RouteSpec(pipe.table, pipe.prefix, name)}),
        rules=frozenset({from_pipe_rule(name, settings.decap_rule_priority)}),
    )


def ha_state(
    settings: McoaSettings,
    kinds: Iterable[str],
    endpoint_dev: str,
    pipes: Iterable[PipeRoute],
    towards: Mapping[IPv6Address, str | None],
) -> KernelState:
    """The HA's whole state: the offered kinds' base and every pipe."""
    state = ha_base(settings, kinds, endpoint_dev)
    for pipe in pipes:
        state |= ha_pipe(settings, pipe, towards.get(pipe.care_of))
    return state


# --- mobile router -------------------------------------------------------------------------


def mr_base(settings: McoaSettings, kind: str) -> KernelState:
    """What the MR holds for its kind, links or not."""
    if kind != SEG6:
        return KernelState()
    return KernelState(
        rules=frozenset({decap_rule(settings.decap_table, settings.decap_rule_priority)})
    )


def mr_link(settings: McoaSettings, kind: str, present: MrLink) -> KernelState:
    """One link's pipe: the route to the HA over the link, the rule keeping the link's outer
    packets on it, and the pipe itself as the BID table's default route."""
    assert settings.mr is not None
    mr = settings.mr
    link, care_of = present.link, present.care_of
    ha = IPv6Network(mr.ha_address)
    table = settings.table_of(link.bid)
    underlay = RouteSpec(table, ha, link.interface, gateway=link.gateway)
    source = RuleSpec(mr.source_rule_priority, table, IPv6Network(care_of), ha)
    common = KernelState(routes=frozenset({underlay}), rules=frozenset({source}))
    if kind == SEG6:
        routes = {RouteSpec(table, _ANY, link.interface, encap=Seg6Encap(mr.ha_address))}
        routes |= decap_specs(settings.decap_table, [care_of], link.interface)
        return common | KernelState(routes=frozenset(routes))
    if kind == VXLAN:
        name = f"mnvx{link.bid}"
        device = DeviceSpec(
            name,
            "vxlan",
            local=care_of,
            remote=mr.ha_address,
            vni=link.bid,
            port=settings.vxlan_port,
            mtu=_pipe_mtu(settings, present.mtu),
            mac=MR_MAC,
        )
        route = RouteSpec(table, _ANY, name, gateway=HA_LINK_LOCAL)
        return (
            common
            | KernelState(
                devices=frozenset({device}),
                routes=frozenset({route}),
                neighbours=frozenset({NeighbourSpec(name, HA_LINK_LOCAL, HA_MAC)}),
                rules=frozenset({from_pipe_rule(name, settings.decap_rule_priority)}),
            )
            | _duplicate_gateway(settings, route, mr.home_address)
        )
    name = f"mn6t{link.bid}"
    device = DeviceSpec(name, "ip6tnl", local=care_of, remote=mr.ha_address)
    return common | KernelState(
        devices=frozenset({device}),
        routes=frozenset({RouteSpec(table, _ANY, name)}),
        rules=frozenset({from_pipe_rule(name, settings.decap_rule_priority)}),
    )


def mr_state(settings: McoaSettings, kind: str, links: Iterable[MrLink]) -> KernelState:
    """The MR's whole state for the links that have a care-of address now."""
    state = mr_base(settings, kind)
    for present in links:
        state |= mr_link(settings, kind, present)
    return state
