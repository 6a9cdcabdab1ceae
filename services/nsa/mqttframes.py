"""The few MQTT 3.1.1 packets the NSA's metrics connection speaks, built and parsed by hand.

Why not paho here: the metrics connection only ever receives QoS 0 PUBLISHes (the monitors'
reports, thousands a second) and sends CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ. paho spends
40-90 us of Python per incoming PUBLISH (several small socket reads, a message object, its
dispatch: measured in bench.nsa), most of the NSA's cost per report after the engine. Read in
large chunks and cut here, a report costs a few microseconds (`python -m bench.nsa
--receiver` measures both on the same frames). Every other connection of the project stays on
paho: they carry few messages and need QoS 1 sessions.

`Frames` is pure (bytes in, packets out) so the tests feed it any split of a stream.
"""

from __future__ import annotations

from dataclasses import dataclass

CONNACK = 0x20
PUBLISH = 0x30
SUBACK = 0x90
UNSUBACK = 0xB0
PINGRESP = 0xD0


class ProtocolError(Exception):
    """The broker sent something this connection cannot read: it is dropped and redone."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str | bytes) -> bytes:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def connect(
    client_id: str, keepalive_s: int, username: str | None = None, password: str | None = None
) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session (QoS 0 reports are never kept for an absent client)."""
    flags = 0x02
    payload = _string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    header = _string("MQTT") + bytes([4, flags]) + keepalive_s.to_bytes(2, "big")
    return _packet(0x10, header + payload)


def subscribe(packet_id: int, filters: list[str]) -> bytes:
    """SUBSCRIBE `filters` at QoS 0."""
    body = packet_id.to_bytes(2, "big") + b"".join(_string(f) + b"\x00" for f in filters)
    return _packet(0x82, body)


def unsubscribe(packet_id: int, filters: list[str]) -> bytes:
    """UNSUBSCRIBE `filters`."""
    body = packet_id.to_bytes(2, "big") + b"".join(_string(f) for f in filters)
    return _packet(0xA2, body)


def publish(topic: str | bytes, payload: bytes) -> bytes:
    """PUBLISH at QoS 0 (bench.nsa plays the monitors with it)."""
    return _packet(0x30, _string(topic) + payload)


PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


@dataclass(frozen=True, slots=True)
class Packet:
    """A packet other than PUBLISH: its type (high nibble of the first byte) and body."""

    kind: int
    body: bytes


class Frames:
    """Cuts a byte stream into packets: PUBLISHes as (topic, payload), the others as Packet."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> tuple[list[tuple[str, bytes]], list[Packet]]:
        """The complete packets `data` finishes; a partial one waits for the next call.
        Raises ProtocolError on a packet over `max_bytes` or a malformed PUBLISH.

        The hot path (a PUBLISH whose length fits one or two bytes) is index arithmetic on
        the buffer, one slice per topic and per payload: this runs for every report."""
        buffer = self._buffer
        buffer += data
        published: list[tuple[str, bytes]] = []
        others: list[Packet] = []
        at, end = 0, len(buffer)
        try:
            while end - at >= 2:
                first = buffer[at]
                byte = buffer[at + 1]
                if byte < 0x80:
                    length, index = byte, at + 2
                elif end - at >= 3 and buffer[at + 2] < 0x80:
                    length, index = (byte & 0x7F) | (buffer[at + 2] << 7), at + 3
                else:
                    found = _long_length(buffer, at + 1, end)
                    if found is None:
                        break  # the length itself is not all in yet
                    length, index = found
                if length > self.max_bytes:
                    raise ProtocolError(f"a packet of {length} bytes (limit {self.max_bytes})")
                stop = index + length
                if stop > end:
                    break
                if first & 0xF0 == PUBLISH:
                    published.append(_publish(buffer, first, index, stop))
                else:
                    others.append(Packet(first & 0xF0, bytes(buffer[index:stop])))
                at = stop
        finally:
            del buffer[:at]
        return published, others


def _long_length(buffer: bytearray, index: int, end: int) -> tuple[int, int] | None:
    """A remaining length of up to 4 bytes from `index`: (length, index after it), or None
    when it is not all in the buffer yet."""
    length, multiplier = 0, 1
    while index < end:
        byte = buffer[index]
        index += 1
        length += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            return length, index
        multiplier *= 128
        if multiplier > 128**3:
            raise ProtocolError("a remaining length of more than 4 bytes")
    return None


def _publish(buffer: bytearray, first: int, index: int, stop: int) -> tuple[str, bytes]:
    if stop - index < 2:
        raise ProtocolError("a PUBLISH without a topic")
    topic_end = index + 2 + ((buffer[index] << 8) | buffer[index + 1])
    start = topic_end + (2 if first & 0x06 else 0)  # QoS 1/2 carry a packet id
    if start > stop:
        raise ProtocolError("a PUBLISH shorter than its topic")
    try:
        topic = buffer[index + 2 : topic_end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("a PUBLISH topic that is not UTF-8") from exc
    return topic, bytes(buffer[start:stop])
