"""The pipe-kind option (RFC 5094 vendor-specific) on the wire: what the MCoA agent writes,
the Mobility Header codec decodes and mobility-events reads back as a kind name."""

from __future__ import annotations

import pytest

from services.mobility_header import (
    BindingAcknowledgement,
    BindingIdentifier,
    BindingUpdate,
    VendorSpecific,
    decode,
    encode,
)
from services.mobility_header.pipe_option import (
    SUB_TYPE_KIND,
    VENDOR_ID,
    kind_name,
    kind_of,
    kind_option,
    offered_in,
    offered_option,
)


def _bu(*options: VendorSpecific) -> BindingUpdate:
    return BindingUpdate(
        sequence=7,
        lifetime=15,
        ack=True,
        home_registration=True,
        mobile_router=True,
        options=(BindingIdentifier(bid=2), *options),
    )


@pytest.mark.parametrize("kind", ["vxlan", "ip6tnl", "seg6"])
def test_a_kind_survives_the_wire_in_a_bu_and_a_ba(kind: str) -> None:
    bu = decode(encode(_bu(kind_option(kind))))
    assert isinstance(bu, BindingUpdate)
    assert kind_of(bu.options) == kind_name(bu.options) == kind
    ba = decode(encode(BindingAcknowledgement(0, 7, 15, options=(kind_option(kind),))))
    assert isinstance(ba, BindingAcknowledgement)
    assert kind_name(ba.options) == kind


def test_no_option_another_vendor_or_sub_type_is_no_kind() -> None:
    assert kind_name(_bu().options) is None
    other_vendor = VendorSpecific(VENDOR_ID + 1, SUB_TYPE_KIND, b"vxlan")
    offered = offered_option(["vxlan", "seg6"])
    decoded = decode(encode(_bu(other_vendor, offered)))
    assert kind_name(decoded.options) is None
    assert offered_in(decoded.options) == ("vxlan", "seg6")


@pytest.mark.parametrize(
    "data", [b"VXLAN", b"vx lan", b"vx\nlan", b"\xff\xfe", b"a" * 17, b""], ids=repr
)
def test_a_kind_that_is_no_kind_name_is_unknown_not_guessed(data: bytes) -> None:
    decoded = decode(encode(_bu(VendorSpecific(VENDOR_ID, SUB_TYPE_KIND, data))))
    assert kind_name(decoded.options) is None
