"""Who is where in the test bed: namespace names, links, addresses and ifindexes (pure).

```
 [cn] eth0 --- cn [ha] ar1 --- ha [ar1] mr-eth0 --- eth0 [mr] pan0 --- eth0 [mnn]
                       ar2 --- ha [ar2] mr-eth1 --- eth1
                       ar3 --- ha [ar3]           (eth1's far end moves here on a handover)
```
Every access router (AR) serves one access network, `2001:db8:N::/64` for ARN, with the
router at `::1` and the link-local `fe80::1` on its access port (so the MR's next hop and
probe target stay the same whichever AR a link is attached to). The HA reaches each access
network through its AR (`2001:db8:aN::/64` transit links) and holds its own address
`2001:db8:100::1` on loopback; the ARs only know the way to the HA's home network, so a
packet for a care-of address that left its AR is answered "unreachable" rather than looping.
The mobile network prefix `2001:db8:ff::/64` is the MR's PAN link with the MNN on it.

AR3 starts with no access port: a handover moves the AR end of eth1's link there (the MR sees
carrier loss, then a new access network and a new care-of address), as a real MR's second
interface would move from one access network to another.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

HA_ADDRESS = "2001:db8:100::1"
HOME_NETWORK = "2001:db8:100::/64"
MR_HOME = "2001:db8:100::2"
MNP = "2001:db8:ff::/64"
MNN = "2001:db8:ff::1"
MR_PAN = "2001:db8:ff::fe"
CN = "2001:db8:c::2"
HA_CN_SIDE = "2001:db8:c::1"
AR_LINK_LOCAL = "fe80::1"
MOBILE_ROUTER = "mr1"
HA_NODE = "ha1"
MR_NODE = "mr1"
TABLE_BASE = 1000
DEFAULT_PATH_PRIORITY = 32100  # after the `local` rule (moved to 32000 by the MCoA agents)
#: >= 1540 for SRv6 pipes (40 bytes more, and no path-MTU discovery on the forwarding path);
#: VXLAN and ip6tnl pipes would do with 1500 (their devices take the 70/40 bytes off).
UNDERLAY_MTU = 1600
NODES = ("cn", "ha", "ar1", "ar2", "ar3", "mr", "mnn")
ACCESS_ROUTERS = ("ar1", "ar2", "ar3")


@dataclass(frozen=True)
class MrLink:
    """One access link of the MR: its device, BID, technology and the AR it starts on."""

    interface: str
    bid: int
    technology: str
    router: str
    priority: int

    @property
    def port(self) -> str:
        """The name of the link's far end, in whichever AR it is attached to."""
        return f"mr-{self.interface}"


MR_LINKS = (
    MrLink("eth0", 1, "wlan", "ar1", 10),
    MrLink("eth1", 2, "lte", "ar2", 5),
)


def mr_link(interface: str) -> MrLink:
    """The MR link on `interface` (KeyError names the known ones)."""
    for link in MR_LINKS:
        if link.interface == interface:
            return link
    raise KeyError(f"no MR link {interface!r} (known: {', '.join(i.interface for i in MR_LINKS)})")


def network_of(router: str) -> int:
    """The access network number N of router arN."""
    return int(router.removeprefix("ar"))


def access_prefix(router: str) -> str:
    """The access network an AR serves."""
    return f"2001:db8:{network_of(router)}::/64"


def router_address(router: str) -> str:
    """The AR's global address on its access network."""
    return f"2001:db8:{network_of(router)}::1"


def care_of(router: str, host: int = 2) -> str:
    """A care-of address the MR takes on `router`'s access network."""
    return f"2001:db8:{network_of(router)}::{host:x}"


def transit(router: str) -> tuple[str, str]:
    """(HA side, AR side) addresses of the HA-AR transit link."""
    n = network_of(router)
    return f"2001:db8:a{n}::1", f"2001:db8:a{n}::2"


@dataclass(frozen=True)
class Naming:
    """The namespace names of one test bed: `<prefix>-<node>`.

    A fixed prefix ("mtb") makes a second build find and replace the first; tests use their
    own prefix so they never touch a test bed someone left running.
    """

    prefix: str = "mtb"

    def ns(self, node: str) -> str:
        """The namespace of `node` (one of NODES)."""
        if node not in NODES:
            raise KeyError(f"unknown test bed node {node!r} (known: {', '.join(NODES)})")
        return f"{self.prefix}-{node}"

    def all(self) -> tuple[str, ...]:
        """Every namespace of the test bed, in build order."""
        return tuple(self.ns(node) for node in NODES)

    def ifindex_base(self) -> int:
        """First ifindex of this bed's veth pairs: unique per prefix, so two beds' links do
        not share indexes (equal indexes delay carrier events by about 1 s, docs/kernel.md)."""
        return 5000 + (zlib.crc32(self.prefix.encode()) % 4000) * 16
