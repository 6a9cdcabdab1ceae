"""The same behaviour for every back end, in a fresh network namespace per test.

The kernel work of a test runs in one forked child inside the namespace (`netns.call_in`), so
the in-memory back end keeps its state for the whole scenario and the kernel back ends create
their libraries' sockets in that namespace. What the kernel holds afterwards is checked with an
independent reader (`nft list ruleset`, `ip6tables-legacy-save`) through `netns.run`.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services import netns
from services.contracts.errors import KernelError
from services.contracts.policy import AddressRange, Drop, Forward, Policy, PortRange, Selector
from services.prem.backends import make_backend
from services.prem.backends.base import Backend
from services.prem.backends.nftables import NftablesBackend
from services.prem.config import PremSettings
from services.prem.core.flowtable import FlowTable, compile_policies
from services.prem.core.reconcile import Changes, plan
from tests.features import need_backend

pytestmark = pytest.mark.kernel

BACKENDS = ["memory", "nftables", "iptables"]
_IPTABLES_WRITTEN = (
    Path(__file__).resolve().parents[2] / "services" / "prem" / "backends" / "iptables.py"
).exists()


@pytest.fixture(
    params=[
        pytest.param(
            name,
            marks=pytest.mark.xfail(
                not _IPTABLES_WRITTEN and name == "iptables",
                reason="iptables back end not yet written",
                strict=True,
            ),
        )
        for name in BACKENDS
    ]
)
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    need_backend(name)
    return name


@pytest.fixture
def ns(make_netns: Callable[[str], str]) -> str:
    return make_netns("be")


def settings(name: str) -> PremSettings:
    return PremSettings.model_validate(
        {
            "node": "ha1",
            "role": "ha",
            "mobile_router": "mr1",
            "backend": name,
            "bids": [{"bid": 1}, {"bid": 2}, {"bid": 3}],
        }
    )


def net(text: str) -> Any:
    return ipaddress.ip_network(text)


def rng(first: str, last: str) -> AddressRange:
    return AddressRange(first=ipaddress.ip_address(first), last=ipaddress.ip_address(last))


def udp(port: int, last: int | None = None) -> dict[str, Any]:
    return {
        "next_header": 17,
        "dst_port": PortRange(first=port, last=port if last is None else last),
    }


def pol(
    pid: str, prio: int, bid: int | None, fallbacks: tuple[int, ...] = (), **sel: Any
) -> Policy:
    action: Forward | Drop = Drop() if bid is None else Forward(bid=bid, fallbacks=fallbacks)
    return Policy(id=pid, priority=prio, selector=Selector(**sel), action=action)


#: Mixed families, prefixes, ranges (one equal to a prefix), ports, DSCP, flow label, overlaps.
POLICIES = (
    pol("web", 10, 1, (2,), dst_addr=net("2001:db8:ff::/64"), **udp(5000)),
    pol("wide", 20, 2, dst_addr=net("2001:db8:ff::/64")),
    pol("blocked", 5, None, dst_addr=net("2001:db8:ff::66/128"), next_header=17),
    pol("range", 15, 3, src_addr=rng("2001:db8:1::10", "2001:db8:1::1f"), **udp(1000, 2000)),
    pol("rangeprefix", 16, 1, src_addr=rng("2001:db8:2::", "2001:db8:2::ff")),
    pol("v4", 10, 2, dst_addr=net("198.51.100.0/24"), **udp(6000)),
    pol("v4wide", 30, 1, dst_addr=net("198.51.100.0/24")),
    pol("v4range", 31, 3, src_addr=rng("192.0.2.10", "192.0.2.20"), next_header=6),
    pol("ef", 8, 3, dscp=46, next_header=17),
    pol("label", 9, 2, flow_label=0x12345, next_header=6),
    pol("both", 40, 1, next_header=58),
    pol(
        "six6",
        3,
        2,
        src_addr=net("2001:db8:3::/64"),
        dst_addr=rng("2001:db8:4::1", "2001:db8:4::9"),
        next_header=6,
        src_port=PortRange(first=1, last=1024),
        dst_port=PortRange(first=80, last=80),
        dscp=10,
    ),
    pol(
        "six4",
        3,
        2,
        src_addr=net("10.1.0.0/16"),
        dst_addr=net("10.2.0.0/16"),
        next_header=132,
        src_port=PortRange(first=0, last=65535),
        dst_port=PortRange(first=9, last=9),
        dscp=0,
    ),
    pol("dsonly", 50, 3, dscp=8),
    pol("lite", 12, 1, next_header=136, dst_port=PortRange(first=7, last=7)),
    pol("anything", 1000, 1),
)


def table(
    policies: tuple[Policy, ...] = POLICIES, unusable: frozenset[int] = frozenset()
) -> FlowTable:
    return compile_policies(policies, unusable)


def sync(backend: Backend, desired: FlowTable) -> Changes:
    changes = plan(desired, backend.read())
    if changes:
        backend.apply(desired, changes)
    return changes


def dump(name: str) -> str:
    """The kernel's own listing of what a back end owns (run inside the namespace)."""
    if name == "nftables":
        argv = [["nft", "list", "ruleset"]]
    elif name == "iptables":
        argv = [["iptables-legacy-save", "-t", "mangle"], ["ip6tables-legacy-save", "-t", "mangle"]]
    else:
        return ""
    out = [subprocess.run(a, capture_output=True, text=True, check=True).stdout for a in argv]
    return "\n".join(line for text in out for line in text.splitlines() if not line.startswith("#"))


