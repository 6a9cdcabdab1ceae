"""Both agents for real, in namespaces: registration, pipes, marked traffic, moves, expiry."""

from __future__ import annotations

import signal
import time
from ipaddress import IPv6Address

import pytest
from pyroute2 import IPRoute

from labs.prem import send_udp
from services import netns
from services.mcoa import devices, pipes
from tests.mcoa.lab import CN, MNN, MNP, TABLE_BASE, McoaLab

pytestmark = pytest.mark.kernel

PACKETS = 200
#: Delivered share required: a loaded 2-vCPU VM drops a few packets of a burst in the backlog.
DELIVERED = 0.9
NEW_COA = IPv6Address("2001:db8:1::3")


@pytest.fixture
def lab(mcoa_lab_each_kind: McoaLab) -> McoaLab:
    """The MCoA lab (once per pipe kind this kernel has)."""
    return mcoa_lab_each_kind


def far_end(ipr: IPRoute, table: int) -> IPv6Address | None:
    """Where the HA's pipe in `table` leads, from a netlink read-back of any pipe kind."""
    tunnels = {name: spec.remote for name, (_i, spec, _up) in devices.read_devices(ipr).items()}
    for route in pipes.read_routes(ipr):
        if route.table != table or str(route.dst) != MNP:
            continue
        if isinstance(route.encap, pipes.Seg6Encap):
            return route.encap.segment
        if isinstance(route.encap, pipes.Ip6Encap):
            return route.encap.dst
        return tunnels.get(route.dev)
    return None


def _move_and_time(mr_ns: str, old: str, table: int, care_of: IPv6Address) -> float:
    """Started in the HA's namespace: delete `old` from the MR's m1, then poll the HA's table.

    A netlink socket stays in the namespace it was opened in, so one process watches the HA
    and acts in the MR; CLOCK_MONOTONIC times both without any `ip` process in between.
    """
    with IPRoute() as ha:
        netns.enter(mr_ns)
        with IPRoute() as mr:
            index = mr.link_lookup(ifname="m1")[0]
            mr.addr("del", index=index, address=old, prefixlen=64)
            removed = time.monotonic()
        deadline = removed + 2.0
        while time.monotonic() < deadline:
            if far_end(ha, table) == care_of:
                return time.monotonic() - removed
            time.sleep(0.001)
    raise AssertionError(f"table {table} never pointed at {care_of}")


def _start_registered(lab: McoaLab, **mr_config: int) -> None:
    lab.start("ha")
    lab.wait("HA listening", lambda: "serving on" in lab.log("ha"), 10)
    lab.start("mr", **mr_config)
    lab.wait("BID 1 pipe", lambda: lab.ha_far_end(1) == "2001:db8:1::2", 5)
    lab.wait("BID 2 pipe", lambda: lab.ha_far_end(2) == "2001:db8:2::2", 5)
    lab.wait("both BAs", lambda: lab.log("mr").count("status 0 (Binding Update accepted)") >= 2, 5)


def _send_marked(lab: McoaLab, port: int) -> tuple[int, int, int]:
    """Send PACKETS from the CN to the MNN; return (h1 tx, h2 tx, MR deliveries) deltas."""
    before = (lab.tx_packets(lab.ha, "h1"), lab.tx_packets(lab.ha, "h2"), lab.udp_no_ports())
    netns.call_in(lab.cn, send_udp, MNN, port, PACKETS)
    try:
        lab.wait(
            "delivery at the MNN", lambda: lab.udp_no_ports() - before[2] >= PACKETS * DELIVERED, 5
        )
    except AssertionError as exc:
        counters = {ns: netns.run(ns, ["nstat", "-az"]) for ns in (lab.ha, lab.mr, lab.mnn)}
        wanted = ("Ip6InNoRoutes", "Ip6OutForw", "Ip6InDiscards", "Ip6OutDiscards", "Udp6")
        lines = [
            f"{ns}: {line}"
            for ns, text in counters.items()
            for line in text.splitlines()
            if line.startswith(wanted)
        ]
        raise AssertionError(
            f"{exc}; got {lab.udp_no_ports() - before[2]}\n" + "\n".join(lines)
        ) from exc
    after = (lab.tx_packets(lab.ha, "h1"), lab.tx_packets(lab.ha, "h2"), lab.udp_no_ports())
    return after[0] - before[0], after[1] - before[1], after[2] - before[2]


