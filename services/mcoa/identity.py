"""How a Binding Update names its mobile router when no Home Address option can be sent.

This kernel has no Mobile IPv6 (docs/kernel.md): a Home Address destination option is dropped by
the receiver, so BUs leave from the care-of address bare. The mobile router therefore names
itself with a Mobile Node Identifier option (RFC 4283, option type 8, subtype 1 = NAI) whose
value is its home address in text form. Lab convention, shared by both ends of this package;
the codec keeps the option as an `UnknownOption`.
"""

from __future__ import annotations

from ipaddress import IPv6Address

from services.mobility_header.mh_options import MobilityOption, UnknownOption

MOBILE_NODE_IDENTIFIER = 8
SUBTYPE_NAI = 1


def identifier_option(home: IPv6Address) -> UnknownOption:
    """The option that carries `home` in a BU."""
    return UnknownOption(MOBILE_NODE_IDENTIFIER, bytes((SUBTYPE_NAI,)) + str(home).encode())


def home_address_of(options: tuple[MobilityOption, ...]) -> IPv6Address | None:
    """The home address a BU names, or None when it names none (or names it badly)."""
    for option in options:
        if not isinstance(option, UnknownOption):
            continue
        if option.option_type != MOBILE_NODE_IDENTIFIER or option.data[:1] != b"\x01":
            continue
        try:
            return IPv6Address(option.data[1:].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None
    return None
