"""Names for the status codes carried by Binding Acknowledgements and Binding Errors.

Status codes reach logs and bus events, where a number alone makes an operator look up an RFC.
The names follow the RFC (or, for MCoA, the IANA registry entry the RFC created) word for word,
so they can be searched for. Codes below 128 mean the Binding Update was accepted (RFC 6275
6.1.8); the same codes are reused by the status field of the Binding Identifier option
(RFC 5648 6.1), where 0 means "use the status of the acknowledgement".
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from types import MappingProxyType


class BaStatus(IntEnum):
    """Binding Acknowledgement status codes this project can meet (RFC 6275, 3963, 5648)."""

    # RFC 6275 6.1.8
    ACCEPTED = 0
    ACCEPTED_PREFIX_DISCOVERY_NECESSARY = 1
    # RFC 5648 6.2, 12 (success codes: registered, with a caveat)
    MCOA_NOTCOMPLETE = 4
    MCOA_RETURNHOME_WO_NDP = 5
    # RFC 6275 6.1.8 (rejections)
    REASON_UNSPECIFIED = 128
    ADMINISTRATIVELY_PROHIBITED = 129
    INSUFFICIENT_RESOURCES = 130
    HOME_REGISTRATION_NOT_SUPPORTED = 131
    NOT_HOME_SUBNET = 132
    NOT_HOME_AGENT_FOR_THIS_MOBILE_NODE = 133
    DUPLICATE_ADDRESS_DETECTION_FAILED = 134
    SEQUENCE_NUMBER_OUT_OF_WINDOW = 135
    EXPIRED_HOME_NONCE_INDEX = 136
    EXPIRED_CARE_OF_NONCE_INDEX = 137
    EXPIRED_NONCES = 138
    REGISTRATION_TYPE_CHANGE_DISALLOWED = 139
    # RFC 3963 (NEMO) 4.2
    MOBILE_ROUTER_OPERATION_NOT_PERMITTED = 140
    INVALID_PREFIX = 141
    NOT_AUTHORIZED_FOR_PREFIX = 142
    FORWARDING_SETUP_FAILED = 143
    # RFC 5648 (MCoA) 6.2, 12
    MCOA_MALFORMED = 164
    MCOA_NON_MCOA_BINDING_EXISTS = 165
    MCOA_PROHIBITED = 166
    MCOA_UNKNOWN_COA = 167
    MCOA_BULK_REGISTRATION_PROHIBITED = 168
    MCOA_SIMULTANEOUS_HOME_AND_FOREIGN_PROHIBITED = 169


_BA_NAMES: dict[int, str] = {
    0: "Binding Update accepted",
    1: "Accepted but prefix discovery necessary",
    4: "MCOA NOTCOMPLETE",
    5: "MCOA RETURNHOME WO/NDP",
    128: "Reason unspecified",
    129: "Administratively prohibited",
    130: "Insufficient resources",
    131: "Home registration not supported",
    132: "Not home subnet",
    133: "Not home agent for this mobile node",
    134: "Duplicate Address Detection failed",
    135: "Sequence number out of window",
    136: "Expired home nonce index",
    137: "Expired care-of nonce index",
    138: "Expired nonces",
    139: "Registration type change disallowed",
    140: "Mobile Router Operation not permitted",
    141: "Invalid Prefix",
    142: "Not Authorized for Prefix",
    143: "Forwarding Setup failed (prefixes missing)",
    164: "MCOA MALFORMED",
    165: "MCOA NON-MCOA BINDING EXISTS",
    166: "MCOA PROHIBITED",
    167: "MCOA UNKNOWN COA",
    168: "MCOA BULK REGISTRATION PROHIBITED",
    169: "MCOA SIMULTANEOUS HOME AND FOREIGN PROHIBITED",
}

#: Binding Acknowledgement status code -> name as the defining RFC spells it.
BA_STATUS_NAMES: Mapping[int, str] = MappingProxyType(_BA_NAMES)


class BeStatus(IntEnum):
    """Binding Error status codes (RFC 6275 6.1.9)."""

    UNKNOWN_BINDING_FOR_HOME_ADDRESS_OPTION = 1
    UNRECOGNIZED_MH_TYPE = 2


#: Binding Error status code -> name as RFC 6275 6.1.9 spells it.
BE_STATUS_NAMES: Mapping[int, str] = MappingProxyType(
    {
        1: "Unknown binding for Home Address destination option",
        2: "Unrecognized MH Type value",
    }
)


def is_accepted(status: int) -> bool:
    """True when a BA status says the binding was registered (RFC 6275: values below 128)."""
    return status < 128


def ba_status_name(status: int) -> str:
    """The RFC name of a BA status, or a neutral label naming the number for unknown codes."""
    name = _BA_NAMES.get(status)
    if name is not None:
        return name
    kind = "accepted" if is_accepted(status) else "rejected"
    return f"unknown status {status} ({kind})"


def be_status_name(status: int) -> str:
    """The RFC name of a Binding Error status, or a label naming the number."""
    return BE_STATUS_NAMES.get(status, f"unknown binding error status {status}")