def test_two_bids_register_carry_marked_traffic_and_follow_a_move(lab: McoaLab) -> None:
    lab.mark_by_port()
    _start_registered(lab)

    h1, h2, _delivered = _send_marked(lab, 5001)
    assert h1 >= PACKETS * DELIVERED
    assert h2 < PACKETS // 10
    h1, h2, _delivered = _send_marked(lab, 5002)
    assert h2 >= PACKETS * DELIVERED
    assert h1 < PACKETS // 10

    # Uplink: the MR's BID tables send marked traffic into its pipes, the HA decapsulates.
    for port, used, unused in ((5001, "m1", "m2"), (5002, "m2", "m1")):
        before = {dev: lab.tx_packets(lab.mr, dev) for dev in ("m1", "m2")}
        at_cn = lab.udp_no_ports(lab.cn)
        netns.call_in(lab.mnn, send_udp, CN, port, PACKETS)
        lab.wait(
            "uplink delivery",
            lambda at=at_cn: lab.udp_no_ports(lab.cn) - at >= PACKETS * DELIVERED,  # type: ignore[misc]
            5,
        )
        assert lab.tx_packets(lab.mr, used) - before[used] >= PACKETS * DELIVERED
        assert lab.tx_packets(lab.mr, unused) - before[unused] < PACKETS // 10

    # Replace the care-of address of link 1: a new BU/BA and the pipe follows within 200 ms.
    netns.run(lab.mr, ["ip", "-6", "addr", "add", "2001:db8:1::3/64", "dev", "m1", "nodad"])
    took = netns.call_in(lab.ha, _move_and_time, lab.mr, "2001:db8:1::2", 1001, NEW_COA)
    print(f"CoA change -> HA pipe updated in {took * 1000:.1f} ms")
    assert 0 < took < 0.2, f"the HA's pipe followed the move after {took * 1000:.0f} ms"
    assert lab.ha_far_end(1) == str(NEW_COA)
    assert lab.ha_far_end(2) == "2001:db8:2::2"
    lab.wait("BA for the new CoA", lambda: "CoA 2001:db8:1::3" in lab.log("mr"), 2)
    # The HA has just met 2001:db8:1::3: resolve it, or a burst overflows the ND queue.
    netns.run(lab.ha, ["ping", "-c", "1", "-W", "2", "2001:db8:1::3"], check=False)
    h1, _h2, _delivered = _send_marked(lab, 5001)
    assert h1 >= PACKETS * DELIVERED

    # SIGTERM: the MR deregisters both BIDs and removes its own state; the HA drops the pipes.
    assert lab.signal("mr", signal.SIGTERM) == 0
    lab.wait("pipes gone", lambda: lab.ha_far_end(1) is None and lab.ha_far_end(2) is None, 2)
    assert "proto 147" not in lab.routes(lab.mr, TABLE_BASE + 1)
    assert lab.pipe_devices(lab.mr) == []
    assert lab.signal("ha", signal.SIGTERM) == 0
    assert "proto 147" not in lab.routes(lab.ha, 999)
    assert lab.pipe_devices(lab.ha) == []


def test_killed_mr_bindings_expire_and_routes_go(lab: McoaLab) -> None:
    _start_registered(lab, lifetime=4)
    killed = time.monotonic()
    lab.signal("mr", signal.SIGKILL)
    lab.wait("expiry", lambda: lab.ha_far_end(1) is None and lab.ha_far_end(2) is None, 10)
    waited = time.monotonic() - killed
    print(f"SIGKILL -> pipes removed after {waited:.2f} s (lifetime 4 s)")
    assert 1.0 < waited < 6.0, f"bindings expired {waited:.1f} s after the kill"
    assert "expired" in lab.log("ha")
