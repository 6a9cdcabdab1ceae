"""A namespace lab for the MCoA agents: CN -> HA, and HA <-> MR over two direct links.

```
 [cn] c0 ---- h0 [ha] h1 ---- m1 [mr] m0 ---- n0 [mnn]   link 1, 2001:db8:1::/64, BID 1
                      h2 ---- m2                         link 2, 2001:db8:2::/64, BID 2
```
The HA address 2001:db8:100::1 sits on the HA's loopback; the mobile network prefix
2001:db8:ff::/64 is the MR's m0 link, with the MNN at 2001:db8:ff::1. (Not on the MR's
loopback: SRv6's End.DT6 routes the inner packet by the main table alone, where a local-only
address has no route.) The HA's main table has no route to the MNP: only the BID tables,
filled by the agent, lead there. Agents run as subprocesses under `ip netns exec`, so SIGTERM
and SIGKILL reach them as in production; both build pipes of the lab's `pipe` kind, and every
wait (`McoaLab.wait`) fails at once when an agent has exited.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from labs.mobility_events import Arrival, EventListener
from services import netns
from services.contracts.messages import BindingEventKind
from tests.waiting import Watched
from tests.waiting import wait_for as _wait_for

HA_ADDRESS = "2001:db8:100::1"
MR_HOME = "2001:db8:100::2"
MNP = "2001:db8:ff::/64"
MNN = "2001:db8:ff::1"
CN = "2001:db8:c::2"
TABLE_BASE = 1000
ROOT = Path(__file__).resolve().parents[2]


def wait_for(what: str, check: Callable[[], bool], timeout: float, step: float = 0.01) -> float:
    """Poll `check` until true (no process to watch: prefer `McoaLab.wait`)."""
    return _wait_for(what, check, timeout, step=step)


@dataclass
class McoaLab:
    """Names and helpers of one lab; `build` creates it in namespaces from `make`."""

    make: Callable[[str], str]
    workdir: Path
    pipe: str = "auto"
    cn: str = ""
    ha: str = ""
    mr: str = ""
    mnn: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def build(self) -> None:
        self.cn, self.ha, self.mr = self.make("cn"), self.make("ha"), self.make("mr")
        self.mnn = self.make("mnn")
        base = 2000 + int.from_bytes(os.urandom(2), "big") % 40000
        netns.veth(self.cn, "c0", self.ha, "h0", base)
        netns.veth(self.ha, "h1", self.mr, "m1", base + 2)
        netns.veth(self.ha, "h2", self.mr, "m2", base + 4)
        netns.veth(self.mr, "m0", self.mnn, "n0", base + 6)
        for ns in (self.cn, self.ha, self.mr, self.mnn):
            for key in (
                "net.ipv6.conf.all.keep_addr_on_down=1",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.all.forwarding=1",
            ):
                netns.run(ns, ["sysctl", "-qw", key])
        for ns, dev in ((self.ha, "h1"), (self.ha, "h2"), (self.mr, "m1"), (self.mr, "m2")):
            netns.run(ns, ["ip", "link", "set", dev, "mtu", "1600"])
        self._addr(self.cn, "c0", f"{CN}/64")
        self._addr(self.ha, "h0", "2001:db8:c::1/64")
        self._addr(self.ha, "h1", "2001:db8:1::1/64")
        self._addr(self.ha, "h2", "2001:db8:2::1/64")
        self._addr(self.ha, "lo", f"{HA_ADDRESS}/128")
        self._addr(self.mr, "m1", "2001:db8:1::2/64")
        self._addr(self.mr, "m2", "2001:db8:2::2/64")
        self._addr(self.mr, "m0", "2001:db8:ff::fe/64")
        self._addr(self.mnn, "n0", f"{MNN}/64")
        netns.run(self.cn, ["ip", "-6", "route", "add", "default", "via", "2001:db8:c::1"])
        netns.run(self.mnn, ["ip", "-6", "route", "add", "default", "via", "2001:db8:ff::fe"])
        self.warm_up()

    def warm_up(self) -> None:
        """Resolve the neighbours on the path once, so a burst is not lost to queued ND."""
        for ns, target in (
            (self.cn, "2001:db8:c::1"),
            (self.ha, CN),
            (self.mnn, "2001:db8:ff::fe"),
            (self.mr, MNN),
            (self.ha, "2001:db8:1::2"),
            (self.ha, "2001:db8:2::2"),
        ):
            netns.run(ns, ["ping", "-c", "1", "-W", "2", target], check=False)

    def mark_by_port(self) -> None:
        """In HA and MR: UDP to port 5001 gets BID 1's mark, 5002 BID 2's (as the PREM would)."""
        ruleset = (
            "table ip6 mcoatest {\n"
            "  chain pre { type filter hook prerouting priority mangle;\n"
            "    udp dport 5001 meta mark set 0x10000\n"
            "    udp dport 5002 meta mark set 0x20000\n"
            "  }\n"
            "}\n"
        )
        path = self.workdir / "mark.nft"
        path.write_text(ruleset)
        for ns, bid in ((ns, bid) for ns in (self.ha, self.mr) for bid in (1, 2)):
            if bid == 1:
                netns.run(ns, ["nft", "-f", str(path)])
            netns.run(
                ns,
                [
                    "ip",
                    "-6",
                    "rule",
                    "add",
                    "pref",
                    "20000",
                    "fwmark",
                    f"{bid << 16:#x}/0xff0000",
                    "lookup",
                    str(TABLE_BASE + bid),
                ],
            )

    def _addr(self, ns: str, dev: str, address: str) -> None:
        netns.run(ns, ["ip", "-6", "addr", "add", address, "dev", dev, "nodad"])

    def write_config(
        self,
        role: str,
        *,
        lifetime: int = 60,
        topic_root: str | None = None,
        metrics_port: int | None = None,
    ) -> Path:
        """The agent's settings; with `topic_root` the HA publishes its binding events there,
        with `metrics_port` the agent serves /metrics on 127.0.0.1:`metrics_port`."""
        metrics = "" if metrics_port is None else f'metrics_listen = "127.0.0.1:{metrics_port}"\n'
        if role == "ha":
            publish = "" if topic_root is None else "publish_events = true\n"
            body = (
                f'[mcoa]\nnode = "ha1"\nrole = "ha"\npipe = "{self.pipe}"\n{metrics}'
                f'[mcoa.ha]\nha_address = "{HA_ADDRESS}"\n{publish}'
                "[[mcoa.ha.mobile_routers]]\n"
                f'home_address = "{MR_HOME}"\nprefixes = ["2001:db8:ff::/48"]\n'
            )
            if topic_root is not None:
                body += (
                    f'id = "mr1"\n[broker]\ntopic_root = "{topic_root}"\nsession_expiry_s = 60\n'
                )
        else:
            body = (
                f'[mcoa]\nnode = "mr1"\nrole = "mr"\npipe = "{self.pipe}"\n{metrics}'
                f'[mcoa.mr]\nmr_id = "mr1"\nhome_address = "{MR_HOME}"\n'
                f'ha_address = "{HA_ADDRESS}"\nprefixes = ["{MNP}"]\nlifetime = {lifetime}\n'
                "links = [\n"
                '  { interface = "m1", bid = 1, priority = 10, gateway = "2001:db8:1::1" },\n'
                '  { interface = "m2", bid = 2, priority = 5, gateway = "2001:db8:2::1" },\n'
                "]\n"
            )
        path = self.workdir / f"{role}.toml"
        path.write_text(body)
        return path

    def start(self, role: str, *, lifetime: int = 60) -> None:
        """Start one agent under `ip netns exec` (in its namespace, bus included)."""
        self._spawn(role, self.write_config(role, lifetime=lifetime), in_netns=True)

    def start_metered(self, role: str, metrics_port: int, *, lifetime: int = 60) -> None:
        """Start one agent serving /metrics on 127.0.0.1:`metrics_port`; it runs with --netns,
        so the endpoint stays in our namespace (the management side)."""
        config = self.write_config(role, lifetime=lifetime, metrics_port=metrics_port)
        self._spawn(role, config, in_netns=False)

    def start_publishing_ha(self, topic_root: str) -> None:
        """Start the HA publishing its own binding events under `topic_root`; it runs with
        --netns, so its bus connection stays in our namespace (where the broker is)."""
        self._spawn("ha", self.write_config("ha", topic_root=topic_root), in_netns=False)

    def _spawn(self, role: str, config: Path, *, in_netns: bool) -> None:
        ns = self.ha if role == "ha" else self.mr
        log = (self.workdir / f"{role}.log").open("wb")
        args = ["mcoa-agent", "--role", role, "--config", str(config)]
        self.procs[role] = subprocess.Popen(
            [
                *(["ip", "netns", "exec", ns] if in_netns else []),
                sys.executable,
                "-m",
                "services.cli",
                *args,
                *([] if in_netns else ["--netns", ns]),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def log(self, role: str) -> str:
        return (self.workdir / f"{role}.log").read_text(errors="replace")

    def watched(self) -> list[Watched]:
        """The agents started so far, for waits that must fail when one has exited."""
        return [
            Watched(f"{role} agent", proc, self.workdir / f"{role}.log")
            for role, proc in self.procs.items()
        ]

    def wait(self, what: str, check: Callable[[], bool], timeout: float) -> float:
        """Poll `check` until true; fail at once, with its log, if an agent has exited."""
        return _wait_for(what, check, timeout, watch=self.watched())

    def signal(self, role: str, sig: signal.Signals) -> int:
        """Send `sig` to an agent and wait for it to end (it is no longer watched)."""
        proc = self.procs.pop(role)
        proc.send_signal(sig)
        return proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    def routes(self, ns: str, table: int) -> str:
        return netns.run(ns, ["ip", "-6", "route", "show", "table", str(table)], check=False)

    def ha_far_end(self, bid: int) -> str | None:
        """The care-of address the HA's pipe for `bid` leads to, read with `ip` (independent
        of the agent's own code), whatever the pipe kind."""
        for line in self.routes(self.ha, TABLE_BASE + bid).splitlines():
            words = line.split()
            if not words or words[0] != MNP:
                continue
            if "seg6" in words:  # encap seg6 mode encap.red segs 1 [ COA ]
                return line.split("[")[1].split("]")[0].strip()
            if "ip6" in words and "dst" in words:  # encap ip6 id BID src HA dst COA
                return words[words.index("dst") + 1]
            if "dev" in words:  # ip6tnl: a device per binding, `link/tunnel6 HA peer COA`
                dev = words[words.index("dev") + 1]
                link = netns.run(self.ha, ["ip", "-d", "link", "show", dev], check=False).split()
                return link[link.index("peer") + 1] if "peer" in link else None
        return None

    def pipe_devices(self, ns: str) -> list[str]:
        """The names of pipe devices (`mnvx*`, `mn6*`) in `ns`, read with `ip`."""
        names = [
            line.split(": ")[1].split("@")[0]
            for line in netns.run(ns, ["ip", "-o", "link"]).splitlines()
        ]
        return sorted(n for n in names if n.startswith(("mnvx", "mn6")))

    def tx_packets(self, ns: str, dev: str) -> int:
        return int(netns.run(ns, ["cat", f"/sys/class/net/{dev}/statistics/tx_packets"]))

    def udp_no_ports(self, ns: str | None = None) -> int:
        """Datagrams `ns` (the MNN) got for a closed port: proof that they were decapsulated."""
        for line in netns.run(ns or self.mnn, ["cat", "/proc/net/snmp6"]).splitlines():
            name, _, value = line.partition(" ")
            if name == "Udp6NoPorts":
                return int(value.strip())
        raise AssertionError("no Udp6NoPorts in /proc/net/snmp6")


