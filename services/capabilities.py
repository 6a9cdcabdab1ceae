"""What this kernel can do, found by trying it in a scratch network namespace.

Kernels differ between machines that look alike (one has SRv6 lightweight tunnels, the next
has none), and a user's home agent or mobile router is an unknown kernel too. So nothing in
multinet assumes a feature: every service and the test bed ask `probe()`, which tries each
feature once per process (a device, a route, an nft rule, a qdisc, made in a namespace of its
own and thrown away) and remembers what worked and the kernel's own words for what did not.
`multinet doctor` prints the table.

A feature is present when each of its steps succeeds; a step is an argument list (never a
shell string) run inside the scratch namespace with `ip netns exec`. When no scratch
namespace can be made (a container without CAP_SYS_ADMIN), the steps run in the caller's
namespace on objects named `mncap*` only, removed again at the end, and the result says so.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from services.contracts.errors import KernelError


class Group(Enum):
    """How `multinet doctor` groups the features."""

    PIPE = "pipe kinds (one bit pipe per binding between HA and MR)"
    ROUTING = "policy routing"
    NETFILTER = "netfilter"
    QDISC = "queueing disciplines"
    LINK = "link types"


@dataclass(frozen=True, slots=True)
class Feature:
    """One thing a node may need from its kernel, and how to try it."""

    name: str
    group: Group
    what: str
    config: str
    steps: tuple[tuple[str, ...], ...]
    needs: tuple[str, ...] = ()


_A = "2001:db8:ca::1"
_B = "2001:db8:ca::2"
_T = "ip6 mncap"  # the probe's own nft table


def _steps(*lines: str) -> tuple[tuple[str, ...], ...]:
    """Steps written as fixed command lines, split into argument lists (no shell)."""
    return tuple(tuple(line.split()) for line in lines)


#: Made before the features are tried; several features need a device that is up.
_SETUP = _steps(
    "ip link add mncap0 type veth peer name mncap1",
    "ip link set mncap0 up",
    "ip link set mncap1 up",
    f"ip -6 addr add {_A}/64 dev mncap0 nodad",
)

FEATURES: tuple[Feature, ...] = (
    # Pipe kinds, in the order `auto` prefers them: what a real NEMO stack uses first.
    Feature(
        "ip6tnl",
        Group.PIPE,
        "IPv6-in-IPv6 tunnels (ip6tnl)",
        "CONFIG_IPV6_TUNNEL",
        _steps(f"ip link add mncap6 type ip6tnl mode ip6ip6 local {_A} remote {_B}"),
    ),
    Feature(
        "seg6",
        Group.PIPE,
        "SRv6 lightweight tunnels",
        "CONFIG_IPV6_SEG6_LWTUNNEL",
        _steps(
            f"ip -6 route add 2001:db8:cb::/64 encap seg6 mode encap.red segs {_B} "
            "dev mncap0 table 4242",
            "ip -6 route add 2001:db8:cc::1/128 encap seg6local action End.DT6 table 254 "
            "dev mncap0 table 4242",
        ),
        needs=("veth",),
    ),
    Feature(
        "vxlan",
        Group.PIPE,
        "VXLAN with flow-based `encap ip6` routes",
        "CONFIG_VXLAN, CONFIG_LWTUNNEL",
        _steps(
            f"ip link add mncapx type vxlan id 1 local {_A} remote {_B} dstport 47891",
            "ip link add mncapxe type vxlan external dstport 47892",
            "ip link set mncapxe up",
            f"ip -6 route add 2001:db8:cd::/64 encap ip6 id 1 dst {_B} dev mncapxe table 4242",
        ),
    ),
    Feature(
        "fwmark rules",
        Group.ROUTING,
        "IPv6 policy routing (fwmark rules)",
        "CONFIG_IPV6_MULTIPLE_TABLES",
        _steps("ip -6 rule add pref 4242 fwmark 0x10000/0xff0000 lookup 4242"),
    ),
    Feature(
        "nf_tables",
        Group.NETFILTER,
        "nftables",
        "CONFIG_NF_TABLES, CONFIG_NF_TABLES_IPV6",
        _steps(
            f"nft add table {_T}",
            f"nft add chain {_T} pre {{ type filter hook prerouting priority -150 ; }}",
            f"nft add rule {_T} pre meta mark set 0x10000",
        ),
    ),
    Feature(
        "nft dup",
        Group.NETFILTER,
        "nft dup in ip6 tables",
        "CONFIG_NFT_DUP_IPV6",
        _steps(f"nft add rule {_T} pre dup to {_B} device mncap0"),
        needs=("nf_tables", "veth"),
    ),
    Feature(
        "nft dup ip",
        Group.NETFILTER,
        "nft dup in ip tables",
        "CONFIG_NFT_DUP_IPV4",
        _steps(
            "nft add table ip mncap4",
            "nft add chain ip mncap4 pre { type filter hook prerouting priority -150 ; }",
            "nft add rule ip mncap4 pre dup to 192.0.2.2 device mncap0",
        ),
        needs=("nf_tables", "veth"),
    ),
    Feature(
        "nft numgen",
        Group.NETFILTER,
        "nft numgen",
        "CONFIG_NFT_NUMGEN",
        _steps(f"nft add rule {_T} pre meta mark set numgen inc mod 2"),
        needs=("nf_tables",),
    ),
    Feature(
        "nft jhash",
        Group.NETFILTER,
        "nft jhash",
        "CONFIG_NFT_HASH",
        _steps(f"nft add rule {_T} pre meta mark set jhash ip6 saddr mod 2"),
        needs=("nf_tables",),
    ),
    Feature(
        "nft overflow",
        Group.NETFILTER,
        "nft conntrack marks, byte-rate limits and timed dynamic sets (priority policies)",
        "CONFIG_NF_CONNTRACK_MARK, CONFIG_NFT_CT, CONFIG_NFT_LIMIT",
        _steps(
            f"nft add set {_T} sat {{ type mark ; flags dynamic, timeout ; timeout 1s ; }}",
            f"nft add rule {_T} pre ct mark and 0xff00 0x100 limit rate over 125000 "
            "bytes/second update @sat { ct mark and 0xff00 }",
            f"nft add rule {_T} pre ct mark set ct mark and 0xffff00ff or 0x100",
        ),
        needs=("nf_tables",),
    ),
    Feature(
        "nfqueue",
        Group.NETFILTER,
        "nfqueue",
        "CONFIG_NFT_QUEUE, CONFIG_NETFILTER_NETLINK_QUEUE",
        _steps(f"nft add rule {_T} pre queue num 4242 bypass"),
        needs=("nf_tables",),
    ),
    Feature(
        "xtables mark",
        Group.NETFILTER,
        "ip6tables (legacy) MARK in mangle",
        "CONFIG_IP6_NF_MANGLE, CONFIG_NETFILTER_XT_MARK",
        _steps(
            "ip6tables-legacy -w -t mangle -N mncap",
            "ip6tables-legacy -w -t mangle -A mncap -j MARK --set-mark 0x10000/0xff0000",
        ),
    ),
    Feature(
        "ipset",
        Group.NETFILTER,
        "ipset hash:ip,port",
        "CONFIG_IP_SET_HASH_IPPORT",
        _steps("ipset create mncap hash:ip,port family inet6"),
    ),
    Feature(
        "tbf",
        Group.QDISC,
        "the tbf qdisc",
        "CONFIG_NET_SCH_TBF",
        _steps("tc qdisc add dev mncap0 root tbf rate 1mbit burst 10kb latency 50ms"),
        needs=("veth",),
    ),
    Feature(
        "netem",
        Group.QDISC,
        "the netem qdisc",
        "CONFIG_NET_SCH_NETEM",
        _steps("tc qdisc add dev mncap1 root netem delay 10ms"),
        needs=("veth",),
    ),
    Feature(
        "tc mirred",
        Group.QDISC,
        "tc clsact + u32 + mirred",
        "CONFIG_NET_SCH_INGRESS, CONFIG_NET_CLS_U32, CONFIG_NET_ACT_MIRRED",
        _steps(
            "tc qdisc add dev mncap0 clsact",
            "tc filter add dev mncap0 egress protocol ipv6 u32 match u32 0 0 "
            "action mirred egress mirror dev mncap1",
        ),
        needs=("veth",),
    ),
    Feature("veth", Group.LINK, "veth pairs", "CONFIG_VETH", ()),
    Feature(
        "macvlan",
        Group.LINK,
        "macvlan devices",
        "CONFIG_MACVLAN",
        _steps("ip link add mncapm link mncap0 type macvlan"),
        needs=("veth",),
    ),
    Feature(
        "dummy",
        Group.LINK,
        "dummy devices",
        "CONFIG_DUMMY",
        _steps("ip link add mncapd type dummy"),
    ),
)

#: Pipe kinds in the order `pipe = "auto"` prefers them.
PIPE_KINDS: tuple[str, ...] = tuple(f.name for f in FEATURES if f.group is Group.PIPE)
_BY_NAME = {f.name: f for f in FEATURES}

#: Objects the in-place probe may leave behind, removed after it (and before, from a crash).
_CLEANUP = _steps(
    "ip link del mncap0",
    "ip link del mncap6",
    "ip link del mncapx",
    "ip link del mncapxe",
    "ip link del mncapd",
    "ip -6 rule del pref 4242",
    "ip -6 route flush table 4242",
    f"nft delete table {_T}",
    "nft delete table ip mncap4",
    "ip6tables-legacy -w -t mangle -F mncap",
    "ip6tables-legacy -w -t mangle -X mncap",
    "ipset destroy mncap",
)
_STEP_TIMEOUT_S = 5.0


class MissingCapability(KernelError):  # noqa: N818 - the name reads as what happened
    """The kernel lacks what was asked for; the message names the option and what there is."""

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True, slots=True)
class Check:
    """One feature as found: present, or absent with the kernel's (or the tool's) words."""

    feature: Feature
    present: bool
    detail: str = ""

    @property
    def missing_text(self) -> str:
        """`this kernel has no <what> (<CONFIG>)`, as errors say it."""
        return f"this kernel has no {self.feature.what} ({self.feature.config})"


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What one kernel can do (one probe)."""

    kernel: str
    checks: tuple[Check, ...]
    scratch: bool
    seconds: float
    note: str = ""

    def check(self, name: str) -> Check:
        """The check of feature `name` (KeyError for a name that is not a feature or was not
        part of this probe)."""
        for check in self.checks:
            if check.feature.name == name:
                return check
        raise KeyError(name)

    def has(self, name: str) -> bool:
        """Whether feature `name` is present."""
        return self.check(name).present

    def pipe_kinds(self) -> tuple[str, ...]:
        """The pipe kinds this kernel has, in `auto`'s order of preference."""
        return tuple(kind for kind in PIPE_KINDS if self.has(kind))

    def require(self, name: str) -> None:
        """Raise MissingCapability naming the option and the alternatives when `name` is absent."""
        check = self.check(name)
        if check.present:
            return
        message = check.missing_text
        if check.feature.group is Group.PIPE:
            message += f"; pipe kinds available here: {_listing(self.pipe_kinds())}"
        raise MissingCapability(f"need {name}", f"{message} (tried: {check.detail})")


