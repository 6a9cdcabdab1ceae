"""The namespaces: built from scratch every time, torn down completely, read back with `ip`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from services import netns
from services.testbed import access
from services.testbed import addressing as a
from services.testbed.supervisor import ServiceSpec, Supervisor, registry_path
from services.testbed.topology import Topology

pytestmark = pytest.mark.kernel


def _links(bed: Topology, node: str) -> list[dict[str, Any]]:
    out = bed.run(node, ["ip", "-j", "-d", "link", "show"])
    return [link for link in json.loads(out) if link["ifname"] != "lo"]


def _sleeper(bed: Topology, node: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ip", "netns", "exec", bed.ns(node), "sleep", "600"], start_new_session=True
    )


def test_build_twice_replaces_the_first_and_destroy_twice_is_fine(
    naming: a.Naming,
) -> None:
    bed = Topology(naming)
    bed.build()
    stray = _sleeper(bed, "mr")  # a process left in the bed by an earlier run
    bed.build()
    assert stray.wait(10) is not None, "the second build left a process of the first running"
    assert all(netns.exists(name) for name in naming.all())
    indexes = [link["ifindex"] for node in a.NODES for link in _links(bed, node)]
    assert len(indexes) == len(set(indexes)), "two veth ends share an ifindex"
    mtus = {link["ifname"]: link["mtu"] for link in _links(bed, "mr")}
    assert mtus["eth0"] >= 1540
    assert mtus["eth1"] >= 1540
    for router in a.ACCESS_ROUTERS:
        assert all(link["mtu"] >= 1540 for link in _links(bed, router))
    addresses = bed.run("mr", ["ip", "-6", "addr", "show", "tentative"])
    assert addresses.strip() == "", "an address is waiting for DAD"
    assert bed.run("mr", ["sysctl", "-n", "net.ipv6.conf.all.keep_addr_on_down"]).strip() == "1"
    bed.destroy()
    bed.destroy()
    assert not any(netns.exists(name) for name in naming.all())


def test_paths_exist_before_any_agent_runs(naming: a.Naming) -> None:
    bed = Topology(naming)
    bed.build()
    for link in a.MR_LINKS:
        ping = ["ping", "-6", "-c", "1", "-W", "2"]
        bed.run("mr", [*ping, f"{a.AR_LINK_LOCAL}%{link.interface}"])
        bed.run(link.router, [*ping, a.care_of(link.router)])
        bed.run("ha", [*ping, a.router_address(link.router)])  # each access network via its AR
    route = bed.run("ha", ["ip", "-6", "route", "get", a.care_of("ar2")])
    assert "dev ar2" in route
    rules = bed.run("mr", ["ip", "-6", "rule", "show"])
    assert "iif pan0 lookup main suppress_prefixlength 0" in rules
    assert f"iif pan0 lookup {a.TABLE_BASE + 1}" in rules


def test_a_handover_moves_the_link_to_another_access_router(naming: a.Naming) -> None:
    bed = Topology(naming)
    bed.build()
    assert access.attached_to(bed, "eth1") == "ar2"
    lost = access.detach(bed, "eth1")
    assert lost == [f"{a.care_of('ar2')}/64"]
    state = json.loads(bed.run("mr", ["ip", "-j", "link", "show", "eth1"]))[0]
    assert "LOWER_UP" not in state["flags"]
    new = access.attach(bed, "eth1", "ar3")
    assert new == a.care_of("ar3")
    assert access.attached_to(bed, "eth1") == "ar3"
    deadline = time.monotonic() + 5
    while (
        "LOWER_UP"
        not in json.loads(bed.run("mr", ["ip", "-j", "link", "show", "eth1"]))[0]["flags"]
    ):
        assert time.monotonic() < deadline, "eth1 never got its carrier back"
        time.sleep(0.05)
    bed.run("ar3", ["ping", "-6", "-c", "1", "-W", "2", new])


def test_the_registry_lets_a_later_build_end_processes_in_the_host_namespace(
    naming: a.Naming, tmp_path: object
) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    registry = registry_path(naming.prefix)
    supervisor = Supervisor(tmp_path / "logs", registry)
    proc = supervisor.start(
        ServiceSpec("sleeper", (sys.executable, "-c", "import time; time.sleep(600)"))
    )
    assert registry.is_file()
    from services.testbed.runner import down

    ended = down(naming.prefix)
    assert "sleeper" in ended
    assert proc.wait(10) is not None
    assert not registry.exists()
