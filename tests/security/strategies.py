"""Generated hostile inputs for every way into the services: policy documents, the JSON of each
bus input, Mobility Header packets and conversations.

Inputs start from valid ones and are damaged the way a buggy or hostile peer does (a value
replaced by anything, a field dropped or added, bytes cut or spliced, markup injected), which
reaches far deeper into the handling code than uniformly random bytes; random bytes are drawn
as well.
"""

from __future__ import annotations

import json
import re
from ipaddress import IPv6Address
from typing import Any

from hypothesis import strategies as st

from services.contracts import policy_xml
from services.contracts.messages import (
    BindingEvent,
    BindingEventKind,
    FallbackState,
    LinkMetrics,
    LinkState,
    NodeMetrics,
    PolicyStatus,
    Presence,
    Refusal,
)
from services.contracts.policy import (
    Direction,
    Drop,
    Forward,
    Policy,
    PolicyMessage,
    Selector,
)
from services.mobility_header.codec import BindingAcknowledgement, BindingUpdate, Message, encode
from services.mobility_header.mh_options import (
    AlternateCareOfAddress,
    BindingIdentifier,
    MobileNetworkPrefix,
)
from tests import policy_strategies
from tests.contracts.test_policy_xml_properties import TOKENS, selectors
from tests.mobility_header.test_codec_properties import damaged
from tests.mobility_header.test_codec_properties import messages as mh_messages

# --- policy documents ----------------------------------------------------------------------

#: The version every generated document carries; `with_version` swaps in the one wanted.
PLACEHOLDER = 7_777_777_777


def with_version(document: bytes, version: int) -> bytes:
    """`document` with its placeholder version replaced (damaged ones may have lost it)."""
    return document.replace(str(PLACEHOLDER).encode(), str(version).encode())


#: Few ids, so that updates meet installed policies and ids collide (cheap to draw, too).
_ids = st.sampled_from(["video", "voice", "web", "a", "b.1", "x:y"])
#: The test node declares BIDs 1 to 3; 9 is not declared.
_policy_bids = st.sampled_from([1, 2, 3, 9])
_forwards = st.lists(_policy_bids, min_size=1, max_size=3, unique=True).map(
    lambda chain: Forward(bid=chain[0], fallbacks=tuple(chain[1:]))
)


def policies(policy_id: str) -> st.SearchStrategy[Policy]:
    """One policy with this id: any selector, drop, forward, balance or duplicate."""
    return st.builds(
        Policy,
        id=st.just(policy_id),
        priority=st.sampled_from([0, 1, 10, 65535]),
        selector=st.just(Selector()) | selectors(),
        action=st.just(Drop())
        | _forwards
        | policy_strategies.balances(_policy_bids)
        | policy_strategies.duplicates(_policy_bids),
    )


#: An Install (drawn twice as often), Update or Flush over a few ids, BIDs the node may or may
#: not declare.
operations = policy_strategies.operations(
    st.lists(_ids, max_size=4, unique=True),
    policies,
    kinds=("install", "install", "update", "flush"),
)


@st.composite
def node_messages(draw: st.DrawFn) -> PolicyMessage:
    """Messages for the test node (ha1, mr1, downlink), so that the node's own checks run."""
    return PolicyMessage(
        node="ha1",
        mobile_router="mr1",
        direction=Direction.DOWNLINK,
        version=PLACEHOLDER,
        operation=draw(operations),
    )


#: Markup, encodings and values that reach the guards: DTDs, entities, BOMs, NULs, numbers
#: at the edges, characters XML forbids.
HOSTILE = [
    *TOKENS,
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\xfe\xff",
    b"\x00",
    b"\x00<\x00",
    b'<?xml version="1.0" encoding="UTF-16"?>',
    b'encoding="latin1"',
    b'<!ENTITY e "x">',
    b"&e;",
    b'<!DOCTYPE m SYSTEM "file:///etc/passwd">',
    b'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="/etc/passwd"/>',
    b"&#1;",
    b"&#xFFFE;",
    b"\x1b[31m",
    b"\r\n",
    b"\t",
    "\u202e".encode(),
    "\U0001f600".encode(),
    b"\xed\xa0\x80",
    b"18446744073709551616",
    b"9223372036854775808",
    b"1e400",
    b"NaN",
]

#: Text an attribute or element value may be replaced by: anything, control characters too.
any_text = st.text(max_size=80) | st.sampled_from(["", " ", "a;b", 'a"b', "x" * 65, "\u00e9"])


