"""Balance and duplicate policies on real packets, enforced by the nftables back end.

Topology (`test_backend_behaviour.build_router`): sender -> router -> two veth links to a sink,
BID 1 by `r-a`, BID 2 by `r-b`; each BID table holds a default route via a link-local gateway
with a permanent neighbour, the shape of the MR's VXLAN pipes (`default via fe80::1 dev
mnvx<BID>`). So these tests go through simple per-BID routes over veth, not through MCoA
pipes; `test_duplicate_and_balance_through_real_pipes` goes through the MCoA agents' real
pipes, once per pipe kind this kernel has (VXLAN here; the others are skipped naming the
missing option).

Which BID a packet took is seen at the sink: an AF_PACKET socket on each of its two links
captures every frame (the frames are addressed to the gateways' MACs, not the sink's, and a
packet socket still sees them). One forked child opens the captures in the sink's namespace,
moves itself into the sender's (or router's) namespace and sends, then reads the captures.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable

import pytest

from services import netns
from services.contracts.policy import (
    Balance,
    Duplicate,
    Forward,
    Policy,
    PortRange,
    Selector,
    Share,
)
from services.prem import routing
from services.prem.backends.iptables import IptablesBackend
from services.prem.backends.nftables import NftablesBackend
from services.prem.config import PremSettings
from services.prem.core.flowtable import FlowTable, by_family, compile_policies
from services.prem.core.nft_render import CopyTarget
from services.prem.core.reconcile import plan
from tests.features import need_backend
from tests.kernel.test_backend_behaviour import PACKET_SETTINGS, build_router, net
from tests.mcoa.lab import CN, MNN, McoaLab

pytestmark = pytest.mark.kernel

PORT = 5300
FLOWS = 200
ETH_P_ALL = 0x0003


def balance_policy(w1: int, w2: int, pid: str = "bal", priority: int = 10) -> Policy:
    return Policy(
        id=pid,
        priority=priority,
        selector=Selector(next_header=17, dst_port=PortRange(first=PORT, last=PORT)),
        action=Balance(shares=(Share(bid=1, weight=w1), Share(bid=2, weight=w2))),
    )


def duplicate_policy(
    pid: str = "dup", port: int = PORT + 1, paths: tuple[int, ...] = (1, 2)
) -> Policy:
    return Policy(
        id=pid,
        priority=10,
        selector=Selector(next_header=17, dst_port=PortRange(first=port, last=port)),
        action=Duplicate(paths=paths),
    )


# ---- in the router (forked children) -----------------------------------------------------------


def enforce(
    policies: tuple[Policy, ...], unusable: frozenset[int] = frozenset()
) -> dict[str, object]:
    """Reconcile the router to `policies` twice; report what was read back and the ruleset."""
    backend = NftablesBackend(PACKET_SETTINGS)
    desired = compile_policies(policies, unusable, by_family(backend.uncopyable()))
    changes = plan(desired, backend.read())
    if changes:
        backend.apply(desired, changes)
    read = backend.read()
    first = _ruleset()
    again = plan(desired, backend.read())
    backend.apply(desired, plan(desired, backend.read()))
    if desired:  # (an empty table is rebuilt by every apply; the enforcer does not call it)
        assert backend.last_apply == "none", "applying the same table again sends nothing"
    return {
        "desired": desired,
        "read": read,
        "again": bool(again),
        "same_ruleset": first == _ruleset(),
        "ruleset": first,
    }


def _ruleset() -> str:
    return subprocess.run(
        ["nft", "list", "ruleset"], capture_output=True, text=True, check=True
    ).stdout


# ---- traffic and captures ----------------------------------------------------------------------


def _captures(devices: tuple[str, ...]) -> dict[str, socket.socket]:
    found = {}
    for dev in devices:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        sock.bind((dev, 0))
        sock.setblocking(False)
        found[dev] = sock
    return found


def _udp_of(frame: bytes) -> tuple[int, int, bytes] | None:
    """(source port, destination port, payload) of an Ethernet frame carrying UDP, else None."""
    kind = int.from_bytes(frame[12:14], "big")
    if kind == 0x86DD and frame[20] == 17:
        start = 54
    elif kind == 0x0800 and frame[23] == 17:
        start = 14 + (frame[14] & 0x0F) * 4
    else:
        return None
    sport = int.from_bytes(frame[start : start + 2], "big")
    dport = int.from_bytes(frame[start + 2 : start + 4], "big")
    return sport, dport, frame[start + 8 :]


def traffic(
    sink: str, source: str, dst: str, port: int, flows: int, packets: int
) -> dict[str, list[tuple[int, bytes]]]:
    """Send `packets` datagrams on each of `flows` flows (source ports 30000+i) from `source`;
    return per sink link the (source port, payload) of every datagram to `port` seen there."""
    netns.enter(sink)
    captures = _captures(("x-a", "x-b"))
    netns.enter(source)
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    for flow in range(flows):
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 30000 + flow))
            for number in range(packets):
                sock.sendto(f"{flow}.{number}".encode(), (dst, port))
    time.sleep(0.3)
    seen: dict[str, list[tuple[int, bytes]]] = {}
    for dev, sock in captures.items():
        seen[dev] = []
        while True:
            try:
                frame = sock.recv(2048)
            except BlockingIOError:
                break
            found = _udp_of(frame)
            if found is not None and found[1] == port:
                seen[dev].append((found[0], found[2]))
        sock.close()
    return seen


def flow_links(seen: dict[str, list[tuple[int, bytes]]]) -> dict[int, set[str]]:
    """The links each flow (source port) was seen on."""
    links: dict[int, set[str]] = {}
    for dev, items in seen.items():
        for sport, _ in items:
            links.setdefault(sport, set()).add(dev)
    return links


@pytest.fixture
def lab(make_netns: Callable[[str], str]) -> tuple[str, str, str]:
    sender, router, sink = make_netns("snd"), make_netns("rtr"), make_netns("snk")
    build_router(sender, router, sink)
    return sender, router, sink


# ---- balance -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dst", ["2001:db8:ff::1", "198.51.100.7"], ids=["ipv6", "ipv4"])
def test_balance_splits_flows_by_weight_and_pins_each_flow(
    lab: tuple[str, str, str], dst: str
) -> None:
    sender, router, sink = lab
    state = netns.call_in(router, enforce, (balance_policy(3, 1),))
    assert state["read"] == state["desired"], state["ruleset"]
    assert not state["again"], "a second reconcile finds nothing to change"
    assert state["same_ruleset"], "and applying again leaves the ruleset as it was"
    assert "jhash" in str(state["ruleset"])

    seen = netns.call_in(sink, traffic, sink, sender, dst, PORT, FLOWS, 3)
    links = flow_links(seen)
    assert len(links) == FLOWS, "every flow arrived"
    assert all(len(found) == 1 for found in links.values()), "no flow is split over two BIDs"
    counts = Counter(next(iter(found)) for found in links.values())
    # 3:1 of 200 flows is 150:50; a binomial spread of that has sigma ~6: allow 4 sigma
    assert abs(counts["x-a"] - 150) <= 25, counts
    assert all(len(seen[dev]) == 3 * counts[dev] for dev in ("x-a", "x-b")), "3 packets a flow"

    # the same flows again: each keeps its BID
    again = flow_links(netns.call_in(sink, traffic, sink, sender, dst, PORT, FLOWS, 1))
    assert again == links

    # BID 2 unusable: its flows go to BID 1, and no flow of BID 1 moves
    state = netns.call_in(router, enforce, (balance_policy(3, 1),), frozenset({2}))
    assert state["read"] == state["desired"]
    assert "chain bal" not in str(state["ruleset"]), "one usable share: a plain forward"
    moved = flow_links(netns.call_in(sink, traffic, sink, sender, dst, PORT, FLOWS, 1))
    assert set(moved) == set(links)
    assert all(found == {"x-a"} for found in moved.values())

    # BID 2 back: every flow returns to where it was
    state = netns.call_in(router, enforce, (balance_policy(3, 1),))
    assert str(state["ruleset"]).count("chain bal") == 2, "one chain per family, none stale"
    assert flow_links(netns.call_in(sink, traffic, sink, sender, dst, PORT, FLOWS, 1)) == links


def test_balance_weights_even_split_and_update_in_place(lab: tuple[str, str, str]) -> None:
    sender, router, sink = lab
    netns.call_in(router, enforce, (balance_policy(1, 1),))
    links = flow_links(netns.call_in(sink, traffic, sink, sender, "2001:db8:ff::1", PORT, FLOWS, 1))
    counts = Counter(next(iter(found)) for found in links.values())
    assert abs(counts["x-a"] - 100) <= 30, counts
    # three shares, then BID 3 unusable: a new bucket layout, updated element by element, and
    # the chains of the old layout removed in the same batch
    three = Policy(
        id="bal",
        priority=10,
        selector=balance_policy(1, 1).selector,
        action=Balance(shares=tuple(Share(bid=b, weight=1) for b in (1, 2, 3))),
    )
    netns.call_in(router, enforce, (three,))
    state = netns.call_in(router, enforce, (three,), frozenset({3}))
    assert state["read"] == state["desired"]
    assert str(state["ruleset"]).count("chain bal") == 2, "one chain per family, none stale"
    # other policies beside it, then the balance replaced by a forward: read back each time
    forward = Policy(
        id="bal",
        priority=10,
        selector=balance_policy(1, 1).selector,
        action=Forward(bid=2),
    )
    for policies in ((balance_policy(1, 1), duplicate_policy()), (forward,), ()):
        state = netns.call_in(router, enforce, policies)
        assert state["read"] == state["desired"], state["ruleset"]
        assert not state["again"]
        assert state["same_ruleset"]
    assert "bal6_" not in str(state["ruleset"])
    assert "multinet_dup" not in str(state["ruleset"])


# ---- duplicate ---------------------------------------------------------------------------------


def add_duplicate_gateway(router: str, bid: int, address: str, dev: str, via: str) -> None:
    """What the MCoA agent gives a BID (`pipe_kinds.duplicate_gateway`): a host route in the
    BID's table and a rule `to <address> lookup <table>`, so a copy sent to that address (with
    no mark) is routed by the BID's table."""
    table = str(PACKET_SETTINGS.table_of(bid))
    family = "-6" if ":" in address else "-4"
    onlink = [] if ":" in address else ["onlink"]
    netns.run(
        router,
        ["ip", family, "route", "add", address, "via", via, "dev", dev, *onlink, "table", table],
    )
    rule = ["ip", family, "rule", "add", "pref", "50", "to", address, "lookup", table]
    netns.run(router, rule)


