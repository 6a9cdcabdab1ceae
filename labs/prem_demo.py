"""`multinet prem demo`: a real worker in a namespace lab, driven over the real broker.

It shows the paper's core mechanism end to end: a flow follows its policy into BID 2, falls
back to BID 1 at once when BID 2's link loses carrier, returns, and goes back to the default
path when the policies are flushed. Every number printed is read from the kernel's counters.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labs.prem import MNP4, MNP6, Lab, send_udp, worker_argv, write_config
from services import netns
from services.contracts import policy_xml
from services.contracts.policy import (
    Flush,
    Forward,
    Install,
    Operation,
    Policy,
    PolicyMessage,
    PortRange,
    Selector,
)
from services.contracts.settings import BrokerSettings
from services.prem.client import PolicyClient
from services.process import stop
from services.testbed.broker import ensure_broker

PACKETS = 200
PORT = 5001


def message(version: int, operation: Operation) -> bytes:
    """A downlink policy document for the lab's HA."""
    return policy_xml.render(
        PolicyMessage(
            node="ha1",
            mobile_router="mr1",
            direction="downlink",
            version=version,
            operation=operation,
        )
    )


VIDEO = Policy(
    id="video",
    priority=10,
    selector=Selector(next_header=17, dst_port=PortRange(first=PORT, last=PORT)),
    action=Forward(bid=2, fallbacks=(1,)),
)


@contextmanager
def worker_process(lab: Lab, config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The real worker, its own process, enforcing in the lab's router namespace."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*worker_argv(config, lab.router), "--remove-on-exit"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            stop(proc)


def measure(lab: Lab) -> tuple[int, int]:
    """Send PACKETS datagrams per family to the mobile network; return (b1, b2) packet deltas."""
    before = lab.tx_packets("b1"), lab.tx_packets("b2")
    netns.call_in(lab.sender, send_udp, MNP6, PORT, PACKETS)
    netns.call_in(lab.sender, send_udp, MNP4, PORT, PACKETS)
    return lab.tx_packets("b1") - before[0], lab.tx_packets("b2") - before[1]


def enforced_rules(lab: Lab, backend: str) -> str:
    """The router's marking rules and policy-routing rules, listed by the kernel's own tools."""
    if backend == "nftables":
        rules = netns.run(lab.router, ["nft", "list", "table", "inet", "multinet_prem"])
    else:
        rules = netns.run(lab.router, ["ip6tables-legacy-save", "-t", "mangle"])
        rules += netns.run(lab.router, ["iptables-legacy-save", "-t", "mangle"])
    routing = netns.run(lab.router, ["ip", "-6", "rule", "show"])
    routing += netns.run(lab.router, ["ip", "-4", "rule", "show"])
    return f"{rules.rstrip()}\n{routing.rstrip()}"


def run_demo(*, backend: str = "nftables", keep: bool = False) -> int:
    """Run the demo; print each step with the packet counts of both BID links."""
    if os.geteuid() != 0:
        print("multinet prem demo needs root (network namespaces and netfilter).", file=sys.stderr)
        return 2
    ensure_broker()
    lab = Lab()
    workdir = Path(tempfile.mkdtemp(prefix="multinet-demo-"))
    topic_root = f"demo-{uuid.uuid4().hex[:8]}/multinet/v1"
    print(f"building the lab (namespaces {lab.sender}, {lab.router}, {lab.receiver}) ...")
    lab.build()
    client = PolicyClient(BrokerSettings(topic_root=topic_root))
    rows: list[tuple[str, str, int, int]] = []
    enforced = ""
    try:
        config = write_config(lab, workdir, backend, topic_root)
        with worker_process(lab, config, workdir / "worker.log"):
            client.wait_online("ha1", timeout_s=20)
            rows.append(("t0 no policy: default path", "-", *measure(lab)))
            status = client.deliver("ha1", message(1, Install(policies=(VIDEO,))))
            rows.append(("t1 install video (UDP 5001) -> BID 2", _brief(status), *measure(lab)))
            enforced = enforced_rules(lab, backend)
            netns.run(lab.receiver, ["ip", "link", "set", "d2", "down"])
            status = client.next_status("ha1")
            rows.append(("t2 BID 2 link loses carrier -> fallback", _brief(status), *measure(lab)))
            netns.run(lab.receiver, ["ip", "link", "set", "d2", "up"])
            status = client.next_status("ha1")
            rows.append(("t3 carrier back -> BID 2 again", _brief(status), *measure(lab)))
            status = client.deliver("ha1", message(2, Flush()))
            rows.append(("t4 flush -> default path", _brief(status), *measure(lab)))
    finally:
        client.close()
        if not keep:
            lab.destroy()
    print(f"\nPREM worker demo ({backend} back end), {PACKETS} UDP datagrams per family per step")
    print(f"{'step':44} {'worker status':34} {'BID 1 (b1)':>10} {'BID 2 (b2)':>10}")
    for step, status_text, b1, b2 in rows:
        print(f"{step:44} {status_text:34} {b1:>10} {b2:>10}")
    print(f"\nWhat the worker enforced at t1, as the router's kernel lists it:\n{enforced}")
    print(f"worker log: {workdir / 'worker.log'}")
    return 0


def _brief(status: object) -> str:
    from services.contracts.messages import PolicyStatus

    assert isinstance(status, PolicyStatus)
    text = f"{status.result} v{status.version} {status.elapsed_ms:.1f} ms"
    if status.fallbacks:
        text += " " + ",".join(f"{f.policy_id}->{f.active_bid}" for f in status.fallbacks)
    return text
