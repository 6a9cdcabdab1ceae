"""Build and tear down the test bed's namespaces (Figure 6 of the paper), idempotently.

`build()` always starts from nothing: it tears down whatever carries the same names first
(processes inside those namespaces included), then creates every namespace, link, address,
route and rule, and rolls everything back if any step fails. `destroy()` may be called any
number of times. The BID tables and pipes themselves are made by the MCoA agents, as in a
real deployment; this module only adds the default path (BID 1) that unmarked traffic takes:
at the HA a rule `to MNP lookup <BID 1 table>`, at the MR two rules for traffic from the PAN
(the main table without its default route, then the BID 1 table), both placed after the
`local` rule so that packets for the nodes' own addresses are still delivered locally.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time

from services import netns
from services.testbed import addressing as a

log = logging.getLogger(__name__)

_SYSCTLS = (
    "net.ipv6.conf.all.keep_addr_on_down=1",
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
    "net.ipv6.conf.all.accept_ra=0",
    "net.ipv6.conf.default.accept_ra=0",
)
_ROUTERS = ("ha", "ar1", "ar2", "ar3", "mr")
_KILL_GRACE_S = 3.0


class Topology:
    """The namespaces of one test bed, named by `naming`."""

    def __init__(self, naming: a.Naming | None = None) -> None:
        self.naming = naming or a.Naming()

    def ns(self, node: str) -> str:
        """The namespace of `node`."""
        return self.naming.ns(node)

    def run(self, node: str, argv: list[str], *, check: bool = True) -> str:
        """Run a command in `node`'s namespace; return its output."""
        return netns.run(self.ns(node), argv, check=check)

    def exists(self) -> bool:
        """Whether any namespace of this test bed exists."""
        return any(netns.exists(name) for name in self.naming.all())

    def build(self) -> None:
        """Create the whole topology from scratch (tearing down a previous one first)."""
        self.destroy()
        try:
            for name in self.naming.all():
                netns.create(name)
            self._sysctls()  # first: the links made next inherit "no DAD" for their addresses
            self._links()
            self._addresses()
            self._routes()
            self.warm_up()
        except BaseException:
            log.exception("test bed build failed; tearing down what was made")
            self.destroy()
            raise

    def destroy(self) -> None:
        """Stop every process inside our namespaces, then delete the namespaces."""
        names = [n for n in self.naming.all() if netns.exists(n)]
        pids = {pid for name in names for pid in _pids_in(name)}
        _terminate(pids)
        for name in reversed(names):
            netns.delete(name)

    def _links(self) -> None:
        base = self.naming.ifindex_base()
        ns = self.ns
        netns.veth(ns("cn"), "eth0", ns("ha"), "cn", base)
        # One segment per packet at the CN, so the counters count what a capture on the wire
        # would (the paper's Figure 7 came from Ethereal), not TSO super-packets.
        self.run("cn", ["ip", "link", "set", "eth0", "gso_max_segs", "1"])
        for offset, router in enumerate(a.ACCESS_ROUTERS):
            netns.veth(ns("ha"), router, ns(router), "ha", base + 2 + 2 * offset)
        for offset, link in enumerate(a.MR_LINKS):
            netns.veth(ns("mr"), link.interface, ns(link.router), link.port, base + 8 + 2 * offset)
        netns.veth(ns("mr"), "pan0", ns("mnn"), "eth0", base + 12)
        for router in a.ACCESS_ROUTERS:
            self.run("ha", ["ip", "link", "set", router, "mtu", str(a.UNDERLAY_MTU)])
            self.run(router, ["ip", "link", "set", "ha", "mtu", str(a.UNDERLAY_MTU)])
        for link in a.MR_LINKS:
            self.run("mr", ["ip", "link", "set", link.interface, "mtu", str(a.UNDERLAY_MTU)])
            self.run(link.router, ["ip", "link", "set", link.port, "mtu", str(a.UNDERLAY_MTU)])

    def _sysctls(self) -> None:
        for node in a.NODES:
            for key in _SYSCTLS:
                self.run(node, ["sysctl", "-qw", key])
        for node in _ROUTERS:
            self.run(node, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])

    def _addresses(self) -> None:
        self.addr("cn", "eth0", f"{a.CN}/64")
        self.addr("ha", "cn", f"{a.HA_CN_SIDE}/64")
        self.addr("ha", "lo", f"{a.HA_ADDRESS}/128")
        for router in a.ACCESS_ROUTERS:
            ha_side, ar_side = a.transit(router)
            self.addr("ha", router, f"{ha_side}/64")
            self.addr(router, "ha", f"{ar_side}/64")
        for link in a.MR_LINKS:
            self.configure_port(link.router, link.port)
            self.addr("mr", link.interface, f"{a.care_of(link.router)}/64")
        self.addr("mr", "pan0", f"{a.MR_PAN}/64")
        self.addr("mnn", "eth0", f"{a.MNN}/64")

    def configure_port(self, router: str, port: str) -> None:
        """Give an AR's access port its addresses (global and the shared link-local), up."""
        self.addr(router, port, f"{a.router_address(router)}/64")
        self.addr(router, port, f"{a.AR_LINK_LOCAL}/64")
        self.run(router, ["ip", "link", "set", port, "mtu", str(a.UNDERLAY_MTU), "up"])

    def _routes(self) -> None:
        self.run("cn", ["ip", "-6", "route", "replace", "default", "via", a.HA_CN_SIDE])
        self.run("mnn", ["ip", "-6", "route", "replace", "default", "via", a.MR_PAN])
        for router in a.ACCESS_ROUTERS:
            ha_side, ar_side = a.transit(router)
            self.run(
                "ha", ["ip", "-6", "route", "replace", a.access_prefix(router), "via", ar_side]
            )
            self.run(router, ["ip", "-6", "route", "replace", a.HOME_NETWORK, "via", ha_side])
        default_table = str(a.TABLE_BASE + a.MR_LINKS[0].bid)
        prio = a.DEFAULT_PATH_PRIORITY
        rule = ["ip", "-6", "rule", "add", "pref"]
        self.run("ha", [*rule, str(prio), "to", a.MNP, "lookup", default_table])
        self.run(
            "mr", [*rule, str(prio), "iif", "pan0", "lookup", "main", "suppress_prefixlength", "0"]
        )
        self.run("mr", [*rule, str(prio + 1), "iif", "pan0", "lookup", default_table])

    def addr(self, node: str, dev: str, address: str) -> None:
        """Add an address without duplicate address detection (usable at once)."""
        self.run(node, ["ip", "-6", "addr", "replace", address, "dev", dev, "nodad"])

    def warm_up(self) -> None:
        """Resolve the neighbours on every path once, so the first packets are not queued."""
        pairs = [("cn", a.HA_CN_SIDE), ("ha", a.CN), ("mnn", a.MR_PAN), ("mr", a.MNN)]
        for router in a.ACCESS_ROUTERS:
            ha_side, ar_side = a.transit(router)
            pairs += [("ha", ar_side), (router, ha_side)]
        for link in a.MR_LINKS:
            pairs += [
                ("mr", f"{a.AR_LINK_LOCAL}%{link.interface}"),
                (link.router, a.care_of(link.router)),
            ]
        for node, target in pairs:
            self.run(node, ["ping", "-6", "-c", "1", "-W", "1", target], check=False)


def _pids_in(name: str) -> set[int]:
    """Processes whose network namespace is `name` (ours, since the namespace is ours)."""
    proc = subprocess.run(
        ["ip", "netns", "pids", name], capture_output=True, text=True, check=False
    )
    return {int(p) for p in proc.stdout.split() if p.isdigit() and int(p) != os.getpid()}


def _terminate(pids: set[int]) -> None:
    """SIGTERM, then SIGKILL whatever is left after a grace period."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + _KILL_GRACE_S
    while pids and time.monotonic() < deadline:
        pids = {pid for pid in pids if _alive(pid)}
        time.sleep(0.05)
    for pid in pids:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap our own children so they do not stay zombies
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False