@pytest.mark.parametrize("dst", ["2001:db8:ff::1", "198.51.100.7"], ids=["ipv6", "ipv4"])
def test_duplicate_sends_every_packet_on_both_bids(lab: tuple[str, str, str], dst: str) -> None:
    """IPv6: the copy goes to the BID route's gateway (fe80::2 on r-b, reachable as the link
    has fe80::/64). IPv4: the route's gateway 169.254.0.2 is on-link with no connected route,
    and a copy sent there is not routed (measured); the BID's duplicate gateway carries it."""
    sender, router, sink = lab
    if ":" not in dst:
        add_duplicate_gateway(router, 2, "100.64.0.2", "r-b", "169.254.0.2")
    state = netns.call_in(router, enforce, (duplicate_policy(), balance_policy(1, 1, "other", 20)))
    assert state["read"] == state["desired"], state["ruleset"]
    assert not state["again"]
    assert state["same_ruleset"]
    assert {r.copies for r in state["desired"] if r.policy_id == "dup"} == {(2,)}  # type: ignore[attr-defined]

    seen = netns.call_in(sink, traffic, sink, sender, dst, PORT + 1, 5, 20)
    sent = {(30000 + f, f"{f}.{n}".encode()) for f in range(5) for n in range(20)}
    assert set(seen["x-a"]) == sent, "the original of every packet on BID 1"
    assert set(seen["x-b"]) == sent, "a copy of every packet on BID 2"
    assert len(seen["x-a"]) == len(seen["x-b"]) == 100, "exactly one copy each"


