"""Encode and decode the Mobility Header messages of NEMO registration: BU, BA and BE.

Wire format (RFC 6275 6.1.1): payload proto (59, "no next header"), header length in 8-octet
units not counting the first 8, MH type, reserved, checksum, then the message data and its
options; the whole header is a multiple of 8 octets. Binding Update (6.1.7) and Binding
Acknowledgement (6.1.8) carry the NEMO R flag of RFC 3963 4.1/4.2; MCoA (RFC 5648) adds only
an option. Other flag bits are kept as received, so re-encoding a decoded message is lossless.

Pure functions, no I/O: the receive loop passes bytes in and gets messages or one typed
error out. `decode` is on the per-packet path, so it reads with precompiled structs and avoids
copies; it counts every outcome in `DECODE_STATS`.

The checksum covers an IPv6 pseudo-header (RFC 6275 6.1.1, RFC 2460 8.1). When the packet
carries a Home Address option the pseudo-header source is the home address, which only the
caller knows, so addresses are arguments. Raw sockets on Linux fill in the checksum when it is
sent as zero (see docs/kernel.md), which is what `encode` does without addresses.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv6Address

from services.mobility_header.errors import DECODE_STATS, MobilityHeaderError, Reason
from services.mobility_header.mh_options import (
    BindingIdentifier,
    MobileNetworkPrefix,
    MobilityOption,
    decode_options,
    encode_options,
    options_of,
)
from services.mobility_header.status import ba_status_name, be_status_name, is_accepted

IPPROTO_MH = 135
IPPROTO_NONE = 59

MH_BINDING_UPDATE = 5
MH_BINDING_ACK = 6
MH_BINDING_ERROR = 7

#: Lifetime fields count units of 4 seconds (RFC 6275 6.1.7).
LIFETIME_UNIT_SECONDS = 4
MAX_LIFETIME_UNITS = 0xFFFF

# Binding Update flag word (16 bits after the sequence number).
BU_FLAG_A = 0x8000  # acknowledge requested
BU_FLAG_H = 0x4000  # home registration
BU_FLAG_L = 0x2000  # link-local address compatibility
BU_FLAG_K = 0x1000  # key management mobility capability
BU_FLAG_R = 0x0400  # mobile router (RFC 3963 4.1)
_BU_NAMED = BU_FLAG_A | BU_FLAG_H | BU_FLAG_L | BU_FLAG_K | BU_FLAG_R

# Binding Acknowledgement flag octet (after the status).
BA_FLAG_K = 0x80  # key management mobility capability
BA_FLAG_R = 0x40  # mobile router (RFC 3963 4.2)
_BA_NAMED = BA_FLAG_K | BA_FLAG_R

_HEADER = struct.Struct("!BBBBH")
_BU_FIXED = struct.Struct("!HHH")  # sequence, flags, lifetime
_BA_FIXED = struct.Struct("!BBHH")  # status, flags, sequence, lifetime
_BE_FIXED = struct.Struct("!BB16s")  # status, reserved, home address
_PSEUDO_TAIL = struct.Struct("!I3xB")  # upper-layer length, zeros, next header
_OPTIONS_AT = {MH_BINDING_UPDATE: 12, MH_BINDING_ACK: 12, MH_BINDING_ERROR: 24}
_MAX_MH_OCTETS = (0xFF + 1) * 8


def lifetime_units(seconds: int) -> int:
    """Seconds as a lifetime field value, rounded down so a binding never outlives its grant."""
    if seconds < 0:
        raise ValueError(f"lifetime must not be negative, got {seconds} s")
    return min(seconds // LIFETIME_UNIT_SECONDS, MAX_LIFETIME_UNITS)


@dataclass(frozen=True, slots=True)
class BindingUpdate:
    """A Binding Update (MH type 5) from a mobile router to its home agent.

    `lifetime` is in 4-second units as on the wire; `lifetime_seconds` converts. Flags the
    codec does not name stay in `other_flags` (the 16-bit word minus A, H, L, K and R).
    """

    sequence: int
    lifetime: int
    ack: bool = False
    home_registration: bool = False
    link_local: bool = False
    key_management: bool = False
    mobile_router: bool = False
    other_flags: int = 0
    options: tuple[MobilityOption, ...] = ()
    payload_proto: int = IPPROTO_NONE

    @property
    def lifetime_seconds(self) -> int:
        return self.lifetime * LIFETIME_UNIT_SECONDS

    @property
    def binding_ids(self) -> tuple[BindingIdentifier, ...]:
        return options_of(self.options, BindingIdentifier)

    @property
    def prefixes(self) -> tuple[MobileNetworkPrefix, ...]:
        return options_of(self.options, MobileNetworkPrefix)

    def _data(self) -> bytes:
        _check("sequence", self.sequence, 0xFFFF)
        _check("lifetime", self.lifetime, MAX_LIFETIME_UNITS)
        _check("other_flags", self.other_flags, 0xFFFF)
        if self.other_flags & _BU_NAMED:
            raise ValueError("other_flags must not carry the A, H, L, K or R bits")
        flags = (
            (BU_FLAG_A if self.ack else 0)
            | (BU_FLAG_H if self.home_registration else 0)
            | (BU_FLAG_L if self.link_local else 0)
            | (BU_FLAG_K if self.key_management else 0)
            | (BU_FLAG_R if self.mobile_router else 0)
            | self.other_flags
        )
        return _BU_FIXED.pack(self.sequence, flags, self.lifetime)


@dataclass(frozen=True, slots=True)
class BindingAcknowledgement:
    """A Binding Acknowledgement (MH type 6): the home agent's answer to a BU."""

    status: int
    sequence: int
    lifetime: int
    key_management: bool = False
    mobile_router: bool = False
    other_flags: int = 0
    options: tuple[MobilityOption, ...] = ()
    payload_proto: int = IPPROTO_NONE

    @property
    def lifetime_seconds(self) -> int:
        return self.lifetime * LIFETIME_UNIT_SECONDS

    @property
    def accepted(self) -> bool:
        return is_accepted(self.status)

    @property
    def status_name(self) -> str:
        return ba_status_name(self.status)

    @property
    def binding_ids(self) -> tuple[BindingIdentifier, ...]:
        return options_of(self.options, BindingIdentifier)

    def _data(self) -> bytes:
        _check("status", self.status, 0xFF)
        _check("sequence", self.sequence, 0xFFFF)
        _check("lifetime", self.lifetime, MAX_LIFETIME_UNITS)
        _check("other_flags", self.other_flags, 0xFF)
        if self.other_flags & _BA_NAMED:
            raise ValueError("other_flags must not carry the K or R bits")
        flags = (
            (BA_FLAG_K if self.key_management else 0)
            | (BA_FLAG_R if self.mobile_router else 0)
            | self.other_flags
        )
        return _BA_FIXED.pack(self.status, flags, self.sequence, self.lifetime)


