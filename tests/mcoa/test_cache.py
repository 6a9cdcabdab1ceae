"""The home agent's decisions: BA status per BU, the binding cache, expiry, desired pipes."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv6Address, IPv6Network
from typing import Any

import pytest

from services.mcoa.cache import (
    Binding,
    BindingKey,
    PipeRoute,
    decide,
    desired_pipes,
    expire,
    next_expiry,
    sequence_newer,
)
from services.mcoa.identity import home_address_of, identifier_option
from services.mobility_header import pipe_option
from services.mobility_header.codec import BindingUpdate, decode, encode
from services.mobility_header.mh_options import (
    BindingIdentifier,
    MobileNetworkPrefix,
    MobilityOption,
    UnknownOption,
    VendorSpecific,
)
from services.mobility_header.status import BaStatus
from tests.mcoa.factories import COA1, COA2, HA, HOME, MNP, bu, ha_settings


def _accepted(
    cache: dict[BindingKey, Binding],
    sequence: int = 1,
    bid: int = 1,
    coa: IPv6Address = COA1,
    now: float = 0,
) -> dict[BindingKey, Binding]:
    decision = decide(ha_settings(), cache, bu(sequence, bid=bid, coa=coa), coa, now)
    assert decision.status == BaStatus.ACCEPTED
    return decision.cache


def test_accepts_a_home_registration_and_answers_with_the_bid() -> None:
    decision = decide(ha_settings(), {}, bu(7), COA1, now=100.0)
    assert decision.status == 0
    assert decision.home == HOME
    assert decision.ack is not None
    assert decision.ack.sequence == 7
    assert decision.ack.mobile_router
    assert decision.ack.lifetime_seconds == 60
    assert decision.ack.binding_ids == (BindingIdentifier(1, status=0),)
    binding = decision.cache[(HOME, 1)]
    assert binding.care_of == COA1
    assert binding.prefixes == (MNP,)
    assert binding.priority == 10
    assert binding.expires_at == 160.0


def test_the_ba_survives_the_wire() -> None:
    decision = decide(ha_settings(), {}, bu(7), COA1, now=0)
    assert decision.ack is not None
    assert decode(encode(decision.ack)) == decision.ack


def test_lifetime_is_capped_by_the_ha() -> None:
    decision = decide(ha_settings(max_lifetime=20), {}, bu(1, lifetime=600), COA1, now=0)
    assert decision.ack is not None
    assert decision.ack.lifetime_seconds == 20
    assert decision.cache[(HOME, 1)].expires_at == 20


def test_two_bids_are_two_bindings() -> None:
    cache = _accepted({}, 1, bid=1, coa=COA1)
    cache = _accepted(cache, 2, bid=2, coa=COA2)
    assert {k[1] for k in cache} == {1, 2}
    assert desired_pipes(cache, 1000) == {
        PipeRoute(1001, MNP, COA1, 1, HOME, "ip6tnl"),
        PipeRoute(1002, MNP, COA2, 2, HOME, "ip6tnl"),
    }


def test_a_new_care_of_address_replaces_the_binding() -> None:
    cache = _accepted({}, 1, coa=COA1)
    moved = IPv6Address("2001:db8:1::3")
    cache = _accepted(cache, 2, coa=moved)
    assert desired_pipes(cache, 1000) == {PipeRoute(1001, MNP, moved, 1, HOME, "ip6tnl")}


@pytest.mark.parametrize(
    ("last", "candidate", "newer"),
    [
        (1, 2, True),
        (1, 1, False),
        (2, 1, False),
        (0xFFFF, 0, True),
        (0xFFFF, 5, True),
        (10, 10 + 0x8000, False),
        (10, 10 + 0x7FFF, True),
    ],
)
def test_sequence_window(last: int, candidate: int, newer: bool) -> None:
    assert sequence_newer(candidate, last) is newer


def test_an_old_sequence_is_out_of_window_and_tells_the_last_one() -> None:
    cache = _accepted({}, 5)
    decision = decide(ha_settings(), cache, bu(5), COA1, now=1)
    assert decision.status == BaStatus.SEQUENCE_NUMBER_OUT_OF_WINDOW
    assert decision.ack is not None
    assert decision.ack.sequence == 5
    assert decision.cache == cache


def test_deregistration_removes_one_bid() -> None:
    cache = _accepted(_accepted({}, 1, bid=1), 2, bid=2, coa=COA2)
    decision = decide(ha_settings(), cache, bu(3, bid=1, lifetime=0), COA1, now=1)
    assert decision.status == 0
    assert set(decision.cache) == {(HOME, 2)}


def test_deregistration_without_bid_removes_every_binding_of_the_router() -> None:
    cache = _accepted(_accepted({}, 1, bid=1), 2, bid=2, coa=COA2)
    message = dataclasses.replace(bu(3, lifetime=0), options=(identifier_option(HOME),))
    decision = decide(ha_settings(), cache, message, COA1, now=1)
    assert decision.status == 0
    assert decision.cache == {}


def _with(**changes: Any) -> BindingUpdate:
    return dataclasses.replace(bu(1), **changes)


def _options(*extra: MobilityOption) -> tuple[MobilityOption, ...]:
    return (identifier_option(HOME), *extra)


STRANGER = IPv6Address("2001:db8:100::99")
FOREIGN = MobileNetworkPrefix(IPv6Address("2001:db8:ee::"), 64)
OWN = MobileNetworkPrefix(MNP.network_address, 64)
BID1 = BindingIdentifier(1, care_of=COA1)


@pytest.mark.parametrize(
    ("message", "status"),
    [
        (_with(home_registration=False), BaStatus.HOME_REGISTRATION_NOT_SUPPORTED),
        (
            _with(options=(identifier_option(STRANGER), OWN, BID1)),
            BaStatus.NOT_HOME_AGENT_FOR_THIS_MOBILE_NODE,
        ),
        (_with(options=(OWN, BID1)), BaStatus.NOT_HOME_AGENT_FOR_THIS_MOBILE_NODE),
        (_with(mobile_router=False), BaStatus.MOBILE_ROUTER_OPERATION_NOT_PERMITTED),
        (_with(options=_options(OWN)), BaStatus.MCOA_MALFORMED),
        (
            _with(options=_options(OWN, BID1, BindingIdentifier(2))),
            BaStatus.MCOA_BULK_REGISTRATION_PROHIBITED,
        ),
        (
            _with(options=_options(OWN, BindingIdentifier(1, simultaneous_home_foreign=True))),
            BaStatus.MCOA_SIMULTANEOUS_HOME_AND_FOREIGN_PROHIBITED,
        ),
        (_with(options=_options(BID1)), BaStatus.FORWARDING_SETUP_FAILED),
        (_with(options=_options(FOREIGN, BID1)), BaStatus.NOT_AUTHORIZED_FOR_PREFIX),
        (
            _with(options=_options(MobileNetworkPrefix(IPv6Address("::"), 0), BID1)),
            BaStatus.INVALID_PREFIX,
        ),
        (
            _with(options=_options(OWN, BindingIdentifier(1, care_of=HA))),
            BaStatus.ADMINISTRATIVELY_PROHIBITED,
        ),
        (
            _with(
                options=_options(OWN, BindingIdentifier(1, care_of=IPv6Address("2001:db8:ff::9")))
            ),
            BaStatus.ADMINISTRATIVELY_PROHIBITED,
        ),
    ],
)
def test_refusals(message: BindingUpdate, status: int) -> None:
    decision = decide(ha_settings(), {}, message, COA1, now=0)
    assert decision.status == status
    assert decision.ack is not None
    assert decision.ack.status == status
    assert decision.ack.lifetime == 0
    assert decision.cache == {}


def test_a_refusal_keeps_the_existing_binding() -> None:
    cache = _accepted({}, 1)
    message = dataclasses.replace(bu(2), options=_options(FOREIGN, BID1))
    decision = decide(ha_settings(), cache, message, COA1, now=1)
    assert decision.status == BaStatus.NOT_AUTHORIZED_FOR_PREFIX
    assert decision.cache == cache


def test_no_ack_requested_no_ba_on_success() -> None:
    decision = decide(ha_settings(), {}, dataclasses.replace(bu(1), ack=False), COA1, now=0)
    assert decision.status == 0
    assert decision.ack is None


def test_care_of_defaults_to_the_source_address() -> None:
    message = dataclasses.replace(bu(1), options=_options(OWN, BindingIdentifier(1)))
    decision = decide(ha_settings(), {}, message, COA2, now=0)
    assert decision.cache[(HOME, 1)].care_of == COA2


def test_expiry_with_a_fake_clock() -> None:
    cache = _accepted({}, 1, bid=1, now=0)  # expires at 60
    cache = _accepted(cache, 2, bid=2, coa=COA2, now=30)  # expires at 90
    assert next_expiry(cache) == 60
    kept, gone = expire(cache, 59.9)
    assert kept == cache
    assert gone == []
    kept, gone = expire(cache, 60.0)
    assert set(kept) == {(HOME, 2)}
    assert [b.bid for b in gone] == [1]
    kept, gone = expire(kept, 90.0)
    assert kept == {}
    assert next_expiry(kept) is None


def test_a_refresh_pushes_expiry_back() -> None:
    cache = _accepted({}, 1, now=0)
    cache = _accepted(cache, 2, now=50)
    assert expire(cache, 100)[0] == cache


def test_identifier_round_trip_and_garbage() -> None:
    assert home_address_of((identifier_option(HOME),)) == HOME
    message = decode(encode(bu(1)))
    assert home_address_of(message.options) == HOME
    assert home_address_of(()) is None
    assert home_address_of((UnknownOption(8, b"\x01not-an-address"),)) is None


def test_desired_pipes_one_route_per_prefix() -> None:
    settings = ha_settings(
        mobile_routers=[
            {"home_address": str(HOME), "prefixes": ["2001:db8:ff::/48"]},
        ]
    )
    second = MobileNetworkPrefix(IPv6Address("2001:db8:ff:1::"), 64)
    message = dataclasses.replace(bu(1), options=_options(OWN, second, BID1))
    decision = decide(settings, {}, message, COA1, now=0)
    assert desired_pipes(decision.cache, 1000) == {
        PipeRoute(1001, MNP, COA1, 1, HOME, "ip6tnl"),
        PipeRoute(1001, IPv6Network("2001:db8:ff:1::/64"), COA1, 1, HOME, "ip6tnl"),
    }


def _with_kind(message: BindingUpdate, kind: str) -> BindingUpdate:
    return dataclasses.replace(message, options=(*message.options, pipe_option.kind_option(kind)))


def test_a_bu_without_pipe_option_asks_for_ip6tnl_as_plain_nemo_does() -> None:
    offered = ("ip6tnl", "vxlan")
    accepted = decide(ha_settings(), {}, bu(1), COA1, now=0, offered=offered)
    assert accepted.status == BaStatus.ACCEPTED
    assert accepted.cache[(HOME, 1)].pipe_kind == "ip6tnl"
    refused = decide(ha_settings(), {}, bu(1), COA1, now=0, offered=("vxlan",))
    assert refused.status == BaStatus.FORWARDING_SETUP_FAILED


def test_the_pipe_kind_asked_for_is_built_and_confirmed_in_the_ba() -> None:
    decision = decide(
        ha_settings(), {}, _with_kind(bu(1), "vxlan"), COA1, now=0, offered=("seg6", "vxlan")
    )
    assert decision.status == BaStatus.ACCEPTED
    assert decision.cache[(HOME, 1)].pipe_kind == "vxlan"
    (pipe,) = desired_pipes(decision.cache, 1000)
    assert pipe.kind == "vxlan"
    assert decision.ack is not None
    assert pipe_option.kind_of(decision.ack.options) == "vxlan"


def test_a_kind_not_offered_is_refused_with_143_naming_what_is_offered() -> None:
    cache = _accepted({}, 1)
    decision = decide(
        ha_settings(), cache, _with_kind(bu(2), "seg6"), COA1, now=1, offered=("ip6tnl", "vxlan")
    )
    assert decision.status == BaStatus.FORWARDING_SETUP_FAILED
    assert decision.cache == cache  # the binding that was there stays
    assert decision.ack is not None
    assert pipe_option.offered_in(decision.ack.options) == ("ip6tnl", "vxlan")
    # On the wire and back: the refusal still says what the HA offers.
    again = decode(encode(decision.ack))
    assert pipe_option.offered_in(again.options) == ("ip6tnl", "vxlan")


def test_a_garbled_kind_is_refused_and_never_echoed_raw() -> None:
    message = dataclasses.replace(
        bu(1), options=(*bu(1).options, VendorSpecific(pipe_option.VENDOR_ID, 1, b"vx\n\xff" * 20))
    )
    decision = decide(ha_settings(), {}, message, COA1, now=0, offered=("vxlan",))
    assert decision.status == BaStatus.FORWARDING_SETUP_FAILED
    shown = pipe_option.kind_of(message.options)
    assert shown is not None
    assert shown.isprintable()
    assert len(shown) <= 32
