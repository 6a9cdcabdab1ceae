"""Priority policies on real packets: fill BID 1 up to its rate, new flows overflow to BID 2
(over veth links, and once through the MCoA agents' real pipes per pipe kind this kernel has).

Topology and captures as in `test_spread_kernel` (sender -> router -> BID 1 by `r-a`, BID 2
by `r-b`, AF_PACKET captures at the sink's `x-a` and `x-b`). The class's rate on BID 1 is
50 kB/s (400 kbit/s), far below what one sender pushes through a veth, so "over the rate" is
a matter of bytes sent, not of how fast this machine runs: a heavy flow sends 720 kB in a
burst, more than ten times what the meter's bucket holds plus what it refills in two seconds.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from services import capabilities, netns
from services.contracts.policy import Policy, PortRange, Priority, Selector, Tier
from tests.kernel.test_backend_behaviour import build_router
from tests.kernel.test_spread_kernel import _captures, _rx, _udp_of, enforce, enforce_in_pipes
from tests.mcoa.lab import MNN, McoaLab

pytestmark = pytest.mark.kernel

PORT = 5400
RATE_BPS = 400_000  # 50 kB/s
DST = "2001:db8:ff::1"
HEAVY = 40000  # the heavy flow's source port
#: (source port, datagrams, payload bytes) in the order they are sent.
Step = tuple[int, int, int]


def priority_policy(tiers: tuple[Tier, ...] | None = None) -> Policy:
    return Policy(
        id="bulk",
        priority=10,
        selector=Selector(next_header=17, dst_port=PortRange(first=PORT, last=PORT)),
        action=Priority(tiers=tiers or (Tier(bid=1, rate_bps=RATE_BPS), Tier(bid=2))),
    )


def send(
    sink: str, source: str, dst: str, steps: list[Step], other: dict[int, str] | None = None
) -> dict[int, dict[str, int]]:
    """Send the steps' datagrams from `source` to `dst` (the source ports in `other` to the
    address given there), one socket per source port kept open across steps; per source
    port, how many of its datagrams each sink link carried."""
    netns.enter(sink)
    captures = _captures(("x-a", "x-b"))
    netns.enter(source)
    sockets: dict[int, socket.socket] = {}
    for sport, count, size in steps:
        to = (other or {}).get(sport, dst)
        family = socket.AF_INET6 if ":" in to else socket.AF_INET
        sock = sockets.get(sport)
        if sock is None:
            sock = sockets[sport] = socket.socket(family, socket.SOCK_DGRAM)
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", sport))
        for _ in range(count):
            sock.sendto(b"x" * size, (to, PORT))
    for sock in sockets.values():
        sock.close()
    time.sleep(0.3)
    seen: dict[int, dict[str, int]] = {}
    for dev, capture in captures.items():
        while True:
            try:
                frame = capture.recv(2048)
            except BlockingIOError:
                break
            found = _udp_of(frame)
            if found is not None and found[1] == PORT:
                links = seen.setdefault(found[0], {})
                links[dev] = links.get(dev, 0) + 1
        capture.close()
    return seen


def links_of(seen: dict[int, dict[str, int]], ports: range) -> dict[int, set[str]]:
    return {port: set(seen.get(port, {})) for port in ports}


@pytest.fixture
def lab(make_netns: Callable[[str], str]) -> tuple[str, str, str]:
    check = capabilities.probe(("nft overflow",)).check("nft overflow")
    if not check.present:
        pytest.skip(check.missing_text)
    sender, router, sink = make_netns("snd"), make_netns("rtr"), make_netns("snk")
    build_router(sender, router, sink)
    return sender, router, sink


def test_priority_fills_the_first_bid_and_only_new_flows_overflow(
    lab: tuple[str, str, str],
) -> None:
    sender, router, sink = lab
    state = netns.call_in(router, enforce, (priority_policy(),))
    assert state["read"] == state["desired"], state["ruleset"]
    assert not state["again"], "a second reconcile finds nothing to change"
    assert state["same_ruleset"], "and applying again leaves the ruleset as it was"
    assert "limit rate over 50000 bytes/second" in str(state["ruleset"])

    # Below the rate: 10 flows, 5 small datagrams each, all on BID 1.
    quiet = range(31000, 31010)
    seen = netns.call_in(sink, send, sink, sender, DST, [(p, 5, 100) for p in quiet])
    assert links_of(seen, quiet) == {p: {"x-a"} for p in quiet}, seen
    assert all(seen[p]["x-a"] == 5 for p in quiet), "every datagram arrived"

    # Above it: a heavy flow (pinned to BID 1 by its first packet) keeps sending; flows that
    # start meanwhile go to BID 2, the heavy flow stays whole on BID 1.
    heavy_steps: list[Step] = [(HEAVY, 1, 1200)]
    new = range(32000, 32012)
    for port in new:
        heavy_steps += [(HEAVY, 50, 1200), (port, 2, 100)]
    seen = netns.call_in(sink, send, sink, sender, DST, heavy_steps)
    assert set(seen[HEAVY]) == {"x-a"}, f"the existing heavy flow is never moved: {seen[HEAVY]}"
    assert seen[HEAVY]["x-a"] > 500, seen[HEAVY]
    assert links_of(seen, new) == {p: {"x-b"} for p in new}, seen

    # The old flows of both phases keep their BIDs (their conntrack entries), whatever the
    # load is now; once the class has been under the rate for the hold time (1 s), new flows
    # take BID 1 again.
    time.sleep(1.5)
    later = range(33000, 33005)
    steps = [(p, 2, 100) for p in (*quiet, *new, *later)]
    seen = netns.call_in(sink, send, sink, sender, DST, steps)
    assert links_of(seen, quiet) == {p: {"x-a"} for p in quiet}, seen
    assert links_of(seen, new) == {p: {"x-b"} for p in new}, "overflowed flows stay put"
    assert links_of(seen, later) == {p: {"x-a"} for p in later}, seen


def test_priority_skips_an_unusable_tier_and_updates_in_place(lab: tuple[str, str, str]) -> None:
    """BID 1 unusable: the one usable tier is a plain forward to BID 2 (no priority chain);
    back, the chain returns; three tiers with BID 3 unusable read back as two. Every state
    reads back as desired and is not rewritten by a second reconcile."""
    sender, router, sink = lab
    state = netns.call_in(router, enforce, (priority_policy(),), frozenset({1}))
    assert state["read"] == state["desired"], state["ruleset"]
    assert "chain pri_" not in str(state["ruleset"])
    seen = netns.call_in(sink, send, sink, sender, DST, [(31000, 3, 100)])
    assert seen == {31000: {"x-b": 3}}

    three = priority_policy(
        (Tier(bid=1, rate_bps=RATE_BPS), Tier(bid=3, rate_bps=RATE_BPS), Tier(bid=2))
    )
    for policies, unusable in (
        ((priority_policy(),), frozenset[int]()),
        ((three,), frozenset({3})),
        ((three,), frozenset[int]()),
        ((), frozenset[int]()),
    ):
        state = netns.call_in(router, enforce, policies, unusable)
        assert state["read"] == state["desired"], state["ruleset"]
        assert not state["again"]
        assert state["same_ruleset"]
        assert str(state["ruleset"]).count("chain pri_") == (1 if policies else 0), "none stale"


def test_one_meter_per_class_for_both_families(lab: tuple[str, str, str]) -> None:
    """The class's IPv4 and IPv6 rules share one chain, so one meter: an IPv6 flow filling
    BID 1 sends the class's new IPv4 flows to BID 2 as well."""
    sender, router, sink = lab
    state = netns.call_in(router, enforce, (priority_policy(),))
    assert str(state["ruleset"]).count("chain pri_") == 1
    steps: list[Step] = [(HEAVY, 300, 1200), (34000, 2, 100)]
    seen = netns.call_in(sink, send, sink, sender, DST, steps, {34000: "198.51.100.7"})
    assert set(seen[HEAVY]) == {"x-a"}
    assert seen[34000] == {"x-b": 2}, "the new IPv4 flow overflowed"


