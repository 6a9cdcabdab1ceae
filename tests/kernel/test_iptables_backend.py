"""The iptables back end against a real kernel, in fresh namespaces.

Every back-end call runs in a forked child inside the namespace (`netns.call_in`), so libiptc
sees that namespace only. Results are checked through `read()` and through an independent
reader, `ip(6)tables-legacy-save -t mangle`; the packet test counts real UDP packets per egress
device of a router namespace.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
import time
from collections.abc import Callable
from functools import partial
from typing import ClassVar

import pytest

from services import netns
from services.contracts.errors import KernelError
from services.contracts.policy import AddressRange, Drop, Forward, Policy, PortRange, Selector
from services.prem.backends.iptables import IptablesBackend
from services.prem.config import PremSettings
from services.prem.core.flowtable import FlowRule, FlowTable, compile_policies
from services.prem.core.reconcile import Changes, plan
from tests.features import need_backend

pytestmark = pytest.mark.kernel


@pytest.fixture(autouse=True)
def _xtables() -> None:
    need_backend("iptables")


SETTINGS = PremSettings.model_validate(
    {
        "node": "ha1",
        "role": "ha",
        "mobile_router": "mr1",
        "backend": "iptables",
        "bids": [{"bid": 1}, {"bid": 2}, {"bid": 3}],
    }
)
V6_NET = ipaddress.ip_network("2001:db8:ff::/64")
PROBE_NET = ipaddress.ip_network("2001:db8:ee::/64")


def pol(pid: str, priority: int, bid: int | None, **selector: object) -> Policy:
    action: Forward | Drop = Drop() if bid is None else Forward(bid=bid)
    return Policy(id=pid, priority=priority, selector=Selector(**selector), action=action)


def ports(first: int, last: int | None = None) -> PortRange:
    return PortRange(first=first, last=first if last is None else last)


def rich_table() -> FlowTable:
    """Every selector form the back end renders, in both families."""
    return compile_policies(
        [
            pol(
                "web1",
                10,
                1,
                dst_addr=ipaddress.ip_network("2001:db8::/64"),
                next_header=6,
                dst_port=ports(80),
            ),
            pol("any", 100, 2),
            pol(
                "v4drop",
                20,
                None,
                src_addr=ipaddress.ip_network("10.0.0.0/24"),
                dst_addr=AddressRange(first="10.1.0.1", last="10.1.0.9"),
                next_header=17,
                src_port=ports(0, 65535),
                dscp=10,
            ),
            pol(
                "label",
                5,
                3,
                flow_label=0x12345,
                src_addr=ipaddress.ip_network("::/0"),
                next_header=136,
                src_port=ports(1, 5),
                dst_port=ports(7),
            ),
            pol("sctp", 6, 3, next_header=132, dst_port=ports(0, 65535)),
            pol(
                "dccp",
                7,
                3,
                dst_addr=ipaddress.ip_network("2001:db8::1/128"),
                next_header=33,
                src_port=ports(9, 10),
            ),
            pol("host4", 8, 3, dst_addr=ipaddress.ip_network("10.9.9.9/32")),
            pol(
                "range6",
                9,
                2,
                src_addr=AddressRange(first="2001:db8::5", last="2001:db8::9"),
                dscp=46,
                next_header=17,
                dst_port=ports(1000, 2000),
            ),
            pol("same.prio", 10, 2, next_header=58),
        ]
    )


# -- functions run inside namespaces (module level so the forked child can call them) -------


def do_apply(desired: FlowTable) -> tuple[FlowTable, Changes]:
    """Reconcile to `desired`; return what is read back and the plan left afterwards."""
    backend = IptablesBackend(SETTINGS)
    backend.apply(desired, plan(desired, backend.read()))
    after = backend.read()
    return after, plan(desired, after)


def do_apply_changes(desired: FlowTable, changes: Changes) -> None:
    IptablesBackend(SETTINGS).apply(desired, changes)


def do_read() -> FlowTable:
    return IptablesBackend(SETTINGS).read()


def do_remove_all() -> FlowTable:
    backend = IptablesBackend(SETTINGS)
    backend.remove_all()
    backend.remove_all()
    return backend.read()


def do_apply_expect_error(desired: FlowTable) -> str:
    backend = IptablesBackend(SETTINGS)
    try:
        backend.apply(desired, plan(desired, backend.read()))
    except KernelError as exc:
        return str(exc)
    return "no error"


class _FailingV6Commit(IptablesBackend):
    """Fails the IPv6 commit, after the IPv4 one went through."""

    def _commit(self, family: int, table: object) -> None:
        if family == 6 and not getattr(self, "restoring", False):
            raise OSError("injected IPv6 commit failure")
        super()._commit(family, table)


def do_apply_failing_v6(desired: FlowTable) -> str:
    backend = _FailingV6Commit(SETTINGS)
    try:
        backend.apply(desired, plan(desired, backend.read()))
    except KernelError as exc:
        return str(exc)
    return "no error"


def time_apply(desired: FlowTable) -> float:
    backend = IptablesBackend(SETTINGS)
    changes = plan(desired, backend.read())
    start = time.perf_counter()
    backend.apply(desired, changes)
    return time.perf_counter() - start


def send_raw6(src: str, dst: str, dport: int, count: int, tclass: int, label: int) -> None:
    """Send `count` UDP packets with a chosen traffic class and flow label (header included)."""
    payload = b"x" * 16
    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    first = (6 << 28) | (tclass << 20) | label
    header = struct.pack("!IHBB", first, len(udp), 17, 64)
    packet = (
        header + socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    )
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        for _ in range(count):
            sock.sendto(packet + udp, (dst, 0))


# -- helpers in the test process -----------------------------------------------------------


def save(ns: str, family: int) -> str:
    """The independent reader: legacy-save output without its timestamp comments."""
    tool = "ip6tables-legacy-save" if family == 6 else "iptables-legacy-save"
    out = netns.run(ns, [tool, "-t", "mangle"])
    return "\n".join(line for line in out.splitlines() if not line.startswith("#"))


def comments(ns: str, family: int) -> list[str]:
    """Policy id and priority from our main chain's comments, in kernel order."""
    found = []
    for line in save(ns, family).splitlines():
        if line.startswith("-A MULTINET_PREM ") and '--comment "' in line:
            words = line.split('--comment "')[1].split('"')[0].split()
            found.append(" ".join(words[:2]))
    return found


