"""Both agents for real, in namespaces: registration, pipes, marked traffic, moves, expiry."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv6Address
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from services import netns
from services.mcoa import pipes
from services.prem.lab import send_udp
from tests.mcoa.lab import CN, MNN, TABLE_BASE, McoaLab, wait_for

pytestmark = pytest.mark.kernel

PACKETS = 200
#: Delivered share required: a loaded 2-vCPU VM drops a few packets of a burst in the backlog.
DELIVERED = 0.9
NEW_COA = IPv6Address("2001:db8:1::3")


@pytest.fixture
def lab(make_netns: Callable[[str], str], tmp_path: Path) -> Iterator[McoaLab]:
    built = McoaLab(make_netns, tmp_path)
    built.build()
    try:
        yield built
    finally:
        built.stop_all()


def _segment(lab: McoaLab, bid: int) -> str | None:
    """The care-of address the HA's pipe for `bid` points at, read with `ip` (independent)."""
    for line in lab.routes(lab.ha, TABLE_BASE + bid).splitlines():
        if line.startswith("2001:db8:ff::/64") and "encap seg6 mode encap.red" in line:
            return line.split("[")[1].split("]")[0].strip()
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
            for spec in pipes.read_routes(ha):
                if spec.table == table and spec.segment == care_of:
                    return time.monotonic() - removed
            time.sleep(0.001)
    raise AssertionError(f"table {table} never pointed at {care_of}")


def _start_registered(lab: McoaLab, **mr_config: int) -> None:
    lab.start("ha")
    wait_for("HA listening", lambda: "serving on" in lab.log("ha"), 10)
    lab.start("mr", **mr_config)
    wait_for("BID 1 pipe", lambda: _segment(lab, 1) == "2001:db8:1::2", 5)
    wait_for("BID 2 pipe", lambda: _segment(lab, 2) == "2001:db8:2::2", 5)
    wait_for("both BAs", lambda: lab.log("mr").count("status 0 (Binding Update accepted)") >= 2, 5)


def _send_marked(lab: McoaLab, port: int) -> tuple[int, int, int]:
    """Send PACKETS from the CN to the MNN; return (h1 tx, h2 tx, MR deliveries) deltas."""
    before = (lab.tx_packets(lab.ha, "h1"), lab.tx_packets(lab.ha, "h2"), lab.udp_no_ports())
    netns.call_in(lab.cn, send_udp, MNN, port, PACKETS)
    try:
        wait_for(
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
        wait_for(
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
    assert _segment(lab, 1) == str(NEW_COA)
    assert _segment(lab, 2) == "2001:db8:2::2"
    wait_for("BA for the new CoA", lambda: "CoA 2001:db8:1::3" in lab.log("mr"), 2)
    # The HA has just met 2001:db8:1::3: resolve it, or a burst overflows the ND queue.
    netns.run(lab.ha, ["ping", "-c", "1", "-W", "2", "2001:db8:1::3"], check=False)
    h1, _h2, _delivered = _send_marked(lab, 5001)
    assert h1 >= PACKETS * DELIVERED

    # SIGTERM: the MR deregisters both BIDs and removes its own state; the HA drops the pipes.
    assert lab.signal("mr", signal.SIGTERM) == 0
    wait_for("pipes gone", lambda: _segment(lab, 1) is None and _segment(lab, 2) is None, 2)
    assert "proto 147" not in lab.routes(lab.mr, TABLE_BASE + 1)
    assert lab.signal("ha", signal.SIGTERM) == 0
    assert "proto 147" not in lab.routes(lab.ha, 999)


def test_killed_mr_bindings_expire_and_routes_go(lab: McoaLab) -> None:
    _start_registered(lab, lifetime=4)
    killed = time.monotonic()
    lab.signal("mr", signal.SIGKILL)
    wait_for("expiry", lambda: _segment(lab, 1) is None and _segment(lab, 2) is None, 10)
    waited = time.monotonic() - killed
    print(f"SIGKILL -> pipes removed after {waited:.2f} s (lifetime 4 s)")
    assert 1.0 < waited < 6.0, f"bindings expired {waited:.1f} s after the kill"
    assert "expired" in lab.log("ha")
