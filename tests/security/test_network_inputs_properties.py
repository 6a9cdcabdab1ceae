"""Thousands of generated packets through the services' real network handling, in process:
Mobility Header packets through mobility_events' capture path (decode) into its binding view
(`observe`, what the service's loop calls), whole generated conversations, and probe replies
and requests through the monitor's prober and responder parsers.

Nothing may escape: a malformed header is counted and dropped, never raised, and the
capture's net for a decoder failure (`undecodable`) is never needed.
"""

from __future__ import annotations

from ipaddress import IPv6Address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.mobility_events.bindings import BindingView
from services.mobility_events.capture import MhCapture
from services.mobility_events.config import MobilityEventsSettings
from services.mobility_header.codec import Message
from services.monitor.probe import decode_udp_probe, parse_echo_reply
from services.monitor.responder import answer_for, reply_source
from tests.security.strategies import COAS, addresses, conversations, packets

SETTINGS = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MOBILITY = MobilityEventsSettings.model_validate(
    {
        "node": "ha1",
        "mobile_routers": [
            {"id": "mr1", "prefixes": ["2001:db8:aaaa::/48"], "care_of_addresses": [str(COAS[1])]}
        ],
        "default_bid": 1,
    }
)


def _view() -> BindingView:
    return BindingView(
        MOBILITY.node,
        MOBILITY.identity(),
        handover_started_on_new_coa=True,
        pending_timeout_s=MOBILITY.pending_timeout_s,
        default_bid=MOBILITY.default_bid,
    )


class _Capture:
    """The capture path without sockets: packets go to `_deliver`, as the read loop does."""

    def __init__(self) -> None:
        self.decoded: list[tuple[float, IPv6Address, IPv6Address, Message]] = []
        self.undecodable: list[Exception] = []
        self.capture = MhCapture(
            lambda now, src, dst, message: self.decoded.append((now, src, dst, message)),
            on_undecodable=lambda data, src, error: self.undecodable.append(error),
        )


@SETTINGS
@given(st.lists(st.tuples(addresses, addresses, packets()), min_size=1, max_size=6))
def test_every_captured_packet_is_decoded_or_dropped_and_observed(
    received: list[tuple[IPv6Address, IPv6Address, bytes]],
) -> None:
    path, view = _Capture(), _view()
    try:
        for n, (src, dst, data) in enumerate(received):
            path.capture._deliver(1000.0 + n, src, dst, memoryview(data))
    finally:
        path.capture.stop()  # never started; closes its wake-up pipe
    assert path.undecodable == []
    stats = path.capture.stats
    assert stats.decoded + stats.malformed == len(received)
    for now, src, dst, message in path.decoded:
        for event in view.observe(now, src, dst, message):
            event.model_dump_json()
    view.tick(5000.0)


@SETTINGS
@given(conversations)
def test_every_conversation_is_observed(
    conversation: list[tuple[float, IPv6Address, IPv6Address, Message]],
) -> None:
    view, now = _view(), 1000.0
    for later, src, dst, message in conversation:
        now += later
        for event in view.observe(now, src, dst, message):
            assert event.mobile_router == "mr1"
            event.model_dump_json()
    for event in view.tick(now + 1e7):
        event.model_dump_json()


@SETTINGS
@given(
    st.binary(max_size=120),
    st.sampled_from([4, 6]),
    st.integers(0, 0xFFFF),
    st.binary(min_size=8, max_size=8),
)
def test_every_probe_reply_is_taken_or_ignored(
    data: bytes, version: int, ident: int, token: bytes
) -> None:
    seq = parse_echo_reply(version, data, ident, token)
    assert seq is None or 0 <= seq < 2**32
    probe = decode_udp_probe(data)
    assert probe is None or len(probe.token) == 8


@SETTINGS
@given(st.binary(max_size=1300), st.binary(max_size=40))
def test_every_probe_request_is_answered_or_refused(data: bytes, pktinfo: bytes) -> None:
    answer = answer_for(data)
    assert answer is None or len(answer) == len(data)
    for level, kind in ((41, 50), (0, 8)):  # IPV6_PKTINFO, IP_PKTINFO
        if len(pktinfo) >= {50: 20, 8: 12}[kind]:
            reply_source([(level, kind, pktinfo)])