def inject_failure(backend: Backend) -> None:
    """Make the next apply fail inside the kernel transaction (after part of it is sent)."""
    if backend.name == "memory":
        backend.fail_next_apply = True  # type: ignore[attr-defined]
    elif backend.name == "nftables":
        ctx = backend._nft()  # type: ignore[attr-defined]
        real = ctx.run

        def run(commands: str, *, flags: int = 0) -> str:
            if flags == 0:
                commands += f"delete chain inet {backend.table} no_such_chain\n"  # type: ignore[attr-defined]
            return real(commands, flags=flags)  # type: ignore[no-any-return]

        ctx.run = run
    else:
        real_commit = backend._commit  # type: ignore[attr-defined]

        def commit(family: int, tbl: Any) -> None:
            if family == 6:
                raise OSError("injected commit failure")
            real_commit(family, tbl)

        backend._commit = commit  # type: ignore[attr-defined]


# ---- scenarios (module level: they run in the forked child) ------------------------------------


def round_trip(name: str) -> list[str]:
    backend = make_backend(settings(name))
    assert backend.read() == ()
    desired = table()
    backend.apply(desired, plan(desired, backend.read()))
    assert backend.read() == desired
    assert not plan(desired, backend.read())
    first = dump(name)
    backend.apply(desired, plan(desired, backend.read()))
    backend.apply(desired, Changes())
    assert backend.read() == desired
    return [first, dump(name)]


def updates(name: str) -> list[str]:
    backend = make_backend(settings(name))
    modes = []
    sync(backend, table())
    replaced_web = pol("web", 10, 3, dst_addr=net("2001:db8:ff::/64"), **udp(5000))
    others = tuple(p for p in POLICIES if p.id != "web")
    steps = [
        # replace one rule's verdict and insert one beside it (same layer): elements only
        (*others, replaced_web, pol("new", 12, 3, dst_addr=net("2001:db8:fe::/64"), **udp(5000))),
        # delete that one again: its layer stays, elements only
        (*others, replaced_web),
        # delete the only rule of a layer: the layer goes, the table is replaced
        tuple(p for p in (*others, replaced_web) if p.id != "v4range"),
        # an overlapping, higher-precedence rule: the layout changes
        (*POLICIES, pol("top", 1, 2, dst_addr=net("2001:db8:ff::/48"))),
        # priorities swapped on overlapping selectors
        (
            *(p for p in POLICIES if p.id not in ("web", "wide")),
            pol("web", 20, 1, dst_addr=net("2001:db8:ff::/64"), **udp(5000)),
            pol("wide", 10, 2, dst_addr=net("2001:db8:ff::/64")),
        ),
        POLICIES[:1],
        (),
    ]
    for policies in steps:
        desired = table(tuple(policies))
        assert sync(backend, desired)
        assert backend.read() == desired
        assert not plan(desired, backend.read())
        modes.append(getattr(backend, "last_apply", ""))
    return modes