def test_duplicate_of_local_traffic_is_not_pulled_back_by_the_output_reroute(
    lab: tuple[str, str, str],
) -> None:
    """The copy of a locally sent packet passes the output hook again (as the kernel sends it
    with ip6_local_out): the inet table marks it like its original, the same mark, so the
    route chain does not re-route it into the original's BID."""
    _, router, sink = lab
    local = Policy(
        id="local",
        priority=10,
        selector=Selector(dst_addr=net("2001:db8:ee::/64"), next_header=17),
        action=Duplicate(paths=(2, 1)),
    )
    netns.call_in(router, enforce, (local,))
    seen = netns.call_in(sink, traffic, sink, router, "2001:db8:ee::5", 7000, 2, 10)
    assert len(seen["x-b"]) == 20, "originals on BID 2 (re-routed by their mark)"
    assert len(seen["x-a"]) == 20, "copies on BID 1"


def test_a_bid_without_a_route_gets_no_copy_and_says_why(lab: tuple[str, str, str]) -> None:
    _, router, _ = lab
    paths = netns.call_in(router, routing.copy_targets, PACKET_SETTINGS)
    targets, reasons = paths.targets, paths.reasons
    assert paths.devices == {"r-a", "r-b"}
    assert targets[6, 1].device == "r-a"
    assert targets[6, 2].address == "fe80::2"
    assert reasons[6, 3] == "table 1003 has no IPv6 route"
    state = netns.call_in(router, enforce, (duplicate_policy(paths=(1, 3)),))
    assert {r.copies for r in state["desired"] if r.policy_id == "dup"} == {()}  # type: ignore[attr-defined]
    assert state["read"] == state["desired"]
    # a duplicate gateway is taken over the route's own gateway
    add_duplicate_gateway(router, 2, "fd6d:6e00:d0::a", "r-b", "fe80::2")
    paths = netns.call_in(router, routing.copy_targets, PACKET_SETTINGS)
    assert paths.targets[6, 2] == CopyTarget("fd6d:6e00:d0::a", "r-b")


