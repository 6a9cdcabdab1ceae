"""Each pipe kind against the real kernel, in namespaces, without the agents around it.

For every kind this kernel has (the others are skipped, naming the missing option): the HA's
and the MR's state applied twice changes nothing the second time; traffic crosses the pipe
both ways; a TCP transfer crosses it whole (for VXLAN over an underlay of 1400 bytes, so
only path-MTU discovery lets it through; SRv6 needs an underlay >= 1540, which its
description says); a handover (new care-of address) moves the pipe in place; removal takes
away everything of ours and nothing else. Reads go through `ip` and the kernel's counters,
not through the code that made the change.
"""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import IPv6Address, IPv6Network

import pytest
from pyroute2 import IPRoute

from services import netns
from services.mcoa import kernel, pipe_kinds, pipes
from services.mcoa.cache import PipeRoute
from services.mcoa.config import McoaSettings
from tests.mcoa.lab import CN, HA_ADDRESS, MNN, MNP, MR_HOME, McoaLab

pytestmark = pytest.mark.kernel

COA = IPv6Address("2001:db8:1::2")
NEW_COA = IPv6Address("2001:db8:1::3")
TABLE = 1001
PRIORITIES = {10, 15000}
#: SRv6 cannot do path-MTU discovery on the forwarding path; the others must.
UNDERLAY_MTU = {"seg6": 1600, "vxlan": 1400, "ip6tnl": 1400}


def _settings(role: str, kind: str) -> McoaSettings:
    section = (
        {
            "mr": {
                "mr_id": "mr1",
                "home_address": MR_HOME,
                "ha_address": HA_ADDRESS,
                "prefixes": [MNP],
                "links": [{"interface": "m1", "bid": 1, "gateway": "2001:db8:1::1"}],
            }
        }
        if role == "mr"
        else {
            "ha": {
                "ha_address": HA_ADDRESS,
                "mobile_routers": [{"home_address": MR_HOME, "prefixes": [MNP]}],
            }
        }
    )
    return McoaSettings.model_validate({"node": role, "role": role, "pipe": kind, **section})


def _mr_state(kind: str, care_of: IPv6Address, mtu: int) -> pipe_kinds.KernelState:
    settings = _settings("mr", kind)
    assert settings.mr is not None
    link = pipe_kinds.MrLink(settings.mr.links[0], care_of, mtu)
    return pipe_kinds.mr_state(settings, kind, [link])


def _ha_state(kind: str, care_of: IPv6Address) -> pipe_kinds.KernelState:
    pipe = PipeRoute(TABLE, IPv6Network(MNP), care_of, 1, IPv6Address(MR_HOME), kind)
    return pipe_kinds.ha_state(_settings("ha", kind), [kind], "h0", [pipe], {care_of: "h1"})


def _apply(state: pipe_kinds.KernelState, moves_local: bool) -> bool:
    with IPRoute() as ipr:
        if moves_local:
            pipes.move_local_rule(ipr, 32000)
        return kernel.apply_state(ipr, state, PRIORITIES)


def _remove() -> None:
    with IPRoute() as ipr:
        kernel.remove_all(ipr, PRIORITIES)


def _setup(lab: McoaLab, kind: str) -> None:
    mtu = str(UNDERLAY_MTU[kind])
    for ns, dev in ((lab.ha, "h1"), (lab.mr, "m1")):
        netns.run(ns, ["ip", "link", "set", dev, "mtu", mtu])
    # Foreign state the agent must never touch: a route in a BID table, a rule, a VXLAN device.
    netns.run(
        lab.ha, ["ip", "-6", "route", "add", "2001:db8:ee::/64", "dev", "h1", "table", str(TABLE)]
    )
    netns.run(
        lab.ha, ["ip", "link", "add", "vxforeign", "type", "vxlan", "id", "77", "dstport", "4790"]
    )
    # How unmarked traffic finds the pipe here (the test bed's default path does the same).
    netns.run(lab.ha, ["ip", "-6", "rule", "add", "pref", "30000", "to", MNP, "lookup", str(TABLE)])
    netns.run(
        lab.mr, ["ip", "-6", "rule", "add", "pref", "30000", "from", MNP, "lookup", str(TABLE)]
    )


