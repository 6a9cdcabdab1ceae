"""Interoperability with scapy 2.8.0: each side parses what the other builds, checksums agree.

Scapy 2.8.0 has no class for the Binding Identifier option (type 35): it parses it as
`MIP6OptUnknown`, so the BID is checked here as raw option bytes, and against the RFC 5648
layout by hand in `test_codec.py`.

The two Binding Update packets at the end are copied from scapy's own test suite
(`test/scapy/layers/inet6.uts`, section "Binding Update Message", in the secdev/scapy
repository; the installed wheel does not ship its tests). Each carries a Home Address
destination option, so the checksum pseudo-header uses the home address as source.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from scapy.layers.inet6 import (
    HAO,
    MIP6MH_BA,
    MIP6MH_BE,
    MIP6MH_BU,
    IPv6,
    IPv6ExtHdrDestOpt,
    MIP6OptAltCoA,
    MIP6OptMobNetPrefix,
    MIP6OptUnknown,
    PadN,
    in6_chksum,
)
from scapy.packet import Raw

from services.mobility_header import (
    AlternateCareOfAddress,
    BindingAcknowledgement,
    BindingError,
    BindingIdentifier,
    BindingUpdate,
    MobileNetworkPrefix,
    UnknownOption,
    checksum,
    decode,
    encode,
    verify_checksum,
)
from services.mobility_header import PadN as OurPadN

MR = "2001:db8:1::10"
HA = "2001:db8:ffff::1"
PREFIX = "2001:db8:aa00::"


def _parse(src: str, dst: str, mh: bytes) -> Any:
    """Let scapy dissect our MH as the payload of an IPv6 packet."""
    return IPv6(bytes(IPv6(src=src, dst=dst, nh=135, plen=len(mh))) + mh)


def _scapy_checksum(src: str, dst: str, mh: bytes) -> int:
    zeroed = mh[:4] + b"\x00\x00" + mh[6:]
    packet = IPv6(src=src, dst=dst, nh=135) / Raw(zeroed)
    return int(in6_chksum(135, packet[Raw], zeroed))  # type: ignore[no-untyped-call]


def _mh_of(packet: Any) -> bytes:
    """The Mobility Header octets of a scapy-built IPv6 packet without extension headers."""
    return bytes(packet)[40:]


# --- Ours, parsed by scapy -----------------------------------------------------------------


def test_scapy_parses_our_binding_update() -> None:
    bid = BindingIdentifier(bid=2, priority=3, care_of=IPv6Address(MR))
    message = BindingUpdate(
        sequence=0xBEEF,
        lifetime=150,
        ack=True,
        home_registration=True,
        key_management=True,
        mobile_router=True,
        options=(
            AlternateCareOfAddress(IPv6Address(MR)),
            MobileNetworkPrefix(IPv6Address(PREFIX), 56),
            bid,
        ),
    )
    mh = encode(message, src=MR, dst=HA)
    bu = _parse(MR, HA, mh)[MIP6MH_BU]
    assert bu.seq == 0xBEEF
    assert bu.mhtime == 150
    assert {"A", "H", "K", "R"} == {f for f in "PRMKLHA" if getattr(bu.flags, f)}
    assert bu.len == len(mh) // 8 - 1
    meaningful = [o for o in bu.options if not isinstance(o, PadN)]
    assert isinstance(meaningful[0], MIP6OptAltCoA)
    assert meaningful[0].acoa == MR
    assert isinstance(meaningful[1], MIP6OptMobNetPrefix)
    assert (meaningful[1].plen, meaningful[1].prefix) == (56, PREFIX)
    assert isinstance(meaningful[2], MIP6OptUnknown)
    assert meaningful[2].otype == 35
    assert bytes((35, meaningful[2].olen)) + meaningful[2].odata == bid.to_bytes()
    assert bu.cksum == _scapy_checksum(MR, HA, mh)


def test_scapy_parses_our_binding_ack() -> None:
    message = BindingAcknowledgement(
        status=164,
        sequence=0xBEEF,
        lifetime=75,
        key_management=True,
        mobile_router=True,
        other_flags=0x20,  # proxy registration (P), which scapy names
        options=(BindingIdentifier(bid=2, status=167),),
    )
    mh = encode(message, src=HA, dst=MR)
    ba = _parse(HA, MR, mh)[MIP6MH_BA]
    assert (ba.status, ba.seq, ba.mhtime) == (164, 0xBEEF, 75)
    assert (ba.flags.K, ba.flags.R, ba.flags.P) == (True, True, True)
    option = next(o for o in ba.options if isinstance(o, MIP6OptUnknown))
    assert (option.otype, option.odata) == (35, bytes((0, 2, 167, 0)))
    assert ba.cksum == _scapy_checksum(HA, MR, mh)


def test_scapy_parses_our_binding_error() -> None:
    mh = encode(BindingError(status=1, home_address=IPv6Address(MR)), src=HA, dst=MR)
    be = _parse(HA, MR, mh)[MIP6MH_BE]
    assert (be.status, be.ha) == (1, MR)
    assert be.cksum == _scapy_checksum(HA, MR, mh)


@pytest.mark.parametrize("options", [(), (AlternateCareOfAddress(IPv6Address(MR)),)])
def test_our_bytes_equal_scapys_for_the_same_message(options: tuple[Any, ...]) -> None:
    ours = encode(
        BindingUpdate(
            sequence=0x4242,
            lifetime=3,
            ack=True,
            home_registration=True,
            key_management=True,
            options=options,
        ),
        src=MR,
        dst=HA,
    )
    theirs_options = [MIP6OptAltCoA(acoa=MR)] if options else []
    theirs = IPv6(src=MR, dst=HA) / MIP6MH_BU(seq=0x4242, options=theirs_options)
    assert ours == _mh_of(theirs)


# --- Scapy's, decoded by us ----------------------------------------------------------------


def test_we_decode_scapys_binding_update() -> None:
    packet = IPv6(src=MR, dst=HA) / MIP6MH_BU(
        seq=513,
        flags="AHLKR",
        mhtime=900,
        options=[
            MIP6OptMobNetPrefix(plen=48, prefix=PREFIX),
            MIP6OptAltCoA(acoa=MR),
            MIP6OptUnknown(
                otype=35, odata=bytes((0, 1, 0, 0x81)) + IPv4Address("192.0.2.1").packed
            ),
            MIP6OptUnknown(otype=222, odata=b"\x01\x02\x03"),
        ],
    )
    mh = _mh_of(packet)
    message = decode(mh)
    assert message == BindingUpdate(
        sequence=513,
        lifetime=900,
        ack=True,
        home_registration=True,
        link_local=True,
        key_management=True,
        mobile_router=True,
        options=(
            MobileNetworkPrefix(IPv6Address(PREFIX), 48),
            AlternateCareOfAddress(IPv6Address(MR)),
            BindingIdentifier(
                bid=1, simultaneous_home_foreign=True, priority=1, care_of=IPv4Address("192.0.2.1")
            ),
            UnknownOption(222, b"\x01\x02\x03"),
        ),
    )
    assert verify_checksum(MR, HA, mh)
    assert checksum(MR, HA, mh) == IPv6(bytes(packet))[MIP6MH_BU].cksum


def test_we_decode_scapys_binding_ack_and_error() -> None:
    ba_packet = IPv6(src=HA, dst=MR) / MIP6MH_BA(status=141, flags="KRP", seq=77, mhtime=5)
    mh = _mh_of(ba_packet)
    assert decode(mh) == BindingAcknowledgement(
        status=141,
        sequence=77,
        lifetime=5,
        key_management=True,
        mobile_router=True,
        other_flags=0x20,
    )
    assert verify_checksum(HA, MR, mh)
    be_packet = IPv6(src=HA, dst=MR) / MIP6MH_BE(status=2, ha=MR)
    mh = _mh_of(be_packet)
    assert decode(mh) == BindingError(status=2, home_address=IPv6Address(MR))
    assert verify_checksum(HA, MR, mh)


# --- The two Binding Update packets of scapy's inet6.uts ------------------------------------

#: raw(IPv6()/IPv6ExtHdrDestOpt(options=[HAO()])/MIP6MH_BU())
UTS_BU_DEFAULT = (
    b"`\x00\x00\x00\x00(<@\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x87\x02\x01\x02\x00"
    b"\x00\xc9\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00;\x01\x05"
    b"\x00\xee`\x00\x00\xd0\x00\x00\x03\x01\x02\x00\x00"
)

#: raw(IPv6()/IPv6ExtHdrDestOpt(options=[HAO(hoa='2001:db8::cafe')])
#:     /MIP6MH_BU(mhtime=42, options=[MIP6OptAltCoA(),MIP6OptMobNetPrefix()]))
UTS_BU_OPTIONS = (
    b"`\x00\x00\x00\x00P<@\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x87\x02\x01\x02\x00"
    b"\x00\xc9\x10 \x01\r\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xca\xfe;\x06\x05\x00"
    b"\xea\xf2\x00\x00\xd0\x00\x00*\x01\x00\x03\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    b"\x00\x00\x00\x00\x00\x00\x01\x02\x00\x00\x06\x12\x00@\x00\x00\x00\x00\x00\x00\x00\x00"
    b"\x00\x00\x00\x00\x00\x00\x00\x00"
)


@pytest.mark.parametrize(
    ("packet", "home_address", "expected_checksum", "expected"),
    [
        (
            UTS_BU_DEFAULT,
            "::",
            0xEE60,
            BindingUpdate(
                sequence=0, lifetime=3, ack=True, home_registration=True, key_management=True
            ),
        ),
        (
            UTS_BU_OPTIONS,
            "2001:db8::cafe",
            0xEAF2,
            BindingUpdate(
                sequence=0,
                lifetime=42,
                ack=True,
                home_registration=True,
                key_management=True,
                options=(
                    AlternateCareOfAddress(IPv6Address("::")),
                    MobileNetworkPrefix(IPv6Address("::"), 64),
                ),
            ),
        ),
    ],
)
def test_scapy_test_suite_binding_updates(
    packet: bytes, home_address: str, expected_checksum: int, expected: BindingUpdate
) -> None:
    parsed = IPv6(packet)
    assert parsed[HAO].hoa == home_address  # scapy agrees on the home address
    assert IPv6ExtHdrDestOpt in parsed
    mh = packet[40 + 24 :]  # IPv6 header, then a 24-octet destination options header
    assert mh[4:6] == expected_checksum.to_bytes(2, "big")
    assert decode(mh) == expected
    assert verify_checksum(home_address, "::1", mh)
    assert not verify_checksum("::1", "::1", mh)  # the packet's source is not the HoA
    assert checksum(home_address, "::1", mh) == expected_checksum
    # Re-encoding gives the same octets, padding included, as scapy's own build.
    assert encode(expected, src=home_address, dst="::1") == mh
    with_padding = decode(mh, keep_padding=True)
    assert len(with_padding.options) == len(parsed[MIP6MH_BU].options)
    assert sum(isinstance(o, OurPadN) for o in with_padding.options) == sum(
        isinstance(o, PadN) for o in parsed[MIP6MH_BU].options
    )