def test_a_table_of_two_mobile_routers_copies_by_destination(lab: tuple[str, str, str]) -> None:
    """An HA's BID table serves every mobile router with that BID: one prefix route and one
    duplicate gateway each, leading different ways (here two next hops on r-b, with their own
    MACs). The copy of a packet takes the gateway of its destination's prefix:
    `dup to ip6 daddr map { prefix : gateway }`."""
    sender, router, sink = lab
    table = str(PACKET_SETTINGS.table_of(2))
    for prefix, hop, mac, gateway in (
        ("2001:db8:ff::/64", "fe80::2", None, "fd6d:6e00:d0::a"),
        ("2001:db8:fd::/64", "fe80::22", "02:00:00:00:00:0c", "fd6d:6e00:d0::b"),
    ):
        if mac is not None:
            neigh = ["ip", "-6", "neigh", "add", hop, "lladdr", mac, "dev", "r-b"]
            netns.run(router, [*neigh, "nud", "permanent"])
        netns.run(
            router, ["ip", "-6", "route", "add", prefix, "via", hop, "dev", "r-b", "table", table]
        )
        add_duplicate_gateway(router, 2, gateway, "r-b", hop)
    paths = netns.call_in(router, routing.copy_targets, PACKET_SETTINGS)
    assert paths.targets[6, 2] == CopyTarget(
        "",
        "r-b",
        (("2001:db8:fd::/64", "fd6d:6e00:d0::b"), ("2001:db8:ff::/64", "fd6d:6e00:d0::a")),
    )
    state = netns.call_in(router, enforce, (duplicate_policy(),))
    assert state["read"] == state["desired"], state["ruleset"]
    assert "dup to ip6 daddr map" in str(state["ruleset"])
    for dst, mac in (
        ("2001:db8:ff::1", "02:00:00:00:00:0b"),
        ("2001:db8:fd::1", "02:00:00:00:00:0c"),
    ):
        seen = netns.call_in(sink, frames_to, sink, sender, dst, PORT + 1, 10)
        assert seen["x-a"] == {"02:00:00:00:00:0a": 10}, "originals by BID 1"
        assert seen["x-b"] == {mac: 10}, f"copies to {dst} by its own mobile router's next hop"


def frames_to(sink: str, source: str, dst: str, port: int, count: int) -> dict[str, dict[str, int]]:
    """Send `count` datagrams to dst:port from `source`; per sink link, the destination MACs of
    the frames carrying them."""
    netns.enter(sink)
    captures = _captures(("x-a", "x-b"))
    netns.enter(source)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        for _ in range(count):
            sock.sendto(b"x", (dst, port))
    time.sleep(0.3)
    seen: dict[str, dict[str, int]] = {}
    for dev, capture in captures.items():
        macs: Counter[str] = Counter()
        while True:
            try:
                frame = capture.recv(2048)
            except BlockingIOError:
                break
            found = _udp_of(frame)
            if found is not None and found[1] == port:
                macs[frame[:6].hex(":")] += 1
        capture.close()
        seen[dev] = dict(macs)
    return seen


# ---- the iptables back end refuses, changing nothing -------------------------------------------


def iptables_refuses() -> str:
    settings = PremSettings.model_validate({**PACKET_SETTINGS.model_dump(), "backend": "iptables"})
    backend = IptablesBackend(settings)
    desired: FlowTable = compile_policies((balance_policy(1, 1),))
    try:
        backend.apply(desired, plan(desired, backend.read()))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc} | {backend.read()!r}"
    return "applied"


def test_iptables_back_end_refuses_balance_and_changes_nothing(
    make_netns: Callable[[str], str],
) -> None:
    need_backend("iptables")
    answer = netns.call_in(make_netns("ipt"), iptables_refuses)
    assert answer.startswith("KernelError")
    assert "cannot enforce balance, duplicate or priority" in answer
    assert answer.endswith("| ()")