def _ping(lab: McoaLab, src_ns: str, dst: str) -> bool:
    proc = subprocess.run(
        ["ip", "netns", "exec", src_ns, "ping", "-c", "3", "-i", "0.2", "-W", "1", dst],
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0


def _tcp(
    lab: McoaLab, sender: str, receiver: str, dst: str, total: int
) -> tuple[dict[str, object], dict[str, object]]:
    traffic = [sys.executable, "-m", "labs.traffic"]
    sink = subprocess.Popen(
        ["ip", "netns", "exec", receiver, *traffic, "sink", "--port", "5201"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sink.stdout is not None
    assert "listening" in sink.stdout.readline()
    options = ["--host", dst, "--port", "5201", "--bytes", str(total), "--seconds", "10"]
    source = subprocess.run(
        ["ip", "netns", "exec", sender, *traffic, "source", *options],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    received = json.loads(sink.communicate(timeout=60)[0].splitlines()[-1])
    return json.loads(source.stdout.splitlines()[-1]), received


def test_each_kind_carries_traffic_moves_in_place_and_leaves_nothing(
    pipe_kind: str, mcoa_lab_each_kind: McoaLab
) -> None:
    lab = mcoa_lab_each_kind
    _setup(lab, pipe_kind)
    seg6 = pipe_kind == pipe_kinds.SEG6
    mtu = UNDERLAY_MTU[pipe_kind]

    mr_state, ha_state = _mr_state(pipe_kind, COA, mtu), _ha_state(pipe_kind, COA)
    assert netns.call_in(lab.mr, _apply, mr_state, seg6) is True
    assert netns.call_in(lab.ha, _apply, ha_state, seg6) is True
    assert netns.call_in(lab.mr, _apply, mr_state, seg6) is False, (
        "applying twice changed something"
    )
    assert netns.call_in(lab.ha, _apply, ha_state, seg6) is False, (
        "applying twice changed something"
    )
    assert lab.ha_far_end(1) == str(COA)

    before = lab.tx_packets(lab.ha, "h1"), lab.tx_packets(lab.mr, "m1")
    assert _ping(lab, lab.cn, MNN), "CN -> MNN through the pipe"
    assert _ping(lab, lab.mnn, CN), "MNN -> CN through the pipe"
    assert lab.tx_packets(lab.ha, "h1") - before[0] >= 3
    assert lab.tx_packets(lab.mr, "m1") - before[1] >= 3

    total = 4 * 1024 * 1024
    for sender, receiver, dst in ((lab.cn, lab.mnn, MNN), (lab.mnn, lab.cn, CN)):
        sent, received = _tcp(lab, sender, receiver, dst, total)
        assert received == {"bytes": total, "error": ""}, f"TCP {sender} -> {receiver}: {sent}"

    # Handover: the MR's link gets a new care-of address; both ends move the pipe in place.
    netns.run(lab.mr, ["ip", "-6", "addr", "add", f"{NEW_COA}/64", "dev", "m1", "nodad"])
    netns.run(lab.mr, ["ip", "-6", "addr", "del", f"{COA}/64", "dev", "m1"])
    mr_moved, ha_moved = _mr_state(pipe_kind, NEW_COA, mtu), _ha_state(pipe_kind, NEW_COA)
    devices_before = lab.pipe_devices(lab.mr), lab.pipe_devices(lab.ha)
    assert netns.call_in(lab.mr, _apply, mr_moved, seg6) is True
    assert netns.call_in(lab.ha, _apply, ha_moved, seg6) is True
    assert (lab.pipe_devices(lab.mr), lab.pipe_devices(lab.ha)) == devices_before
    assert lab.ha_far_end(1) == str(NEW_COA)
    netns.run(lab.ha, ["ping", "-c", "1", "-W", "2", str(NEW_COA)], check=False)
    assert _ping(lab, lab.cn, MNN), "CN -> MNN after the handover"
    assert _ping(lab, lab.mnn, CN), "MNN -> CN after the handover"

    netns.call_in(lab.mr, _remove)
    netns.call_in(lab.ha, _remove)
    for ns in (lab.ha, lab.mr):
        assert lab.pipe_devices(ns) == []
        assert "proto 147" not in netns.run(ns, ["ip", "-6", "route", "show", "table", "all"])
        rules = netns.run(ns, ["ip", "-6", "rule"])
        assert not any(line.startswith(("10:", "15000:")) for line in rules.splitlines())
    assert "2001:db8:ee::/64 dev h1" in lab.routes(lab.ha, TABLE)
    assert "vxforeign" in netns.run(lab.ha, ["ip", "link", "show"])
    assert "30000:" in netns.run(lab.ha, ["ip", "-6", "rule"])