def move_link1_care_of(lab: McoaLab, listener: EventListener, what: str, *logs: Path) -> Arrival:
    """Move the MR's care-of address on link 1 (2001:db8:1::2 -> ::3) and return the
    coa-changed event of BID 1, asserting its addresses and that it came within 200 ms of the
    change (`what` names where it was seen; `logs` are shown beside the agents' on failure)."""
    netns.run(lab.mr, ["ip", "-6", "addr", "add", "2001:db8:1::3/64", "dev", "m1", "nodad"])
    moved_at = time.time()
    netns.run(lab.mr, ["ip", "-6", "addr", "del", "2001:db8:1::2/64", "dev", "m1"])
    moved = listener.wait_for(BindingEventKind.COA_CHANGED, 1, 5)
    took = moved.at - moved_at
    print(f"CoA change -> coa-changed event {what} in {took * 1000:.1f} ms")
    assert moved.event.mobile_router == "mr1"
    assert moved.event.care_of_address == "2001:db8:1::3"
    assert moved.event.previous_care_of_address == "2001:db8:1::2"
    more = "".join(f"\n{log.read_text()[-3000:]}" for log in logs)
    assert took < 0.2, (
        f"the event arrived {took * 1000:.0f} ms after the address change"
        f"\n{lab.log('mr')[-3000:]}\n{lab.log('ha')[-3000:]}{more}"
    )
    return moved
