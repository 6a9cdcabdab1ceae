"""Mobility options (RFC 6275 6.2, NEMO RFC 3963 4.3, MCoA RFC 5648 6.1, vendor-specific
RFC 5094): types and wire form.

Options are type-length-value items after the fixed part of a message. The ones a NEMO home
agent with multiple care-of addresses needs are parsed into typed values; any other type is
kept as raw bytes (RFC 6275 9.2: unrecognised options are skipped using their length), so a
newer peer never makes a message undecodable. Padding is consumed on decode unless asked for,
and generated on encode from each option's alignment rule.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from typing import ClassVar, TypeVar

from services.mobility_header.errors import DECODE_STATS, MobilityHeaderError, Reason

PAD1 = 0
PADN = 1
ALTERNATE_COA = 3
MOBILE_NETWORK_PREFIX = 6
VENDOR_SPECIFIC = 19
BINDING_IDENTIFIER = 35

#: Option types this module parses; an `UnknownOption` must not use one of them.
KNOWN_TYPES = frozenset(
    {PAD1, PADN, ALTERNATE_COA, MOBILE_NETWORK_PREFIX, VENDOR_SPECIFIC, BINDING_IDENTIFIER}
)

_BID_FIXED = struct.Struct("!HBB")  # BID, status, H flag | BID-PRI
_VENDOR_FIXED = struct.Struct("!IB")  # vendor id (IANA enterprise number), sub-type
_H_FLAG = 0x80
_PRIORITY_MASK = 0x7F


@dataclass(frozen=True, slots=True)
class Pad1:
    """One octet of padding (type 0, no length field)."""

    ALIGN: ClassVar[tuple[int, int]] = (1, 0)

    def to_bytes(self) -> bytes:
        return b"\x00"


@dataclass(frozen=True, slots=True)
class PadN:
    """Two or more octets of padding: `data_length` zero octets after type and length."""

    data_length: int = 0

    ALIGN: ClassVar[tuple[int, int]] = (1, 0)

    def to_bytes(self) -> bytes:
        _check_range("PadN data_length", self.data_length, 0xFF)
        return bytes((PADN, self.data_length)) + bytes(self.data_length)


@dataclass(frozen=True, slots=True)
class AlternateCareOfAddress:
    """The care-of address to register instead of the packet's source (RFC 6275 6.2.5)."""

    address: IPv6Address

    ALIGN: ClassVar[tuple[int, int]] = (8, 6)

    def to_bytes(self) -> bytes:
        return bytes((ALTERNATE_COA, 16)) + self.address.packed


@dataclass(frozen=True, slots=True)
class MobileNetworkPrefix:
    """One prefix of the mobile router's network (RFC 3963 4.3); host bits are kept as sent."""

    prefix: IPv6Address
    prefix_length: int

    ALIGN: ClassVar[tuple[int, int]] = (8, 4)

    @property
    def network(self) -> IPv6Network:
        return IPv6Network((self.prefix, self.prefix_length), strict=False)

    def to_bytes(self) -> bytes:
        _check_range("MobileNetworkPrefix prefix_length", self.prefix_length, 128)
        return bytes((MOBILE_NETWORK_PREFIX, 18, 0, self.prefix_length)) + self.prefix.packed


@dataclass(frozen=True, slots=True)
class BindingIdentifier:
    """A binding of a multihomed node (RFC 5648 6.1), one per care-of address.

    Layout of the option data: BID (16 bits), status (8 bits), then one octet holding the
    H flag (simultaneous home and foreign binding) in its top bit and BID-PRI in the low
    7 bits (named by RFC 6089, which updates RFC 5648; RFC 5648 had them reserved), then an
    optional care-of address: data length 4 carries none, 8 an IPv4 and 20 an IPv6 address.
    """

    bid: int
    status: int = 0
    simultaneous_home_foreign: bool = False
    priority: int = 0
    care_of: IPv4Address | IPv6Address | None = None

    ALIGN: ClassVar[tuple[int, int]] = (2, 0)

    def to_bytes(self) -> bytes:
        _check_range("BindingIdentifier bid", self.bid, 0xFFFF)
        _check_range("BindingIdentifier status", self.status, 0xFF)
        _check_range("BindingIdentifier priority", self.priority, _PRIORITY_MASK)
        coa = b"" if self.care_of is None else self.care_of.packed
        flags = (_H_FLAG if self.simultaneous_home_foreign else 0) | self.priority
        head = bytes((BINDING_IDENTIFIER, 4 + len(coa)))
        return head + _BID_FIXED.pack(self.bid, self.status, flags) + coa


