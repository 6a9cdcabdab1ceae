"""Forwarding cost per packet with few vs many installed policies, per back end.

sender ns --veth-- router ns --veth-- receiver ns. The router's back end holds N policies; the
test packets (UDP to TEST_DST:TEST_PORT) match only the LAST policy in precedence order, the
worst case for a linear chain. The router has no route to TEST_DST in its main table: only the
mark that policy sets (`ip -6 rule fwmark M/mask lookup T`, route in T out of r1) forwards
them, so every packet counted on r1 went through the policy lookup. The "none" case is the
reference without netfilter: no policies, the route in the main table.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import rulesets
from services import netns
from services.contracts.policy import Policy
from services.prem.backends import make_backend
from services.prem.core.flowtable import compile_policies
from services.prem.core.reconcile import plan

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SENDER_NET, ROUTER_IN = "2001:db8:a::2", "2001:db8:a::1"
ROUTER_OUT, RECEIVER = "2001:db8:b::1", "2001:db8:b::2"
TEST_NET = "2001:db8:ff::/48"
MAX_PACKETS = 50_000_000
WARMUP_DEADLINE = 5.0


@dataclass(frozen=True)
class Topology:
    """The three namespaces of one forwarding measurement."""

    sender: str
    router: str
    receiver: str


@dataclass(frozen=True)
class ForwardSample:
    """One measurement window: forwarded (r1 tx) and offered (r0 rx) packets per second."""

    method: str
    policies: int
    rep: int
    pps: float | None
    offered_pps: float | None
    packets: int | None
    seconds: float | None
    install_ms: float | None
    error: str | None = None


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True)


def build(prefix: str) -> Topology:
    """Create the namespaces and veths (unique ifindex per end, nodad addresses)."""
    topo = Topology(f"{prefix}-snd", f"{prefix}-rtr", f"{prefix}-rcv")
    for ns in (topo.sender, topo.router, topo.receiver):
        netns.create(ns)
    _ip(topo.router, "link", "add", "r0", "index", "12", "type", "veth",
        "peer", "name", "s0", "index", "11", "netns", topo.sender)  # fmt: skip
    _ip(topo.router, "link", "add", "r1", "index", "13", "type", "veth",
        "peer", "name", "d0", "index", "14", "netns", topo.receiver)  # fmt: skip
    for ns, dev, addr in (
        (topo.sender, "s0", SENDER_NET),
        (topo.router, "r0", ROUTER_IN),
        (topo.router, "r1", ROUTER_OUT),
        (topo.receiver, "d0", RECEIVER),
    ):
        _ip(ns, "-6", "addr", "add", f"{addr}/64", "dev", dev, "nodad")
        _ip(ns, "link", "set", dev, "up")
    _ip(topo.receiver, "-6", "addr", "add", f"{rulesets.TEST_DST}/128", "dev", "lo")
    _ip(topo.sender, "-6", "route", "add", "default", "via", ROUTER_IN)
    netns.run(topo.router, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
    return topo


def teardown(topo: Topology) -> None:
    """Delete the namespaces (and with them the veths)."""
    for ns in (topo.sender, topo.router, topo.receiver):
        netns.delete(ns)


def route_marked(topo: Topology, backend: str) -> None:
    """Policy routing in the router: per BID, fwmark rule -> table with a route out of r1."""
    settings = rulesets.bench_settings(backend)
    for offset, bid in enumerate(settings.bid_numbers()):
        table = str(settings.table_of(bid))
        mark = f"{settings.mark_of(bid):#x}/{settings.mark_mask:#x}"
        pref = str(settings.rule_priority + offset)
        _ip(topo.router, "-6", "rule", "add", "pref", pref, "fwmark", mark, "lookup", table)
        _ip(topo.router, "-6", "route", "add", TEST_NET, "via", RECEIVER, "dev", "r1",
            "table", table)  # fmt: skip


def route_plain(topo: Topology) -> None:
    """The reference: a main-table route to the test network, no policies."""
    _ip(topo.router, "-6", "route", "add", TEST_NET, "via", RECEIVER, "dev", "r1")


def _install(backend: str, policies: tuple[Policy, ...]) -> float:
    enforcer = make_backend(rulesets.bench_settings(backend))
    desired = compile_policies(policies)
    start = time.perf_counter()
    enforcer.apply(desired, plan(desired, enforcer.read()))
    elapsed = time.perf_counter() - start
    if enforcer.read() != desired:
        raise RuntimeError(f"{backend}: the kernel does not hold the {len(desired)} policies")
    return elapsed


def _counters(topo: Topology) -> tuple[int, int, float]:
    """(r0 rx_packets, r1 tx_packets, monotonic time), read through sysfs inside the router."""
    out = netns.run(
        topo.router,
        [
            "cat",
            "/sys/class/net/r0/statistics/rx_packets",
            "/sys/class/net/r1/statistics/tx_packets",
        ],
    )
    rx, tx = (int(v) for v in out.split())
    return rx, tx, time.monotonic()


def _start_senders(topo: Topology, count: int, seconds: float) -> list[subprocess.Popen[str]]:
    argv = [sys.executable, "-m", "bench.sender", str(rulesets.TEST_DST),
            str(rulesets.TEST_PORT), str(seconds), str(MAX_PACKETS)]  # fmt: skip
    return [
        subprocess.Popen(
            ["ip", "netns", "exec", topo.sender, *argv],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def blast(topo: Topology, duration: float, senders: int) -> tuple[int, int, float]:
    """Blast from the sender; return (offered, forwarded, seconds) over one steady window."""
    procs = _start_senders(topo, senders, WARMUP_DEADLINE + duration + 5)
    try:
        deadline = time.monotonic() + WARMUP_DEADLINE
        first = _counters(topo)
        while True:  # warm-up: neighbour discovery done and packets flowing out of r1
            now = _counters(topo)
            if now[1] - first[1] >= 1000:
                break
            if now[2] > deadline:
                raise RuntimeError(f"no packets forwarded within {WARMUP_DEADLINE:.0f} s")
            time.sleep(0.05)
        rx0, tx0, t0 = _counters(topo)
        time.sleep(duration)  # the measurement window itself, not a wait for a state
        rx1, tx1, t1 = _counters(topo)
        return rx1 - rx0, tx1 - tx0, t1 - t0
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.communicate(timeout=10)


def _failed(
    method: str, n: int, rep: int, exc: BaseException, install_ms: float | None
) -> ForwardSample:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
    return ForwardSample(method, n, rep, None, None, None, None, install_ms, reason)


def _window(
    topo: Topology,
    method: str,
    n: int,
    rep: int,
    window: tuple[float, int],
    install_ms: float | None,
) -> ForwardSample:
    offered, forwarded, seconds = blast(topo, *window)
    pps, offered_pps = forwarded / seconds, offered / seconds
    return ForwardSample(method, n, rep, pps, offered_pps, forwarded, seconds, install_ms)


def measure_plain(rep: int, prefix: str, window: tuple[float, int]) -> ForwardSample:
    """The reference in a fresh topology: no policies, the route in the main table."""
    topo = build(prefix)
    try:
        route_plain(topo)
        return _window(topo, "none", 0, rep, window, None)
    except Exception as exc:  # a failed sample is recorded, the run goes on
        return _failed("none", 0, rep, exc, None)
    finally:
        teardown(topo)


def measure_backend(
    backend: str, sizes: list[int], rep: int, prefix: str, window: tuple[float, int]
) -> list[ForwardSample]:
    """One fresh topology; for each size in turn the back end reconciles to it, then one window.

    The windows of one back end follow each other within seconds, so their ratio is measured
    side by side even when the machine's background load drifts.
    """
    topo = build(prefix)
    samples: list[ForwardSample] = []
    try:
        route_marked(topo, backend)
        for n in sizes:
            install_ms: float | None = None
            try:
                policies = rulesets.forwarding_policies(n, (1, 2, 3, 4))
                install_ms = netns.call_in(topo.router, _install, backend, policies) * 1000
                samples.append(_window(topo, backend, n, rep, window, install_ms))
            except Exception as exc:  # a failed sample is recorded, the run goes on
                samples.append(_failed(backend, n, rep, exc, install_ms))
    except Exception as exc:  # the topology itself failed: every size fails
        samples += [_failed(backend, n, rep, exc, None) for n in sizes[len(samples) :]]
    finally:
        teardown(topo)
    return samples


def run(
    backends: list[str],
    sizes: tuple[int, int],
    reps: int,
    prefix: str,
    duration: float,
    senders: int,
) -> list[ForwardSample]:
    """The reference and each back end at both sizes, `reps` times.

    The order of the groups rotates per repetition, and so does the order of the two sizes
    (small first on even repetitions, large first on odd ones).
    """
    groups = ["none", *backends]
    window = (duration, senders)
    samples: list[ForwardSample] = []
    for rep in range(reps):
        shift = rep % len(groups)
        order = list(sizes) if rep % 2 == 0 else list(reversed(sizes))
        for group in groups[shift:] + groups[:shift]:
            if group == "none":
                batch = [measure_plain(rep, prefix, window)]
            else:
                batch = measure_backend(group, order, rep, prefix, window)
            for sample in batch:
                shown = f"{sample.pps:10.0f} pkt/s" if sample.pps is not None else sample.error
                print(
                    f"  fwd  rep {rep} {group:<9} {sample.policies:>6} policies {shown}", flush=True
                )
            samples += batch
    return samples
