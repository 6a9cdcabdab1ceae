"""Interface state from rtnetlink events: the pure fold on constructed events, then the real
kernel in namespaces (carrier loss and its latency, admin down, addresses, delete, re-create,
rename, counters, buffer overflow).

Kernel scenarios run in a `call_in` child inside the watched namespace, because `LinkEvents`
must be made in the thread and namespace it reads; the veth peer sits in a second namespace,
so "carrier loss" is the far end going down, as when a modem drops. Every veth end gets an
ifindex of its own (docs/kernel.md: equal indexes batch carrier changes by about a second).
"""

from __future__ import annotations

import itertools
import json
import os
import select
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_DELLINK, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from services import netns
from services.monitor.counters import Counters, rates
from services.monitor.netlink import (
    IFA_F_DADFAILED,
    IFA_F_OPTIMISTIC,
    IFA_F_TENTATIVE,
    RT_SCOPE_LINK,
    RT_SCOPE_UNIVERSE,
    AddressEvent,
    InterfaceState,
    InterfaceTable,
    LinkEvent,
    LinkEvents,
    address_counts,
    event_of,
)

UP = 0x1 | 0x10000  # IFF_UP | IFF_LOWER_UP
NO_CARRIER = 0x1
DOWN = 0x0
HOST_SCOPE = 254
V6 = "2001:db8:1::1"

# --- the pure fold --------------------------------------------------------------------------


def link(index: int, name: str | None, flags: int = UP, *, removed: bool = False) -> LinkEvent:
    return LinkEvent(index=index, name=name, flags=flags, removed=removed)


def addr(
    index: int,
    address: str,
    *,
    prefixlen: int = 64,
    scope: int = RT_SCOPE_UNIVERSE,
    flags: int = 0,
    removed: bool = False,
) -> AddressEvent:
    return AddressEvent(index, address, prefixlen, scope, flags, removed)


def state(
    name: str, index: int, admin_up: bool = True, carrier: bool = True, *addresses: str
) -> InterfaceState:
    return InterfaceState(name, True, index, admin_up, carrier, tuple(addresses))


def fold(table: InterfaceTable, *events: LinkEvent | AddressEvent) -> list[InterfaceState]:
    return [change for event in events for change in table.apply(event)]


def test_watched_names_start_missing() -> None:
    table = InterfaceTable(["wan1", "wan0"])
    assert table.current() == {
        "wan0": InterfaceState.missing("wan0"),
        "wan1": InterfaceState.missing("wan1"),
    }
    with pytest.raises(TypeError):
        InterfaceTable("wan0")


def test_link_flags_give_admin_state_and_carrier() -> None:
    table = InterfaceTable(["wan0"])
    assert fold(
        table,
        link(7, "wan0", UP),
        link(7, "wan0", NO_CARRIER),
        link(7, "wan0", NO_CARRIER),  # no change: nothing reported
        link(7, "wan0", DOWN),
        link(7, "wan0", UP),
    ) == [
        state("wan0", 7),
        state("wan0", 7, True, False),
        state("wan0", 7, False, False),
        state("wan0", 7),
    ]


def test_other_interfaces_are_not_reported() -> None:
    table = InterfaceTable(["wan0"])
    assert fold(table, link(3, "eth9"), addr(3, V6), link(3, "eth9", DOWN)) == []


def test_addresses_sorted_and_kept_per_prefix() -> None:
    table = InterfaceTable(["wan0"])
    changes = fold(
        table,
        link(7, "wan0"),
        addr(7, V6),
        addr(7, "192.0.2.1", prefixlen=24),
        addr(7, V6, prefixlen=128),  # the same address twice: listed once
        addr(7, V6, removed=True),  # still held with /128
        addr(7, V6, prefixlen=128, removed=True),
    )
    assert [c.addresses for c in changes] == [
        (),
        (V6,),
        ("192.0.2.1", V6),
        ("192.0.2.1",),
    ]