@dataclass(frozen=True, slots=True)
class VendorSpecific:
    """A Vendor-Specific Mobility Option (RFC 5094 3): a vendor's IANA enterprise number, a
    sub-type the vendor defines, and that sub-type's data (up to 250 octets)."""

    vendor_id: int
    sub_type: int
    data: bytes = b""

    ALIGN: ClassVar[tuple[int, int]] = (4, 2)

    def to_bytes(self) -> bytes:
        _check_range("VendorSpecific vendor_id", self.vendor_id, 0xFFFFFFFF)
        _check_range("VendorSpecific sub_type", self.sub_type, 0xFF)
        _check_range("VendorSpecific data length", len(self.data), 0xFF - _VENDOR_FIXED.size)
        head = bytes((VENDOR_SPECIFIC, _VENDOR_FIXED.size + len(self.data)))
        return head + _VENDOR_FIXED.pack(self.vendor_id, self.sub_type) + self.data


@dataclass(frozen=True, slots=True)
class UnknownOption:
    """An option type this codec does not interpret, kept byte for byte."""

    option_type: int
    data: bytes

    ALIGN: ClassVar[tuple[int, int]] = (1, 0)

    def to_bytes(self) -> bytes:
        _check_range("UnknownOption option_type", self.option_type, 0xFF)
        _check_range("UnknownOption data length", len(self.data), 0xFF)
        if self.option_type in KNOWN_TYPES:
            raise ValueError(f"option type {self.option_type} has its own class")
        return bytes((self.option_type, len(self.data))) + self.data


MobilityOption = (
    Pad1
    | PadN
    | AlternateCareOfAddress
    | MobileNetworkPrefix
    | BindingIdentifier
    | VendorSpecific
    | UnknownOption
)

_O = TypeVar("_O")


def options_of(options: tuple[MobilityOption, ...], kind: type[_O]) -> tuple[_O, ...]:
    """The options of one kind, in message order (e.g. every BID of a bulk registration)."""
    return tuple(o for o in options if isinstance(o, kind))


