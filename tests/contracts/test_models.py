"""Message and policy models refuse bad input with a reason that names it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.contracts.messages import (
    NODE_METRICS_LINKS,
    LinkMetrics,
    LinkState,
    NodeMetrics,
    PolicyStatus,
    Presence,
    decode,
    encode,
)
from services.contracts.policy import (
    AddressRange,
    Forward,
    Install,
    Policy,
    PolicyMessage,
    PortRange,
    Selector,
    Update,
    mirror_message,
    selectors_overlap,
)
from services.contracts.topics import Topics


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"dst_port": {"first": 80, "last": 80}}, "port selector needs next_header"),
        ({"src_addr": "10.0.0.0/8", "dst_addr": "2001:db8::/32"}, "different families"),
        ({"src_addr": "10.0.0.0/8", "flow_label": 5}, "flow label selects IPv6"),
        ({"dscp": 64}, "less than or equal to 63"),
        ({"src_port": {"first": 9, "last": 8}, "next_header": 6}, "is after its end"),
    ],
)
def test_selector_refusals(kwargs: dict[str, object], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Selector.model_validate(kwargs)


def test_address_range_must_be_ordered_and_of_one_family() -> None:
    with pytest.raises(ValidationError, match="different address families"):
        AddressRange.model_validate({"first": "10.0.0.1", "last": "::1"})
    with pytest.raises(ValidationError, match="is after its end"):
        AddressRange.model_validate({"first": "::2", "last": "::1"})


def test_forward_refuses_repeated_bid() -> None:
    with pytest.raises(ValidationError, match="BID repeated"):
        Forward(bid=1, fallbacks=(2, 1))


def test_message_refuses_duplicate_ids() -> None:
    p = Policy(id="a", priority=1, action=Forward(bid=1))
    with pytest.raises(ValidationError, match="'a' appears twice in install"):
        PolicyMessage(
            node="n",
            mobile_router="m",
            direction="uplink",
            version=1,
            operation=Install(policies=(p, p)),
        )
    with pytest.raises(ValidationError, match="may appear in one list only"):
        PolicyMessage(
            node="n",
            mobile_router="m",
            direction="uplink",
            version=1,
            operation=Update(insert=(p,), delete=("a",)),
        )


def test_models_are_frozen_and_closed() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Selector.model_validate({"colour": "red"})
    sel = Selector()
    with pytest.raises(ValidationError):
        sel.dscp = 3  # type: ignore[misc]


def test_overlap() -> None:
    tcp80 = Selector(next_header=6, dst_port=PortRange(first=80, last=80))
    tcp_all = Selector(next_header=6)
    udp = Selector(next_header=17)
    v4 = Selector(dst_addr="10.0.0.0/8")
    v6 = Selector(dst_addr="2001:db8::/32")
    assert selectors_overlap(tcp80, tcp_all)
    assert not selectors_overlap(tcp80, udp)
    assert not selectors_overlap(v4, v6)
    assert selectors_overlap(v4, tcp80)
    assert not selectors_overlap(
        Selector(dst_addr="2001:db8::/64"),
        Selector(
            dst_addr=AddressRange.model_validate(
                {"first": "2001:db8:0:1::", "last": "2001:db8:0:1::9"}
            )
        ),
    )


def test_messages_round_trip_and_carry_the_envelope() -> None:
    state = LinkState(sender="mr1", interface="eth0", bid=1, up=True, carrier=True)
    again = decode(LinkState, encode(state))
    assert again == state
    assert again.schema_version == 1
    with pytest.raises(ValidationError):
        decode(Presence, b'{"sender": "x", "node": "x", "service": "prem", "online": true, "x": 1}')
    with pytest.raises(ValidationError):
        PolicyStatus.model_validate(
            {
                "sender": "n",
                "node": "n",
                "mobile_router": "m",
                "direction": "uplink",
                "result": "maybe",
                "version": 1,
            }
        )


def test_topics_are_versioned_and_refuse_wildcards() -> None:
    topics = Topics()
    assert topics.policy("ha1") == "multinet/v1/node/ha1/policy"
    assert topics.binding_event("mr1", 2) == "multinet/v1/mr/mr1/binding/2"
    with pytest.raises(ValueError, match="cannot be a topic segment"):
        topics.status("ha/#")


def test_mirror_message_swaps_source_and_destination() -> None:
    policy = Policy.model_validate(
        {
            "id": "web",
            "priority": 3,
            "selector": {
                "src_addr": "2001:db8:c0::/48",
                "dst_addr": "2001:db8:ff::/64",
                "next_header": 6,
                "src_port": {"first": 80, "last": 80},
                "dscp": 10,
            },
            "action": {"kind": "forward", "bid": 2, "fallbacks": [1]},
        }
    )
    down = PolicyMessage(
        node="ha1",
        mobile_router="mr1",
        direction="downlink",
        version=7,
        operation=Update(insert=(policy,), delete=("old",)),
        symmetric=True,
    )
    up = mirror_message(down, "mr1")
    assert (up.node, up.direction, up.version, up.symmetric) == ("mr1", "uplink", 7, False)
    assert isinstance(up.operation, Update)
    assert up.operation.delete == ("old",)
    (mirrored,) = up.operation.insert
    sel = mirrored.selector
    assert (str(sel.src_addr), str(sel.dst_addr)) == ("2001:db8:ff::/64", "2001:db8:c0::/48")
    assert sel.dst_port == PortRange(first=80, last=80)
    assert sel.src_port is None
    assert (sel.dscp, mirrored.action, mirrored.priority) == (10, policy.action, 3)


def test_only_a_downlink_document_can_be_symmetric() -> None:
    with pytest.raises(ValidationError, match="only a downlink document can be symmetric"):
        PolicyMessage(
            node="mr1",
            mobile_router="mr1",
            direction="uplink",
            version=1,
            operation=Install(),
            symmetric=True,
        )


def test_a_binding_event_may_name_its_pipe_kind_and_an_old_one_still_reads() -> None:
    from services.contracts.messages import BindingEvent

    old = (
        b'{"schema_version":1,"sender":"ha1","timestamp":1.0,"sequence":3,'
        b'"kind":"binding-event","event":"registered","mobile_router":"mr1","bid":1}'
    )
    event = decode(BindingEvent, old)
    assert event.pipe is None
    assert b"pipe" not in encode(event)  # no key for an unknown kind: what older readers expect
    named = event.model_copy(update={"pipe": "vxlan"})
    assert decode(BindingEvent, encode(named)).pipe == "vxlan"
    for bad in ("VXLAN", "vx lan", "", "a" * 17, "<b>"):
        with pytest.raises(ValidationError):
            decode(BindingEvent, old[:-1] + f',"pipe":"{bad}"}}'.encode())


def _link(interface: str, bid: int, sender: str = "mr1") -> LinkMetrics:
    return LinkMetrics(sender=sender, interface=interface, bid=bid, technology="lte", rtt_ms=30)


def test_node_metrics_round_trip_with_each_entry_whole() -> None:
    message = NodeMetrics(sender="mr1", links=(_link("wlan0", 1), _link("lte0", 2)))
    again = decode(NodeMetrics, encode(message))
    assert again == message
    assert [(m.interface, m.bid, m.rtt_ms) for m in again.links] == [
        ("wlan0", 1, 30.0),
        ("lte0", 2, 30.0),
    ]


@pytest.mark.parametrize(
    ("links", "problem"),
    [
        ((), "at least 1 item"),
        (tuple(_link(f"if{i}", 1) for i in range(NODE_METRICS_LINKS + 1)), "at most 16 items"),
        ((_link("wlan0", 1), _link("wlan0", 2)), "links.1: interface 'wlan0' appears twice"),
        ((_link("wlan0", 1), _link("lte0", 2, "mr2")), "links.1: sender 'mr2' is not"),
        ((_link("wlan/0", 1),), "links.0: interface 'wlan/0' cannot be a link name"),
    ],
)
def test_node_metrics_refuse_entries_that_are_not_this_nodes_links(
    links: tuple[LinkMetrics, ...], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        NodeMetrics(sender="mr1", links=links)
