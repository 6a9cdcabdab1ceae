"""The mobile router's per-link registration: BU contents, retransmission, refresh, moves."""

from __future__ import annotations

from ipaddress import IPv6Address

from services.mcoa.cache import decide
from services.mcoa.identity import home_address_of
from services.mcoa.registration import Registration, Sequencer
from services.mobility_header.codec import BindingAcknowledgement, BindingUpdate, decode, encode
from services.mobility_header.mh_options import BindingIdentifier
from services.mobility_header.status import BaStatus
from tests.mcoa.factories import COA1, HOME, MNP, bu, ha_settings, link, mr_settings


def _registration(**overrides: object) -> Registration:
    return Registration(mr_settings(**overrides), link(1), Sequencer())


def _ack(message: BindingUpdate, status: int = 0, lifetime: int = 15) -> BindingAcknowledgement:
    return BindingAcknowledgement(
        status, message.sequence, lifetime, mobile_router=True, options=(BindingIdentifier(1),)
    )


def test_bu_is_a_nemo_home_registration_of_one_bid() -> None:
    message = bu(9)
    assert message.ack
    assert message.home_registration
    assert message.mobile_router
    assert not message.key_management
    assert message.lifetime_seconds == 60
    assert [p.network for p in message.prefixes] == [MNP]
    assert message.binding_ids == (BindingIdentifier(1, priority=10, care_of=COA1),)
    assert home_address_of(message.options) == HOME
    assert decode(encode(message)) == message


def test_the_ha_accepts_what_the_mr_builds() -> None:
    decision = decide(ha_settings(), {}, bu(1), COA1, now=0)
    assert decision.status == BaStatus.ACCEPTED


def test_start_sends_and_sequence_numbers_increase_across_links() -> None:
    seq = Sequencer()
    first = Registration(mr_settings(), link(1), seq)
    second = Registration(mr_settings(), link(2), seq)
    a = first.start(COA1, 0)
    b = second.start(IPv6Address("2001:db8:2::2"), 0)
    assert a is not None
    assert b is not None
    assert b.sequence == a.sequence + 1


def test_no_address_no_bu() -> None:
    reg = _registration()
    assert reg.start(None, 0) is None
    assert reg.deadline() is None
    assert reg.tick(100) is None


def test_retransmits_with_new_sequence_and_exponential_backoff() -> None:
    reg = _registration(retransmit_initial=1.0, retransmit_max=3)
    sent = reg.start(COA1, 0.0)
    assert sent is not None
    assert reg.tick(0.99) is None
    times = []
    now = 0.0
    for _ in range(5):
        deadline = reg.deadline()
        assert deadline is not None
        now = deadline
        again = reg.tick(now)
        assert again is not None
        assert again.sequence > sent.sequence
        sent = again
        times.append(now)
    gaps = [round(b - a, 3) for a, b in zip([0.0, *times], times, strict=False)]
    assert gaps == [1.0, 2.0, 4.0, 8.0, 8.0]


def test_ack_stops_retransmission_and_schedules_refresh_at_80_percent() -> None:
    reg = _registration()
    sent = reg.start(COA1, 10.0)
    assert sent is not None
    assert reg.on_ack(_ack(sent, lifetime=15), 10.2) is None  # 15 units = 60 s
    assert reg.registered
    assert reg.granted == 60
    assert reg.deadline() == 10.2 + 48.0
    assert reg.tick(58.0) is None
    refresh = reg.tick(58.2)
    assert refresh is not None
    assert refresh.lifetime_seconds == 60


def test_a_stale_ack_is_ignored() -> None:
    reg = _registration()
    sent = reg.start(COA1, 0)
    assert sent is not None
    late = BindingAcknowledgement(0, (sent.sequence - 1) & 0xFFFF, 15)
    assert reg.on_ack(late, 0.1) is None
    assert not reg.registered
    assert reg.retry_at is not None


def test_out_of_window_resumes_after_the_has_sequence() -> None:
    reg = _registration()
    sent = reg.start(COA1, 0)
    assert sent is not None
    answer = BindingAcknowledgement(BaStatus.SEQUENCE_NUMBER_OUT_OF_WINDOW, 500, 0)
    again = reg.on_ack(answer, 0.1)
    assert again is not None
    assert again.sequence == 501


def test_rejection_retries_later_not_at_once() -> None:
    reg = _registration(retransmit_initial=1.0, retransmit_max=3)
    sent = reg.start(COA1, 0)
    assert sent is not None
    assert reg.on_ack(_ack(sent, status=BaStatus.NOT_AUTHORIZED_FOR_PREFIX), 0.1) is None
    assert not reg.registered
    assert reg.deadline() == 0.1 + 8.0


def test_move_restarts_registration_with_the_new_address() -> None:
    reg = _registration()
    sent = reg.start(COA1, 0)
    assert sent is not None
    reg.on_ack(_ack(sent), 0.1)
    moved = IPv6Address("2001:db8:1::3")
    again = reg.start(moved, 5)
    assert again is not None
    assert again.binding_ids[0].care_of == moved
    assert not reg.registered


def test_deregistration_has_lifetime_zero_and_no_refresh_after() -> None:
    reg = _registration()
    sent = reg.start(COA1, 0)
    assert sent is not None
    reg.on_ack(_ack(sent), 0.1)
    bye = reg.deregister(1.0)
    assert bye is not None
    assert bye.lifetime == 0
    reg.on_ack(_ack(bye, lifetime=0), 1.1)
    assert not reg.registered
    assert reg.deadline() is None


def test_state_follows_the_exchange() -> None:
    reg = _registration()
    assert reg.state == "no-care-of"
    sent = reg.start(COA1, 0)
    assert sent is not None
    assert reg.state == "registering"
    reg.on_ack(_ack(sent), 0.1)
    assert reg.state == "registered"
    refresh = reg.tick(48.1)
    assert refresh is not None
    assert reg.state == "registered", "a refresh in flight keeps the binding"
    reg.on_ack(_ack(refresh, status=BaStatus.NOT_AUTHORIZED_FOR_PREFIX), 48.2)
    assert reg.state == "unregistered"
    assert reg.start(None, 50) is None
    assert reg.state == "no-care-of"
