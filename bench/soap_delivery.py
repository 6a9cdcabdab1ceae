"""SOAP delivery benchmark: `python -m bench.soap_delivery [--quick] [--no-fail]` (as root).

One delivery is an Install of 10 policies to a mobile router's HA and MR: request in, both
workers' acknowledgements, response out. The gateway runs as its own process
(`multinet soap-gateway`, callers configured so authentication is on), the workers are real
PREM processes (memory back end, each in a bare network namespace of its own, state file
written and fsynced as in production) on the real broker under a unique topic root.

Clients post a prepared envelope with http.client on keep-alive connections (not zeep), so
the gateway is measured and not the client. A worker refuses a version not above the one it
enforces, so each mobile router's deliveries must arrive in order: every client drives its
own mobile router (its own HA and MR worker) and sends one delivery at a time. With
`--fleet-ha`, one HA worker serves every router's HA node (`serves`, its SQLite store), as an
HA of a fleet would, and each router keeps its MR worker.

(a) sustained: N clients back to back for a while: deliveries per second.
(b) fixed rate: 100 deliveries/s spread over the clients on a fixed schedule; latency is
    measured from the scheduled send time, so a late answer delays and counts against the
    next one (no coordinated omission).
Targets: (a) >= 200 deliveries/s; (b) p99 < 50 ms. Exit 1 when one fails (unless --no-fail).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from bench.broker import tuned_broker
from labs.prem import worker_argv
from services import netns
from services.contracts import policy_xml
from services.contracts.policy import (
    Forward,
    Install,
    Policy,
    PolicyMessage,
    PortRange,
    Selector,
)
from services.process import stop
from services.soap_gateway.passwords import hash_password
from services.testbed.broker import ensure_broker

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
GW = "urn:multinet:soap-gateway:1"
SENTINEL = b'version="7777777777"'
USER, PASSWORD = "bench", "bench-password"
TARGET_RATE = 200.0
TARGET_P99_MS = 50.0
FIXED_RATE = 100.0


#: Processes whose CPU time is accounted per delivery, by role.
PIDS: dict[str, list[int]] = {}


def cpu_seconds() -> dict[str, float]:
    """User + system CPU seconds so far of each role's processes (and this client)."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for role, pids in {**PIDS, "bench client": [os.getpid()]}.items():
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            totals[role] = totals.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return totals


def fsync_ms(directory: Path, rounds: int = 50) -> float:
    """Median time of a state-file style save: write, fsync, rename, fsync the directory."""
    samples = []
    for i in range(rounds):
        started = time.perf_counter()
        tmp = directory / f"probe.{i}.tmp"
        with tmp.open("wb") as handle:
            handle.write(b"x" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(directory / "probe.json")
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


@dataclass
class Router:
    """One mobile router: its nodes, its envelope template and its next version."""

    index: int
    version: int = 0
    template: bytes = b""
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return f"mr{self.index}"

    @property
    def ha(self) -> str:
        return f"ha{self.index}"

    def next_body(self) -> bytes:
        self.version += 1
        return self.template.replace(SENTINEL, f'version="{self.version}"'.encode())


def _policies() -> Install:
    return Install(
        policies=tuple(
            Policy(
                id=f"p{i}",
                priority=10 + i,
                selector=Selector(
                    next_header=17, dst_port=PortRange(first=5000 + i, last=5000 + i)
                ),
                action=Forward(bid=1 + i % 2, fallbacks=(2 - i % 2,)),
            )
            for i in range(10)
        )
    )


def _template(router: Router) -> bytes:
    documents = {}
    for part, node, direction in (
        ("downlink", router.ha, "downlink"),
        ("uplink", router.name, "uplink"),
    ):
        message = PolicyMessage(
            node=node,
            mobile_router=router.name,
            direction=direction,
            version=7777777777,
            operation=_policies(),
        )
        documents[part] = policy_xml.render(message).decode()
    inner = f"<g:mobile_router>{router.name}</g:mobile_router>" + "".join(
        f"<g:{part}>{escape(text)}</g:{part}>" for part, text in documents.items()
    )
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}" xmlns:g="{GW}"><soap:Body>'
        f"<g:Install>{inner}</g:Install></soap:Body></soap:Envelope>"
    ).encode()
    assert body.count(SENTINEL) == 2
    return body


