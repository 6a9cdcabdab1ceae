"""The metrics receiver's broker connection without paho: one socket, read in large chunks,
cut by `mqttframes` (see there for why), in the receiver child's one thread.

It does what the child needs and no more: connect (credentials, TLS as in `[broker]`, Nagle
off, MQTT 3.1.1, clean session), subscribe and unsubscribe at QoS 0, read PUBLISHes, ping
within the keep-alive, and notice a dead broker (nothing read for 1.5 keep-alives). The
child reconnects with the services' jittered back-off (`services.bus.reconnect_delay`) and
subscribes again to everything it follows.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import time

from services import bus
from services.contracts.settings import BrokerSettings
from services.nsa import mqttframes
from services.nsa.mqttframes import CONNACK, Frames, ProtocolError

log = logging.getLogger(__name__)

#: Bytes asked of the socket per read: ~1000 reports.
READ_BYTES = 256 * 1024
#: The longest wait for the broker's CONNACK.
CONNECT_TIMEOUT_S = 10.0


class MetricsLink:
    """One connection; `open` again after any error (`OSError`, `ProtocolError`)."""

    def __init__(self, broker: BrokerSettings, client_id: str) -> None:
        self.broker = broker
        self.client_id = client_id
        self._sock: socket.socket | None = None
        self._frames = Frames(broker.max_packet_bytes)
        self._packet_id = 0
        self._last_sent = 0.0
        self._last_read = 0.0

    @property
    def connected(self) -> bool:
        """Whether a connection is open (the broker accepted it)."""
        return self._sock is not None

    def open(self) -> None:
        """Connect and wait for the CONNACK; raises OSError or ProtocolError."""
        broker = self.broker
        sock = socket.create_connection((broker.host, broker.port), timeout=CONNECT_TIMEOUT_S)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if broker.tls:
                context = ssl.create_default_context(
                    cafile=str(broker.ca_file) if broker.ca_file else None
                )
                sock = context.wrap_socket(sock, server_hostname=broker.host)
            frames = self._handshake(sock)
        except BaseException:
            sock.close()
            raise
        sock.settimeout(CONNECT_TIMEOUT_S)
        self._sock = sock
        self._frames = frames
        now = time.monotonic()
        self._last_sent = self._last_read = now

    def _handshake(self, sock: socket.socket) -> Frames:
        """CONNECT, then read up to the CONNACK: the frames reader, with whatever followed."""
        broker = self.broker
        sock.sendall(
            mqttframes.connect(self.client_id, broker.keepalive_s, broker.username, broker.password)
        )
        frames = Frames(broker.max_packet_bytes)
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while time.monotonic() <= deadline:
            data = sock.recv(4096)
            if not data:
                break
            _, packets = frames.feed(data)
            for packet in packets:
                if packet.kind == CONNACK:
                    code = packet.body[1] if len(packet.body) >= 2 else 255
                    if code != 0:
                        raise ProtocolError(f"the broker refused us (CONNACK code {code})")
                    return frames
        raise ProtocolError("no CONNACK from the broker")

    def close(self, *, polite: bool = False) -> None:
        """Drop the connection (with a DISCONNECT first when `polite`)."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if polite:
            with contextlib.suppress(OSError):
                sock.sendall(mqttframes.DISCONNECT)
        sock.close()

    def _send(self, data: bytes) -> None:
        if self._sock is None:
            return  # subscribed again at the next connection anyway
        self._sock.sendall(data)
        self._last_sent = time.monotonic()

    def _next_id(self) -> int:
        self._packet_id = self._packet_id % 65535 + 1
        return self._packet_id

    def subscribe(self, filters: list[str], per_packet: int) -> None:
        """SUBSCRIBE at QoS 0, `per_packet` filters a packet."""
        for start in range(0, len(filters), per_packet):
            self._send(mqttframes.subscribe(self._next_id(), filters[start : start + per_packet]))

    def unsubscribe(self, filters: list[str], per_packet: int) -> None:
        """UNSUBSCRIBE, `per_packet` filters a packet."""
        for start in range(0, len(filters), per_packet):
            self._send(mqttframes.unsubscribe(self._next_id(), filters[start : start + per_packet]))

    def read(self, timeout_s: float) -> list[tuple[str, bytes]]:
        """The PUBLISHes that arrive within `timeout_s` (at most one read); pings when due.
        Raises OSError or ProtocolError when the connection is lost or the broker silent."""
        sock = self._sock
        if sock is None:
            return []
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        if not pending:
            readable, _, _ = select.select([sock], [], [], timeout_s)
            pending = bool(readable)
        now = time.monotonic()
        published: list[tuple[str, bytes]] = []
        if pending:
            data = sock.recv(READ_BYTES)
            if not data:
                raise ProtocolError("the broker closed the connection")
            bus.quick_ack(sock)  # the next report is not held by the broker's Nagle
            self._last_read = now
            # SUBACK, UNSUBACK, PINGRESP: nothing to do with them
            published, _ = self._frames.feed(data)
        keepalive = self.broker.keepalive_s
        if now - self._last_read > 1.5 * keepalive:
            raise ProtocolError(f"nothing from the broker for {now - self._last_read:.0f} s")
        if now - self._last_sent >= keepalive / 2:
            self._send(mqttframes.PINGREQ)
        return published