def fallback(name: str) -> None:
    backend = make_backend(settings(name))
    sync(backend, table())
    switched = table(unusable=frozenset({1}))
    assert switched != table()
    assert sync(backend, switched)
    assert backend.read() == switched
    assert [r.bid for r in backend.read() if r.policy_id == "web"] == [2]
    assert sync(backend, table())
    assert backend.read() == table()


def remove(name: str) -> None:
    backend = make_backend(settings(name))
    backend.remove_all()
    sync(backend, table())
    backend.remove_all()
    assert backend.read() == ()
    backend.remove_all()


def failing(name: str, small: bool) -> list[str]:
    backend = make_backend(settings(name))
    before = table()
    sync(backend, before)
    kernel_before = dump(name)
    after = (
        table(unusable=frozenset({1}))
        if small
        else table((*POLICIES, pol("top", 1, 2, dst_addr=net("2001:db8:ff::/48"))))
    )
    inject_failure(backend)
    with pytest.raises(KernelError):
        backend.apply(after, plan(after, backend.read()))
    assert backend.read() == before
    return [kernel_before, dump(name)]


# ---- tests --------------------------------------------------------------------------------------


def test_apply_then_read_round_trips_and_is_idempotent(backend_name: str, ns: str) -> None:
    first, second = netns.call_in(ns, round_trip, backend_name)
    assert first == second


def test_update_replace_delete_and_layout_changes(backend_name: str, ns: str) -> None:
    modes = netns.call_in(ns, updates, backend_name)
    if backend_name == "nftables":
        # The last step empties a table of one policy whose /64 is a masked point: its
        # element is deleted, the table's layout stays.
        assert modes == ["elements", "elements"] + ["replace"] * 4 + ["delta"]


def test_fallback_switch_changes_the_verdict(backend_name: str, ns: str) -> None:
    netns.call_in(ns, fallback, backend_name)


def test_remove_all_leaves_nothing(backend_name: str, ns: str) -> None:
    netns.call_in(ns, remove, backend_name)
    if backend_name == "nftables":
        assert "multinet" not in netns.run(ns, ["nft", "list", "ruleset"])
    if backend_name == "iptables":
        for tool in ("iptables-legacy-save", "ip6tables-legacy-save"):
            assert "MULTINET" not in netns.run(ns, [tool, "-t", "mangle"])


@pytest.mark.parametrize("small", [True, False], ids=["elements", "replace"])
def test_failing_apply_leaves_the_previous_state(backend_name: str, ns: str, small: bool) -> None:
    before, after = netns.call_in(ns, failing, backend_name, small)
    assert before == after


# ---- packets: real traffic through a router namespace marked by the nftables back end ---------

PACKET_SETTINGS = settings("nftables")
N = 50
_NOISE = 10  # MLD reports and the like: the few packets a fresh link sends by itself


def send_udp(dst: str, dport: int, tclass: int, count: int) -> None:
    """Send `count` UDP datagrams (runs in the sender namespace)."""
    import contextlib
    import socket

    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tclass)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tclass)
        for _ in range(count):
            # an OSError is an ICMP error for an earlier datagram; the next one still goes out
            with contextlib.suppress(OSError):
                sock.sendto(b"x" * 32, (dst, dport))


def apply_policies(policies: tuple[Policy, ...]) -> None:
    backend = make_backend(PACKET_SETTINGS)
    sync(backend, table(policies))
    assert backend.read() == table(policies)