def burst6(dst: str, steps: list[Step]) -> None:
    """Send the steps' datagrams to dst:PORT, one socket per source port (no captures)."""
    sockets: dict[int, socket.socket] = {}
    for sport, count, size in steps:
        sock = sockets.get(sport)
        if sock is None:
            sock = sockets[sport] = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.bind(("::", sport))
        for _ in range(count):
            sock.sendto(b"x" * size, (dst, PORT))
    for sock in sockets.values():
        sock.close()


def test_priority_through_real_pipes(mcoa_lab_each_kind: McoaLab) -> None:
    """Downlink at the HA through the MCoA agents' real pipes: a heavy flow fills BID 1's
    pipe, the flows that start meanwhile take BID 2's; every datagram arrives once. Counted on
    the MR's two access links (m1, m2)."""
    check = capabilities.probe(("nft overflow",)).check("nft overflow")
    if not check.present:
        pytest.skip(check.missing_text)
    lab = mcoa_lab_each_kind
    lab.start("ha")
    lab.wait("HA listening", lambda: "serving on" in lab.log("ha"), 10)
    lab.start("mr")
    lab.wait("BID 1 pipe", lambda: lab.ha_far_end(1) == "2001:db8:1::2", 5)
    lab.wait("BID 2 pipe", lambda: lab.ha_far_end(2) == "2001:db8:2::2", 5)
    lab.wait("both BAs", lambda: lab.log("mr").count("status 0 (Binding Update accepted)") >= 2, 5)
    netns.call_in(lab.ha, enforce_in_pipes, "ha", (priority_policy(),))
    steps: list[Step] = [(HEAVY, 300, 1000)]
    new = range(32000, 32010)
    for port in new:
        steps += [(HEAVY, 20, 1000), (port, 1, 100)]
    before_rx = [_rx(lab.mr, dev) for dev in ("m1", "m2")]
    before = lab.udp_no_ports()
    netns.call_in(lab.cn, burst6, MNN, steps)
    time.sleep(0.5)
    assert lab.udp_no_ports() - before == 300 + 20 * len(new) + len(new), "each arrived once"
    m1, m2 = (_rx(lab.mr, dev) - old for dev, old in zip(("m1", "m2"), before_rx, strict=True))
    assert m1 >= 300 + 20 * len(new), (m1, m2)
    assert len(new) <= m2 < len(new) + 10, f"the new flows alone took BID 2 {(m1, m2)}"
