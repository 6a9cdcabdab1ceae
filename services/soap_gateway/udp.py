"""SOAP over UDP: one SOAP 1.1 envelope per datagram in, one response envelope per datagram out.

For constrained links, where a TCP handshake and HTTP headers cost more than the call. Each
datagram goes through the very WSGI application the HTTP server runs (body guard, spyne,
schema validation, the same faults), called with a synthetic POST environ, so both bindings
validate and answer alike. A datagram over `max_datagram_bytes` is refused with a
`Client.RequestTooLarge` Fault datagram; an answer that does not fit in one datagram is
replaced by a `Server.ResponseTooLarge` Fault (whatever the call did is done: GetStatus
tells). There is no retransmission: a caller that gets no answer asks GetStatus, and a
repeated Install/Update/Flush is a redelivery the workers acknowledge again.
"""

from __future__ import annotations

import io
import logging
import selectors
import socket
import sys
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from services.soap_gateway.wsgi import WsgiApp, fault_body
from services.wakeup import Stopper

log = logging.getLogger(__name__)

#: The largest UDP payload over IPv4 (65535 - 8 UDP - 20 IP header bytes).
MAX_UDP_PAYLOAD = 65507


def _environ(datagram: bytes, sender: tuple[Any, ...], local: tuple[Any, ...]) -> dict[str, Any]:
    """A WSGI environ for a POST whose body is the datagram (PEP 3333's required keys)."""
    return {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "CONTENT_TYPE": "text/xml; charset=utf-8",
        "CONTENT_LENGTH": str(len(datagram)),
        "SERVER_NAME": str(local[0]),
        "SERVER_PORT": str(local[1]),
        "SERVER_PROTOCOL": "HTTP/1.0",
        "REMOTE_ADDR": str(sender[0]),
        "REMOTE_PORT": str(sender[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "soap.udp",
        "wsgi.input": io.BytesIO(datagram),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "multinet.binding": "udp",
    }


def answer(app: WsgiApp, datagram: bytes, sender: tuple[Any, ...], local: tuple[Any, ...]) -> bytes:
    """Run one request datagram through the WSGI application; return the response envelope."""
    body: Iterable[bytes] = app(_environ(datagram, sender, local), lambda *_: None)
    try:
        return b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


class UdpServer:
    """Serves one WSGI SOAP application on a UDP socket.

    `bind()` opens the socket (call it before entering another network namespace, like the
    HTTP server's `prepare()`); `start()` receives in a named thread and answers on a bounded
    pool of `threads` workers; `stop()` wakes the receiver at once and waits for the pool.
    When every worker is busy and `threads` more datagrams wait, new ones get a
    `Server.Busy` Fault instead of queueing without bound.
    """

    def __init__(
        self,
        app: WsgiApp,
        host: str,
        port: int,
        *,
        max_datagram_bytes: int = MAX_UDP_PAYLOAD,
        threads: int = 4,
        name: str = "soap-udp",
    ) -> None:
        if not 512 <= max_datagram_bytes <= MAX_UDP_PAYLOAD:
            raise ValueError(f"max_datagram_bytes must be 512..{MAX_UDP_PAYLOAD}")
        self.app = app
        self.host = host
        self.requested_port = port
        self.max_datagram_bytes = max_datagram_bytes
        self.name = name
        self._threads = threads
        self._slots = threading.BoundedSemaphore(2 * threads)
        self._sock: socket.socket | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._stop = Stopper()

    @property
    def port(self) -> int:
        """The port actually bound (0 asks for any free port)."""
        if self._sock is None:
            raise RuntimeError("the UDP server is not bound")
        return int(self._sock.getsockname()[1])

    def bind(self) -> None:
        """Open and bind the socket (idempotent)."""
        if self._sock is not None:
            return
        family, kind, proto, _, address = socket.getaddrinfo(
            self.host, self.requested_port, type=socket.SOCK_DGRAM
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        self._sock = sock

    def start(self) -> None:
        """Bind if needed, then receive in a background thread."""
        self.bind()
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix=f"{self.name}-call")
        self._thread = threading.Thread(target=self._receive, name=self.name, daemon=True)
        self._thread.start()
        log.info("%s: serving SOAP over UDP on %s:%d", self.name, self.host, self.port)

    def stop(self) -> None:
        """Stop receiving, let calls in progress answer, close the socket (once)."""
        if self._stop.stopped:
            return
        self._stop.stop()
        if self._thread is not None:
            self._thread.join(10)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._sock is not None:
            self._sock.close()
        self._stop.close()

    def _receive(self) -> None:
        assert self._sock is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._stop, selectors.EVENT_READ)
            while not self._stop.stopped:
                for key, _ in selector.select():
                    if key.fileobj is self._sock:
                        self._take(self._sock)

    def _take(self, sock: socket.socket) -> None:
        # One byte over the limit is enough to tell an oversized datagram (the rest is cut).
        try:
            datagram, sender = sock.recvfrom(self.max_datagram_bytes + 1)
        except OSError as exc:  # e.g. an ICMP error of an earlier answer reported here
            log.debug("%s: receive failed: %s", self.name, exc)
            return
        if len(datagram) > self.max_datagram_bytes:
            self._send(
                sender,
                fault_body(
                    "Client.RequestTooLarge",
                    f"the datagram is over the limit of {self.max_datagram_bytes} bytes",
                ),
            )
            return
        if not datagram:
            # spyne fails on an empty body (StopIteration) instead of answering a Fault.
            self._send(sender, fault_body("Client.EmptyRequest", "the datagram is empty"))
            return
        if not self._slots.acquire(blocking=False):
            self._send(sender, fault_body("Server.Busy", "every worker is busy; try again"))
            return
        assert self._pool is not None
        self._pool.submit(self._call, datagram, sender)

    def _call(self, datagram: bytes, sender: tuple[Any, ...]) -> None:
        try:
            assert self._sock is not None
            try:
                response = answer(self.app, datagram, sender, self._sock.getsockname())
            except Exception:
                # spyne answers its own and our errors with Faults; this is a bug: say so.
                log.exception("%s: the application failed on a datagram", self.name)
                response = fault_body("Server", "internal error")
            if len(response) > self.max_datagram_bytes:
                log.warning(
                    "%s: a %d-byte answer to %s does not fit in one datagram",
                    self.name,
                    len(response),
                    sender[0],
                )
                response = fault_body(
                    "Server.ResponseTooLarge",
                    f"the answer is {len(response)} bytes, over the datagram limit of "
                    f"{self.max_datagram_bytes} bytes; the call was processed (ask GetStatus)",
                )
            self._send(sender, response)
        finally:
            self._slots.release()

    def _send(self, sender: tuple[Any, ...], response: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.sendto(response, sender)
        except OSError as exc:
            log.warning("%s: cannot answer %s: %s", self.name, sender[0], exc)