@pytest.mark.parametrize(
    ("scope", "flags", "counts"),
    [
        (RT_SCOPE_UNIVERSE, 0, True),
        (RT_SCOPE_LINK, 0, True),
        (HOST_SCOPE, 0, False),
        (200, 0, False),  # site scope
        (RT_SCOPE_UNIVERSE, IFA_F_TENTATIVE, False),
        (RT_SCOPE_UNIVERSE, IFA_F_TENTATIVE | IFA_F_DADFAILED, False),
        (RT_SCOPE_UNIVERSE, IFA_F_DADFAILED, False),
        (RT_SCOPE_UNIVERSE, IFA_F_TENTATIVE | IFA_F_OPTIMISTIC, True),
        (RT_SCOPE_UNIVERSE, 0x20 | 0x80, True),  # deprecated, permanent
    ],
)
def test_which_addresses_count(scope: int, flags: int, counts: bool) -> None:
    assert address_counts(addr(1, V6, scope=scope, flags=flags)) is counts


def test_an_address_appears_when_dad_ends_and_goes_when_it_fails() -> None:
    table = InterfaceTable(["wan0"])
    fold(table, link(7, "wan0"))
    assert fold(table, addr(7, V6, flags=IFA_F_TENTATIVE)) == []
    assert fold(table, addr(7, V6)) == [state("wan0", 7, True, True, V6)]
    assert fold(table, addr(7, V6, flags=IFA_F_DADFAILED)) == [state("wan0", 7)]


def test_delete_and_recreate_under_the_same_name() -> None:
    table = InterfaceTable(["wan0"])
    fold(table, link(7, "wan0"), addr(7, V6))
    assert fold(table, link(7, "wan0", removed=True)) == [InterfaceState.missing("wan0")]
    assert fold(table, addr(7, V6, removed=True)) == []  # late DELADDR of a gone device
    assert fold(table, link(9, "wan0", NO_CARRIER)) == [state("wan0", 9, True, False)]


def test_renames_move_state_between_names() -> None:
    table = InterfaceTable(["wan0", "wan1"])
    fold(table, link(7, "wan0"), addr(7, V6), link(8, "spare"), addr(8, "192.0.2.8"))
    assert fold(table, link(7, "wan1", DOWN)) == [
        InterfaceState.missing("wan0"),
        state("wan1", 7, False, False, V6),
    ]
    # A device renamed to a watched name arrives with the addresses it already had.
    assert fold(table, link(8, "wan0")) == [state("wan0", 8, True, True, "192.0.2.8")]
    assert fold(table, link(8, "spare")) == [InterfaceState.missing("wan0")]


def test_a_link_event_without_name_keeps_the_known_one() -> None:
    table = InterfaceTable(["wan0"])
    fold(table, link(7, "wan0"))
    assert fold(table, link(7, None, NO_CARRIER)) == [state("wan0", 7, True, False)]
    assert fold(table, link(99, None)) == []


def test_addresses_before_their_link_are_kept() -> None:
    table = InterfaceTable(["wan0"])
    assert fold(table, addr(7, V6)) == []
    assert fold(table, link(7, "wan0")) == [state("wan0", 7, True, True, V6)]


def test_replace_reports_only_differences() -> None:
    table = InterfaceTable(["wan0", "wan1"])
    fold(table, link(7, "wan0"), link(8, "wan1"))
    assert table.replace([link(7, "wan0"), link(8, "wan1", NO_CARRIER), addr(7, V6)]) == [
        state("wan0", 7, True, True, V6),
        state("wan1", 8, True, False),
    ]
    assert table.replace([link(7, "wan0"), addr(7, V6)]) == [InterfaceState.missing("wan1")]


# --- pyroute2 messages -> typed events -----------------------------------------------------


def wire(msg: Any, kind: int) -> Any:
    """The message as the socket delivers it: encoded to bytes, then decoded."""
    msg["header"]["type"] = kind
    msg.encode()
    parsed = type(msg)(msg.data)
    parsed.decode()
    return parsed


