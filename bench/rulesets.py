"""The N flow policies of a benchmark and the same rules as other tools want them.

Pure code: policies (distinct, non-overlapping IPv6 flows), the paper's one-command-per-policy
argument lists, an `ip6tables-restore` input and an `nft -f` input holding the same rules.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from services.contracts.policy import Forward, Policy, PortRange, Selector
from services.prem.config import PremSettings

#: Destination addresses of the benchmark flows: FLOW_NET + 1, + 2, ...
FLOW_NET = ipaddress.IPv6Network("2001:db8:100::/48")
#: Where the forwarding test sends its packets (not inside FLOW_NET).
TEST_DST = ipaddress.IPv6Address("2001:db8:ff::1")
TEST_PORT = 9999
#: Priority of the test flow's policy: after every generated one, so it is matched last.
LAST_PRIORITY = 65535
TCP, UDP = 6, 17
PROTO_NAMES = {TCP: "tcp", UDP: "udp"}

IPTABLES_CHAIN = "PREROUTING"
NFT_TABLE = "benchfloor"


def bench_settings(backend: str, bids: int = 4) -> PremSettings:
    """Settings of an HA (marks forwarded packets in PREROUTING) with BIDs 1..`bids`."""
    return PremSettings.model_validate(
        {
            "node": "bench-ha",
            "role": "ha",
            "mobile_router": "bench-mr",
            "backend": backend,
            "bids": [{"bid": b} for b in range(1, bids + 1)],
        }
    )


def flow_policy(
    policy_id: str, priority: int, dst: ipaddress.IPv6Address, proto: int, port: int, bid: int
) -> Policy:
    """One flow policy: packets to `dst`/128, protocol `proto`, destination `port` -> `bid`."""
    return Policy(
        id=policy_id,
        priority=priority,
        selector=Selector(
            dst_addr=ipaddress.IPv6Network(dst),
            next_header=proto,
            dst_port=PortRange(first=port, last=port),
        ),
        action=Forward(bid=bid),
    )


def make_policies(n: int, bids: tuple[int, ...]) -> tuple[Policy, ...]:
    """`n` distinct TCP flow policies (own destination /128 and port), BIDs in turn."""
    if n > LAST_PRIORITY:
        raise ValueError(f"at most {LAST_PRIORITY} policies (one priority each)")
    return tuple(
        flow_policy(f"p{i:05d}", i, FLOW_NET[i + 1], TCP, 1024 + i % 50000, bids[i % len(bids)])
        for i in range(n)
    )


def forwarding_policies(n: int, bids: tuple[int, ...]) -> tuple[Policy, ...]:
    """`n` policies whose LAST in precedence order is the one the test packets match.

    The other n - 1 are TCP flows the UDP test packets never match, so a linear chain
    evaluates every one of them before reaching the match (its worst case).
    """
    last = flow_policy("test-flow", LAST_PRIORITY, TEST_DST, UDP, TEST_PORT, bids[0])
    return (*make_policies(n - 1, bids), last)


@dataclass(frozen=True)
class Flow:
    """The fields of a benchmark policy that the renderers below use."""

    dst: ipaddress.IPv6Network
    proto: int
    port: int
    bid: int


def flow_of(policy: Policy) -> Flow:
    """The flow a benchmark policy selects (refuses selectors the renderers cannot express)."""
    sel = policy.selector
    action = policy.action
    if (
        not isinstance(sel.dst_addr, ipaddress.IPv6Network)
        or sel.next_header not in PROTO_NAMES
        or sel.dst_port is None
        or sel.dst_port.first != sel.dst_port.last
        or not isinstance(action, Forward)
    ):
        raise ValueError(f"policy {policy.id}: not a single-flow forward policy")
    return Flow(sel.dst_addr, sel.next_header, sel.dst_port.first, action.bid)


def _iptables_match(flow: Flow, settings: PremSettings) -> list[str]:
    proto = PROTO_NAMES[flow.proto]
    mark = f"{settings.mark_of(flow.bid):#x}/{settings.mark_mask:#x}"
    return [
        *("-d", str(flow.dst), "-p", proto, "-m", proto, "--dport", str(flow.port)),
        *("-j", "MARK", "--set-xmark", mark),
    ]


def paper_commands(
    policies: tuple[Policy, ...], settings: PremSettings, binary: str
) -> list[list[str]]:
    """The paper's method: one `ip6tables -A` process per policy (-w: wait for the lock)."""
    return [
        [binary, "-w", "-t", "mangle", "-A", IPTABLES_CHAIN, *_iptables_match(flow_of(p), settings)]
        for p in policies
    ]


def restore_input(policies: tuple[Policy, ...], settings: PremSettings) -> str:
    """Input for `ip6tables-restore -n`: the same rules as `paper_commands`, one commit."""
    lines = ["*mangle"]
    lines += [
        " ".join(["-A", IPTABLES_CHAIN, *_iptables_match(flow_of(p), settings)]) for p in policies
    ]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def nft_input(policies: tuple[Policy, ...], settings: PremSettings) -> str:
    """Input for `nft -f -`: one map (address . protocol . port -> mark) with N elements."""
    elements = ",\n".join(
        f"    {f.dst.network_address} . {PROTO_NAMES[f.proto]} . {f.port} : "
        f"{settings.mark_of(f.bid):#010x}"
        for f in map(flow_of, policies)
    )
    body = f"    elements = {{\n{elements}\n    }}\n" if policies else ""
    return (
        f"table ip6 {NFT_TABLE} {{\n"
        "  map flows {\n"
        "    type ipv6_addr . inet_proto . inet_service : mark\n"
        f"{body}"
        "  }\n"
        "  chain prerouting {\n"
        "    type filter hook prerouting priority mangle; policy accept;\n"
        "    meta mark set ip6 daddr . meta l4proto . th dport map @flows\n"
        "  }\n"
        "}\n"
    )
