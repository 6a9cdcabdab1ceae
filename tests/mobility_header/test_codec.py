"""Unit tests of the Mobility Header codec: exact bytes, every refusal reason, the counters.

Expected bytes are written out from the RFC layouts by hand, not produced by the encoder, so a
symmetric mistake in encoder and decoder cannot pass unnoticed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address

import pytest

from services.contracts.errors import MultinetError
from services.mobility_header import (
    DECODE_STATS,
    AlternateCareOfAddress,
    BindingAcknowledgement,
    BindingError,
    BindingIdentifier,
    BindingUpdate,
    MobileNetworkPrefix,
    MobilityHeaderError,
    Pad1,
    PadN,
    Reason,
    UnknownOption,
    checksum,
    decode,
    encode,
    lifetime_units,
    verify_checksum,
)
from services.mobility_header.status import (
    BA_STATUS_NAMES,
    BaStatus,
    ba_status_name,
    be_status_name,
    is_accepted,
)

COA = IPv6Address("2001:db8:1::10")
HA = IPv6Address("2001:db8:ffff::1")


@pytest.fixture(autouse=True)
def fresh_stats() -> Iterator[None]:
    DECODE_STATS.reset()
    yield
    DECODE_STATS.reset()


def _header(mh_type: int, total: int, proto: int = 59) -> bytes:
    return bytes((proto, total // 8 - 1, mh_type, 0, 0, 0))


# --- Exact bytes ---------------------------------------------------------------------------


def test_binding_identifier_bytes_follow_rfc5648_layout() -> None:
    # Type 35, length 20, BID 0x0102, status 0, H set and BID-PRI 5 sharing one octet, IPv6 CoA.
    option = BindingIdentifier(
        bid=0x0102, status=0, simultaneous_home_foreign=True, priority=5, care_of=COA
    )
    assert option.to_bytes() == bytes((35, 20, 0x01, 0x02, 0, 0x85)) + COA.packed


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (BindingIdentifier(bid=7), bytes((35, 4, 0, 7, 0, 0))),
        (
            BindingIdentifier(bid=7, status=166, priority=127, care_of=IPv4Address("192.0.2.9")),
            bytes((35, 8, 0, 7, 166, 0x7F, 192, 0, 2, 9)),
        ),
        (
            MobileNetworkPrefix(IPv6Address("2001:db8:aa::"), 48),
            bytes((6, 18, 0, 48)) + IPv6Address("2001:db8:aa::").packed,
        ),
        (AlternateCareOfAddress(COA), bytes((3, 16)) + COA.packed),
        (UnknownOption(200, b"xyz"), bytes((200, 3)) + b"xyz"),
        (PadN(3), bytes((1, 3, 0, 0, 0))),
        (Pad1(), b"\x00"),
    ],
)
def test_option_bytes(option: object, expected: bytes) -> None:
    assert option.to_bytes() == expected  # type: ignore[attr-defined]


def test_binding_update_bytes_with_bid_aligned_and_padded() -> None:
    message = BindingUpdate(
        sequence=0x1234,
        lifetime=lifetime_units(600),
        ack=True,
        home_registration=True,
        mobile_router=True,
        options=(BindingIdentifier(bid=1, priority=1),),
    )
    mh = encode(message)
    # Fixed part: seq, flags A|H|R = 0xC400, lifetime 150; the BID at offset 12 is already 2n
    # aligned; 12 + 6 = 18 octets, padded with a PadN of 4 data octets to 24.
    expected = (
        _header(5, 24)
        + struct.pack("!HHH", 0x1234, 0xC400, 150)
        + bytes((35, 4, 0, 1, 0, 1))
        + bytes((1, 4, 0, 0, 0, 0))
    )
    assert mh == expected
    assert decode(mh) == message


def test_alternate_coa_is_aligned_8n_plus_6() -> None:
    mh = encode(BindingUpdate(sequence=1, lifetime=1, options=(AlternateCareOfAddress(COA),)))
    # Options start at 12: a 2-octet PadN moves the option to 14 = 8 + 6.
    assert mh[12:14] == b"\x01\x00"
    assert mh[14] == 3
    assert len(mh) % 8 == 0


def test_one_octet_gap_is_pad1() -> None:
    # After a 5-octet unknown option at 12 the BID would start at 17; one Pad1 makes it 18.
    mh = encode(
        BindingUpdate(
            sequence=1,
            lifetime=1,
            options=(UnknownOption(200, b"abc"), BindingIdentifier(bid=2)),
        )
    )
    assert mh[17] == 0
    assert mh[18] == 35


def test_binding_ack_and_error_layout() -> None:
    ba = BindingAcknowledgement(
        status=BaStatus.MCOA_PROHIBITED, sequence=9, lifetime=0, key_management=True
    )
    assert encode(ba) == _header(6, 16) + bytes((166, 0x80, 0, 9, 0, 0)) + bytes((1, 2, 0, 0))
    be = BindingError(status=2, home_address=IPv6Address("1::2"))
    mh = encode(be)
    assert mh == _header(7, 24) + bytes((2, 0)) + IPv6Address("1::2").packed
    assert decode(mh) == be
    assert be.status_name == "Unrecognized MH Type value"


def test_unnamed_flag_bits_survive() -> None:
    bu = BindingUpdate(sequence=1, lifetime=1, other_flags=0x0A01)  # M, P and a reserved bit
    assert decode(encode(bu)) == bu
    ba = BindingAcknowledgement(status=0, sequence=1, lifetime=1, other_flags=0x21)
    assert decode(encode(ba)) == ba


def test_named_bits_in_other_flags_are_refused() -> None:
    with pytest.raises(ValueError, match="other_flags"):
        encode(BindingUpdate(sequence=1, lifetime=1, other_flags=0x8000))


@pytest.mark.parametrize(
    "message",
    [
        BindingUpdate(sequence=0x10000, lifetime=1),
        BindingUpdate(sequence=1, lifetime=-1),
        BindingAcknowledgement(status=256, sequence=1, lifetime=1),
        BindingUpdate(sequence=1, lifetime=1, options=(BindingIdentifier(bid=1, priority=128),)),
        BindingUpdate(sequence=1, lifetime=1, options=(UnknownOption(35, b""),)),
        BindingUpdate(sequence=1, lifetime=1, options=(MobileNetworkPrefix(COA, 129),)),
        BindingUpdate(sequence=1, lifetime=1, options=(UnknownOption(200, b"x" * 250),) * 9),
    ],
)
def test_encoder_refuses_out_of_range_values(message: BindingUpdate) -> None:
    with pytest.raises(ValueError):
        encode(message)


def test_encode_needs_both_addresses_or_none() -> None:
    with pytest.raises(ValueError, match="both"):
        encode(BindingUpdate(sequence=1, lifetime=1), src=COA)


# --- Lifetime, status names ----------------------------------------------------------------


def test_lifetime_helpers() -> None:
    assert lifetime_units(600) == 150
    assert lifetime_units(7) == 1  # rounded down, never longer than granted
    assert lifetime_units(10**9) == 0xFFFF
    assert BindingUpdate(sequence=1, lifetime=150).lifetime_seconds == 600
    with pytest.raises(ValueError, match="negative"):
        lifetime_units(-4)


def test_status_names_cover_rfc6275_nemo_and_mcoa() -> None:
    expected = {0, 1, 4, 5, *range(128, 144), *range(164, 170)}
    assert set(BA_STATUS_NAMES) == expected
    assert {int(s) for s in BaStatus} == expected
    assert ba_status_name(164) == "MCOA MALFORMED"
    assert ba_status_name(4) == "MCOA NOTCOMPLETE"
    assert ba_status_name(143) == "Forwarding Setup failed (prefixes missing)"
    assert ba_status_name(200) == "unknown status 200 (rejected)"
    assert be_status_name(9) == "unknown binding error status 9"
    assert is_accepted(5)
    assert not is_accepted(128)
    ba = BindingAcknowledgement(status=141, sequence=1, lifetime=0)
    assert not ba.accepted
    assert ba.status_name == "Invalid Prefix"


# --- Checksum ------------------------------------------------------------------------------


def _reference_checksum(src: IPv6Address, dst: IPv6Address, mh: bytes) -> int:
    """RFC 1071 the slow way: add 16-bit words, fold carries, complement."""
    zeroed = mh[:4] + b"\x00\x00" + mh[6:]
    data = src.packed + dst.packed + struct.pack("!I3xB", len(mh), 135) + zeroed
    words: tuple[int, ...] = struct.unpack(f"!{len(data) // 2}H", data)
    total = sum(words)
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_checksum_matches_word_by_word_reference() -> None:
    message = BindingUpdate(
        sequence=77,
        lifetime=100,
        ack=True,
        options=(BindingIdentifier(bid=1, care_of=COA), MobileNetworkPrefix(COA, 64)),
    )
    mh = encode(message, src=COA, dst=HA)
    assert struct.unpack_from("!H", mh, 4)[0] == _reference_checksum(COA, HA, mh)
    assert checksum(COA, HA, mh) == _reference_checksum(COA, HA, mh)
    assert verify_checksum(COA, HA, mh)
    assert verify_checksum(str(COA), HA.packed, mh)
    assert not verify_checksum(HA, COA + 1, mh)
    zero = encode(message)
    assert zero[4:6] == b"\x00\x00"
    assert zero[:4] + zero[6:] == mh[:4] + mh[6:]
    assert checksum(COA, HA, zero) == checksum(COA, HA, mh)


def test_checksum_rejects_short_address_bytes() -> None:
    with pytest.raises(ValueError, match="16 octets"):
        checksum(b"\x00" * 4, HA, b"\x00" * 8)


# --- Refusals ------------------------------------------------------------------------------


def _valid_bu() -> bytes:
    return encode(
        BindingUpdate(
            sequence=3,
            lifetime=10,
            options=(AlternateCareOfAddress(COA), BindingIdentifier(bid=1, care_of=COA)),
        )
    )


def _refusal(data: bytes) -> MobilityHeaderError:
    with pytest.raises(MobilityHeaderError) as caught:
        decode(data)
    return caught.value


def _bu_with_options(options: bytes) -> bytes:
    body = struct.pack("!HHH", 1, 0, 1) + options
    body += bytes(-(6 + len(body)) % 8)  # Pad1s
    return _header(5, 6 + len(body)) + body


@pytest.mark.parametrize(
    ("data", "reason", "offset", "mh_type"),
    [
        (b"", Reason.TRUNCATED, 0, None),
        (b";\x00\x05\x00\x00", Reason.TRUNCATED, 5, None),
        (_header(5, 24) + bytes(10), Reason.TRUNCATED, 16, 5),
        (_header(5, 16) + bytes(11), Reason.NOT_MULTIPLE_OF_8, 17, 5),
        (_header(5, 16) + bytes(18), Reason.LENGTH_MISMATCH, 16, 5),
        (_header(5, 8) + bytes(2), Reason.MESSAGE_TOO_SHORT, 8, 5),
        (_header(7, 16) + bytes(10), Reason.MESSAGE_TOO_SHORT, 16, 7),
        (_header(1, 16) + bytes(10), Reason.UNSUPPORTED_TYPE, 2, 1),
        (_header(0xFF, 16) + bytes(10), Reason.UNSUPPORTED_TYPE, 2, 255),
        (_bu_with_options(bytes((200, 9, 0, 0))), Reason.OPTION_OVERRUN, 12, 5),
        (_bu_with_options(bytes((0, 0, 0, 200))), Reason.OPTION_OVERRUN, 15, 5),
        (_bu_with_options(bytes((35, 6)) + bytes(6)), Reason.BAD_OPTION_LENGTH, 12, 5),
        (_bu_with_options(bytes((3, 4)) + bytes(4)), Reason.BAD_OPTION_LENGTH, 12, 5),
        (_bu_with_options(bytes((6, 16)) + bytes(16)), Reason.BAD_OPTION_LENGTH, 12, 5),
        (_bu_with_options(bytes((6, 18, 0, 129)) + bytes(16)), Reason.INVALID_FIELD, 15, 5),
    ],
)
def test_each_refusal_names_reason_offset_and_type(
    data: bytes, reason: Reason, offset: int, mh_type: int | None
) -> None:
    error = _refusal(data)
    assert isinstance(error, MultinetError)
    assert (error.reason, error.offset, error.mh_type) == (reason, offset, mh_type)
    assert reason.value in str(error)
    assert DECODE_STATS.errors[reason] == 1
    assert DECODE_STATS.failed == 1
    assert DECODE_STATS.decoded == 0


def test_bid_option_overrunning_the_message() -> None:
    mh = bytearray(_valid_bu())
    bid_at = mh.index(35, 30)  # the BID follows the 18-octet Alternate CoA
    mh[bid_at + 1] = 200
    error = _refusal(bytes(mh))
    assert error.reason is Reason.OPTION_OVERRUN
    assert error.offset == bid_at


def test_stats_count_successes_and_snapshot() -> None:
    decode(_valid_bu())
    decode(memoryview(_valid_bu()))
    decode(bytearray(_valid_bu()))
    _refusal(b"x")
    snapshot = DECODE_STATS.snapshot()
    assert snapshot["decoded"] == 3
    assert snapshot["truncated"] == 1
    assert set(snapshot) == {"decoded", *(r.value for r in Reason)}


def test_unknown_options_are_kept_and_skipped() -> None:
    mh = _bu_with_options(bytes((200, 2, 0xAB, 0xCD)) + bytes((35, 4, 0, 9, 0, 0)))
    message = decode(mh)
    assert isinstance(message, BindingUpdate)
    assert message.options == (UnknownOption(200, b"\xab\xcd"), BindingIdentifier(bid=9))
    assert message.binding_ids == (BindingIdentifier(bid=9),)


def test_keep_padding_reproduces_the_bytes() -> None:
    mh = _valid_bu()
    message = decode(mh, keep_padding=True)
    assert any(isinstance(o, PadN | Pad1) for o in message.options)
    assert encode(message) == mh
    assert decode(mh) == decode(encode(decode(mh)))


def test_accessors() -> None:
    prefix = MobileNetworkPrefix(IPv6Address("2001:db8:aa::1"), 48)
    bu = BindingUpdate(sequence=1, lifetime=1, options=(prefix, BindingIdentifier(bid=4)))
    assert bu.prefixes == (prefix,)
    assert str(prefix.network) == "2001:db8:aa::/48"
    assert [b.bid for b in bu.binding_ids] == [4]
