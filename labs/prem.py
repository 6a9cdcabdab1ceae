"""A small namespace lab for the PREM worker: sender -> router -> two BID links -> receiver.

```
 [sender] s0 ---- r0 [router] b1 ---- d1 [receiver]   BID 1 (table base+1), the default path
                           b2 ---- d2                 BID 2 (table base+2)
```
The receiver holds the "mobile network" addresses (2001:db8:ff::1, 10.255.0.1) on its loopback.
The router forwards to them by the main table through b1; each BID table routes them through its
own link. Packet counters of b1 and b2 (tx on the router) show which pipe a flow takes. Used by
the demo, the kernel tests and the benchmarks; every command is an argument list. A real worker
runs as its own process (`worker_argv`) with a settings file for the lab (`write_config`).
"""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from services import netns
from services.prem.config import PremSettings

MNP6 = "2001:db8:ff::1"
MNP4 = "10.255.0.1"
SENDER6 = "2001:db8:a::1"
SENDER4 = "10.0.0.1"


@dataclass
class Lab:
    """Names of the lab's namespaces and links; `build()` creates them, `destroy()` removes them."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    table_base: int = 1000
    ifindex_base: int = 0

    @property
    def sender(self) -> str:
        """The sender's namespace."""
        return f"mnt-snd-{self.tag}"

    @property
    def router(self) -> str:
        """The router's namespace (where the PREM worker enforces)."""
        return f"mnt-rtr-{self.tag}"

    @property
    def receiver(self) -> str:
        """The receiver's namespace."""
        return f"mnt-rcv-{self.tag}"

    def build(self) -> None:
        """Create namespaces, links, addresses and routes (idempotent: rebuilds from scratch)."""
        self.destroy()
        for name in (self.sender, self.router, self.receiver):
            netns.create(name)
        base = self.ifindex_base or 1000 + int(self.tag[:4], 16) % 50000
        netns.veth(self.sender, "s0", self.router, "r0", base)
        netns.veth(self.router, "b1", self.receiver, "d1", base + 2)
        netns.veth(self.router, "b2", self.receiver, "d2", base + 4)
        for ns in (self.sender, self.router, self.receiver):
            for key in (
                "net.ipv6.conf.all.keep_addr_on_down=1",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ):
                netns.run(ns, ["sysctl", "-qw", key])
            # Replies leave by b1 whatever pipe the request took: no reverse-path filter.
            for key in ("net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"):
                netns.run(ns, ["sysctl", "-qw", key])
        for key in ("net.ipv6.conf.all.forwarding=1", "net.ipv4.ip_forward=1"):
            netns.run(self.router, ["sysctl", "-qw", key])
        self._addr(self.sender, "s0", f"{SENDER6}/64", f"{SENDER4}/24")
        self._addr(self.router, "r0", "2001:db8:a::2/64", "10.0.0.2/24")
        self._addr(self.router, "b1", "2001:db8:1::1/64", "10.1.0.1/24")
        self._addr(self.receiver, "d1", "2001:db8:1::2/64", "10.1.0.2/24")
        self._addr(self.router, "b2", "2001:db8:2::1/64", "10.2.0.1/24")
        self._addr(self.receiver, "d2", "2001:db8:2::2/64", "10.2.0.2/24")
        self._addr(self.receiver, "lo", f"{MNP6}/128", f"{MNP4}/32")
        for ns in (self.sender, self.router, self.receiver):
            netns.run(ns, ["ip", "link", "set", "lo", "up"])
        self._route(self.sender, "default", "2001:db8:a::2", "10.0.0.2")
        self._route(self.receiver, "default", "2001:db8:1::1", "10.1.0.1")
        self._route(self.router, "mnp", "2001:db8:1::2", "10.1.0.2")
        self._route(self.router, "mnp", "2001:db8:1::2", "10.1.0.2", table=self.table_base + 1)
        self._route(self.router, "mnp", "2001:db8:2::2", "10.2.0.2", table=self.table_base + 2)
        self.warm_up()

    def warm_up(self) -> None:
        """Resolve every neighbour once, so that the first test packets are not queued or lost."""
        for ns, target in (
            (self.sender, MNP6),
            (self.sender, MNP4),
            (self.router, "2001:db8:2::2"),
            (self.router, "10.2.0.2"),
            (self.receiver, SENDER6),
            (self.receiver, SENDER4),
        ):
            netns.run(ns, ["ping", "-c", "1", "-W", "2", target], check=False)

    def destroy(self) -> None:
        """Delete the namespaces (and so every link in them)."""
        for name in (self.sender, self.router, self.receiver):
            netns.delete(name)

    def tx_packets(self, link: str) -> int:
        """Packets the router sent on `link` (b1 or b2), read from the kernel's counters."""
        out = netns.run(self.router, ["cat", f"/sys/class/net/{link}/statistics/tx_packets"])
        return int(out)

    def settings(self, backend: str, state_dir: Path, **overrides: object) -> PremSettings:
        """Worker settings for the router: BID 1 on b1, BID 2 on b2."""
        data: dict[str, object] = {
            "node": "ha1",
            "role": "ha",
            "mobile_router": "mr1",
            "backend": backend,
            "bids": [{"bid": 1, "interface": "b1"}, {"bid": 2, "interface": "b2"}],
            "table_base": self.table_base,
            "state_file": str(state_dir / f"prem-{self.tag}.json"),
        }
        data.update(overrides)
        return PremSettings.model_validate(data)

    def _addr(self, ns: str, dev: str, addr6: str, addr4: str) -> None:
        netns.run(ns, ["ip", "-6", "addr", "add", addr6, "dev", dev, "nodad"])
        netns.run(ns, ["ip", "-4", "addr", "add", addr4, "dev", dev])

    def _route(self, ns: str, dest: str, via6: str, via4: str, table: int | None = None) -> None:
        extra = ["table", str(table)] if table is not None else []
        d6, d4 = (
            ("default", "default") if dest == "default" else ("2001:db8:ff::/64", "10.255.0.0/24")
        )
        netns.run(ns, ["ip", "-6", "route", "replace", d6, "via", via6, *extra])
        netns.run(ns, ["ip", "-4", "route", "replace", d4, "via", via4, *extra])


def send_udp(dst: str, port: int, count: int, *, src_port: int = 40000, payload: int = 64) -> int:
    """Send `count` UDP datagrams to dst:port from the current namespace; return how many left."""
    import socket

    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    sent = 0
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", src_port))  # noqa: S104
        for _ in range(count):
            sock.sendto(b"x" * payload, (dst, port))
            sent += 1
    return sent


def worker_argv(config: Path, netns_name: str) -> list[str]:
    """The command line of a worker enforcing in `netns_name`, bus in the current namespace."""
    return [
        sys.executable,
        "-m",
        "services.cli",
        "prem",
        "run",
        "--config",
        str(config),
        "--netns",
        netns_name,
    ]


def write_config(lab: Lab, workdir: Path, backend: str, topic_root: str) -> Path:
    """The worker's settings file for the lab's router."""
    config = workdir / "prem.toml"
    config.write_text(
        "[prem]\n"
        'node = "ha1"\nrole = "ha"\nmobile_router = "mr1"\n'
        f'backend = "{backend}"\ntable_base = {lab.table_base}\n'
        f'state_file = "{workdir / "state.json"}"\n'
        'bids = [{ bid = 1, interface = "b1" }, { bid = 2, interface = "b2" }]\n'
        "[broker]\n"
        f'topic_root = "{topic_root}"\n'
        "session_expiry_s = 600\n",  # a lab run's session need not outlive it by a day
        encoding="utf-8",
    )
    return config
