"""Flow-based tunnel routes (`ip route ... encap ip6 id N dst A src B`) through pyroute2.

A home agent with VXLAN pipes keeps one flow-based VXLAN device and puts the tunnel's far
end into each route (lightweight tunnel type LWTUNNEL_ENCAP_IP6), so one device serves every
mobile router and a handover is one route replace. pyroute2 0.9.7 neither encodes nor decodes
that encap type; this module teaches it both, the way `pipes` already registers the SRv6
`encap.red` mode: an attribute map for decoding (rtmsg's encap table) and a branch in the
route request filter that turns `encap={"type": "ip6", "id": N, "dst": A, "src": B}` into the
netlink attributes. Remove it when pyroute2 knows `ip6` encap itself.
"""

from __future__ import annotations

from typing import Any

from pyroute2.netlink import nla
from pyroute2.netlink.rtnl.rtmsg import rtmsg_base
from pyroute2.requests.route import RouteIPRouteFilter

#: linux/lwtunnel.h: enum lwtunnel_encap_types.
LWTUNNEL_ENCAP_IP6 = 4


class Ip6EncapInfo(nla):  # type: ignore[misc]
    """The attributes of an `encap ip6` route (linux/lwtunnel.h: LWTUNNEL_IP6_*)."""

    __slots__ = ()
    nla_map = (
        ("LWTUNNEL_IP6_UNSPEC", "none"),
        ("LWTUNNEL_IP6_ID", "be64"),
        ("LWTUNNEL_IP6_DST", "ip6addr"),
        ("LWTUNNEL_IP6_SRC", "ip6addr"),
        ("LWTUNNEL_IP6_HOPLIMIT", "uint8"),
        ("LWTUNNEL_IP6_TC", "uint8"),
        ("LWTUNNEL_IP6_FLAGS", "be16"),
        ("LWTUNNEL_IP6_PAD", "none"),
        ("LWTUNNEL_IP6_OPTS", "hex"),
    )


_original_set_encap = RouteIPRouteFilter.set_encap


def _set_encap(self: Any, context: Any, value: Any) -> dict[str, Any]:
    if isinstance(value, dict) and value.get("type") == "ip6":
        attrs: list[list[Any]] = [
            ["LWTUNNEL_IP6_ID", int(value["id"])],
            ["LWTUNNEL_IP6_DST", str(value["dst"])],
        ]
        if value.get("src") is not None:
            attrs.append(["LWTUNNEL_IP6_SRC", str(value["src"])])
        return {"encap_type": LWTUNNEL_ENCAP_IP6, "encap": {"attrs": attrs}}
    result: dict[str, Any] = _original_set_encap(self, context, value)
    return result


def install() -> None:
    """Teach pyroute2 the `ip6` encap (idempotent; done on import of `pipes`)."""
    encaps: dict[int, Any] = rtmsg_base.encaps
    encaps[LWTUNNEL_ENCAP_IP6] = Ip6EncapInfo
    RouteIPRouteFilter.set_encap = _set_encap