def _sh(ns: str, *argv: str) -> None:
    netns.run(ns, list(argv))


def build_router(sender: str, router: str, sink: str) -> None:
    """sender --(in)-- router --(a: BID 1, b: BID 2)-- sink; BID tables via fwmark rules."""
    for key in ("all", "default"):
        _sh(router, "sysctl", "-qw", f"net.ipv6.conf.{key}.router_solicitations=0")
    links = [
        ("r-in", 4101, sender, "s-eth"),
        ("r-a", 4103, sink, "x-a"),
        ("r-b", 4105, sink, "x-b"),
    ]
    for mine, index, peer_ns, peer in links:
        netns.veth(router, mine, peer_ns, peer, index)
    for key in ("net.ipv6.conf.all.forwarding=1", "net.ipv4.ip_forward=1"):
        _sh(router, "sysctl", "-qw", key)
    _sh(router, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "r-in", "nodad")
    _sh(router, "ip", "addr", "add", "192.0.2.1/24", "dev", "r-in")
    _sh(sender, "ip", "-6", "addr", "add", "2001:db8:1::2/64", "dev", "s-eth", "nodad")
    _sh(sender, "ip", "addr", "add", "192.0.2.2/24", "dev", "s-eth")
    _sh(sender, "ip", "-6", "route", "add", "default", "via", "2001:db8:1::1")
    _sh(sender, "ip", "route", "add", "default", "via", "192.0.2.1")
    for bid, dev, mac in ((1, "r-a", "02:00:00:00:00:0a"), (2, "r-b", "02:00:00:00:00:0b")):
        tbl = str(PACKET_SETTINGS.table_of(bid))
        mark = f"{PACKET_SETTINGS.mark_of(bid):#x}/{PACKET_SETTINGS.mark_mask:#x}"
        gw6, gw4 = f"fe80::{bid}", f"169.254.0.{bid}"
        _sh(router, "ip", "-6", "neigh", "add", gw6, "lladdr", mac, "dev", dev, "nud", "permanent")
        _sh(router, "ip", "neigh", "add", gw4, "lladdr", mac, "dev", dev, "nud", "permanent")
        _sh(router, "ip", "-6", "route", "add", "default", "via", gw6, "dev", dev, "table", tbl)
        _sh(router, "ip", "route", "add", "default", "via", gw4, "dev", dev, "onlink", "table", tbl)
        for fam in ("-6", "-4"):
            _sh(
                router,
                "ip",
                fam,
                "rule",
                "add",
                "pref",
                str(100 + bid),
                "fwmark",
                mark,
                "lookup",
                tbl,
            )
    # local traffic to this prefix leaves by r-a unless the output hook re-routes it
    _sh(router, "ip", "-6", "route", "add", "2001:db8:ee::/64", "via", "fe80::1", "dev", "r-a")


def tx(router: str) -> tuple[int, int]:
    return tuple(  # type: ignore[return-value]
        int(netns.run(router, ["cat", f"/sys/class/net/{dev}/statistics/tx_packets"]))
        for dev in ("r-a", "r-b")
    )


def where(from_ns: str, router: str, dst: str, dport: int, tclass: int = 0) -> str:
    """Send N datagrams and say by which BID pipe they left: "a", "b" or "dropped"."""
    import time

    before = tx(router)
    netns.call_in(from_ns, send_udp, dst, dport, tclass, N)
    # a drop can only be seen as nothing arriving: watch for one second, far longer than the
    # in-kernel forwarding of datagrams already sent
    deadline = time.monotonic() + 1
    while True:
        after = tx(router)
        delta = (after[0] - before[0], after[1] - before[1])
        for name, mine, other in (("a", delta[0], delta[1]), ("b", delta[1], delta[0])):
            if mine >= N and other <= _NOISE:
                return name
        if time.monotonic() > deadline:
            return "dropped" if max(delta) <= _NOISE else f"unclear {delta}"
        time.sleep(0.05)