def _listing(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def choose_pipe_kind(wanted: str, caps: Capabilities) -> str:
    """The pipe kind for `wanted` ("auto" or a kind) on this kernel, or MissingCapability.

    `auto` takes the first kind of `PIPE_KINDS` that the kernel has; a named kind must be
    present. Either way the error names what is missing and what this kernel offers.
    """
    if wanted != "auto":
        caps.require(wanted)
        return wanted
    kinds = caps.pipe_kinds()
    if kinds:
        return kinds[0]
    reasons = "; ".join(caps.check(k).missing_text for k in PIPE_KINDS)
    raise MissingCapability("choose a pipe kind", f"no pipe kind can be built: {reasons}")


def offered_pipe_kinds(wanted: str, caps: Capabilities) -> tuple[str, ...]:
    """The kinds a home agent accepts: every kind this kernel has for `auto`, else `wanted`."""
    if wanted != "auto":
        caps.require(wanted)
        return (wanted,)
    kinds = caps.pipe_kinds()
    if not kinds:
        choose_pipe_kind("auto", caps)  # raises with every reason
    return kinds


# --- running the probe ---------------------------------------------------------------------


def _run(prefix: Sequence[str], argv: Sequence[str]) -> str | None:
    """Run one step; None on success, else the first line of what it said (or why not)."""
    if shutil.which(argv[0]) is None:
        return f"{argv[0]} is not installed"
    try:
        proc = subprocess.run(
            [*prefix, *argv],
            capture_output=True,
            text=True,
            timeout=_STEP_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"{argv[0]} did not answer within {_STEP_TIMEOUT_S:.0f} s"
    if proc.returncode == 0:
        return None
    said = (proc.stderr or proc.stdout).strip().splitlines()
    return said[0] if said else f"{argv[0]} exited with status {proc.returncode}"


def _with_needs(names: Iterable[str]) -> tuple[Feature, ...]:
    """The features named and every feature they need, in `FEATURES` order (a feature's steps
    may build on what an earlier one made: `nft dup` adds a rule to the `nf_tables` table)."""
    wanted: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(_BY_NAME[name].needs)
    return tuple(f for f in FEATURES if f.name in wanted)


def _try(prefix: Sequence[str], features: Sequence[Feature]) -> tuple[Check, ...]:
    checks: dict[str, Check] = {}
    setup_error = next((e for step in _SETUP if (e := _run(prefix, step)) is not None), None)
    checks["veth"] = Check(_BY_NAME["veth"], setup_error is None, setup_error or "")
    for feature in features:
        if feature.name in checks:
            continue
        absent = [n for n in feature.needs if not checks[n].present]
        if absent:
            checks[feature.name] = Check(feature, False, f"not tried: needs {', '.join(absent)}")
            continue
        error = next((e for step in feature.steps if (e := _run(prefix, step)) is not None), None)
        checks[feature.name] = Check(feature, error is None, error or "")
    return tuple(checks[f.name] for f in features)


def _scratch_name() -> str:
    return f"mncap-{os.getpid()}-{os.urandom(2).hex()}"


def run_probe(names: Iterable[str] | None = None) -> Capabilities:
    """Try the features named (and what they need), or every feature, now (prefer `probe()`,
    which remembers the answer for the rest of the process)."""
    features = FEATURES if names is None else _with_needs(names)
    started = time.monotonic()
    kernel = f"{platform.release()} ({platform.machine()})"
    name = _scratch_name()
    made = _run((), ("ip", "netns", "add", name))
    if made is None:
        try:
            checks = _try(("ip", "netns", "exec", name), features)
        finally:
            _run((), ("ip", "netns", "del", name))
        return Capabilities(kernel, checks, True, time.monotonic() - started)
    note = f"no scratch namespace ({made}): probed in this namespace on mncap* objects only"
    for step in _CLEANUP:
        _run((), step)
    try:
        checks = _try((), features)
    finally:
        for step in _CLEANUP:
            _run((), step)
    return Capabilities(kernel, checks, False, time.monotonic() - started, note)


@functools.cache
def probe(names: tuple[str, ...] | None = None) -> Capabilities:
    """What this kernel can do, tried once per process and then remembered: every feature, or
    only those named (and what they need; the agents ask for `PIPE_KINDS` alone, which takes
    a fraction of the whole probe). `Capabilities.check` knows only the features tried."""
    return run_probe(names)
