"""The pure binding view, driven by scripts of observed BUs/BAs against a fake clock.

Each case is a script of steps (time, what was seen) and the events the view must return, so
one table covers every event kind; a few tests below check the rules the table cannot show.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import Any

import pytest

from services.contracts.messages import BindingEvent, BindingEventKind
from services.mobility_events.bindings import EARLY_ACK_S, MAX_EARLY_ACKS, BindingView, MnpIdentity
from services.mobility_header import (
    AlternateCareOfAddress,
    BindingAcknowledgement,
    BindingIdentifier,
    BindingUpdate,
    MobileNetworkPrefix,
    MobilityOption,
)
from services.mobility_header.codec import BindingError

HA = IPv6Address("2001:db8:ff::1")
COA1 = IPv6Address("2001:db8:1::10")
COA2 = IPv6Address("2001:db8:2::10")
COA3 = IPv6Address("2001:db8:3::10")
MNP = MobileNetworkPrefix(IPv6Address("2001:db8:aaaa::"), 64)
IDENTIFY = MnpIdentity({"mr1": [IPv6Network("2001:db8:aaaa::/48")]})
T0 = 1000.0

K = BindingEventKind


def bu(
    seq: int, lifetime: int = 10, *bids: tuple[int, IPv6Address | None], mnp: bool = True
) -> BindingUpdate:
    options: list[MobilityOption] = [MNP] if mnp else []
    options += [BindingIdentifier(bid=b, care_of=c) for b, c in bids]
    return BindingUpdate(
        sequence=seq,
        lifetime=lifetime,
        ack=True,
        home_registration=True,
        mobile_router=True,
        options=tuple(options),
    )


def ba(seq: int, status: int = 0, lifetime: int = 10) -> BindingAcknowledgement:
    return BindingAcknowledgement(
        status=status, sequence=seq, lifetime=lifetime, mobile_router=True
    )


@dataclass(frozen=True)
class Seen:
    """One step: at `t` seconds after T0, `message` from `src` (to HA; BAs the other way)."""

    t: float
    message: BindingUpdate | BindingAcknowledgement | None  # None: only a tick
    src: IPv6Address = COA1


Expect = tuple[K, int, str | None, str | None]  # kind, BID, CoA, previous CoA


def play(view: BindingView, steps: list[Seen]) -> list[BindingEvent]:
    events: list[BindingEvent] = []
    for step in steps:
        now = T0 + step.t
        if isinstance(step.message, BindingUpdate):
            events += view.observe_bu(now, step.src, HA, step.message)
        elif isinstance(step.message, BindingAcknowledgement):
            events += view.observe_ba(now, HA, step.src, step.message)
        else:
            events += view.tick(now)
    return events


def summary(events: list[BindingEvent]) -> list[Expect]:
    return [(e.event, e.bid, e.care_of_address, e.previous_care_of_address) for e in events]


A1 = str(COA1)
A2 = str(COA2)
A3 = str(COA3)

CASES: dict[str, tuple[list[Seen], list[Expect]]] = {
    "registered": (
        [Seen(0, bu(1, 10, (1, None))), Seen(0.01, ba(1))],
        [(K.REGISTERED, 1, A1, None)],
    ),
    "bu alone changes nothing": ([Seen(0, bu(1, 10, (1, None)))], []),
    "refreshed": (
        [
            Seen(0, bu(1, 10, (1, None))),
            Seen(0.01, ba(1)),
            Seen(20, bu(2, 10, (1, None))),
            Seen(20.01, ba(2)),
        ],
        [(K.REGISTERED, 1, A1, None), (K.REFRESHED, 1, A1, None)],
    ),
    "coa changed, with handover-started": (
        [
            Seen(0, bu(1, 10, (1, None))),
            Seen(0.01, ba(1)),
            Seen(5, bu(2, 10, (1, None)), src=COA2),
            Seen(5.01, ba(2), src=COA2),
        ],
        [
            (K.REGISTERED, 1, A1, None),
            (K.HANDOVER_STARTED, 1, A2, A1),
            (K.COA_CHANGED, 1, A2, A1),
        ],
    ),
    "deregistration": (
        [
            Seen(0, bu(1, 10, (1, None))),
            Seen(0.01, ba(1)),
            Seen(5, bu(2, 0, (1, None))),
            Seen(5.01, ba(2, lifetime=0)),
            Seen(100, None),
        ],
        [
            (K.REGISTERED, 1, A1, None),
            (K.HANDOVER_STARTED, 1, A1, A1),
            (K.DEREGISTERED, 1, A1, None),
        ],
    ),
    "expired": (
        [
            Seen(0, bu(1, 1, (1, None))),
            Seen(0.01, ba(1, lifetime=1)),
            Seen(4.0, None),
            Seen(4.02, None),
            Seen(10, None),
        ],
        [(K.REGISTERED, 1, A1, None), (K.EXPIRED, 1, A1, None)],
    ),
    "refresh in time keeps it alive": (
        [
            Seen(0, bu(1, 1, (1, None))),
            Seen(0.01, ba(1, lifetime=1)),
            Seen(3, bu(2, 1, (1, None))),
            Seen(3.01, ba(2, lifetime=1)),
            Seen(5, None),
            Seen(7.02, None),
        ],
        [(K.REGISTERED, 1, A1, None), (K.REFRESHED, 1, A1, None), (K.EXPIRED, 1, A1, None)],
    ),
    "rejected": (
        [Seen(0, bu(1, 10, (1, None))), Seen(0.01, ba(1, status=142))],
        [(K.REJECTED, 1, A1, None)],
    ),
    "rejected refresh keeps the binding": (
        [
            Seen(0, bu(1, 10, (1, None))),
            Seen(0.01, ba(1)),
            Seen(5, bu(2, 10, (1, None)), src=COA2),
            Seen(5.01, ba(2, status=129), src=COA2),
            Seen(6, bu(3, 10, (1, None))),
            Seen(6.01, ba(3)),
        ],
        [
            (K.REGISTERED, 1, A1, None),
            (K.HANDOVER_STARTED, 1, A2, A1),
            (K.REJECTED, 1, A2, A1),
            (K.REFRESHED, 1, A1, None),
        ],
    ),
    "bulk registration, one event per BID": (
        [Seen(0, bu(1, 10, (1, COA1), (2, COA2), (3, None))), Seen(0.01, ba(1))],
        [
            (K.REGISTERED, 1, A1, None),
            (K.REGISTERED, 2, A2, None),
            (K.REGISTERED, 3, A1, None),
        ],
    ),
    "no BID option means the default BID": (
        [Seen(0, bu(1, 10)), Seen(0.01, ba(1))],
        [(K.REGISTERED, 1, A1, None)],
    ),
    "BA with no pending BU is ignored": ([Seen(0, ba(7))], []),
    "BA with another sequence is ignored": (
        [Seen(0, bu(1, 10, (1, None))), Seen(0.01, ba(2))],
        [],
    ),
    "BA to another address is ignored": (
        [Seen(0, bu(1, 10, (1, None))), Seen(0.01, ba(1), src=COA2)],
        [],
    ),
    "unknown router is ignored": (
        [Seen(0, bu(1, 10, (1, None), mnp=False)), Seen(0.01, ba(1))],
        [],
    ),
    "re-registration after expiry is registered": (
        [
            Seen(0, bu(1, 1, (1, None))),
            Seen(0.01, ba(1, lifetime=1)),
            Seen(9, bu(2, 1, (1, None)), src=COA2),
            Seen(9.01, ba(2, lifetime=1), src=COA2),
        ],
        [(K.REGISTERED, 1, A1, None), (K.EXPIRED, 1, A1, None), (K.REGISTERED, 1, A2, None)],
    ),
    "answer after the pending timeout is ignored": (
        [Seen(0, bu(1, 10, (1, None))), Seen(11, ba(1))],
        [],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_event_table(case: str) -> None:
    steps, expected = CASES[case]
    view = BindingView("ha1", IDENTIFY)
    assert summary(play(view, steps)) == expected


def test_handover_started_can_be_switched_off() -> None:
    view = BindingView("ha1", IDENTIFY, handover_started_on_new_coa=False)
    steps = [
        Seen(0, bu(1, 10, (1, None))),
        Seen(0.01, ba(1)),
        Seen(5, bu(2, 10, (1, None)), src=COA2),
        Seen(5.01, ba(2), src=COA2),
        Seen(6, bu(3, 0, (1, None)), src=COA2),
    ]
    assert summary(play(view, steps)) == [
        (K.REGISTERED, 1, A1, None),
        (K.COA_CHANGED, 1, A2, A1),
        (K.HANDOVER_STARTED, 1, A2, A2),  # a deregistration BU still announces it
    ]


def test_event_fields() -> None:
    view = BindingView("ha1", IDENTIFY)
    events = play(view, [Seen(0, bu(1, 10, (4, None))), Seen(0.5, ba(1, lifetime=9))])
    (event,) = events
    assert event.sender == "ha1"
    assert event.mobile_router == "mr1"
    assert event.timestamp == T0 + 0.5
    assert event.lifetime_s == 36  # the granted lifetime, 9 units of 4 s
    assert event.status == 0
    assert event.status_name == "Binding Update accepted"
    assert view.binding("mr1", 4) is not None


def test_rejected_event_names_its_status() -> None:
    view = BindingView("ha1", IDENTIFY)
    (event,) = play(view, [Seen(0, bu(1, 10, (1, None))), Seen(0.01, ba(1, status=142))])
    assert (event.status, event.status_name) == (142, "Not Authorized for Prefix")
    assert view.bindings() == ()


def test_per_bid_status_in_the_ba_overrides() -> None:
    view = BindingView("ha1", IDENTIFY)
    view.observe_bu(T0, COA1, HA, bu(1, 10, (1, COA1), (2, COA2)))
    ack = BindingAcknowledgement(
        status=0,
        sequence=1,
        lifetime=10,
        options=(BindingIdentifier(bid=2, status=167),),
    )
    events = view.observe_ba(T0, HA, COA1, ack)
    assert [(e.event, e.bid, e.status) for e in events] == [
        (K.REGISTERED, 1, 0),
        (K.REJECTED, 2, 167),
    ]
    assert events[1].status_name == "MCOA UNKNOWN COA"


def test_retransmitted_bu_announces_the_handover_once() -> None:
    view = BindingView("ha1", IDENTIFY)
    play(view, [Seen(0, bu(1, 10, (1, None))), Seen(0.01, ba(1))])
    first = view.observe_bu(T0 + 1, COA2, HA, bu(2, 10, (1, None)))
    again = view.observe_bu(T0 + 2, COA2, HA, bu(2, 10, (1, None)))
    assert [e.event for e in first] == [K.HANDOVER_STARTED]
    assert again == []
    assert view.pending_count == 1


def test_alternate_coa_names_the_binding_and_can_receive_the_ba() -> None:
    view = BindingView("ha1", IDENTIFY)
    update = BindingUpdate(
        sequence=1, lifetime=10, options=(MNP, AlternateCareOfAddress(COA3), BindingIdentifier(1))
    )
    view.observe_bu(T0, COA1, HA, update)
    (event,) = view.observe_ba(T0, HA, COA3, ba(1))
    assert (event.event, event.care_of_address) == (K.REGISTERED, A3)
    assert view.pending_count == 0


def test_care_of_map_identifies_bus_without_prefix() -> None:
    identify = MnpIdentity({"mr1": [IPv6Network("2001:db8:aaaa::/48")]}, {COA2: "mr2"})
    view = BindingView("ha1", identify)
    view.observe_bu(T0, COA2, HA, bu(1, 10, (1, None), mnp=False))
    (event,) = view.observe_ba(T0, HA, COA2, ba(1))
    assert event.mobile_router == "mr2"


def test_counters_and_binding_errors() -> None:
    view = BindingView("ha1", IDENTIFY)
    view.observe(T0, COA1, HA, bu(1, 10, mnp=False))
    view.observe(T0, HA, COA1, ba(9))
    view.observe(T0, HA, COA1, BindingError(status=1, home_address=COA1))
    view.observe(T0, COA1, HA, bu(2, 10, (1, None)))
    view.tick(T0 + 60)
    s = view.stats
    assert (s.updates, s.acks, s.errors) == (2, 1, 1)
    assert (s.updates_unidentified, s.acks_unmatched, s.pending_expired) == (1, 1, 1)


def test_event_sequence_numbers_increase() -> None:
    view = BindingView("ha1", IDENTIFY)
    events = play(
        view,
        [Seen(0, bu(1, 1, (1, None), (2, None))), Seen(0.01, ba(1, lifetime=1)), Seen(9, None)],
    )
    assert [e.sequence for e in events] == [1, 2, 3, 4]
    assert [e.event for e in events] == [K.REGISTERED, K.REGISTERED, K.EXPIRED, K.EXPIRED]


def test_an_acknowledgement_seen_before_its_update_settles_when_the_update_comes() -> None:
    # The service reads its own outgoing BAs from another socket than the incoming BUs and may
    # drain that one first: the BA waits briefly for its BU instead of being lost.
    view = BindingView("ha1", IDENTIFY)
    assert view.observe_ba(T0, HA, COA1, ba(1)) == []
    (event,) = view.observe_bu(T0 + 0.002, COA1, HA, bu(1, 10, (1, None)))
    assert (event.event, event.bid, event.care_of_address) == (
        BindingEventKind.REGISTERED,
        1,
        str(COA1),
    )
    assert view.stats.acks_unmatched == 0


def test_an_acknowledgement_nobody_asked_for_is_unmatched_after_a_while() -> None:
    view = BindingView("ha1", IDENTIFY)
    view.observe_ba(T0, HA, COA1, ba(1))
    view.tick(T0 + EARLY_ACK_S + 0.1)
    assert view.stats.acks_unmatched == 1
    view.observe_bu(T0 + 1, COA1, HA, bu(1, 10, (1, None)))
    assert view.binding("mr1", 1) is None, "a late BU is not settled by a forgotten BA"


def test_stray_acknowledgements_are_held_in_bounded_memory() -> None:
    view = BindingView("ha1", IDENTIFY)
    for sequence in range(MAX_EARLY_ACKS + 10):
        view.observe_ba(T0, HA, COA1, ba(sequence % 65536))
    assert view.stats.acks_unmatched == 10


def _with_kind(message: BindingUpdate | BindingAcknowledgement, kind: str) -> Any:
    from dataclasses import replace

    from services.mobility_header.pipe_option import kind_option

    return replace(message, options=(*message.options, kind_option(kind)))


def test_the_pipe_kind_comes_from_the_option_and_stays_with_the_binding() -> None:
    view = BindingView("ha1", IDENTIFY)
    events = play(
        view,
        [
            Seen(0, _with_kind(bu(1, 10, (1, None)), "vxlan")),
            Seen(0.1, _with_kind(ba(1), "vxlan")),  # the HA confirms
            Seen(1, bu(2, 10, (1, None))),  # a refresh without the option
            Seen(1.1, ba(2)),
            Seen(60, None),  # expired
        ],
    )
    assert [(e.event, e.pipe) for e in events] == [
        (K.REGISTERED, "vxlan"),
        (K.REFRESHED, None),  # this exchange named no kind: unknown, not remembered as true
        (K.EXPIRED, None),
    ]


def test_the_ba_confirms_the_kind_and_a_bu_alone_names_what_was_asked() -> None:
    view = BindingView("ha1", IDENTIFY)
    events = play(
        view,
        [
            Seen(0, _with_kind(bu(1, 10, (1, None)), "seg6")),
            Seen(0.1, _with_kind(ba(1), "vxlan")),  # the HA's word wins
            Seen(1, _with_kind(bu(2, 10, (2, COA2)), "seg6")),
            Seen(1.1, ba(2)),  # accepted, no confirmation: the BU's request
            Seen(2, _with_kind(bu(3, 10, (1, COA3)), "ip6tnl")),
            Seen(2.1, ba(3, status=143)),  # refused: the kind asked for
        ],
    )
    assert [(e.event, e.bid, e.pipe) for e in events] == [
        (K.REGISTERED, 1, "vxlan"),
        (K.REGISTERED, 2, "seg6"),
        (K.HANDOVER_STARTED, 1, "ip6tnl"),
        (K.REJECTED, 1, "ip6tnl"),
    ]


def test_plain_signalling_leaves_the_kind_unknown_and_the_wire_unchanged() -> None:
    view = BindingView("ha1", IDENTIFY)
    (event,) = play(view, [Seen(0, bu(1, 10, (1, None))), Seen(0.1, ba(1))])
    assert event.pipe is None
    assert b"pipe" not in event.model_dump_json().encode()  # as events were before the field
    assert BindingEvent.model_validate_json(event.model_dump_json()) == event