def _prem_config(
    workdir: Path,
    node: str,
    role: str,
    router: str,
    topic_root: str,
    broker_port: int,
    extra: str = "",
) -> Path:
    config = workdir / f"{node}.toml"
    config.write_text(
        "[prem]\n"
        f'node = "{node}"\nrole = "{role}"\nmobile_router = "{router}"\nbackend = "memory"\n'
        f'table_base = 3000\nstate_file = "{workdir / (node + "-state.json")}"\n'
        f"bids = [{{ bid = 1 }}, {{ bid = 2 }}]\n{extra}"
        f'[broker]\nport = {broker_port}\ntopic_root = "{topic_root}"\nsession_expiry_s = 600\n',
        encoding="utf-8",
    )
    return config


def _fleet_config(workdir: Path, routers: list[Router], topic_root: str, broker_port: int) -> Path:
    """One HA worker serving every router's HA node (`serves`), its store in `workdir`."""
    served = workdir / "served"
    served.write_text(
        "".join(f"{r.ha} {r.name} 2001:db8:{r.index:x}::/48\n" for r in routers),
        encoding="utf-8",
    )
    extra = f'serves = "{served}"\nfleet_store = "{workdir / "fleet.db"}"\n'
    return _prem_config(workdir, "ha-fleet", "ha", "fleet", topic_root, broker_port, extra)


def _bare_netns(name: str) -> None:
    """A namespace where both BIDs' tables have a route, so both count as usable."""
    netns.create(name)
    netns.run(name, ["ip", "link", "add", "m0", "type", "veth", "peer", "name", "m1"])
    for link in ("m0", "m1"):
        netns.run(name, ["ip", "link", "set", link, "up"])
    for table in (3001, 3002):
        netns.run(name, ["ip", "route", "add", "default", "dev", "m0", "table", str(table)])


@contextmanager
def _process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop(proc)


@contextmanager
def bed(
    routers: list[Router], workdir: Path, threads: int, broker_port: int, *, fleet: bool = False
) -> Iterator[int]:
    """Broker topic root, 2 workers per router (with `fleet`: each router's MR worker and one
    HA worker serving them all), the gateway; yields the gateway's port."""
    topic_root = f"bench-{uuid.uuid4().hex[:10]}/multinet/v1"
    tag = uuid.uuid4().hex[:6]
    with ExitStack() as stack:
        configs = [
            (node, _prem_config(workdir, node, role, router.name, topic_root, broker_port))
            for router in routers
            for node, role in ((router.ha, "ha"), (router.name, "mr"))
            if not (fleet and role == "ha")
        ]
        if fleet:
            configs.append(("ha-fleet", _fleet_config(workdir, routers, topic_root, broker_port)))
        for node, config in configs:
            ns = f"mnb-{node}-{tag}"
            _bare_netns(ns)
            stack.callback(netns.delete, ns)
            worker = stack.enter_context(_process(worker_argv(config, ns), workdir / f"{node}.log"))
            PIDS.setdefault("PREM workers", []).append(worker.pid)
        table = ",\n".join(
            f'  {{ id = "{r.name}", ha_node = "{r.ha}", mr_node = "{r.name}" }}' for r in routers
        )
        config = workdir / "gateway.toml"
        config.write_text(
            f"[soap_gateway]\nport = 0\nthreads = {threads}\nack_deadline_s = 10\n"
            f"mobile_routers = [\n{table}\n]\n"
            f'callers = [{{ name = "{USER}", password_hash = "{hash_password(PASSWORD)}", '
            'mobile_routers = "*" }]\n'
            f'[broker]\nport = {broker_port}\ntopic_root = "{topic_root}"\n',
            encoding="utf-8",
        )
        log = workdir / "gateway.log"
        argv = [sys.executable, "-m", "services.cli", "soap-gateway", "--config", str(config)]
        gateway = stack.enter_context(_process(argv, log))
        PIDS["gateway"] = [gateway.pid]
        port = _wait_port(log, gateway)
        yield port