def test_packets_follow_marks_priorities_and_drops(make_netns: Callable[[str], str]) -> None:
    sender, router, sink = make_netns("snd"), make_netns("rtr"), make_netns("snk")
    build_router(sender, router, sink)
    net6 = net("2001:db8:ff::/64")
    policies = (
        pol("web", 10, 2, dst_addr=net6, **udp(5000)),
        pol("wide", 20, 1, dst_addr=net6),
        pol("blocked", 5, None, dst_addr=net("2001:db8:ff::66/128"), next_header=17),
        pol("ef", 8, 1, dscp=46, next_header=17),
        pol("v4", 10, 2, dst_addr=net("198.51.100.0/24"), **udp(6000)),
        pol("v4wide", 30, 1, dst_addr=net("198.51.100.0/24")),
        pol("local", 10, 2, dst_addr=net("2001:db8:ee::/64")),
    )
    netns.call_in(router, apply_policies, policies)
    assert where(sender, router, "2001:db8:ff::1", 5000) == "b"
    assert where(sender, router, "2001:db8:ff::1", 5001) == "a"
    assert where(sender, router, "2001:db8:ff::66", 5000) == "dropped"
    assert where(sender, router, "2001:db8:ff::1", 5000, 46 << 2) == "a"  # DSCP EF wins
    assert where(sender, router, "198.51.100.7", 6000) == "b"
    assert where(sender, router, "198.51.100.7", 6001) == "a"
    assert where(sender, router, "198.51.100.7", 6000, 46 << 2) == "a"
    assert where(router, router, "2001:db8:ee::5", 7000) == "b"  # local: output hook re-routes

    # swap the priorities of the overlapping pair: the wide policy now wins
    swapped = (
        pol("web", 30, 2, dst_addr=net6, **udp(5000)),
        *(p for p in policies if p.id != "web"),
    )
    netns.call_in(router, apply_policies, swapped)
    assert where(sender, router, "2001:db8:ff::1", 5000) == "a"
    netns.call_in(router, apply_policies, ())
    assert where(sender, router, "2001:db8:ff::1", 5000) == "dropped"  # no mark, no route


def _fleet(swapped: bool) -> tuple[Policy, ...]:
    """Two mobile routers' class policies at one HA, each scoped by the router's /48: the
    same port goes to opposite BIDs (`swapped` exchanges router a1's)."""
    a1 = (2, 1) if not swapped else (1, 2)
    return (
        pol("a1.voice", 10, a1[0], dst_addr=net("2001:db8:a1::/48"), **udp(5000)),
        pol("a1.web", 20, a1[1], dst_addr=net("2001:db8:a1::/48"), **udp(5001)),
        pol("a2.voice", 10, 1, dst_addr=net("2001:db8:a2::/48"), **udp(5000)),
        pol("a2.web", 20, 2, dst_addr=net("2001:db8:a2::/48"), **udp(5001)),
    )


def apply_fleet(swapped: bool) -> str:
    """Apply `_fleet` with a back end that read the kernel first; how it applied."""
    backend = NftablesBackend(PACKET_SETTINGS)
    desired = table(_fleet(swapped))
    sync(backend, desired)
    assert backend.read() == desired
    return backend.last_apply


