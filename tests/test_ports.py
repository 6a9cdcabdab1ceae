"""services/ports.py: the port handed out is one a listener can take at once."""

from __future__ import annotations

import socket

from services.ports import free_port


def test_a_free_port_can_be_listened_on() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