def _wait_port(log: Path, proc: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"https?://127\.0\.0\.1:(\d+)/", log.read_text(errors="replace"))
        if found:
            return int(found.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"the gateway did not start:\n{log.read_text(errors='replace')}")


class Client:
    """One keep-alive connection posting Install envelopes."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        # As urllib3 (requests, zeep) does: else Nagle holds the body, sent after the headers,
        # until the gateway's delayed ACK of the headers (40 ms).
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.headers = {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": '"Install"',
            "Authorization": f"Basic {token}",
        }

    def deliver(self, body: bytes) -> bool:
        """One delivery; True when both nodes answered applied."""
        self.conn.request("POST", "/", body, self.headers)
        response = self.conn.getresponse()
        answer = response.read()
        return response.status == 200 and answer.count(b">applied<") == 2

    def close(self) -> None:
        self.conn.close()


def warm_up(routers: list[Router], port: int, timeout_s: float = 60.0) -> None:
    """Until every router's first delivery is applied by both workers (they are up)."""
    client = Client(port)
    try:
        for router in routers:
            deadline = time.monotonic() + timeout_s
            while not client.deliver(router.next_body()):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{router.name}: the workers never applied a delivery")
                time.sleep(0.2)
            for _ in range(20):
                client.deliver(router.next_body())
    finally:
        client.close()


@dataclass
class Run:
    """The samples of one scenario."""

    name: str
    clients: int
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def sustained(routers: list[Router], port: int, seconds: float) -> Run:
    """Every client back to back on its own router for `seconds`."""
    run = Run("sustained", len(routers))
    lock = threading.Lock()
    start = threading.Barrier(len(routers) + 1)
    stop_at = [0.0]

    def loop(router: Router) -> None:
        client = Client(port)
        start.wait()
        try:
            while time.monotonic() < stop_at[0]:
                sent = time.perf_counter()
                ok = client.deliver(router.next_body())
                took = (time.perf_counter() - sent) * 1000
                with lock:
                    if ok:
                        run.latencies_ms.append(took)
                    else:
                        run.failures += 1
        finally:
            client.close()

    workers = [threading.Thread(target=loop, args=(r,)) for r in routers]
    for worker in workers:
        worker.start()
    began = time.monotonic()
    stop_at[0] = began + seconds
    start.wait()
    for worker in workers:
        worker.join()
    run.seconds = time.monotonic() - began
    return run