def link_msg(kind: int, family: int = socket.AF_UNSPEC) -> Any:
    msg = ifinfmsg()
    msg["family"] = family
    msg["index"] = 7
    msg["flags"] = UP
    msg["attrs"] = [("IFLA_IFNAME", "wan0")]
    return wire(msg, kind)


def addr_msg(kind: int, family: int, attrs: list[tuple[str, Any]], flags: int = 0x80) -> Any:
    msg = ifaddrmsg()
    msg["family"] = family
    msg["prefixlen"] = 64
    msg["flags"] = flags
    msg["scope"] = RT_SCOPE_UNIVERSE
    msg["index"] = 7
    msg["attrs"] = attrs
    return wire(msg, kind)


def test_link_messages() -> None:
    assert event_of(link_msg(RTM_NEWLINK)) == link(7, "wan0")
    assert event_of(link_msg(RTM_DELLINK)) == link(7, "wan0", removed=True)
    # The bridge's AF_BRIDGE DELLINK means "port left the bridge", not "device deleted".
    assert event_of(link_msg(RTM_DELLINK, socket.AF_BRIDGE)) is None


def test_address_messages() -> None:
    v6 = addr_msg(
        RTM_NEWADDR,
        socket.AF_INET6,
        [("IFA_ADDRESS", "2001:0db8:0001:0000:0000:0000:0000:0001"), ("IFA_FLAGS", 0x240)],
    )
    assert event_of(v6) == addr(7, V6, flags=0x240)  # 32-bit IFA_FLAGS beat the 8-bit field
    # On IPv4 IFA_LOCAL is the own address; IFA_ADDRESS may be a point-to-point peer's.
    v4 = addr_msg(
        RTM_DELADDR,
        socket.AF_INET,
        [("IFA_ADDRESS", "198.51.100.9"), ("IFA_LOCAL", "192.0.2.1")],
        flags=0x40,
    )
    assert event_of(v4) == addr(7, "192.0.2.1", flags=0x40, removed=True)
    assert event_of(wire(rtmsg(), RTM_NEWROUTE)) is None


# --- the real kernel ------------------------------------------------------------------------

DEADLINE = 5.0
LATENCY_BOUND = 0.5
TRIALS = 10
PEER_MAC = "02:00:00:00:01:02"
SYSCTLS = (
    "net.ipv6.conf.all.keep_addr_on_down=1",
    "net.ipv6.conf.default.keep_addr_on_down=1",
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
)
_INDEXES = itertools.count(100_000 + (os.getpid() % 10_000) * 64, 8)


@dataclass(frozen=True)
class Pair:
    """`wan0` (ifindex `index`) in namespace `ns`, its peer `wan0p` in `peer`; both up."""

    ns: str
    peer: str
    index: int


@pytest.fixture
def pair(make_netns: Callable[[str], str]) -> Pair:
    ns, peer = make_netns("mon"), make_netns("monpeer")
    for name in (ns, peer):
        for setting in SYSCTLS:
            netns.run(name, ["sysctl", "-qw", setting])
    index = next(_INDEXES)
    netns.veth(ns, "wan0", peer, "wan0p", index, peer_mac=PEER_MAC)
    return Pair(ns, peer, index)


def ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True)


class Watch:
    """A LinkEvents driven the way the monitor's loop drives it: poll, then drain."""

    def __init__(self, names: tuple[str, ...] = ("wan0",), **options: Any) -> None:
        self.events = LinkEvents(names, **options)
        self.poller = select.poll()
        self.poller.register(self.events.fileno(), select.POLLIN)
        self.seen: list[InterfaceState] = []

    def until(
        self, wanted: Callable[[InterfaceState], bool], name: str = "wan0"
    ) -> tuple[float, InterfaceState]:
        """perf_counter time and state of the first drained change of `name` that is wanted."""
        end = time.monotonic() + DEADLINE
        while (left := end - time.monotonic()) > 0:
            if not self.poller.poll(max(1, int(left * 1000))):
                continue
            for change in self.events.drain():
                self.seen.append(change)
                if change.name == name and wanted(change):
                    return time.perf_counter(), change
        raise AssertionError(f"no wanted change of {name} within {DEADLINE} s: {self.seen}")

    def pending(self) -> list[InterfaceState]:
        """Whatever is already queued, without waiting."""
        changes = self.events.drain()
        self.seen.extend(changes)
        return changes