def _escape(text: str) -> str:
    """As a document writer would put `text` in an attribute: XML escapes, and a character
    reference for every character that is not plain ASCII (control characters included, so
    the result may be a document XML itself forbids)."""
    out = []
    for char in text:
        if char in '&<>"':
            out.append({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[char])
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.append(f"&#{ord(char)};")
    return "".join(out)


_ATTRIBUTE_VALUE = re.compile(rb'="[^"]*"')
_TEXT_VALUE = re.compile(rb">([^<]+)<")


@st.composite
def edited_documents(draw: st.DrawFn) -> bytes:
    """A valid document with attribute values or texts replaced by any text."""
    data = policy_xml.render(draw(node_messages()))
    slots = [*_ATTRIBUTE_VALUE.finditer(data), *_TEXT_VALUE.finditer(data)]
    if not slots:
        return data
    chosen = draw(
        st.lists(st.sampled_from(slots), min_size=1, max_size=3, unique_by=lambda m: m.start())
    )
    for match in sorted(chosen, key=lambda m: m.start(), reverse=True):
        value = _escape(draw(any_text)).encode()
        if match.group(0).startswith(b"="):
            replacement = b'="' + value + b'"'
        else:
            replacement = b">" + value + b"<"
        data = data[: match.start()] + replacement + data[match.end() :]
    return data


@st.composite
def spliced_documents(draw: st.DrawFn) -> bytes:
    """A valid document with byte ranges cut, duplicated or replaced by hostile markup."""
    data = bytearray(policy_xml.render(draw(node_messages())))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        end = draw(st.integers(at, min(len(data), at + 24)))
        how = draw(st.sampled_from(["delete", "insert", "replace", "duplicate"]))
        if how == "delete":
            del data[at:end]
        elif how == "duplicate":
            data[at:at] = data[at:end]
        else:
            token = draw(st.sampled_from(HOSTILE) | st.binary(min_size=1, max_size=6))
            data[at : end if how == "replace" else at] = token
    return bytes(data)


def documents() -> st.SearchStrategy[bytes]:
    """Every kind of generated policy document, valid ones included."""
    return st.one_of(
        node_messages().map(policy_xml.render),
        edited_documents(),
        spliced_documents(),
        st.binary(max_size=300),
    )


# --- JSON payloads of the bus inputs -------------------------------------------------------

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)


def _sample_inputs(
    sender: str, node: str, mobile_router: str, timestamp: float
) -> dict[str, dict[str, Any]]:
    """One valid message of each JSON input kind, as plain JSON objects."""
    status = PolicyStatus(
        sender=node,
        timestamp=timestamp,
        node=node,
        mobile_router=mobile_router,
        direction=Direction.DOWNLINK,
        result="refused",
        version=3,
        requested_version=4,
        refusals=(Refusal(reason="stale", policy_id="a", field="version", line=1),),
        fallbacks=(FallbackState(policy_id="a", primary_bid=1, active_bid=2),),
    )
    link = LinkMetrics(
        sender=sender,
        timestamp=timestamp,
        interface="if1",
        bid=1,
        technology="wlan",
        rtt_ms=20,
        loss=0.0,
    )
    second = link.model_copy(update={"interface": "if2", "bid": 2, "technology": "lte"})
    return {
        "metrics": link.model_dump(mode="json"),
        "node-metrics": NodeMetrics(
            sender=sender, timestamp=timestamp, links=(link, second)
        ).model_dump(mode="json"),
        "link-state": LinkState(
            sender=sender, timestamp=timestamp, interface="if1", bid=1, up=True, carrier=True
        ).model_dump(mode="json"),
        "binding-event": BindingEvent(
            sender="ha1",
            timestamp=timestamp,
            event=BindingEventKind.REGISTERED,
            mobile_router=mobile_router,
            bid=1,
            care_of_address="2001:db8::10",
        ).model_dump(mode="json"),
        "status": status.model_dump(mode="json"),
        "presence": Presence(
            sender=node, timestamp=timestamp, node=node, service="prem", online=True, version=3
        ).model_dump(mode="json"),
        "preferences": {
            "sender": "operator",
            "mobile_router": mobile_router,
            "entries": [{"default": {"cost": 1, "delay": 1, "bandwidth": 0, "security": 0}}],
        },
        "operator-rules": {"sender": "operator", "rules": {}},
    }