def _check_range(what: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise ValueError(f"{what} must be in 0..{maximum}, got {value}")


# --- Encoding ------------------------------------------------------------------------------


def _padding(count: int) -> bytes:
    """`count` octets of padding as one option: Pad1 for one octet, PadN otherwise."""
    if count == 0:
        return b""
    if count == 1:
        return b"\x00"
    return bytes((PADN, count - 2)) + bytes(count - 2)


def encode_options(options: tuple[MobilityOption, ...], start: int) -> bytes:
    """Options laid out from MH offset `start`, each aligned, the total padded to 8 octets.

    Alignment follows the RFC's xn+y rules (RFC 6275 6.2 and the option definitions), with the
    padding put directly before the option that needs it, as scapy does; the result is
    therefore byte-identical to scapy's for the same options.
    """
    out = bytearray()
    pos = start
    for option in options:
        x, y = option.ALIGN
        gap = (y - pos) % x
        if gap:
            out += _padding(gap)
            pos += gap
        raw = option.to_bytes()
        out += raw
        pos += len(raw)
    out += _padding(-pos % 8)
    return bytes(out)


# --- Decoding ------------------------------------------------------------------------------

Buffer = bytes | bytearray | memoryview

#: Parses one option from its data: (buffer, first data octet, data length, option offset,
#: MH type), the option offset and MH type being for the error only.
_Parser = Callable[[Buffer, int, int, int, int], MobilityOption]

_PAD1 = Pad1()


def _bad_length(
    mh_type: int, offset: int, name: str, length: int, allowed: str
) -> MobilityHeaderError:
    DECODE_STATS.count_error(Reason.BAD_OPTION_LENGTH)
    detail = f"{name} option with data length {length}, expected {allowed}"
    return MobilityHeaderError(
        Reason.BAD_OPTION_LENGTH, offset=offset, mh_type=mh_type, detail=detail
    )


def _binding_identifier(
    data: Buffer, first: int, olen: int, at: int, mh_type: int
) -> BindingIdentifier:
    coa: IPv4Address | IPv6Address | None
    if olen == 4:
        coa = None
    elif olen == 20:
        coa = IPv6Address(bytes(data[first + 4 : first + 20]))
    elif olen == 8:
        coa = IPv4Address(bytes(data[first + 4 : first + 8]))
    else:
        raise _bad_length(mh_type, at, "Binding Identifier", olen, "4, 8 or 20")
    bid, status, flags = _BID_FIXED.unpack_from(data, first)
    return BindingIdentifier(bid, status, bool(flags & _H_FLAG), flags & _PRIORITY_MASK, coa)


def _mobile_network_prefix(
    data: Buffer, first: int, olen: int, at: int, mh_type: int
) -> MobileNetworkPrefix:
    if olen != 18:
        raise _bad_length(mh_type, at, "Mobile Network Prefix", olen, "18")
    plen = data[first + 1]
    if plen > 128:
        DECODE_STATS.count_error(Reason.INVALID_FIELD)
        raise MobilityHeaderError(
            Reason.INVALID_FIELD,
            offset=first + 1,
            mh_type=mh_type,
            detail=f"Mobile Network Prefix with prefix length {plen}, over 128",
        )
    return MobileNetworkPrefix(IPv6Address(bytes(data[first + 2 : first + 18])), plen)


def _alternate_coa(
    data: Buffer, first: int, olen: int, at: int, mh_type: int
) -> AlternateCareOfAddress:
    if olen != 16:
        raise _bad_length(mh_type, at, "Alternate Care-of Address", olen, "16")
    return AlternateCareOfAddress(IPv6Address(bytes(data[first : first + 16])))


def _vendor_specific(data: Buffer, first: int, olen: int, at: int, mh_type: int) -> VendorSpecific:
    if olen < _VENDOR_FIXED.size:
        raise _bad_length(mh_type, at, "Vendor-Specific", olen, "5 or more")
    vendor_id, sub_type = _VENDOR_FIXED.unpack_from(data, first)
    return VendorSpecific(
        vendor_id, sub_type, bytes(data[first + _VENDOR_FIXED.size : first + olen])
    )


_PARSERS: dict[int, _Parser] = {
    VENDOR_SPECIFIC: _vendor_specific,
    BINDING_IDENTIFIER: _binding_identifier,
    MOBILE_NETWORK_PREFIX: _mobile_network_prefix,
    ALTERNATE_COA: _alternate_coa,
}


def _overrun(mh_type: int, offset: int, detail: str) -> MobilityHeaderError:
    DECODE_STATS.count_error(Reason.OPTION_OVERRUN)
    return MobilityHeaderError(Reason.OPTION_OVERRUN, offset=offset, mh_type=mh_type, detail=detail)


def decode_options(
    data: Buffer, start: int, end: int, mh_type: int, keep_padding: bool
) -> tuple[MobilityOption, ...]:
    """Parse the options in `data[start:end]`; padding is dropped unless `keep_padding`."""
    options: list[MobilityOption] = []
    append = options.append
    pos = start
    while pos < end:
        otype = data[pos]
        if otype == PAD1:
            if keep_padding:
                append(_PAD1)
            pos += 1
            continue
        if pos + 2 > end:
            raise _overrun(mh_type, pos, f"option type {otype} has no room for its length")
        olen = data[pos + 1]
        first = pos + 2
        after = first + olen
        if after > end:
            detail = f"option type {otype} of {olen} data octets ends at {after}, past {end}"
            raise _overrun(mh_type, pos, detail)
        parser = _PARSERS.get(otype)
        if parser is not None:
            append(parser(data, first, olen, pos, mh_type))
        elif otype == PADN:
            if keep_padding:
                append(PadN(olen))
        else:
            append(UnknownOption(otype, bytes(data[first:after])))
        pos = after
    return tuple(options)
