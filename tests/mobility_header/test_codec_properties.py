"""Property tests: every message survives a round trip, and no input escapes the error set.

The fuzz strategies start from valid encodings and damage them the way a network or a buggy
peer does (cut short, flipped bits, edited length fields), which reaches the option parser far
more often than uniformly random bytes do; plain random bytes are tried as well.
"""

from __future__ import annotations

from ipaddress import IPv6Address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.mobility_header import (
    AlternateCareOfAddress,
    BindingAcknowledgement,
    BindingError,
    BindingIdentifier,
    BindingUpdate,
    Message,
    MobileNetworkPrefix,
    MobilityHeaderError,
    MobilityOption,
    UnknownOption,
    VendorSpecific,
    checksum,
    decode,
    encode,
    verify_checksum,
)
from services.mobility_header.codec import (
    BA_FLAG_K,
    BA_FLAG_R,
    BU_FLAG_A,
    BU_FLAG_H,
    BU_FLAG_K,
    BU_FLAG_L,
    BU_FLAG_R,
)
from services.mobility_header.mh_options import KNOWN_TYPES
from tests.mobility_header.test_codec import _reference_checksum

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BU_NAMED = BU_FLAG_A | BU_FLAG_H | BU_FLAG_L | BU_FLAG_K | BU_FLAG_R
BA_NAMED = BA_FLAG_K | BA_FLAG_R

v6 = st.ip_addresses(v=6)
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)

options: st.SearchStrategy[MobilityOption] = st.one_of(
    st.builds(AlternateCareOfAddress, v6),
    st.builds(MobileNetworkPrefix, v6, st.integers(0, 128)),
    st.builds(
        BindingIdentifier,
        bid=u16,
        status=u8,
        simultaneous_home_foreign=st.booleans(),
        priority=st.integers(0, 127),
        care_of=st.none() | st.ip_addresses(v=4) | v6,
    ),
    st.builds(VendorSpecific, st.integers(0, 0xFFFFFFFF), u8, st.binary(max_size=250)),
    st.builds(
        UnknownOption,
        st.integers(2, 255).filter(lambda t: t not in KNOWN_TYPES),
        st.binary(max_size=255),
    ),
)
option_lists = st.lists(options, max_size=6).map(tuple)

binding_updates = st.builds(
    BindingUpdate,
    sequence=u16,
    lifetime=u16,
    ack=st.booleans(),
    home_registration=st.booleans(),
    link_local=st.booleans(),
    key_management=st.booleans(),
    mobile_router=st.booleans(),
    other_flags=u16.map(lambda f: f & ~BU_NAMED),
    options=option_lists,
    payload_proto=st.just(59) | u8,
)
binding_acks = st.builds(
    BindingAcknowledgement,
    status=u8,
    sequence=u16,
    lifetime=u16,
    key_management=st.booleans(),
    mobile_router=st.booleans(),
    other_flags=u8.map(lambda f: f & ~BA_NAMED),
    options=option_lists,
)
binding_errors = st.builds(BindingError, status=u8, home_address=v6, options=option_lists)
messages: st.SearchStrategy[Message] = st.one_of(binding_updates, binding_acks, binding_errors)


@SETTINGS
@given(messages, v6, v6)
def test_round_trip(message: Message, src: IPv6Address, dst: IPv6Address) -> None:
    mh = encode(message, src=src, dst=dst)
    assert len(mh) % 8 == 0
    assert mh[1] == len(mh) // 8 - 1
    assert decode(mh) == message
    assert verify_checksum(src, dst, mh)
    assert encode(message)[6:] == mh[6:]


@SETTINGS
@given(messages)
def test_decoding_with_padding_reproduces_the_octets(message: Message) -> None:
    mh = encode(message)
    assert encode(decode(mh, keep_padding=True)) == mh


@SETTINGS
@given(v6, v6, st.integers(1, 64).flatmap(lambda n: st.binary(min_size=8 * n, max_size=8 * n)))
def test_checksum_agrees_with_word_by_word_sum(
    src: IPv6Address, dst: IPv6Address, mh: bytes
) -> None:
    value = checksum(src, dst, mh)
    assert value == _reference_checksum(src, dst, mh)
    assert verify_checksum(src, dst, mh[:4] + value.to_bytes(2, "big") + mh[6:])


def _decode_or_refuse(data: bytes) -> None:
    """Decode; only MobilityHeaderError may escape, and whatever decodes must re-encode."""
    try:
        message = decode(data)
    except MobilityHeaderError as error:
        refused = error
    else:
        encode(message)
        encode(decode(data, keep_padding=True))
        return
    assert 0 <= refused.offset <= len(data)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    _decode_or_refuse(data)


@FUZZ
@given(st.sampled_from([5, 6, 7]), st.integers(1, 40), st.data())
def test_random_bodies_with_a_consistent_header(
    mh_type: int, units: int, data: st.DataObject
) -> None:
    body = data.draw(st.binary(min_size=units * 8 - 6, max_size=units * 8 - 6))
    _decode_or_refuse(bytes((59, units - 1, mh_type, 0, 0, 0)) + body)


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    mh = bytearray(encode(draw(messages)))
    damage = draw(st.sampled_from(["truncate", "flip", "length", "poke", "extend"]))
    if damage == "truncate":
        del mh[draw(st.integers(0, len(mh) - 1)) :]
    elif damage == "flip":
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(mh) - 1))
            mh[at] ^= 1 << draw(st.integers(0, 7))
    elif damage == "length":
        mh[1] = draw(u8)
    elif damage == "poke":  # often an option type or length octet
        mh[draw(st.integers(6, len(mh) - 1))] = draw(u8)
    else:
        mh += draw(st.binary(min_size=1, max_size=24))
    return bytes(mh)


@FUZZ
@given(damaged())
def test_damaged_encodings(data: bytes) -> None:
    _decode_or_refuse(data)