@st.composite
def damaged_json(draw: st.DrawFn, sample: dict[str, Any]) -> bytes:
    """`sample` with fields replaced, dropped or added, or something else entirely."""
    how = draw(st.sampled_from(["fields", "fields", "fields", "any-json", "bytes", "literal"]))
    if how == "bytes":
        return draw(st.binary(max_size=200))
    if how == "any-json":
        return json.dumps(draw(json_values)).encode()
    if how == "literal":
        text = json.dumps(sample)
        key = draw(st.sampled_from(sorted(sample)))
        literal = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "null", "[]"]))
        return re.sub(
            rf'("{key}": )[^,}}]+', lambda m: m.group(1) + literal, text, count=1
        ).encode()
    data = dict(sample)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        key = draw(st.sampled_from(sorted(sample)))
        if action == "replace":
            data[key] = draw(json_values)
        elif action == "drop":
            data.pop(key, None)
        else:
            data[draw(any_text)] = draw(json_values)
    return json.dumps(data).encode()


def bus_payloads(
    kind: str,
    *,
    sender: str = "mr1-prem",
    node: str = "ha1",
    mobile_router: str = "mr1",
    timestamp: float = 1000.0,
) -> st.SearchStrategy[bytes]:
    """Payloads for one input kind: damaged versions of a valid one, and the valid one.

    `timestamp` is the valid message's send time (the NSA refuses reports from the future).
    """
    sample = _sample_inputs(sender, node, mobile_router, timestamp)[kind]
    return st.one_of(st.just(json.dumps(sample).encode()), damaged_json(sample))


INPUT_KINDS = (
    "metrics",
    "node-metrics",
    "link-state",
    "binding-event",
    "status",
    "presence",
    "preferences",
    "operator-rules",
)

# --- Mobility Headers ----------------------------------------------------------------------

HA = IPv6Address("2001:db8:ff::1")
COAS = (IPv6Address("2001:db8:ff::10"), IPv6Address("2001:db8:ff::20"))
MNP = IPv6Address("2001:db8:aaaa::")
addresses = st.sampled_from([HA, *COAS, IPv6Address("::"), IPv6Address("ff02::1")])


def packets() -> st.SearchStrategy[bytes]:
    """Mobility Header octets: valid, damaged, random."""
    return st.one_of(mh_messages.map(encode), damaged(), st.binary(max_size=300))


_bids = st.sampled_from([0, 1, 2, 3, 65535])
plausible_bu = st.builds(
    BindingUpdate,
    sequence=st.sampled_from([0, 1, 2, 0xFFFF]),  # BAs must meet their BUs' sequence
    lifetime=st.sampled_from([0, 1, 10, 0xFFFF]),
    ack=st.booleans(),
    home_registration=st.booleans(),
    mobile_router=st.just(True) | st.booleans(),
    options=st.lists(
        st.one_of(
            st.builds(MobileNetworkPrefix, st.just(MNP), st.sampled_from([0, 48, 64, 128])),
            st.builds(
                BindingIdentifier,
                bid=_bids,
                status=st.integers(0, 255),
                care_of=st.none() | addresses | st.ip_addresses(v=4),
            ),
            st.builds(AlternateCareOfAddress, addresses),
        ),
        max_size=5,
    ).map(tuple),
)
plausible_ba = st.builds(
    BindingAcknowledgement,
    status=st.sampled_from([0, 0, 0, 1, 128, 135, 142, 255]),
    sequence=st.sampled_from([0, 1, 2, 0xFFFF]),  # BAs must meet their BUs' sequence
    lifetime=st.sampled_from([0, 1, 10, 0xFFFF]),
    mobile_router=st.booleans(),
    options=st.lists(
        st.builds(BindingIdentifier, bid=_bids, status=st.integers(0, 255)), max_size=3
    ).map(tuple),
)

_later = st.sampled_from([0.0, 0.01, 1.0, 30.0, 1e6])

#: (seconds later, source, destination, message): a conversation between the MR and the HA
#: as a capture sees it: mostly BUs from a care-of address to the HA and BAs back, sometimes
#: with the addresses mixed up or any message at all, the way a peer might.
conversations: st.SearchStrategy[list[tuple[float, IPv6Address, IPv6Address, Message]]] = st.lists(
    st.one_of(
        st.tuples(_later, st.sampled_from(COAS), st.just(HA), plausible_bu),
        st.tuples(_later, st.just(HA), st.sampled_from(COAS), plausible_ba),
        st.tuples(_later, addresses, addresses, st.one_of(plausible_bu, mh_messages)),
    ),
    max_size=12,
)
