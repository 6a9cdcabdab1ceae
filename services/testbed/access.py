"""What happens to the MR's access links: carrier loss, handover to another AR, new care-of
address. Each function changes the kernel the way the real event would and returns at once,
so the services react on their own (netlink events, Binding Updates) as they would in the
field; the caller records when the change was made.

A handover is split in two, as it happens: `detach` (the link leaves its access network: the
AR's port goes down, so the MR sees carrier loss, and the MR drops the care-of address that
belonged to that network) and `attach` (the link joins an access network: the AR's end is moved
into that AR's namespace if it is elsewhere, comes up, and the MR takes an address on the new
prefix, as SLAAC would; the MCoA agent then sends its Binding Update).
"""

from __future__ import annotations

from services.testbed import addressing as a
from services.testbed.topology import Topology


def attached_to(bed: Topology, interface: str) -> str | None:
    """The AR whose namespace holds the far end of the MR's `interface`, or None."""
    port = a.mr_link(interface).port
    for router in a.ACCESS_ROUTERS:
        shown = bed.run(router, ["ip", "-o", "link", "show", "dev", port], check=False)
        if shown.strip():
            return router
    return None


def set_carrier(bed: Topology, interface: str, *, up: bool) -> None:
    """Take the AR's end of the link down or up: the MR's device loses or regains carrier.

    Up also gives the port its addresses again: an admin down removes the hand-made
    link-local fe80::1 (keep_addr_on_down keeps global addresses only), and without it the
    MR's next hop on this link would never resolve.
    """
    router = _router_of(bed, interface)
    port = a.mr_link(interface).port
    if up:
        bed.configure_port(router, port)
    else:
        bed.run(router, ["ip", "link", "set", port, "down"])


def global_addresses(bed: Topology, interface: str) -> list[str]:
    """The MR's global IPv6 addresses on `interface` (its care-of addresses), with length."""
    out = bed.run("mr", ["ip", "-6", "-o", "addr", "show", "dev", interface, "scope", "global"])
    return [line.split()[3] for line in out.splitlines() if len(line.split()) > 3]


def detach(bed: Topology, interface: str) -> list[str]:
    """The link leaves its access network; return the care-of addresses it lost."""
    set_carrier(bed, interface, up=False)
    lost = global_addresses(bed, interface)
    for address in lost:
        bed.run("mr", ["ip", "-6", "addr", "del", address, "dev", interface])
    return lost


def attach(bed: Topology, interface: str, router: str) -> str:
    """The link joins `router`'s access network; return the MR's new care-of address."""
    if router not in a.ACCESS_ROUTERS:
        raise KeyError(f"unknown access router {router!r}")
    port = a.mr_link(interface).port
    current = _router_of(bed, interface)
    if current != router:
        bed.run(current, ["ip", "link", "set", port, "netns", bed.ns(router)])
    bed.configure_port(router, port)
    address = a.care_of(router)
    bed.addr("mr", interface, f"{address}/64")
    return address


def change_care_of(bed: Topology, interface: str, address: str) -> list[str]:
    """Give the link a new care-of address (make before break); return the old ones."""
    old = [x for x in global_addresses(bed, interface) if x.split("/")[0] != address]
    bed.addr("mr", interface, f"{address}/64")
    for entry in old:
        bed.run("mr", ["ip", "-6", "addr", "del", entry, "dev", interface])
    return old


def _router_of(bed: Topology, interface: str) -> str:
    router = attached_to(bed, interface)
    if router is None:
        raise LookupError(f"the far end of {interface} is in no access router")
    return router


DEGRADE_TABLE = "multinet_degrade"


def set_loss(bed: Topology, interface: str, loss: float) -> str:
    """Drop `loss` (0..1) of the packets crossing the AR's end of the link, both ways, at
    random (nft `numgen random`, per mille; the kernels here have no netem); 0 removes the
    rules. Probes to the AR itself (its input and output) are dropped alike, so the monitor
    sees the loss the traffic sees. Returns the AR it was done in."""
    router = _router_of(bed, interface)
    port = a.mr_link(interface).port
    bed.run(router, ["nft", "delete", "table", "inet", DEGRADE_TABLE], check=False)
    per_mille = round(loss * 1000)
    if per_mille <= 0:
        return router
    drop = f"numgen random mod 1000 < {per_mille} drop"
    script = (
        f"table inet {DEGRADE_TABLE} {{\n"
        f"  chain pre {{ type filter hook prerouting priority -300; "
        f'iifname "{port}" {drop}; }}\n'
        f"  chain post {{ type filter hook postrouting priority 300; "
        f'oifname "{port}" {drop}; }}\n'
        "}\n"
    )
    bed.run(router, ["nft", script])
    return router
