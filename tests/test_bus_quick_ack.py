"""The bus clients acknowledge the broker's segments at once (`services.bus.quick_ack`).

mosquitto leaves Nagle on for its clients unless configured otherwise, so a delayed ACK of
ours held its next small packet for up to 40 ms (a SOAP delivery took 48 ms instead of 12,
bench.soap_delivery and bench.reaction (a) measure it). These tests check the mechanism on
real sockets: quick-ack mode armed on TCP connections after a packet's body is read, and
nothing attempted on sockets where it means nothing.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from services import bus
from services.contracts.settings import BrokerSettings


@pytest.fixture
def connected() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        try:
            yield client, peer
        finally:
            client.close()
            peer.close()


def _quick_ack_armed(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1


def test_quick_ack_arms_a_tcp_socket(connected: tuple[socket.socket, socket.socket]) -> None:
    client, _peer = connected
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
    assert not _quick_ack_armed(client)
    bus.quick_ack(client)
    assert _quick_ack_armed(client)


def test_quick_ack_leaves_other_sockets_alone() -> None:
    left, right = socket.socketpair()
    with left, right:
        bus.quick_ack(left)  # a Unix socket: nothing to arm, no error
        bus.quick_ack(None)


def test_the_client_rearms_after_reading_a_packet_body(
    connected: tuple[socket.socket, socket.socket],
) -> None:
    client, peer = connected
    mqtt_client = bus.make_client(BrokerSettings(), "quick-ack-test")
    mqtt_client._sock = client  # paho's own reader on our socket
    peer.sendall(b"\x30\x05\x00\x01tab")  # one PUBLISH: topic "t", payload "ab"
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
    assert mqtt_client._sock_recv(1) == b"\x30"  # a header byte: not re-armed
    assert not _quick_ack_armed(client)
    assert mqtt_client._sock_recv(1) == b"\x05"
    assert mqtt_client._sock_recv(5) == b"\x00\x01tab"  # the body: re-armed
    assert _quick_ack_armed(client)
    mqtt_client._sock = None