def carrier_lost(s: InterfaceState) -> bool:
    return s.admin_up and not s.carrier


def usable(s: InterfaceState) -> bool:
    return s.admin_up and s.carrier


def set_down(s: InterfaceState) -> bool:
    return not s.admin_up and not s.carrier


def timed(watch: Watch, wanted: Callable[[InterfaceState], bool], *argv: str) -> float:
    """Seconds from just before `ip argv` starts to the drained change that is wanted."""
    start = time.perf_counter()
    ip(*argv)
    at, _ = watch.until(wanted)
    return at - start


def carrier_scenario(peer: str) -> dict[str, Any]:
    watch = Watch()
    initial = watch.events.current()["wan0"]
    lost: list[float] = []
    back: list[float] = []
    for _ in range(TRIALS):
        lost.append(timed(watch, carrier_lost, "-n", peer, "link", "set", "wan0p", "down"))
        back.append(timed(watch, usable, "-n", peer, "link", "set", "wan0p", "up"))
    admin = [
        timed(watch, set_down, "link", "set", "wan0", "down"),
        timed(watch, usable, "link", "set", "wan0", "up"),
    ]
    watch.events.close()
    return {"initial": initial, "lost": lost, "back": back, "admin": admin, "seen": watch.seen}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


@pytest.mark.kernel
def test_carrier_loss_and_admin_down_arrive_quickly(pair: Pair) -> None:
    result = netns.call_in(pair.ns, carrier_scenario, pair.peer)
    lost, back, admin = result["lost"], result["back"], result["admin"]
    print(
        f"\ncarrier loss -> drained: median {ms(statistics.median(lost))}, max {ms(max(lost))}; "
        f"carrier back: median {ms(statistics.median(back))}, max {ms(max(back))}; "
        f"admin down {ms(admin[0])}, admin up {ms(admin[1])} ({TRIALS} trials, "
        "timed from just before the `ip` process starts)"
    )
    initial = result["initial"]
    assert (initial.exists, initial.index, initial.admin_up, initial.carrier) == (
        True, pair.index, True, True)  # fmt: skip
    assert max(lost + back + admin) < LATENCY_BOUND
    seen = [s for s in result["seen"] if s.name == "wan0"]
    assert all(a != b for a, b in itertools.pairwise(seen)), "a change reported twice"


def tentative(address: str) -> bool:
    """Independent reader: iproute2's view of the address's flags."""
    shown = json.loads(
        subprocess.run(
            ["ip", "-j", "addr", "show", "dev", "wan0"], check=True, capture_output=True, text=True
        ).stdout
    )
    infos = [info for device in shown for info in device["addr_info"]]
    return any(info["local"] == address and info.get("tentative") for info in infos)


