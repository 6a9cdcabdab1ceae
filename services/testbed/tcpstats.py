"""The CN's TCP statistics: how many segments the stream's sender had to retransmit.

A flow moved between pipes without loss retransmits nothing; one that lost packets during a
handover shows fast retransmissions or, worse, timeouts. The kernel's SNMP counters of the
CN's namespace (`/proc/net/snmp` Tcp, `/proc/net/netstat` TcpExt) are read before and after
the stream; `ss -ti` gives the connection's own `retrans` count while it is still open. The
CN serves only the stream, so the namespace's counters are the stream's.
"""

from __future__ import annotations

from services.testbed.topology import Topology

#: The counters kept (Tcp: from /proc/net/snmp, the others from TcpExt).
KEPT = (
    "RetransSegs",
    "OutSegs",
    "TCPTimeouts",
    "TCPFastRetrans",
    "TCPLossProbes",
    "TCPSlowStartRetrans",
    "TCPSpuriousRTOs",
)


def parse_proc(text: str) -> dict[str, int]:
    """Name -> value from the header/value line pairs of /proc/net/snmp or netstat."""
    values: dict[str, int] = {}
    lines = text.splitlines()
    for header, row in zip(lines[::2], lines[1::2], strict=False):
        names, numbers = header.split(), row.split()
        if not names or names[0] != numbers[0]:
            continue
        for name, number in zip(names[1:], numbers[1:], strict=False):
            if number.lstrip("-").isdigit():
                values[name] = int(number)
    return values


def counters(bed: Topology) -> dict[str, int]:
    """The kept TCP counters of the CN's namespace now."""
    found = parse_proc(bed.run("cn", ["cat", "/proc/net/snmp"], check=False))
    found |= parse_proc(bed.run("cn", ["cat", "/proc/net/netstat"], check=False))
    return {name: found[name] for name in KEPT if name in found}


def connection(bed: Topology, port: int) -> str:
    """`ss -ti` of the stream's connection at the CN (empty when it is not open)."""
    return bed.run(
        "cn", ["ss", "-Htin", "state", "established", f"( sport = :{port} )"], check=False
    ).strip()


def retransmitted(connection_info: str) -> int | None:
    """The total of `retrans:current/total` in an `ss -ti` line, None when absent."""
    for word in connection_info.split():
        if word.startswith("retrans:"):
            total = word.split("/")[-1]
            return int(total) if total.isdigit() else None
    return None
