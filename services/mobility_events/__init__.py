"""The mobility-events service: turns BU/BA signalling into binding events.

A NEMO mobile router registers each of its care-of addresses with the home agent in Binding
Updates, one Binding Identifier (BID) per address (MCoA, RFC 5648), and the home agent answers
with Binding Acknowledgements. This service watches that signalling and publishes what changed
(a BID bound, refreshed, moved to a new care-of address, or deregistered), so the decision and
enforcement services never parse packets themselves. `codec` holds the wire format, pure and
without I/O; malformed signalling is refused with one typed error and counted.
"""

from __future__ import annotations

from services.mobility_events.codec import (
    BindingAcknowledgement,
    BindingError,
    BindingUpdate,
    Message,
    checksum,
    decode,
    encode,
    lifetime_units,
    verify_checksum,
)
from services.mobility_events.errors import (
    DECODE_STATS,
    DecodeStats,
    MobilityHeaderError,
    Reason,
)
from services.mobility_events.mh_options import (
    AlternateCareOfAddress,
    BindingIdentifier,
    MobileNetworkPrefix,
    MobilityOption,
    Pad1,
    PadN,
    UnknownOption,
    VendorSpecific,
)

__all__ = [
    "DECODE_STATS",
    "AlternateCareOfAddress",
    "BindingAcknowledgement",
    "BindingError",
    "BindingIdentifier",
    "BindingUpdate",
    "DecodeStats",
    "Message",
    "MobileNetworkPrefix",
    "MobilityHeaderError",
    "MobilityOption",
    "Pad1",
    "PadN",
    "Reason",
    "UnknownOption",
    "VendorSpecific",
    "checksum",
    "decode",
    "encode",
    "lifetime_units",
    "verify_checksum",
]