def address_scenario() -> dict[str, Any]:
    watch = Watch()
    found: dict[str, Any] = {"initial": watch.events.current()["wan0"].addresses}
    ip("addr", "add", f"{V6}/64", "dev", "wan0", "nodad")
    found["v6 added"] = watch.until(lambda s: V6 in s.addresses)[1].addresses
    ip("addr", "add", "192.0.2.1/24", "dev", "wan0")
    found["v4 added"] = watch.until(lambda s: "192.0.2.1" in s.addresses)[1].addresses
    ip("addr", "del", f"{V6}/64", "dev", "wan0")
    found["v6 removed"] = watch.until(lambda s: V6 not in s.addresses)[1].addresses
    ip("addr", "del", "192.0.2.1/24", "dev", "wan0")
    found["v4 removed"] = watch.until(lambda s: "192.0.2.1" not in s.addresses)[1].addresses
    ip("addr", "add", "198.51.100.1/32", "dev", "wan0", "scope", "host")
    ip("addr", "add", "2001:db8:1::9/64", "dev", "wan0", "nodad")
    found["after host scope"] = watch.until(lambda s: "2001:db8:1::9" in s.addresses)[1].addresses
    # Duplicate address detection on: the address is tentative for about a second.
    ip("link", "set", "wan0", "down")  # accept_dad takes effect on the next up
    subprocess.run(["sysctl", "-qw", "net.ipv6.conf.wan0.accept_dad=1"], check=True)
    ip("link", "set", "wan0", "up")
    watch.until(lambda s: s.carrier)
    start = time.perf_counter()
    ip("addr", "add", "2001:db8:1::2/64", "dev", "wan0")
    found["tentative per ip"] = tentative("2001:db8:1::2")
    found["tentative pending"] = [s.addresses for s in watch.pending()]
    found["tentative listed"] = "2001:db8:1::2" in watch.events.current()["wan0"].addresses
    at, _ = watch.until(lambda s: "2001:db8:1::2" in s.addresses)
    found["dad took"] = at - start
    found["tentative per ip after"] = tentative("2001:db8:1::2")
    watch.events.close()
    return found


@pytest.mark.kernel
def test_address_changes(pair: Pair) -> None:
    found = netns.call_in(pair.ns, address_scenario)
    print(f"\nDAD made 2001:db8:1::2 usable after {ms(found['dad took'])}")
    assert [a for a in found["initial"] if a.startswith("fe80::")], found["initial"]
    link_local = found["initial"]
    assert found["v6 added"] == tuple(sorted((*link_local, V6)))
    assert found["v4 added"] == tuple(sorted((*link_local, V6, "192.0.2.1")))
    assert found["v6 removed"] == tuple(sorted((*link_local, "192.0.2.1")))
    assert found["v4 removed"] == link_local
    assert "198.51.100.1" not in found["after host scope"]
    assert found["tentative per ip"]
    assert not found["tentative listed"]
    assert all("2001:db8:1::2" not in addresses for addresses in found["tentative pending"])
    assert not found["tentative per ip after"]
    assert found["dad took"] > 0.2


def lifecycle_scenario(peer: str, index: int) -> list[InterfaceState]:
    watch = Watch(("wan0", "wan1"))
    assert watch.events.current()["wan1"] == InterfaceState.missing("wan1")
    ip("link", "del", "wan0")
    watch.until(lambda s: not s.exists)
    assert watch.events.counters("wan0") is None
    ip("link", "add", "wan0", "index", str(index + 2), "type", "veth",
       "peer", "name", "wan0p", "index", str(index + 3), "netns", peer)  # fmt: skip
    ip("link", "set", "wan0", "up")
    ip("-n", peer, "link", "set", "wan0p", "up")
    watch.until(lambda s: s.exists and s.carrier)
    ip("link", "set", "wan0", "down")
    ip("link", "set", "wan0", "name", "wan1")
    watch.until(lambda s: s.exists, name="wan1")
    ip("link", "set", "wan1", "name", "wan0")
    ip("link", "set", "wan0", "up")
    watch.until(lambda s: s.exists and s.carrier)
    watch.events.close()
    return watch.seen


@pytest.mark.kernel
def test_delete_recreate_and_rename(pair: Pair) -> None:
    seen = netns.call_in(pair.ns, lifecycle_scenario, pair.peer, pair.index)
    steps = [(s.name, s.exists, s.index, s.admin_up, s.carrier) for s in seen]
    new = pair.index + 2
    gone = steps.index(("wan0", False, None, False, False))  # deleted: a state, no exception
    # Before the DELLINK the kernel reports the device going down.
    assert all(name == "wan0" and not carrier for name, _, _, _, carrier in steps[:gone])
    assert steps[-1] == ("wan0", True, new, True, True)
    assert ("wan0", True, new, True, True) in steps[gone:]  # re-created, picked up by name
    rename = steps.index(("wan1", True, new, False, False))
    assert steps[rename - 1] == ("wan0", False, None, False, False)  # old name first
    assert ("wan1", False, None, False, False) in steps[rename:]