# ---- through real MCoA pipes, per pipe kind this kernel has --------------------------------------


def _pipe_settings(role: str) -> PremSettings:
    return PremSettings.model_validate(
        {
            "node": "ha1" if role == "ha" else "mr1",
            "role": role,
            "mobile_router": "mr1",
            "backend": "nftables",
            "bids": [{"bid": 1}, {"bid": 2}],
            "table_base": 1000,
        }
    )


def enforce_in_pipes(role: str, policies: tuple[Policy, ...]) -> dict[tuple[int, int], str]:
    """The PREM's rules and nft tables at the HA or MR of the lab; returns the copy targets
    it found (family, BID) -> "address dev"."""
    settings = _pipe_settings(role)
    routing.ensure_rules(settings)
    backend = NftablesBackend(settings)
    desired = compile_policies(policies, frozenset(), by_family(backend.uncopyable()))
    backend.apply(desired, plan(desired, backend.read()))
    assert backend.read() == desired
    targets = routing.copy_targets(settings).targets
    return {key: f"{t.address} {t.device}" for key, t in targets.items()}


def send_udp6(dst: str, port: int, count: int) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        for _ in range(count):
            sock.sendto(b"x" * 32, (dst, port))


def send_flows6(dst: str, port: int, flows: int) -> None:
    for flow in range(flows):
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::", 31000 + flow))
            sock.sendto(b"x" * 32, (dst, port))


def test_duplicate_and_balance_through_real_pipes(mcoa_lab_each_kind: McoaLab) -> None:
    """Duplicate through the MCoA agents' real pipes: the copies take the BIDs' duplicate
    gateways (a host route and a `to` rule per BID table, made by the agents), downlink at the
    HA and uplink at the MR; every datagram arrives twice, once by each link. Then balance
    at the HA: 200 flows split over the two pipes by weight."""
    lab = mcoa_lab_each_kind
    lab.start("ha")
    lab.wait("HA listening", lambda: "serving on" in lab.log("ha"), 10)
    lab.start("mr")
    lab.wait("BID 1 pipe", lambda: lab.ha_far_end(1) == "2001:db8:1::2", 5)
    lab.wait("BID 2 pipe", lambda: lab.ha_far_end(2) == "2001:db8:2::2", 5)
    lab.wait("both BAs", lambda: lab.log("mr").count("status 0 (Binding Update accepted)") >= 2, 5)
    policy = duplicate_policy(port=5001)
    for role, ns in (("ha", lab.ha), ("mr", lab.mr)):
        targets = netns.call_in(ns, enforce_in_pipes, role, (policy,))
        assert (6, 2) in targets, f"{role}: BID 2 takes a copy ({targets})"
    count = 40
    for source, dst, receiver, links_ns, links in (
        (lab.cn, MNN, lab.mnn, lab.mr, ("m1", "m2")),  # downlink: the HA copies
        (lab.mnn, CN, lab.cn, lab.ha, ("h1", "h2")),  # uplink: the MR copies
    ):
        before_rx = [_rx(links_ns, dev) for dev in links]
        before = lab.udp_no_ports(receiver)
        netns.call_in(source, send_udp6, dst, 5001, count)
        time.sleep(0.5)
        # exactly one copy each: no copy of a copy (the selector matches both directions, and
        # both ends duplicate; a packet out of a pipe is never copied again)
        assert lab.udp_no_ports(receiver) - before == 2 * count
        for dev, old in zip(links, before_rx, strict=True):
            assert _rx(links_ns, dev) - old >= count, f"{dev} carried a copy of every datagram"

    netns.call_in(lab.ha, enforce_in_pipes, "ha", (balance_policy(3, 1, priority=5),))
    before_rx = [_rx(lab.mr, dev) for dev in ("m1", "m2")]
    before = lab.udp_no_ports()
    netns.call_in(lab.cn, send_flows6, MNN, PORT, FLOWS)
    time.sleep(0.5)
    assert lab.udp_no_ports() - before == FLOWS, "each flow's datagram arrived once"
    m1, m2 = (_rx(lab.mr, dev) - old for dev, old in zip(("m1", "m2"), before_rx, strict=True))
    assert abs(m1 - 150) <= 30, (m1, m2)
    assert abs(m2 - 50) <= 30, (m1, m2)


def _rx(ns: str, dev: str) -> int:
    return int(netns.run(ns, ["cat", f"/sys/class/net/{dev}/statistics/rx_packets"]))