@dataclass(frozen=True, slots=True)
class BindingError:
    """A Binding Error (MH type 7): a node could not process a Mobility Header we sent."""

    status: int
    home_address: IPv6Address
    options: tuple[MobilityOption, ...] = ()
    payload_proto: int = IPPROTO_NONE

    @property
    def status_name(self) -> str:
        return be_status_name(self.status)

    def _data(self) -> bytes:
        _check("status", self.status, 0xFF)
        return _BE_FIXED.pack(self.status, 0, self.home_address.packed)


Message = BindingUpdate | BindingAcknowledgement | BindingError

_MH_TYPES: dict[type[Message], int] = {
    BindingUpdate: MH_BINDING_UPDATE,
    BindingAcknowledgement: MH_BINDING_ACK,
    BindingError: MH_BINDING_ERROR,
}


def _check(what: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise ValueError(f"{what} must be in 0..{maximum}, got {value}")


# --- Checksum ------------------------------------------------------------------------------

Address = IPv6Address | str | bytes


def _packed(address: Address) -> bytes:
    if isinstance(address, IPv6Address):
        return address.packed
    if isinstance(address, bytes):
        if len(address) != 16:
            raise ValueError(f"an IPv6 address is 16 octets, got {len(address)}")
        return address
    return IPv6Address(address).packed


def _ones_complement_sum(data: bytes) -> int:
    """The 16-bit one's complement sum of `data` (odd lengths padded with a zero octet).

    2**16 is 1 modulo 0xFFFF, so the sum of the 16-bit words and the whole buffer read as one
    big integer leave the same remainder: one C-level conversion replaces a Python loop. A
    non-zero sum whose remainder is 0 is 0xFFFF in one's complement (the pseudo-header always
    makes the sum non-zero).
    """
    if len(data) % 2:
        data += b"\x00"
    remainder = int.from_bytes(data, "big") % 0xFFFF
    return remainder or 0xFFFF


def _pseudo_header(src: Address, dst: Address, length: int) -> bytes:
    return _packed(src) + _packed(dst) + _PSEUDO_TAIL.pack(length, IPPROTO_MH)


def checksum(src: Address, dst: Address, mh: bytes | bytearray | memoryview) -> int:
    """The checksum field value for `mh` sent from `src` to `dst`.

    The checksum field already in `mh` is treated as zero, so this also gives the value a
    received header should carry. Pass the home address as `src` when the packet carries a
    Home Address option (RFC 6275 6.1.1).
    """
    raw = bytes(mh)
    if len(raw) >= 6:
        raw = raw[:4] + b"\x00\x00" + raw[6:]
    total = _ones_complement_sum(_pseudo_header(src, dst, len(raw)) + raw)
    return ~total & 0xFFFF


def verify_checksum(src: Address, dst: Address, mh: bytes | bytearray | memoryview) -> bool:
    """True when the checksum in `mh` is right for a packet from `src` to `dst`."""
    raw = bytes(mh)
    return _ones_complement_sum(_pseudo_header(src, dst, len(raw)) + raw) == 0xFFFF


# --- Encoding ------------------------------------------------------------------------------


def encode(message: Message, *, src: Address | None = None, dst: Address | None = None) -> bytes:
    """The Mobility Header for `message`, padded to 8 octets, options aligned.

    With `src` and `dst` the checksum is filled in; without them it is zero, for a raw socket
    whose kernel computes it. Out-of-range fields raise `ValueError`: messages are built by
    our own code, so that is a bug, not input to count.
    """
    if (src is None) != (dst is None):
        raise ValueError("give both src and dst for a checksum, or neither for a zero one")
    mh_type = _MH_TYPES[type(message)]
    _check("payload_proto", message.payload_proto, 0xFF)
    data = message._data()
    options_at = 6 + len(data)
    body = data + encode_options(message.options, options_at)
    total = 6 + len(body)
    if total > _MAX_MH_OCTETS:
        raise ValueError(f"message of {total} octets exceeds the {_MAX_MH_OCTETS} an MH can hold")
    header = _HEADER.pack(message.payload_proto, total // 8 - 1, mh_type, 0, 0)
    mh = header + body
    if src is None or dst is None:
        return mh
    value = checksum(src, dst, mh)
    return mh[:4] + value.to_bytes(2, "big") + mh[6:]


# --- Decoding ------------------------------------------------------------------------------


def _fail(reason: Reason, offset: int, mh_type: int | None, detail: str) -> MobilityHeaderError:
    DECODE_STATS.count_error(reason)
    return MobilityHeaderError(reason, offset=offset, mh_type=mh_type, detail=detail)


def decode(data: bytes | bytearray | memoryview, *, keep_padding: bool = False) -> Message:
    """Decode one Mobility Header (exactly the bytes of the header, as a raw socket gives).

    Any input that is not a well-formed BU, BA or BE raises `MobilityHeaderError` and nothing
    else. The checksum is not checked here (the kernel checks it on raw sockets; use
    `verify_checksum` with the packet's addresses otherwise). Padding options are dropped
    unless `keep_padding`.
    """
    size = len(data)
    if size < 8:
        raise _fail(Reason.TRUNCATED, size, None, f"{size} octets, a Mobility Header has >= 8")
    proto, hlen, mh_type = data[0], data[1], data[2]
    declared = (hlen + 1) * 8
    if declared > size:
        detail = f"header length {hlen} promises {declared} octets, got {size}"
        raise _fail(Reason.TRUNCATED, size, mh_type, detail)
    if size % 8:
        raise _fail(Reason.NOT_MULTIPLE_OF_8, size, mh_type, f"{size} octets")
    if declared != size:
        detail = f"header length {hlen} says {declared} octets, got {size}"
        raise _fail(Reason.LENGTH_MISMATCH, declared, mh_type, detail)
    options_at = _OPTIONS_AT.get(mh_type)
    if options_at is None:
        detail = "only Binding Update (5), Acknowledgement (6) and Error (7) are handled"
        raise _fail(Reason.UNSUPPORTED_TYPE, 2, mh_type, detail)
    if options_at > size:
        detail = f"{size} octets, the fixed part of this type needs {options_at}"
        raise _fail(Reason.MESSAGE_TOO_SHORT, size, mh_type, detail)
    options = decode_options(data, options_at, size, mh_type, keep_padding)
    message: Message
    if mh_type == MH_BINDING_UPDATE:
        sequence, flags, lifetime = _BU_FIXED.unpack_from(data, 6)
        message = BindingUpdate(
            sequence,
            lifetime,
            bool(flags & BU_FLAG_A),
            bool(flags & BU_FLAG_H),
            bool(flags & BU_FLAG_L),
            bool(flags & BU_FLAG_K),
            bool(flags & BU_FLAG_R),
            flags & ~_BU_NAMED,
            options,
            proto,
        )
    elif mh_type == MH_BINDING_ACK:
        status, flags, sequence, lifetime = _BA_FIXED.unpack_from(data, 6)
        message = BindingAcknowledgement(
            status,
            sequence,
            lifetime,
            bool(flags & BA_FLAG_K),
            bool(flags & BA_FLAG_R),
            flags & ~_BA_NAMED,
            options,
            proto,
        )
    else:
        status, _reserved, home = _BE_FIXED.unpack_from(data, 6)
        message = BindingError(status, IPv6Address(home), options, proto)
    DECODE_STATS.count_decoded()
    return message
