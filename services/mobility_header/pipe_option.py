"""How the two ends of a binding agree on its pipe kind: a vendor-specific mobility option.

Both ends of a pipe must build the same kind, or traffic vanishes into a black hole. So the
mobile router names its kind in every Binding Update, and the home agent builds that kind or
refuses the binding (status 143, forwarding setup failed) with the kinds it offers in the
BA. The carrier is RFC 5094's Vendor-Specific Mobility Option, which every Mobile IPv6 stack
skips when it does not know the vendor and Wireshark decodes as a valid option:

- vendor id 32473, the enterprise number IANA reserves for documentation (RFC 5612), until
  the project has its own;
- sub-type 1 (`SUB_TYPE_KIND`): the kind this binding uses, in ASCII (`vxlan`); in a BU the
  MR's request, in an accepted BA the HA's confirmation;
- sub-type 2 (`SUB_TYPE_OFFERED`): the kinds the HA offers, comma-separated, in a refusal.

A BU without the option comes from a plain NEMO mobile router: the MCoA agent's home agent
gives it IPv6-in-IPv6 (`services.mcoa.pipe_kinds.LEGACY_KIND`), as RFC 3963 prescribes. An
observer (mobility-events) cannot know what a home agent it does not run does with such a BU,
so to it a binding without the option has an unknown kind (`kind_name` None).

The codec lives with the Mobility Header (not in the MCoA agent) because both the agent and
the mobility-events service read it, and neither imports the other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from services.mobility_header.mh_options import MobilityOption, VendorSpecific

VENDOR_ID = 32473
SUB_TYPE_KIND = 1
SUB_TYPE_OFFERED = 2
_MAX_SHOWN = 32


def kind_option(kind: str) -> VendorSpecific:
    """The option naming the pipe kind of a binding."""
    return VendorSpecific(VENDOR_ID, SUB_TYPE_KIND, kind.encode("ascii"))


def offered_option(kinds: Iterable[str]) -> VendorSpecific:
    """The option listing the kinds a home agent offers."""
    return VendorSpecific(VENDOR_ID, SUB_TYPE_OFFERED, ",".join(kinds).encode("ascii"))


def _text(data: bytes) -> str:
    """Option data as text that is safe to log and compare: printable ASCII, bounded."""
    shown = data[:_MAX_SHOWN].decode("ascii", errors="replace")
    return "".join(c if c.isprintable() else "?" for c in shown)


def _ours(options: tuple[MobilityOption, ...], sub_type: int) -> str | None:
    for option in options:
        if (
            isinstance(option, VendorSpecific)
            and option.vendor_id == VENDOR_ID
            and option.sub_type == sub_type
        ):
            return _text(option.data)
    return None


def kind_of(options: tuple[MobilityOption, ...]) -> str | None:
    """The pipe kind a message names, or None when it names none (a plain NEMO peer)."""
    return _ours(options, SUB_TYPE_KIND)


#: A kind's name as the bus carries it (`BindingEvent.pipe`): what `kind_name` accepts.
KIND_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,15}$")


def kind_name(options: tuple[MobilityOption, ...]) -> str | None:
    """The pipe kind a message names, when it is a well-formed kind name (`vxlan`); None when
    it names none or something else (garbled, too long: unknown rather than a guess)."""
    kind = kind_of(options)
    return kind if kind is not None and KIND_NAME.fullmatch(kind) else None


def offered_in(options: tuple[MobilityOption, ...]) -> tuple[str, ...] | None:
    """The kinds a refusing home agent offers, or None when it did not say."""
    text = _ours(options, SUB_TYPE_OFFERED)
    return None if text is None else tuple(k for k in text.split(",") if k)
