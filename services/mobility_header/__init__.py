"""The Mobility Header of NEMO registration (RFC 6275, RFC 3963, MCoA RFC 5648): one shared codec.

Binding Updates, Acknowledgements and Errors are read by the mobility-events service (which
watches the signalling) and written and read by the MCoA agent (which plays both ends), so the
wire format lives here, once, and neither service imports the other. Pure and without I/O:
`codec` encodes and decodes messages, `mh_options` the mobility options, `status` names the
status codes, `pipe_option` the project's vendor-specific option naming a binding's pipe
kind (RFC 5094; the MCoA agent writes it, mobility-events reads it), and `errors` holds the
one typed decode error and the counters of why decodes failed (malformed signalling is
expected from the network and never stops a service).
"""

from __future__ import annotations

from services.mobility_header.codec import (
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
from services.mobility_header.errors import (
    DECODE_STATS,
    DecodeStats,
    MobilityHeaderError,
    Reason,
)
from services.mobility_header.mh_options import (
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
