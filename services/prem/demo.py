"""`multinet prem demo`: a real worker in a namespace lab, driven over the real broker.

It shows the paper's core mechanism end to end: a flow follows its policy into BID 2, falls
back to BID 1 at once when BID 2's link loses carrier, returns, and goes back to the default
path when the policies are flushed. Every number printed is read from the kernel's counters.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
from services.prem.lab import MNP4, MNP6, Lab, send_udp
from services.process import stop

PACKETS = 200
PORT = 5001


def ensure_broker(host: str = "127.0.0.1", port: int = 1883, timeout_s: float = 10.0) -> None:
    """Start mosquitto on host:port unless a broker already answers there."""
    if _answers(host, port):
        return
    if shutil.which("mosquitto") is None:
        raise RuntimeError("no MQTT broker on 127.0.0.1:1883 and mosquitto is not installed")
    subprocess.run(["mosquitto", "-d", "-p", str(port)], check=True)
    deadline = time.monotonic() + timeout_s
    while not _answers(host, port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"mosquitto did not start listening on {host}:{port}")
        time.sleep(0.1)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


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
