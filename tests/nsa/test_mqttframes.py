"""The metrics connection's MQTT framing: a stream of packets cut anywhere comes out whole,
in order, with topics and payloads intact; oversized or malformed packets are refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.nsa import mqttframes
from services.nsa.mqttframes import PINGRESP, SUBACK, Frames, ProtocolError


def _publish(topic: str, payload: bytes, qos: int = 0) -> bytes:
    body = len(topic.encode()).to_bytes(2, "big") + topic.encode()
    if qos:
        body += (7).to_bytes(2, "big")
    body += payload
    return mqttframes._packet(0x30 | (qos << 1), body)


topics = st.text(alphabet="abcdefghij/0123456789", min_size=1, max_size=40)
payloads = st.binary(max_size=400)


@given(
    st.lists(st.tuples(topics, payloads, st.sampled_from([0, 1])), min_size=1, max_size=30),
    st.lists(st.integers(min_value=1, max_value=64), max_size=50),
)
def test_any_split_of_the_stream_gives_the_same_messages(
    messages: list[tuple[str, bytes, int]], cuts: list[int]
) -> None:
    stream = b"".join(_publish(t, p, q) for t, p, q in messages)
    stream += b"\xd0\x00"  # a PINGRESP at the end
    frames = Frames(max_bytes=1 << 20)
    got: list[tuple[str, bytes]] = []
    kinds: list[int] = []
    at = 0
    for cut in [*cuts, len(stream)]:
        published, others = frames.feed(stream[at : at + cut])
        got.extend(published)
        kinds.extend(p.kind for p in others)
        at += cut
        if at >= len(stream):
            break
    published, others = frames.feed(stream[at:])
    got.extend(published)
    kinds.extend(p.kind for p in others)
    assert got == [(t, p) for t, p, _ in messages]
    assert kinds == [PINGRESP]


def test_a_packet_over_the_limit_is_refused() -> None:
    frames = Frames(max_bytes=100)
    with pytest.raises(ProtocolError, match="limit 100"):
        frames.feed(_publish("t", b"x" * 200))


def test_a_publish_shorter_than_its_topic_is_refused() -> None:
    frames = Frames(max_bytes=100)
    with pytest.raises(ProtocolError, match="shorter than its topic"):
        frames.feed(mqttframes._packet(0x30, (50).to_bytes(2, "big") + b"abc"))


def test_the_packets_sent_are_what_mqtt_3_1_1_says() -> None:
    packet = mqttframes.connect("id", 30, "user", "pw")
    assert packet[0] == 0x10
    assert packet[2:10] == b"\x00\x04MQTT\x04\xc2"  # level 4, username, password, clean
    assert mqttframes.subscribe(1, ["a/+"])[0] == 0x82
    assert mqttframes.subscribe(1, ["a/+"]).endswith(b"\x00\x03a/+\x00")
    assert mqttframes.unsubscribe(2, ["a/+"])[0] == 0xA2
    suback = Frames(10).feed(b"\x90\x03\x00\x01\x00")[1]
    assert [p.kind for p in suback] == [SUBACK]


def test_a_long_packet_split_inside_its_length_comes_out_whole() -> None:
    payload = bytes(range(256)) * 80  # a three-byte remaining length
    stream = _publish("a/b", payload)
    frames = Frames(max_bytes=1 << 20)
    assert frames.feed(stream[:2]) == ([], [])
    assert frames.feed(stream[2:3]) == ([], [])
    assert frames.feed(stream[3:])[0] == [("a/b", payload)]