def expected_comments(table: FlowTable, family: int) -> list[str]:
    return [f"{r.policy_id} {r.priority}" for r in table if r.family == family]


@pytest.fixture
def ns(make_netns: Callable[[str], str]) -> str:
    return make_netns("ipt")


# -- pure rendering ------------------------------------------------------------------------


def test_render_then_parse_gives_the_rule_back() -> None:
    backend = IptablesBackend(SETTINGS)
    bids = {backend.subchain(b): b for b in (1, 2, 3)}
    for rule in rich_table():
        assert backend.parse_rule(backend.render_rule(rule), rule.family, bids) == rule


def test_render_refuses_next_header_zero() -> None:
    backend = IptablesBackend(SETTINGS)
    rule = compile_policies([pol("hbh", 1, 1, next_header=0)])[0]
    with pytest.raises(KernelError, match="any protocol"):
        backend.render_rule(rule)


# -- kernel state --------------------------------------------------------------------------


def test_apply_then_read_gives_the_desired_table(ns: str) -> None:
    desired = rich_table()
    read, left = netns.call_in(ns, do_apply, desired)
    assert read == desired
    assert not left
    for family in (4, 6):
        assert comments(ns, family) == expected_comments(desired, family)
    v6 = save(ns, 6)
    assert "-A PREROUTING -j MULTINET_PREM" in v6
    assert "-A OUTPUT -j MULTINET_PREM" in v6
    assert "-A MULTINET_PREM_3 -j MARK --set-xmark 0x30000/0xff0000" in v6
    assert '-m u32 --u32 "0x0&0xfffff=0x12345"' in v6
    assert "-j DROP" in save(ns, 4)


def test_nothing_owned_reads_empty(ns: str) -> None:
    assert netns.call_in(ns, do_read) == ()


def test_apply_is_idempotent_and_does_not_commit_again(ns: str) -> None:
    desired = rich_table()
    netns.call_in(ns, do_apply, desired)
    before = {family: save(ns, family) for family in (4, 6)}
    read, left = netns.call_in(ns, do_apply, desired)
    assert read == desired
    assert not left
    # Even a non-empty change list does not rewrite a family that already holds the rules.
    netns.call_in(ns, do_apply_changes, desired, Changes(add=desired))
    assert {family: save(ns, family) for family in (4, 6)} == before