PAYLOAD = 1000
DATAGRAMS = 200


def counters_scenario(peer: str) -> dict[str, Any]:
    watch = Watch()
    ip("addr", "add", "192.0.2.1/24", "dev", "wan0")
    ip("-n", peer, "addr", "add", "192.0.2.2/24", "dev", "wan0p")
    ip("neigh", "replace", "192.0.2.2", "lladdr", PEER_MAC, "dev", "wan0", "nud", "permanent")
    before = watch.events.counters("wan0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for _ in range(DATAGRAMS):
            sender.sendto(b"x" * PAYLOAD, ("192.0.2.2", 9))
    after = watch.events.counters("wan0")
    shown = json.loads(
        subprocess.run(
            ["ip", "-j", "-s", "link", "show", "dev", "wan0"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    missing = watch.events.counters("nosuch0")
    watch.events.close()
    return {
        "before": before,
        "after": after,
        "ip_tx_bytes": shown[0]["stats64"]["tx"]["bytes"],
        "missing": missing,
    }


@pytest.mark.kernel
def test_counters_grow_by_what_was_sent(pair: Pair) -> None:
    found = netns.call_in(pair.ns, counters_scenario, pair.peer)
    before: Counters = found["before"]
    after: Counters = found["after"]
    sent = DATAGRAMS * PAYLOAD
    assert after.tx_bytes - before.tx_bytes >= sent
    assert after.tx_packets - before.tx_packets >= DATAGRAMS
    assert 0 <= found["ip_tx_bytes"] - after.tx_bytes < 10_000  # iproute2 agrees
    assert found["missing"] is None
    measured = rates(before, after)
    assert measured is not None
    interval = after.at - before.at
    print(f"\n{sent} bytes in {ms(interval)}: tx {measured.tx_bps / 1e6:.1f} Mbit/s")
    assert measured.tx_bps >= sent * 8 / interval
    assert measured.tx_bps < 1e11  # well under 100 Gbit/s on a veth in a VM
    assert measured.rx_bps >= 0


def overflow_scenario(peer: str) -> dict[str, Any]:
    watch = Watch(rcvbuf=4096)
    fileno = watch.events.fileno()
    batch = "".join(f"addr add 2001:db8:99::{n:x}/128 dev lo nodad\n" for n in range(1, 400))
    subprocess.run(["ip", "-batch", "-"], input=batch, text=True, check=True)
    ip("-n", peer, "link", "set", "wan0p", "down")  # lost in the overflow, or queued behind it
    watch.until(lambda s: not s.carrier)
    overflows = watch.events.overflows
    ip("-n", peer, "link", "set", "wan0p", "up")
    watch.until(lambda s: s.carrier)  # events still arrive on the same socket
    same_socket = watch.events.fileno() == fileno
    watch.events.close()
    return {"overflows": overflows, "same socket": same_socket}


@pytest.mark.kernel
def test_overflow_dumps_again_and_keeps_the_socket(pair: Pair) -> None:
    found = netns.call_in(pair.ns, overflow_scenario, pair.peer)
    assert found["overflows"] >= 1
    assert found["same socket"]


def other_thread_scenario() -> str:
    events = LinkEvents(["wan0"])
    failures: list[BaseException] = []

    def drain_elsewhere() -> None:
        try:
            events.drain()
        except RuntimeError as exc:
            failures.append(exc)

    worker = threading.Thread(target=drain_elsewhere)
    worker.start()
    worker.join(DEADLINE)
    events.close()
    events.close()  # harmless
    return str(failures[0]) if failures else ""


@pytest.mark.kernel
def test_use_from_another_thread_is_refused(pair: Pair) -> None:
    message = netns.call_in(pair.ns, other_thread_scenario)
    assert "another thread" in message
