"""Property tests: every valid message survives a round trip, and no input escapes the error set.

The strategies build messages through the pydantic models, so they respect the same cross-field
rules the parser enforces; anything the models accept must render and parse back equal.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from services.contracts.errors import PolicyDocumentError
from services.contracts.policy import (
    PORT_PROTOCOLS,
    AddressMatch,
    AddressRange,
    Direction,
    IPAddress,
    Policy,
    PolicyMessage,
    PortRange,
    Selector,
)
from services.contracts.policy_xml import NAMESPACE, parse, render, validate_xsd
from tests import policy_strategies

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

policy_ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)
node_ids = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)
bids = st.integers(1, 65535)

Version = Literal[4, 6]


def addresses(version: Version) -> st.SearchStrategy[IPAddress]:
    return st.ip_addresses(v=version)


def networks(version: Version) -> st.SearchStrategy[AddressMatch]:
    bits = 32 if version == 4 else 128
    return st.builds(
        lambda address, length: ipaddress.ip_network((address, length), strict=False),
        addresses(version),
        st.integers(0, bits),
    )


def ranges(version: Version) -> st.SearchStrategy[AddressMatch]:
    return st.lists(addresses(version), min_size=2, max_size=2).map(
        lambda ends: AddressRange(first=min(ends), last=max(ends))
    )


def address_matches(version: Version) -> st.SearchStrategy[AddressMatch | None]:
    return st.none() | networks(version) | ranges(version)


port_ranges = st.lists(st.integers(0, 65535), min_size=2, max_size=2).map(
    lambda ends: PortRange(first=min(ends), last=max(ends))
)


@st.composite
def selectors(draw: st.DrawFn) -> Selector:
    version: Version = draw(st.sampled_from([4, 6]))
    src = draw(address_matches(version))
    dst = draw(address_matches(version))
    next_header = draw(st.none() | st.sampled_from(sorted(PORT_PROTOCOLS)) | st.integers(0, 255))
    with_ports = next_header in PORT_PROTOCOLS
    ipv4 = version == 4 and (src is not None or dst is not None)
    return Selector(
        src_addr=src,
        dst_addr=dst,
        src_port=draw(st.none() | port_ranges) if with_ports else None,
        dst_port=draw(st.none() | port_ranges) if with_ports else None,
        next_header=next_header,
        dscp=draw(st.none() | st.integers(0, 63)),
        flow_label=None if ipv4 else draw(st.none() | st.integers(0, 0xFFFFF)),
    )


forwards = policy_strategies.forwards(bids)


def policies(policy_id: str) -> st.SearchStrategy[Policy]:
    return st.builds(
        Policy,
        id=st.just(policy_id),
        priority=st.integers(0, 65535),
        selector=st.just(Selector()) | selectors(),
        action=policy_strategies.actions(bids),
    )


operations = policy_strategies.operations(st.lists(policy_ids, max_size=6, unique=True), policies)


@st.composite
def messages(draw: st.DrawFn) -> PolicyMessage:
    direction = draw(st.sampled_from(Direction))
    return PolicyMessage(
        node=draw(node_ids),
        mobile_router=draw(node_ids),
        direction=direction,
        version=draw(st.integers(1, 2**63 - 1)),
        operation=draw(operations),
        symmetric=direction is Direction.DOWNLINK and draw(st.booleans()),
    )


@SETTINGS
@given(messages())
def test_round_trip(message: PolicyMessage) -> None:
    rendered = render(message)
    validate_xsd(rendered)
    assert parse(rendered) == message
    assert render(parse(rendered)) == rendered


# --- Fuzzing: only PolicyDocumentError may escape ---------------------------------------------


def parse_or_refuse(data: bytes) -> None:
    try:
        message = parse(data)
    except PolicyDocumentError as error:
        problems = error.problems
    else:
        assert parse(render(message)) == message
        return
    assert problems
    assert all(p.reason for p in problems)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes(data: bytes) -> None:
    parse_or_refuse(data)


# Tokens that reach deeper than random bytes: markup, vocabulary, numbers at the edges.
TOKENS = [
    b"<",
    b">",
    b"/",
    b'"',
    b"=",
    b"&",
    b";",
    b" ",
    b"\n",
    b"<!DOCTYPE x>",
    b"<?pi?>",
    b"<!-- c -->",
    b"<![CDATA[x]]>",
    b"&amp;",
    b"&#0;",
    b"&#x41;",
    b"&lt;",
    b"\xc3\xa9",
    b"\xff",
    b"<drop/>",
    b"<flush/>",
    b'<fallback bid="1"/>',
    b'<share bid="1" weight="1000"/>',
    b'<path bid="2"/>',
    b"<balance>",
    b"</duplicate>",
    b"flow-policy:2",
    b'<delete id="a"/>',
    b"<selector/>",
    b'<source-port first="1" last="0"/>',
    b"<next-header>6</next-header>",
    b"<dscp>63</dscp>",
    b"<source><prefix>10.0.0.0/8</prefix></source>",
    b"<flow-label>1</flow-label>",
    b"0",
    b"-1",
    b"65536",
    b"99999999999999999999",
    b"::",
    b"1.2.3.4",
    b"/129",
    b'xmlns:x="urn:x"',
    b'x:a="1"',
    b"policy",
    b"install",
    b"update",
]


@st.composite
def mutated_documents(draw: st.DrawFn) -> bytes:
    data = bytearray(render(draw(messages())))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        end = draw(st.integers(at, min(len(data), at + 16)))
        how = draw(st.sampled_from(["delete", "insert", "replace", "duplicate"]))
        if how == "delete":
            del data[at:end]
        elif how == "duplicate":
            data[at:at] = data[at:end]
        else:
            token = draw(st.sampled_from(TOKENS) | st.binary(min_size=1, max_size=4))
            data[at : end if how == "replace" else at] = token
    return bytes(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_documents())
def test_mutated_documents(data: bytes) -> None:
    parse_or_refuse(data)


VALUES = [
    "",
    " ",
    "0",
    "1",
    "-1",
    "6",
    "63",
    "64",
    "65535",
    "65536",
    "1048576",
    "2" * 30,
    "web",
    "a b",
    "10.0.0.0/8",
    "10.0.0.1/8",
    "::/0",
    "1.2.3.4",
    "1.2.3.999",
    "::1",
    "fe80::1%eth0",
    "\u00e9",
    "uplink",
]

# Values the schema accepts for that attribute, so the model checks behind it get exercised.
ENDS = ["0", "80", "65535", "10.0.0.9", "10.0.0.1", "::1", "2001:db8::", "1.2.3.999"]
PLAUSIBLE = {
    "first": ENDS,
    "last": ENDS,
    "bid": ["1", "2", "3"],
    "id": ["web", "a"],
    "text": ["1", "6", "17", "63", "5", "10.0.0.1/8", "10.0.0.0/8", "::/0", "2001:db8::/32"],
}


@st.composite
def documents_with_edited_values(draw: st.DrawFn) -> bytes:
    """Valid structure, wrong values: exercises the schema and model checks, not the parser."""
    root = etree.fromstring(render(draw(messages())))
    # Editable values, listed before editing: an edit may empty a text.
    slots = [
        (element, name)
        for element in root.iterdescendants(f"{{{NAMESPACE}}}*")
        for name in [*element.attrib.keys(), *(["text"] if (element.text or "").strip() else [])]
    ] or [(root, name) for name in root.attrib]
    for _ in range(draw(st.integers(1, 3))):
        element, name = draw(st.sampled_from(slots))
        value = draw(st.sampled_from(PLAUSIBLE.get(name, VALUES)) | st.sampled_from(VALUES))
        if name == "text":
            element.text = value
        else:
            element.set(name, value)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents_with_edited_values())
def test_edited_values(data: bytes) -> None:
    parse_or_refuse(data)
