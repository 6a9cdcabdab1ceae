"""Decode rate of the Mobility Header codec on one core, for realistic NEMO signalling.

The mix is what a home agent of multihomed mobile routers sees: Binding Updates carrying an
Alternate Care-of Address, two Mobile Network Prefixes and one BID option per care-of address,
and Binding Acknowledgements echoing the BIDs. Each run decodes the mix in a loop for about
`--seconds`; the reported rate is the median of `--runs` runs. Exit status 1 when the median
is under the target.

    .venv/bin/python -m bench.mh_decode [--seconds 3] [--runs 5] [--target 50000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from ipaddress import IPv4Address, IPv6Address

from services.mobility_header import (
    AlternateCareOfAddress,
    BindingAcknowledgement,
    BindingIdentifier,
    BindingUpdate,
    MobileNetworkPrefix,
    decode,
    encode,
)

HOME_AGENT = IPv6Address("2001:db8:ffff::1")


def _binding_update(router: int, sequence: int) -> bytes:
    base = 0x2001_0DB8_0000_0000_0000_0000_0000_0000
    coas = [IPv6Address(base | (router << 80) | (link << 64) | 0x10) for link in range(1, 3)]
    bids = [
        BindingIdentifier(bid=link + 1, priority=link + 1, care_of=coa)
        for link, coa in enumerate(coas)
    ]
    bids.append(BindingIdentifier(bid=3, priority=3, care_of=IPv4Address(f"192.0.2.{router}")))
    prefixes = tuple(
        MobileNetworkPrefix(IPv6Address(0x2001_0DB8_AAAA_0000 << 64 | (router << 72 | n << 64)), 64)
        for n in range(2)
    )
    message = BindingUpdate(
        sequence=sequence,
        lifetime=150,
        ack=True,
        home_registration=True,
        key_management=True,
        mobile_router=True,
        options=(AlternateCareOfAddress(coas[0]), *prefixes, *bids),
    )
    return encode(message, src=coas[0], dst=HOME_AGENT)


def _binding_ack(router: int, sequence: int) -> bytes:
    message = BindingAcknowledgement(
        status=0,
        sequence=sequence,
        lifetime=150,
        mobile_router=True,
        options=tuple(BindingIdentifier(bid=b, status=0) for b in (1, 2, 3)),
    )
    return encode(message, src=HOME_AGENT, dst=IPv6Address(f"2001:db8::{router:x}"))


def workload() -> list[bytes]:
    """64 messages: for each of 32 routers one BU and its BA."""
    packets: list[bytes] = []
    for router in range(1, 33):
        packets.append(_binding_update(router, router * 7))
        packets.append(_binding_ack(router, router * 7))
    return packets


def one_run(packets: list[bytes], seconds: float) -> float:
    """Messages decoded per second over a run of about `seconds`."""
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for packet in packets:
            decode(packet)
        count += len(packets)
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--target", type=float, default=50_000.0)
    args = parser.parse_args(argv)
    packets = workload()
    sizes = sorted({len(p) for p in packets})
    print(f"workload: {len(packets)} messages (BU+BA), sizes {sizes} octets")
    rates = []
    for run in range(1, args.runs + 1):
        rate = one_run(packets, args.seconds)
        rates.append(rate)
        print(f"run {run}: {rate:,.0f} messages/s")
    median = statistics.median(rates)
    verdict = "PASS" if median >= args.target else "FAIL"
    print(f"median: {median:,.0f} messages/s (target {args.target:,.0f}): {verdict}")
    return 0 if median >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
