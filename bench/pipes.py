"""Forwarding rate through one pipe, per pipe kind this kernel has, beside plain routing.

    sudo .venv/bin/python -m bench.pipes [--seconds 2] [--reps 3] [--senders 2]

cn --veth-- ha ==pipe over one veth== mr --veth-- mnn. Small UDP datagrams go from the CN to
the MNN as fast as `bench.sender` can send them; the rate is what the MR delivers on its
mobile network side (m0 tx packets per second), so every counted packet crossed the pipe:
encapsulated at the HA, decapsulated at the MR. The reference `plain` routes the mobile
network prefix from the HA to the MR directly (no encapsulation). Each kind the kernel lacks
is listed with the kernel option it misses. Pipes are built by the MCoA agents' own code
(`pipe_kinds` + `kernel.apply_state`), so what is measured is what the agents build.

Prints one line per kind: median pkt/s over the repetitions, the ratio to `plain` measured in
the same run, and the offered rate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

from pyroute2 import IPRoute

from services import capabilities, netns
from services.mcoa import kernel, pipe_kinds, pipes
from services.mcoa.cache import PipeRoute
from services.mcoa.config import McoaSettings

ROOT = Path(__file__).resolve().parent.parent
HA, MR_HOME, COA = "2001:db8:100::1", "2001:db8:100::2", "2001:db8:1::2"
MNP, MNN, CN = "2001:db8:ff::/64", "2001:db8:ff::1", "2001:db8:c::2"
TABLE = 1001
PORT = 5001
_PRIORITIES = {10, 15000}


@dataclass(frozen=True)
class Bed:
    """The four namespaces of one measurement."""

    cn: str
    ha: str
    mr: str
    mnn: str

    def all(self) -> tuple[str, str, str, str]:
        return self.cn, self.ha, self.mr, self.mnn


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True)


def build(prefix: str) -> Bed:
    """cn - ha - mr - mnn with addresses; the HA's MNP route is the pipe's (or plain's) job."""
    bed = Bed(*(f"{prefix}-{n}" for n in ("cn", "ha", "mr", "mnn")))
    for ns in bed.all():
        netns.create(ns)
        netns.run(ns, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        netns.run(ns, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"])
        netns.run(ns, ["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"])
    base = 3000 + os.getpid() % 20000
    netns.veth(bed.cn, "c0", bed.ha, "h0", base)
    netns.veth(bed.ha, "h1", bed.mr, "m1", base + 2)
    netns.veth(bed.mr, "m0", bed.mnn, "n0", base + 4)
    for ns, dev, address in (
        (bed.cn, "c0", f"{CN}/64"),
        (bed.ha, "h0", "2001:db8:c::1/64"),
        (bed.ha, "h1", "2001:db8:1::1/64"),
        (bed.ha, "lo", f"{HA}/128"),
        (bed.mr, "m1", f"{COA}/64"),
        (bed.mr, "m0", "2001:db8:ff::fe/64"),
        (bed.mnn, "n0", f"{MNN}/64"),
    ):
        _ip(ns, "-6", "addr", "add", address, "dev", dev, "nodad")
    _ip(bed.cn, "-6", "route", "add", "default", "via", "2001:db8:c::1")
    _ip(bed.mnn, "-6", "route", "add", "default", "via", "2001:db8:ff::fe")
    _ip(bed.mr, "-6", "route", "add", f"{HA}/128", "via", "2001:db8:1::1")
    # The datagrams go to a closed port at the MNN: it drops them after counting.
    for ns, target in ((bed.cn, "2001:db8:c::1"), (bed.ha, COA), (bed.mr, MNN)):
        netns.run(ns, ["ping", "-c", "1", "-W", "2", target], check=False)
    return bed


def _settings(role: str, kind: str) -> McoaSettings:
    if role == "mr":
        section = {
            "mr": {
                "mr_id": "mr1",
                "home_address": MR_HOME,
                "ha_address": HA,
                "prefixes": [MNP],
                "links": [{"interface": "m1", "bid": 1, "gateway": "2001:db8:1::1"}],
            }
        }
    else:
        mobile_routers = [{"home_address": MR_HOME, "prefixes": [MNP]}]
        section = {"ha": {"ha_address": HA, "mobile_routers": mobile_routers}}
    return McoaSettings.model_validate({"node": role, "role": role, "pipe": kind, **section})


def _apply(state: pipe_kinds.KernelState, seg6: bool) -> None:
    with IPRoute() as ipr:
        if seg6:
            pipes.move_local_rule(ipr, 32000)
        kernel.apply_state(ipr, state, _PRIORITIES)


def _remove() -> None:
    with IPRoute() as ipr:
        kernel.remove_all(ipr, _PRIORITIES)


def use_pipe(bed: Bed, kind: str) -> None:
    """Build `kind`'s pipe at both ends and lead the MNP into it at the HA."""
    mr = _settings("mr", kind)
    assert mr.mr is not None
    link = pipe_kinds.MrLink(mr.mr.links[0], IPv6Address(COA), 1500)
    netns.call_in(bed.mr, _apply, pipe_kinds.mr_state(mr, kind, [link]), kind == "seg6")
    pipe = PipeRoute(TABLE, IPv6Network(MNP), IPv6Address(COA), 1, IPv6Address(MR_HOME), kind)
    state = pipe_kinds.ha_state(_settings("ha", kind), [kind], "h0", [pipe], {pipe.care_of: "h1"})
    netns.call_in(bed.ha, _apply, state, kind == "seg6")
    _ip(bed.ha, "-6", "rule", "add", "pref", "30000", "to", MNP, "lookup", str(TABLE))


def clear(bed: Bed) -> None:
    """Remove what `use_pipe` or `use_plain` made."""
    for ns in (bed.ha, bed.mr):
        netns.call_in(ns, _remove)
    for argv in (["rule", "del", "pref", "30000"], ["route", "del", MNP]):  # absent: fine
        subprocess.run(["ip", "-n", bed.ha, "-6", *argv], check=False, capture_output=True)


def use_plain(bed: Bed) -> None:
    """The reference: the HA routes the MNP to the MR's link address, no pipe."""
    _ip(bed.ha, "-6", "route", "add", MNP, "via", COA, "dev", "h1")


def _tx(ns: str, dev: str) -> int:
    return int(netns.run(ns, ["cat", f"/sys/class/net/{dev}/statistics/tx_packets"]))


def _rx(ns: str, dev: str) -> int:
    return int(netns.run(ns, ["cat", f"/sys/class/net/{dev}/statistics/rx_packets"]))


def blast(bed: Bed, seconds: float, senders: int) -> tuple[float, float]:
    """(delivered pkt/s on the MR's m0, offered pkt/s on the HA's h0) over one window."""
    argv = [sys.executable, "-m", "bench.sender", MNN, str(PORT), str(seconds + 1.0), str(10**9)]
    procs = [
        subprocess.Popen(["ip", "netns", "exec", bed.cn, *argv], cwd=ROOT, stdout=subprocess.PIPE)
        for _ in range(senders)
    ]
    try:
        time.sleep(0.5)  # past the senders' start-up
        start = (_tx(bed.mr, "m0"), _rx(bed.ha, "h0"), time.monotonic())
        time.sleep(seconds)
        end = (_tx(bed.mr, "m0"), _rx(bed.ha, "h0"), time.monotonic())
    finally:
        for proc in procs:
            proc.wait(timeout=seconds + 30)
    took = end[2] - start[2]
    return (end[0] - start[0]) / took, (end[1] - start[1]) / took


def measure(seconds: float, reps: int, senders: int) -> dict[str, object]:
    """Every kind this kernel has and `plain`, interleaved per repetition; medians."""
    caps = capabilities.probe(capabilities.PIPE_KINDS)
    kinds = caps.pipe_kinds()
    bed = build(f"mnpipe{os.getpid()}")
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in ("plain", *kinds)}
    try:
        for _ in range(reps):
            for method, taken in samples.items():
                if method == "plain":
                    use_plain(bed)
                else:
                    use_pipe(bed, method)
                try:
                    taken.append(blast(bed, seconds, senders))
                finally:
                    clear(bed)
    finally:
        for ns in bed.all():
            netns.delete(ns)
    plain = statistics.median(s[0] for s in samples["plain"])
    rows: dict[str, object] = {}
    for method, values in samples.items():
        delivered = statistics.median(v[0] for v in values)
        offered = statistics.median(v[1] for v in values)
        rows[method] = {
            "pps": round(delivered),
            "offered_pps": round(offered),
            "ratio_to_plain": round(delivered / plain, 3) if plain else None,
        }
    missing = {k: caps.check(k).missing_text for k in capabilities.PIPE_KINDS if k not in kinds}
    return {"rows": rows, "missing": missing, "seconds": seconds, "reps": reps}


def table(result: dict[str, object]) -> str:
    """The side-by-side lines."""
    rows = result["rows"]
    assert isinstance(rows, dict)
    lines = [f"{'pipe kind':10} {'pkt/s':>10} {'vs plain':>9} {'offered pkt/s':>14}"]
    for method, row in rows.items():
        lines.append(
            f"{method:10} {row['pps']:>10} {row['ratio_to_plain']:>9} {row['offered_pps']:>14}"
        )
    missing = result["missing"]
    assert isinstance(missing, dict)
    lines += [f"{kind:10} {'-':>10}  {why}" for kind, why in missing.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.pipes", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="window per sample")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--senders", type=int, default=2, help="parallel UDP senders")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.pipes needs root (it builds namespaces and pipes)", file=sys.stderr)
        return 2
    result = measure(args.seconds, args.reps, args.senders)
    print(f"forwarding through one pipe, median of {args.reps} x {args.seconds:g} s:")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
