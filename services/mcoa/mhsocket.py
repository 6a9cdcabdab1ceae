"""Raw IPv6 sockets for the Mobility Header (protocol 135): the only signalling I/O here.

The kernel fills the MH checksum (offset 4) when it is sent as zero and checks it on receive
(docs/kernel.md), so `encode` without addresses is all a sender needs. A mobile router opens one
socket per link, bound to that link's care-of address and device, so each BU leaves by its own
link from its own address and the BA to that address comes back on the same socket.
"""

from __future__ import annotations

import socket
from ipaddress import IPv6Address

from services.mobility_header.codec import IPPROTO_MH, Message, encode

_IPV6_CHECKSUM = 7
_MH_CHECKSUM_OFFSET = 4
_RECV_BYTES = 2048


def open_mh(
    source: IPv6Address | None = None, device: str | None = None, *, rcvbuf: int = 1 << 18
) -> socket.socket:
    """A non-blocking raw MH socket, bound to `source` and `device` when given."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_MH)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_CHECKSUM, _MH_CHECKSUM_OFFSET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if device is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
        if source is not None:
            sock.bind((str(source), 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def send(sock: socket.socket, message: Message, destination: IPv6Address) -> None:
    """Send one Mobility Header; the kernel computes the checksum."""
    sock.sendto(encode(message), (str(destination), 0))


def receive(sock: socket.socket) -> tuple[bytes, IPv6Address] | None:
    """One queued Mobility Header and its source address, or None when nothing is queued."""
    try:
        data, address = sock.recvfrom(_RECV_BYTES)
    except BlockingIOError:
        return None
    return data, IPv6Address(address[0].split("%")[0])