def test_update_and_delete_single_rules(ns: str) -> None:
    first = rich_table()
    netns.call_in(ns, do_apply, first)
    changed = tuple(
        FlowRule(
            r.priority, r.policy_id, r.family, r.selector, 1 if r.policy_id == "any" else r.bid
        )
        for r in first
        if r.policy_id != "dccp"
    )
    read, left = netns.call_in(ns, do_apply, changed)
    assert read == changed
    assert not left
    assert "dccp 7" not in comments(ns, 6)
    assert '-A MULTINET_PREM -m comment --comment "any 100" -g MULTINET_PREM_1' in save(ns, 6)


def test_drop_and_fallback_verdicts(ns: str) -> None:
    policies = [
        Policy(
            id="video",
            priority=10,
            selector=Selector(next_header=17),
            action=Forward(bid=1, fallbacks=(2, 3)),
        ),
        pol("junk", 5, None, next_header=17, dst_port=ports(9)),
    ]
    normal = compile_policies(policies)
    read, _ = netns.call_in(ns, do_apply, normal)
    assert read == normal
    assert '--comment "junk 5" -j DROP' in save(ns, 6)
    assert '--comment "video 10" -g MULTINET_PREM_1' in save(ns, 4)
    fallback = compile_policies(policies, unusable=frozenset({1}))
    read, left = netns.call_in(ns, do_apply, fallback)
    assert read == fallback
    assert not left
    assert '--comment "video 10" -g MULTINET_PREM_2' in save(ns, 4)
    assert ":MULTINET_PREM_1 " not in save(ns, 4)  # an unused BID chain goes away


def test_overlapping_priorities_are_written_in_precedence_order(ns: str) -> None:
    desired = compile_policies(
        [
            pol("c", 30, 3, next_header=17),
            pol("a", 10, 1, next_header=17, dst_port=ports(5000)),
            pol("b", 20, 2, dst_addr=V6_NET),
            pol("a2", 10, 2, next_header=6),
        ]
    )
    netns.call_in(ns, do_apply, desired)
    assert comments(ns, 6) == ["a 10", "a2 10", "b 20", "c 30"]
    assert comments(ns, 4) == ["a 10", "a2 10", "c 30"]


def test_one_family_only_leaves_the_other_untouched(ns: str) -> None:
    desired = compile_policies([pol("six", 1, 1, dst_addr=V6_NET)])
    read, _ = netns.call_in(ns, do_apply, desired)
    assert read == desired
    assert "MULTINET" not in save(ns, 4)


def test_remove_all_leaves_no_trace_and_keeps_foreign_rules(ns: str) -> None:
    for tool in ("iptables-legacy", "ip6tables-legacy"):
        netns.run(
            ns,
            [
                tool,
                "-t",
                "mangle",
                "-A",
                "PREROUTING",
                "-p",
                "tcp",
                "-j",
                "MARK",
                "--set-mark",
                "7",
            ],
        )
    pristine = {family: save(ns, family) for family in (4, 6)}
    netns.call_in(ns, do_apply, rich_table())
    assert "-j MARK --set-xmark 0x7/0xffffffff" in save(ns, 6)
    assert netns.call_in(ns, do_remove_all) == ()
    after = {family: save(ns, family) for family in (4, 6)}
    assert after == pristine
    assert all("MULTINET" not in text for text in after.values())


def test_refused_rule_leaves_the_previous_state(ns: str) -> None:
    netns.call_in(ns, do_apply, rich_table())
    before = {family: save(ns, family) for family in (4, 6)}
    bad = compile_policies([pol("ok", 1, 1), pol("hbh", 2, 1, next_header=0)])
    assert "any protocol" in netns.call_in(ns, do_apply_expect_error, bad)
    assert {family: save(ns, family) for family in (4, 6)} == before


def test_kernel_refusal_leaves_the_previous_state(ns: str) -> None:
    """A foreign jump into our BID 2 chain makes its deletion fail: nothing is committed."""
    netns.call_in(ns, do_apply, rich_table())
    netns.run(ns, ["ip6tables-legacy", "-t", "mangle", "-A", "FORWARD", "-j", "MULTINET_PREM_2"])
    before = {family: save(ns, family) for family in (4, 6)}
    without_2 = tuple(r for r in rich_table() if r.bid != 2)
    error = netns.call_in(ns, do_apply_expect_error, without_2)
    assert "MULTINET_PREM_2" in error
    assert {family: save(ns, family) for family in (4, 6)} == before