def test_prefixes_of_one_length_are_masked_exact_keys_for_real_packets(
    make_netns: Callable[[str], str],
) -> None:
    sender, router, sink = make_netns("snd"), make_netns("rtr"), make_netns("snk")
    build_router(sender, router, sink)
    assert netns.call_in(router, apply_fleet, False) == "replace"
    ruleset = netns.run(router, ["nft", "list", "table", "inet", "multinet_prem"])
    assert "ip6 daddr & ffff:ffff:ffff:: . meta l4proto . th dport @s0_6_da48_pr_dp_b1" in ruleset
    assert "2001:db8:a1:: . udp . 5000" in ruleset  # the prefix's network address, no length
    assert where(sender, router, "2001:db8:a1::7", 5000) == "b"
    assert where(sender, router, "2001:db8:a2:ff::9", 5000) == "a"
    assert where(sender, router, "2001:db8:a1:1::1", 5001) == "a"
    assert where(sender, router, "2001:db8:a2::1", 5001) == "b"
    assert where(sender, router, "2001:db8:a3::1", 5000) == "dropped"  # no router's prefix
    # One router's change: its elements move between the BIDs' sets, nothing else.
    assert netns.call_in(router, apply_fleet, True) == "delta"
    assert where(sender, router, "2001:db8:a1::7", 5000) == "a"
    assert where(sender, router, "2001:db8:a2::1", 5000) == "a"
    assert where(sender, router, "2001:db8:a1::7", 5001) == "b"


# ---- nftables only: ownership, a stale view, a damaged table --------------------------------

FOREIGN = "table inet other {\n\tchain c {\n\t\ttcp dport 22 accept\n\t}\n}\n"


def nft(*argv: str) -> str:
    """The nft command line, inside the current namespace: a reader/writer that is not ours."""
    return subprocess.run(["nft", *argv], capture_output=True, text=True, check=True).stdout


def foreign_survives() -> None:
    nft("add table inet other")
    nft("add chain inet other c")
    nft("add rule inet other c tcp dport 22 accept")
    backend = make_backend(settings("nftables"))
    sync(backend, table())
    sync(backend, table((*POLICIES, pol("top", 1, 2, dst_addr=net("2001:db8:ff::/48")))))
    backend.remove_all()
    assert nft("list", "ruleset") == FOREIGN


def stale_view() -> None:
    from services.prem.core.nft_layers import assign_layers
    from services.prem.core.nft_render import element, map_parts

    backend = NftablesBackend(settings("nftables"))
    before = table()
    sync(backend, before)
    assert backend.read() == before  # the back end's view is now fresh
    layers = assign_layers(before)
    index = next(
        i for i, layer in enumerate(layers) if any(r.policy_id == "web" for r in layer.rules)
    )
    (part,) = [
        p for p in map_parts(index, layers[index]) if p.rules and p.rules[0].policy_id == "web"
    ]
    web = part.rules[0]
    nft(
        "delete",
        "element",
        "inet",
        "multinet_prem",
        part.name,
        f"{{ {element(web, part.key, with_data=False, masked=bool(part.masks))} }}",
    )
    # the back end still believes "web" is there: replacing it fails, and so does the whole batch
    others = tuple(p for p in POLICIES if p.id != "web")
    after = table((*others, pol("web", 10, 3, dst_addr=net("2001:db8:ff::/64"), **udp(5000))))
    with pytest.raises(KernelError, match="No such file"):
        backend.apply(after, Changes())
    assert backend.last_apply == "elements"
    assert backend.read() == tuple(r for r in before if r != web)  # the new "web" did not get in
    sync(backend, after)
    assert backend.read() == after


def unhooked() -> None:
    backend = make_backend(settings("nftables"))
    sync(backend, table())
    nft("flush", "chain", "inet", "multinet_prem", "output")
    assert backend.read() == ()  # nothing is enforced for local traffic: say so
    sync(backend, table())
    assert backend.read() == table()


def foreign_rule_inside() -> None:
    backend = make_backend(settings("nftables"))
    sync(backend, table())
    nft("insert", "rule", "inet", "multinet_prem", "classify", "tcp", "dport", "22", "accept")
    assert backend.read() == ()  # not what we wrote: read as nothing, so it gets replaced
    sync(backend, table())
    assert backend.read() == table()
    assert "dport 22" not in nft("list", "table", "inet", "multinet_prem")


@pytest.mark.parametrize("scenario", [foreign_survives, stale_view, unhooked, foreign_rule_inside])
def test_nftables_edges(ns: str, scenario: Callable[[], None]) -> None:
    netns.call_in(ns, scenario)