def fixed_rate(routers: list[Router], port: int, seconds: float, rate: float) -> Run:
    """`rate` deliveries/s in total, each client on its own schedule (rate / clients)."""
    run = Run(f"fixed {rate:.0f}/s", len(routers))
    lock = threading.Lock()
    interval = len(routers) / rate
    began = time.perf_counter() + 0.2
    count = int(seconds * rate / len(routers))

    def loop(offset: int, router: Router) -> None:
        client = Client(port)
        try:
            for k in range(count):
                scheduled = began + offset / rate + k * interval
                pause = scheduled - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                ok = client.deliver(router.next_body())
                took = (time.perf_counter() - scheduled) * 1000
                with lock:
                    if ok:
                        run.latencies_ms.append(took)
                    else:
                        run.failures += 1
        finally:
            client.close()

    workers = [threading.Thread(target=loop, args=(i, r)) for i, r in enumerate(routers)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    run.seconds = time.perf_counter() - began
    return run


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.soap_delivery", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 s per scenario instead of 10")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even if a target fails")
    parser.add_argument(
        "--clients",
        type=int,
        default=max(2, os.cpu_count() or 1),
        help="clients, each driving its own mobile router (default: one per CPU, at least 2; "
        "more only adds worker processes competing for the same CPUs)",
    )
    parser.add_argument("--seconds", type=float, help="per scenario (default 10, quick 3)")
    parser.add_argument("--threads", type=int, default=16, help="gateway worker threads")
    parser.add_argument(
        "--fleet-ha",
        action="store_true",
        help="one HA worker serving every router (prem `serves`) instead of one per router",
    )
    parser.add_argument(
        "--broker",
        choices=("tuned", "system"),
        default="tuned",
        help="tuned: a mosquitto of our own with set_tcp_nodelay (default); system: the one "
        "on 127.0.0.1:1883 as it is configured",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Start the bed, run both scenarios, print and judge."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("bench.soap_delivery needs root (network namespaces)", file=sys.stderr)
        return 2
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    routers = [Router(i + 1) for i in range(args.clients)]
    for router in routers:
        router.template = _template(router)
    workers = args.clients + (1 if args.fleet_ha else args.clients)
    print(
        f"{args.clients} mobile routers ({workers} PREM workers, memory back end"
        f"{', one HA worker serving them all' if args.fleet_ha else ''}), "
        f"gateway with {args.threads} threads, 10-policy Install per delivery, {seconds:.0f} s "
        f"per scenario, {args.broker} broker",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="soap-bench-") as tmp:
        workdir = Path(tmp)
        with ExitStack() as stack:
            if args.broker == "tuned":
                broker_port, pid = stack.enter_context(tuned_broker(workdir))
                PIDS["broker"] = [pid]
            else:
                ensure_broker()
                broker_port = 1883
            port = stack.enter_context(
                bed(routers, workdir, args.threads, broker_port, fleet=args.fleet_ha)
            )
            warm_up(routers, port)
            runs = [sustained(routers[:1], port, seconds)]
            before = cpu_seconds()
            runs.append(sustained(routers, port, seconds))
            after = cpu_seconds()
            runs.append(fixed_rate(routers, port, seconds, FIXED_RATE))
            save_ms = fsync_ms(workdir)
    done = len(runs[1].latencies_ms) or 1
    print()
    print(f"CPU per delivery during the sustained run with {len(routers)} clients:")
    for role, spent in after.items():
        print(f"  {role:<14}{(spent - before.get(role, 0.0)) * 1000 / done:>7.2f} ms")
    print(
        f"  (budget at {TARGET_RATE:.0f}/s on {os.cpu_count()} CPUs: "
        f"{(os.cpu_count() or 1) * 1000 / TARGET_RATE:.1f} ms)"
    )
    print(f"state file save (write, fsync, rename, fsync dir) here: {save_ms:.2f} ms median")
    print()
    print(
        f"{'scenario':<14}{'clients':>8}{'deliveries':>11}{'per s':>9}"
        f"{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'failed':>8}"
    )
    for run in runs:
        print(
            f"{run.name:<14}{run.clients:>8}{len(run.latencies_ms):>11}{run.rate:>9.1f}"
            f"{run.pct(50):>9.1f}{run.pct(90):>9.1f}{run.pct(99):>9.1f}"
            f"{max(run.latencies_ms, default=float('nan')):>9.1f}{run.failures:>8}"
        )
    print()
    best = runs[1]
    fixed = runs[2]
    verdicts = [
        (
            best.rate >= TARGET_RATE and best.failures == 0,
            f"sustained {best.rate:.0f} deliveries/s with {best.clients} clients "
            f"(target >= {TARGET_RATE:.0f}, {best.failures} failed)",
        ),
        (
            fixed.pct(99) < TARGET_P99_MS and fixed.failures == 0,
            f"p99 {fixed.pct(99):.1f} ms at {FIXED_RATE:.0f}/s (target < {TARGET_P99_MS:.0f} ms, "
            f"p50 {statistics.median(fixed.latencies_ms or [float('nan')]):.1f} ms, "
            f"{fixed.failures} failed)",
        ),
    ]
    for ok, line in verdicts:
        print(("PASS " if ok else "FAIL ") + line)
    failed = not all(ok for ok, _ in verdicts)
    return 1 if failed and not args.no_fail else 0


if __name__ == "__main__":
    sys.exit(main())