def test_second_family_commit_failure_restores_the_first(ns: str) -> None:
    first = rich_table()
    netns.call_in(ns, do_apply, first)
    before = {family: save(ns, family) for family in (4, 6)}
    second = tuple(r for r in first if r.policy_id not in ("any", "host4"))
    error = netns.call_in(ns, do_apply_failing_v6, second)
    assert "IPv6" in error
    assert {family: save(ns, family) for family in (4, 6)} == before
    assert netns.call_in(ns, do_read) == first


def test_apply_1000_policies_in_one_message(ns: str) -> None:
    desired = compile_policies(
        pol(
            f"p{i}",
            i,
            1 + i % 3,
            dst_addr=ipaddress.ip_network(f"2001:db8:{i:x}::/48"),
            next_header=17,
            dst_port=ports(1000 + i),
        )
        for i in range(1000)
    )
    elapsed = netns.call_in(ns, time_apply, desired)
    print(f"\niptables back end: 1000 policies applied in {elapsed * 1000:.0f} ms")
    assert netns.call_in(ns, do_read) == desired
    assert elapsed < 10


# -- packets -------------------------------------------------------------------------------


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Router:
    """Sender -> router -> three egress veths (BID 1, BID 2, unmarked) into a sink namespace."""

    EGRESS: ClassVar[dict[str, int | None]] = {"r1": 1, "r2": 2, "r3": None}

    def __init__(self, make_netns: Callable[[str], str]) -> None:
        self.snd, self.rtr, sink = make_netns("snd"), make_netns("rtr"), make_netns("sink")
        index = random.randint(2000, 60000)
        links = [
            (self.rtr, "r0", self.snd, "s0"),
            *[(self.rtr, n, sink, f"k{n[1]}") for n in self.EGRESS],
        ]
        for i, (ns_a, a, ns_b, b) in enumerate(links):
            mac = f"02:00:00:00:{i:02x}:02"
            netns.veth(ns_a, a, ns_b, b, index + 2 * i, peer_mac=mac)
            netns.run(ns_a, ["ip", "addr", "add", f"2001:db8:{i}::1/64", "dev", a, "nodad"])
            netns.run(ns_b, ["ip", "addr", "add", f"2001:db8:{i}::2/64", "dev", b, "nodad"])
            if a != "r0":
                netns.run(
                    ns_a,
                    [
                        "ip",
                        "-6",
                        "neigh",
                        "replace",
                        f"2001:db8:{i}::2",
                        "lladdr",
                        mac,
                        "dev",
                        a,
                        "nud",
                        "permanent",
                    ],
                )
        r0_mac = netns.run(self.rtr, ["cat", "/sys/class/net/r0/address"]).strip()
        netns.run(
            self.snd,
            [
                "ip",
                "-6",
                "neigh",
                "replace",
                "2001:db8:0::1",
                "lladdr",
                r0_mac,
                "dev",
                "s0",
                "nud",
                "permanent",
            ],
        )
        netns.run(self.snd, ["ip", "-6", "route", "add", "default", "via", "2001:db8:0::1"])
        netns.run(self.rtr, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        for i, (name, bid) in enumerate(self.EGRESS.items(), start=1):
            table = ["table", str(SETTINGS.table_of(bid))] if bid else []
            for net in (V6_NET,) if bid else (V6_NET, PROBE_NET):
                netns.run(
                    self.rtr,
                    [
                        "ip",
                        "-6",
                        "route",
                        "add",
                        str(net),
                        "via",
                        f"2001:db8:{i}::2",
                        "dev",
                        name,
                        *table,
                    ],
                )
            if bid:
                mark = f"{SETTINGS.mark_of(bid):#x}/{SETTINGS.mark_mask:#x}"
                netns.run(
                    self.rtr,
                    [
                        "ip",
                        "-6",
                        "rule",
                        "add",
                        "fwmark",
                        mark,
                        "lookup",
                        str(SETTINGS.table_of(bid)),
                    ],
                )
        for name in ("r0", *self.EGRESS):
            _wait_for(partial(self.has_carrier, name), f"carrier on {name}")

    def has_carrier(self, name: str) -> bool:
        return "LOWER_UP" in netns.run(self.rtr, ["ip", "link", "show", name])

    def counters(self) -> dict[str, int]:
        return {
            name: int(netns.run(self.rtr, ["cat", f"/sys/class/net/{name}/statistics/{stat}"]))
            for name, stat in [(n, "tx_packets") for n in self.EGRESS] + [("r0", "rx_packets")]
        }

    def route_of(self, dport: int, *, tclass: int = 0, label: int = 0, count: int = 40) -> str:
        """Send `count` packets and answer where they left the router: r1, r2, r3 or "drop"."""
        start = self.counters()
        netns.call_in(
            self.snd, send_raw6, "2001:db8:0::2", str(V6_NET[7]), dport, count, tclass, label
        )

        def delta() -> dict[str, int]:
            now = self.counters()
            return {name: now[name] - start[name] for name in now}

        _wait_for(lambda: delta()["r0"] >= count, "packets at the router")
        # A probe along the unmarked path: once it is out, the packets before it were handled.
        probe = delta()["r3"] + count
        netns.call_in(self.snd, send_raw6, "2001:db8:0::2", str(PROBE_NET[7]), 9, count, 0, 0)
        _wait_for(lambda: delta()["r3"] >= probe, "the probe")
        moved = delta()
        moved["r3"] -= count
        winners = [name for name in self.EGRESS if moved[name] >= count]
        assert len(winners) <= 1, moved
        assert all(moved[name] < count // 4 for name in self.EGRESS if name not in winners), moved
        return winners[0] if winners else "drop"


def test_packets_follow_priority_and_drop(make_netns: Callable[[str], str]) -> None:
    router = Router(make_netns)
    voice = pol("voice", 10, 2, dst_addr=V6_NET, next_header=17, dst_port=ports(5000, 5001))
    bulk = pol("bulk", 20, 1, dst_addr=V6_NET)
    block = pol("block", 5, None, next_header=17, dst_port=ports(6000))
    ef = pol("ef", 7, 2, dscp=46, next_header=17)
    label = pol("label", 8, 2, flow_label=0x12345)
    netns.call_in(router.rtr, do_apply, compile_policies([voice, bulk, block, ef, label]))
    assert router.route_of(5000) == "r2"
    assert router.route_of(7000) == "r1"
    assert router.route_of(6000) == "drop"
    assert router.route_of(7000, tclass=46 << 2) == "r2"
    assert router.route_of(7000, label=0x12345) == "r2"
    assert router.route_of(7000, label=0x12346) == "r1"
    slower_voice = voice.model_copy(update={"priority": 30})
    netns.call_in(router.rtr, do_apply, compile_policies([slower_voice, bulk, block]))
    assert router.route_of(5000) == "r1"
    netns.call_in(router.rtr, do_remove_all)
    assert router.route_of(6000) == "r3"


def test_small_changes_edit_in_place_in_precedence_order(ns: str) -> None:
    base = [pol(f"p{i}", 10 * i, 1 + i % 3, next_header=17, dst_port=ports(i)) for i in range(1, 6)]
    netns.call_in(ns, do_apply, compile_policies(base))
    middle = pol("new", 25, 3, next_header=6)
    first = pol("first", 1, None, next_header=17)
    changed = compile_policies([*base[1:], middle, first])
    read, left = netns.call_in(ns, do_apply, changed)
    assert read == changed
    assert not left
    assert comments(ns, 6) == ["first 1", "p2 20", "new 25", "p3 30", "p4 40", "p5 50"]
    assert comments(ns, 4) == comments(ns, 6)


def test_foreign_rule_in_our_chain_is_not_read_and_is_repaired(ns: str) -> None:
    desired = compile_policies([pol("a", 1, 1, next_header=17), pol("b", 2, 2, next_header=6)])
    netns.call_in(ns, do_apply, desired)
    netns.run(
        ns,
        [
            "ip6tables-legacy",
            "-t",
            "mangle",
            "-I",
            "MULTINET_PREM",
            "2",
            "-p",
            "tcp",
            "-j",
            "ACCEPT",
        ],
    )
    assert netns.call_in(ns, do_read) == desired  # the foreign rule is no flow rule
    more = compile_policies([pol("a", 1, 1, next_header=17), pol("b", 2, 3, next_header=6)])
    read, _ = netns.call_in(ns, do_apply, more)
    assert read == more
    assert "-j ACCEPT" not in save(ns, 6)
    assert comments(ns, 6) == ["a 1", "b 2"]
